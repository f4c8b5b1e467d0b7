"""Max req/s and req/s per core used: codexgate (`--workers 1` and `2`) beside bare mitmdump and the
LiteLLM proxy, non-streamed and streamed (SSE), all against the same fake upstream, in one run.

    ./dev bench                                    # sets up wrk and the venv, then runs this
    ./dev bench --litellm /tmp/litellm-venv/bin/litellm --rounds 3 --duration 8
    ./dev bench --install-litellm /tmp/litellm-venv   # makes that throwaway venv first (pinned)

Targets, each its own processes, all forwarding to `bench/fake_upstream.py` over loopback:

- `codexgate-1`, `codexgate-2`: `codexgate up --workers 1|2`, base-URL listener, a virtual key, the
  policy's `openai` provider pointing at the fake upstream (no limits; embedded store, audit log and
  write-ahead log on, as shipped).
- `mitmdump`: bare `mitmdump --mode reverse:…` (no addons), which buffers every body;
  `mitmdump-stream`: the same with `stream_large_bodies=1`, streaming SSE as codexgate must (SSE only).
- `litellm`: `litellm --config …` (its proxy server, one uvicorn worker, a master key, no database),
  its `/v1/responses` endpoint with an `openai/` model at the fake upstream. Needs a LiteLLM install
  (`--litellm PATH`, or `--install-litellm DIR` to make one); skipped with a message otherwise.

Load: `wrk -t1 -c16` closed loop, `POST /v1/responses`, the client sending the key each target
expects (the virtual key, LiteLLM's master key, or for bare mitmdump the upstream's own key). wrk
and the fake upstream are pinned with `taskset` to the last core (`--loadgen-cpus`); the targets
are not pinned. Per measurement: max req/s, the CPU every party used (the target's whole process
tree, the upstream, wrk, and the rest of the machine), and req/s per core the target used
(req/s ÷ its CPU-seconds per second). Each round measures every target in turn, the order rotating
between rounds. wrk counts the answers completed within the window and starts each window with new
connections, so a target whose mean latency under this load (connections ÷ req/s) is a sizeable part
of the window is under-measured: such figures are marked (†) in the report. Exit 1 if any answer
was not a 200 or a target's answer is not a Responses object or stream.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_workers import (  # noqa: E402
    KEY,
    ROOT,
    UPSTREAM_KEY,
    Gateway,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    policy_text,
    run_wrk,
)

# The LiteLLM release `--install-litellm` installs (its proxy extra; pinned so runs compare).
LITELLM_REQUIREMENT = "litellm[proxy]==1.106.12"
MODEL = "bench-model"
KINDS = ("json", "sse")

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = 'BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
"""


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (workers, uvicorn's children…)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class Target:
    """A proxy under test: where to send requests, with which key, and its processes."""

    def __init__(self, name: str, port: int, token: str, kinds: tuple[str, ...], process: Any) -> None:
        self.name, self.port, self.token, self.kinds, self.process = name, port, token, kinds, process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/responses"

    def pids(self) -> list[int]:
        pid = self.process.process.pid if isinstance(self.process, Gateway) else self.process.pid
        return process_tree(pid)

    def stop(self) -> None:
        if isinstance(self.process, Gateway):
            self.process.stop()
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{url} did not come up:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def start_mitmdump(work: Path, upstream_port: int, stream: bool) -> Target:
    name = "mitmdump-stream" if stream else "mitmdump"
    port = free_port()
    confdir = work / f"{name}-conf"
    confdir.mkdir(exist_ok=True)
    log = work / f"{name}.log"
    command = [sys.executable, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()",
               "--mode", f"reverse:http://127.0.0.1:{upstream_port}@127.0.0.1:{port}",
               "--set", "flow_detail=0", "--set", "connection_strategy=lazy", "--set", f"confdir={confdir}",
               *(["--set", "stream_large_bodies=1"] if stream else [])]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    # The upstream answers its health check through the reverse proxy once the proxy listens.
    _wait_http(f"http://127.0.0.1:{port}/health", process, log, 60)
    return Target(name, port, UPSTREAM_KEY, ("sse",) if stream else KINDS, process)


def start_litellm(work: Path, binary: str, upstream_port: int) -> Target:
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: {UPSTREAM_KEY}
general_settings:
  master_key: {KEY}
litellm_settings:
  telemetry: false
"""
    )
    log = work / "litellm.log"
    # The bundled price map instead of fetching one (the bench runs on loopback only).
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    command = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True
        )
    _wait_http(f"http://127.0.0.1:{port}/health/liveliness", process, log, 180)
    return Target("litellm", port, KEY, KINDS, process)


def install_litellm(directory: Path) -> str:
    """A throwaway venv with LiteLLM's proxy, outside the repository; reused when it is there."""
    binary = directory / "bin" / "litellm"
    if binary.exists():
        return str(binary)
    if directory.resolve().is_relative_to(ROOT):
        raise SystemExit(f"--install-litellm {directory}: put it outside the repository")
    print(f"installing {LITELLM_REQUIREMENT} into {directory} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run([str(directory / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_REQUIREMENT], check=True)
    return str(binary)


def body(kind: str) -> str:
    return json.dumps(
        {"model": MODEL, "input": "hello", **({"stream": True} if kind == "sse" else {})}, separators=(",", ":")
    )


def check_answer(target: Target, kind: str) -> None:
    """One request first: a 200 carrying a Responses object (or a stream ending in response.completed)."""
    request = urllib.request.Request(
        target.url,
        data=body(kind).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {target.token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read().decode(errors="replace")
        ok = answer.status == 200 and (
            "response.completed" in text if kind == "sse" else json.loads(text).get("object") == "response"
        )
    if not ok:
        raise SystemExit(f"{target.name} ({kind}): unexpected answer: {text[:500]}")


def measure(target: Target, kind: str, args: argparse.Namespace, work: Path, upstream_pid: int) -> dict[str, Any]:
    script = work / f"{target.name}-{kind}.lua"
    script.write_text(WRK_SCRIPT.replace("BODY", body(kind)).replace("TOKEN", target.token))
    run_wrk(target.url, script, args.warmup, args.connections, args.loadgen_cpus, args.wrk_timeout)
    pids = target.pids()
    target0 = {pid: cpu_seconds(pid) for pid in pids}
    upstream0 = cpu_seconds(upstream_pid)
    busy0, wall0 = machine_busy_seconds(), time.monotonic()
    children0 = os.times()
    result = run_wrk(target.url, script, args.duration, args.connections, args.loadgen_cpus, args.wrk_timeout)
    children1 = os.times()
    wall = time.monotonic() - wall0
    target_cpu = sum(max(0.0, cpu_seconds(pid) - before) for pid, before in target0.items())
    upstream_cpu = cpu_seconds(upstream_pid) - upstream0
    loadgen_cpu = (children1.children_user + children1.children_system) - (
        children0.children_user + children0.children_system
    )
    busy = machine_busy_seconds() - busy0
    cores = target_cpu / wall
    result["cores"] = {
        "target": round(cores, 2),
        "upstream": round(upstream_cpu / wall, 2),
        "wrk": round(loadgen_cpu / wall, 2),
        "other": round(max(0.0, busy - target_cpu - upstream_cpu - loadgen_cpu) / wall, 2),
    }
    result["per_core"] = round(result["rps"] / cores) if cores > 0.01 else None
    # Little's law: the mean time an answer took. Past a quarter of the window, the window's start
    # (new connections, nothing completed yet) weighs on the count.
    result["mean_latency_s"] = round(args.connections / result["rps"], 3) if result["rps"] else None
    result["under_measured"] = not result["rps"] or args.connections / result["rps"] > args.duration / 4
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{target.name} ({kind}): answers that were not 200: {result}")
    return result


def _figures(values: list[float], marks: list[bool]) -> str:
    return ", ".join(f"{v:.0f}{'†' if mark else ''}" for v, mark in zip(values, marks, strict=True))


def report(results: dict[str, dict[str, list[dict[str, Any]]]]) -> tuple[str, dict[str, Any]]:
    lines: list[str] = []
    summary: dict[str, Any] = {}
    for kind in KINDS:
        if kind not in results:
            continue
        title = "non-streamed (JSON)" if kind == "json" else "streamed (SSE, 50 events per answer)"
        lines += [
            "",
            f"**{title}**",
            "",
            "| target | max req/s, median (rounds) | target cores used | req/s per core used, median (rounds) "
            "| upstream cores | wrk cores | other load, cores |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, rows in results[kind].items():
            rps = [r["rps"] for r in rows]
            marks = [r["under_measured"] for r in rows]
            per_core = [r["per_core"] for r in rows if r["per_core"] is not None]
            per_core_marks = [r["under_measured"] for r in rows if r["per_core"] is not None]

            def spread(party: str, rows: list[dict[str, Any]] = rows) -> str:
                values = [r["cores"][party] for r in rows]
                low, high = min(values), max(values)
                return f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"

            summary.setdefault(kind, {})[name] = {
                "rps": statistics.median(rps),
                "per_core": statistics.median(per_core) if per_core else None,
            }
            lines.append(
                f"| {name} | {statistics.median(rps):.0f} ({_figures(rps, marks)}) "
                f"| {spread('target')} "
                f"| {statistics.median(per_core) if per_core else 0:.0f} ({_figures(per_core, per_core_marks)}) "
                f"| {spread('upstream')} | {spread('wrk')} | {spread('other')} |"
            )
        base = summary[kind].get("mitmdump-stream" if kind == "sse" else "mitmdump")
        for name in ("codexgate-1", "codexgate-2"):
            mine = summary[kind].get(name)
            if mine and base and base["per_core"] and mine["per_core"]:
                against = "mitmdump-stream" if kind == "sse" else "mitmdump"
                line = f"{name} per core / {against}'s: {mine['per_core'] / base['per_core']:.2f}×"
                litellm = summary[kind].get("litellm")
                if litellm and litellm["per_core"]:
                    line += f"; / litellm's: {mine['per_core'] / litellm['per_core']:.2f}×"
                lines += ["", line]
    if any(r["under_measured"] for by_target in results.values() for rows in by_target.values() for r in rows):
        lines += [
            "",
            "† mean latency (connections ÷ req/s) over a quarter of the window: under-measured, the window's "
            "start weighs on it (use a longer --duration or fewer --connections)",
        ]
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8, help="seconds measured per target, kind and round")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each measurement")
    parser.add_argument(
        "--connections",
        type=int,
        default=16,
        help="wrk's connections (enough to saturate two workers; more only queues, and a slow target's "
        "answers then outlast the window)",
    )
    parser.add_argument(
        "--wrk-timeout",
        type=float,
        default=30,
        help="seconds before wrk counts an answer as a socket error (a slow target queues answers for seconds)",
    )
    parser.add_argument("--kinds", default="json,sse", help="json (non-streamed), sse (streamed)")
    parser.add_argument(
        "--targets",
        default="codexgate-1,codexgate-2,mitmdump,mitmdump-stream,litellm",
        help="which of codexgate-1, codexgate-2, mitmdump, mitmdump-stream, litellm",
    )
    parser.add_argument("--litellm", help="the `litellm` command of a LiteLLM proxy install (litellm[proxy])")
    parser.add_argument(
        "--install-litellm", metavar="DIR", help=f"make a venv with {LITELLM_REQUIREMENT} in DIR (outside the repo)"
    )
    parser.add_argument(
        "--loadgen-cpus", default=str((os.cpu_count() or 1) - 1), help="taskset CPU list for wrk and the upstream"
    )
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench_per_core: needs wrk (`./dev bench` installs it; or apt-get install wrk)", file=sys.stderr)
        return 2
    kinds = [k for k in args.kinds.split(",") if k]
    names = [t for t in args.targets.split(",") if t]
    litellm = args.litellm or (install_litellm(Path(args.install_litellm)) if args.install_litellm else None)
    if "litellm" in names and not (litellm and Path(litellm).exists()):
        print(
            "bench_per_core: LiteLLM skipped: no --litellm PATH (a litellm[proxy] install's `litellm` command) "
            "or --install-litellm DIR given, or the path does not exist",
            flush=True,
        )
        names.remove("litellm")
    work = Path(tempfile.mkdtemp(prefix="bench-per-core-"))
    upstream_port = free_port()
    upstream = subprocess.Popen(
        ["taskset", "-c", args.loadgen_cpus, sys.executable, str(ROOT / "bench" / "fake_upstream.py"),
         "--port", str(upstream_port)],
        env={**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    policy = work / "policy.yaml"
    policy.write_text(policy_text(upstream_port))
    targets: list[Target] = []
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for name in names:
            if name.startswith("codexgate-"):
                workers = int(name.removeprefix("codexgate-"))
                targets.append(Target(name, 0, KEY, KINDS, Gateway(work, policy, workers)))
                targets[-1].port = targets[-1].process.port
            elif name in ("mitmdump", "mitmdump-stream"):
                targets.append(start_mitmdump(work, upstream_port, stream=name == "mitmdump-stream"))
            elif name == "litellm":
                assert litellm is not None
                targets.append(start_litellm(work, litellm, upstream_port))
            else:
                raise SystemExit(f"unknown target {name!r}")
        for target in targets:
            for kind in kinds:
                if kind in target.kinds:
                    check_answer(target, kind)
        print(
            f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
            f"wrk and upstream on CPU {args.loadgen_cpus}",
            flush=True,
        )
        for round_number in range(args.rounds):
            for kind in kinds:
                here = [t for t in targets if kind in t.kinds]
                shift = round_number % len(here)
                for target in here[shift:] + here[:shift]:  # the order rotates between rounds
                    result = measure(target, kind, args, work, upstream.pid)
                    results.setdefault(kind, {}).setdefault(target.name, []).append(result)
                    print(f"round {round_number + 1} {kind:4} {target.name:16}: {result}", flush=True)
    finally:
        for target in targets:
            target.stop()
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(10)
    # Same order in every table: as the targets were named.
    ordered = {kind: {t.name: results[kind][t.name] for t in targets if t.name in results[kind]} for kind in results}
    text, summary = report(ordered)
    print(text)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": ordered, "summary": summary}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
