"""Max req/s of `codexgate up --workers 2` against one worker (`--workers 1`, the single process),
measured in one run, interleaved: for each round, one gateway at a time under `wrk`'s closed loop.

    apt-get install wrk       # the load generator: C, a small share of a core at these rates
    .venv/bin/python bench/bench_workers.py                       # ~2 minutes
    .venv/bin/python bench/bench_workers.py --rounds 3 --duration 8 --json out.json

Two upstreams, each measured with both gateways:

- `mock`: the policy's `kind: mock` provider answers inside the gateway. Nothing but the gateway
  and wrk takes CPU, so this shows how the gateway itself scales with cores.
- `upstream`: `bench/fake_upstream.py` (aiohttp) answers over loopback, as a provider would. Its CPU
  per request is a third to a half of the gateway's, on the same two cores.

wrk (one thread) and the fake upstream are pinned with `taskset` to the last core (`--loadgen-cpus`);
the gateway processes are not pinned (the kernel schedules the workers over both cores). The report
gives, per measurement, the CPU each party used, and the CPU the rest of the machine (other
people's work) used meanwhile: on a shared machine that decides the figure as much as the code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from codexgate.policies.keys import hash_key  # noqa: E402

KEY = "sk-cg-bench-workers-000000000000000000000000000"
UPSTREAM_KEY = "sk-upstream-bench"
TICKS = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{"model":"MODEL","input":"hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def policy_text(upstream_port: int) -> str:
    return f"""\
providers:
  local: {{kind: mock, output_tokens: 7}}
  bench: {{kind: openai, base_url: "http://127.0.0.1:{upstream_port}/v1", keys: [{{value: "env:BENCH_UPSTREAM_KEY"}}]}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 1, output_per_mtok: 8}}}}
  bench-model: {{routes: [{{provider: bench}}], price: {{input_per_mtok: 1, output_per_mtok: 8}}}}
orgs: {{bench: {{}}}}
teams: {{bench: {{org: bench}}}}
keys:
  - {{name: bench, team: bench, hash: "{hash_key(KEY)}"}}
"""


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def machine_busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


class Gateway:
    def __init__(self, work: Path, policy: Path, workers: int) -> None:
        self.workers = workers
        self.port = free_port()
        self.data_dir = work / f"data-{workers}"
        self.log = work / f"gateway-{workers}.log"
        command = [
            sys.executable, "-m", "codexgate.cli", "up", "--workers", str(workers), "--policy", str(policy),
            "--data-dir", str(self.data_dir), "--proxy-port", str(free_port()), "--gateway-port", str(self.port),
            "--metrics-port", "0",
        ]  # fmt: skip
        env = {**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
        deadline = time.monotonic() + 90
        while self.log.read_text(errors="replace").count("codexgate ready") < workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gateway --workers {workers} did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        if self.workers == 1:
            return [self.process.pid]
        found = dict(re.findall(r"worker (w\d+) started \(pid (\d+)\)", self.log.read_text(errors="replace")))
        return [self.process.pid, *(int(pid) for pid in found.values())]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def run_wrk(
    url: str, script: Path, seconds: float, connections: int, cpus: str, timeout_seconds: float = 2
) -> dict[str, Any]:
    """`timeout_seconds`: wrk counts an answer slower than this as a socket error (its default 2 s)."""
    command = ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s",
               f"--timeout={timeout_seconds:.0f}s", "-s", str(script), url]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_seconds + 60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    text = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


def measure(gateway: Gateway, model: str, args: argparse.Namespace, work: Path, upstream_pid: int | None) -> dict:
    script = work / f"{model}.lua"
    script.write_text(WRK_SCRIPT.replace("MODEL", model).replace("KEY", KEY))
    url = f"http://127.0.0.1:{gateway.port}/v1/responses"
    run_wrk(url, script, args.warmup, args.connections, args.loadgen_cpus)
    pids = gateway.pids()
    gateway0 = sum(cpu_seconds(pid) for pid in pids)
    upstream0 = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    busy0, wall0 = machine_busy_seconds(), time.monotonic()
    children0 = os.times()
    result = run_wrk(url, script, args.duration, args.connections, args.loadgen_cpus)
    children1 = os.times()
    wall = time.monotonic() - wall0
    gateway_cpu = sum(cpu_seconds(pid) for pid in pids) - gateway0
    upstream_cpu = (cpu_seconds(upstream_pid) - upstream0) if upstream_pid else 0.0
    loadgen_cpu = (children1.children_user + children1.children_system) - (
        children0.children_user + children0.children_system
    )
    busy = machine_busy_seconds() - busy0
    result["cores"] = {
        "gateway": round(gateway_cpu / wall, 2),
        "upstream": round(upstream_cpu / wall, 2),
        "wrk": round(loadgen_cpu / wall, 2),
        "other": round(max(0.0, busy - gateway_cpu - upstream_cpu - loadgen_cpu) / wall, 2),
    }
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"{model} on {gateway.workers} worker(s): answers that were not 200: {result}")
    return result


def _median(results: list[dict[str, Any]], party: str) -> float:
    return statistics.median(r["cores"][party] for r in results)


def _efficiency(results: list[dict[str, Any]]) -> float:
    """Requests per CPU-second the gateway processes used: what the code scales like, whatever share
    of the cores the rest of the machine left it."""
    return statistics.median(r["rps"] / r["cores"]["gateway"] for r in results if r["cores"]["gateway"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8, help="seconds measured per gateway per round")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--loadgen-cpus", default=str((os.cpu_count() or 1) - 1), help="taskset CPU list for wrk and the upstream"
    )
    parser.add_argument(
        "--upstreams", default="mock,upstream", help="mock (in the gateway), upstream (fake_upstream.py)"
    )
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench_workers: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    upstream_port = free_port()
    upstream = subprocess.Popen(
        ["taskset", "-c", args.loadgen_cpus, sys.executable, str(ROOT / "bench" / "fake_upstream.py"),
         "--port", str(upstream_port)],
        env={**os.environ, "BENCH_UPSTREAM_KEY": UPSTREAM_KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    policy = work / "policy.yaml"
    policy.write_text(policy_text(upstream_port))
    gateways: dict[int, Gateway] = {}
    results: dict[str, dict[int, list[dict[str, Any]]]] = {}
    try:
        for count in (1, 2):
            gateways[count] = Gateway(work, policy, count)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
        for round_number in range(1, args.rounds + 1):
            for upstream_name in args.upstreams.split(","):
                model = "mock-model" if upstream_name == "mock" else "bench-model"
                for count in (1, 2) if round_number % 2 else (2, 1):  # alternate which goes first
                    upstream_pid = upstream.pid if upstream_name == "upstream" else None
                    result = measure(gateways[count], model, args, work, upstream_pid)
                    results.setdefault(upstream_name, {}).setdefault(count, []).append(result)
                    print(f"round {round_number} {upstream_name:8} workers={count}: {result}", flush=True)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(10)
    print(
        "\n| upstream | 1 worker req/s (rounds) | 2 workers req/s (rounds) | ratio of medians | per-round ratios "
        "| gateway cores used, 1 / 2 workers | req per gateway CPU-second, 1 / 2 workers | other load, cores |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    summary: dict[str, Any] = {}
    for upstream_name, by_count in results.items():
        one = [r["rps"] for r in by_count[1]]
        two = [r["rps"] for r in by_count[2]]
        ratios = [b / a for a, b in zip(one, two, strict=True)]
        ratio = statistics.median(two) / statistics.median(one)
        summary[upstream_name] = {"one": one, "two": two, "ratio": ratio, "round_ratios": ratios}
        print(
            f"| {upstream_name} | {statistics.median(one):.0f} ({', '.join(f'{v:.0f}' for v in one)}) "
            f"| {statistics.median(two):.0f} ({', '.join(f'{v:.0f}' for v in two)}) | {ratio:.2f}× "
            f"| {', '.join(f'{r:.2f}' for r in ratios)} "
            f"| {_median(by_count[1], 'gateway'):.2f} / {_median(by_count[2], 'gateway'):.2f} "
            f"| {_efficiency(by_count[1]):.0f} / {_efficiency(by_count[2]):.0f} "
            f"| {min(r['cores']['other'] for rs in by_count.values() for r in rs):.2f}"
            f"–{max(r['cores']['other'] for rs in by_count.values() for r in rs):.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
