"""Gateway overhead benchmark: direct vs bare mitmdump vs codexgate, side by side, in one run.

Two kinds of request, each measured on all paths (`--kinds`, default both, streamed first):
  sse   `"stream": true`, answered with 50 Responses events (`--sse-events`), as Codex always asks;
        the bare proxies then run with `--set stream_large_bodies=1`, i.e. they stream every body
        as it arrives, which codexgate must do for a stream
  json  a non-streamed request, answered with one Responses object
  translated  `"stream": true` for a model codexgate routes to an Anthropic-shaped upstream
        (`/v1/messages`, 50 events), translated to the Responses API event by event; the bare
        proxies forward the same Anthropic stream untranslated (what codexgate's translation
        costs over passing a stream through)

Paths to the same fake OpenAI upstream (`bench/fake_upstream.py`, its own process):

  direct          client -> upstream
  mitmdump        client -> `mitmdump --mode reverse:...` (no addons of ours) -> upstream
  mitmproxy-core  client -> codexgate's master without the chain (codexgate.master, run with -O as
                  `codexgate up` runs it) -> upstream
  codexgate       client -> `codexgate up` (full addon chain, base-URL listener; Python -O) -> upstream
Not measured unless named in --paths: `mitmdump-O` (the same mitmdump run with python -O, i.e.
without mitmproxy's `__debug__` checks, as codexgate runs) and `codexgate-checks` (`codexgate up
--python-checks`: with them).

Open loop: requests leave on a fixed timetable whatever the answers do; latency counts from the
*scheduled* send time, so a stalled server is charged for the requests queued behind it (no
coordinated omission). Closed loop: N workers back to back, for the maximum throughput, in
`--closed-rounds` rounds over the paths in alternated order; the max-rate ratio (codexgate /
mitmdump) and the chain's CPU (codexgate − mitmproxy-core) are taken within each round, reported as
the median and range of the rounds.
Paired (`--paired A,B[,C...]`): one open loop whose requests take turns between the paths, A, B,
A, B, ..., so all see the same moments of the machine; each path's p50 minus A's is free of the
drift between rounds that dominates a difference of two separate measurements (docs/benchmarks.md).
The load generator is a separate process (this script re-run as `_loadgen`).

    .venv/bin/python bench/bench_overhead.py                # ~4 minutes (both kinds)
    .venv/bin/python bench/bench_overhead.py --rates 50,200 --duration 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One gateway process, as these figures have always been (bench/bench_workers.py measures --workers).
os.environ.setdefault("CODEXGATE_WORKERS", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL = "gpt-bench"
TRANSLATED_MODEL = "claude-bench"  # routed to the fake upstream's Anthropic-shaped /v1/messages
KINDS = ("sse", "json", "translated")
PATHS = ("direct", "mitmdump", "mitmdump-O", "mitmproxy-core", "codexgate", "codexgate-limits", "codexgate-checks")
DEFAULT_PATHS = ("direct", "mitmdump", "mitmproxy-core", "codexgate")
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
TARGET_RATIO = 1.3
TARGET_LIMITS_MS = 0.3  # issue #3: admission + accounting with Redis over the foundation's path
QUIET_PCT = 25.0  # % of one core others may use before a run counts as disturbed
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Load generator: runs in its own process (`bench_overhead.py _loadgen`, spec on stdin).
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ms: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_ms)
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        out[name] = percentile(values, q)
    out["mean"] = round(sum(values) / len(values), 3) if values else None
    return out


async def _post(session: Any, target: dict[str, Any], body: bytes) -> tuple[int | str, float | None]:
    """(status or error name, loop time at which the first bytes of the body arrived)."""
    loop = asyncio.get_running_loop()
    try:
        async with session.post(target["url"], data=body, headers=target["headers"]) as resp:
            await resp.content.readany()  # for a stream: its first event(s)
            first = loop.time()
            await resp.read()
            return resp.status, first
    except Exception as exc:  # every failure is a data point, not a crash
        return type(exc).__name__, None


def _session(spec: dict[str, Any], connections: int) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=120, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=spec["timeout"]))


async def open_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """Requests at fixed times start + i/rate; warm-up requests are sent but not reported.
    With `targets` (paired), request i goes to target i mod len(targets); the result is per target."""
    rate, warmup, duration = spec["rate"], spec["warmup"], spec["duration"]
    targets = spec.get("targets") or [spec]
    body = spec["body"].encode()
    total = int(round((warmup + duration) * rate))
    loop = asyncio.get_running_loop()
    # (offset, latency, status, lag, target, time to the body's first bytes)
    samples: list[tuple[float, float, int | str, float, int, float | None]] = []
    async with _session(spec, spec["connections"]) as session:
        start = loop.time() + 0.05

        async def one(scheduled: float, index: int) -> None:
            lag = loop.time() - scheduled
            status, first = await _post(session, targets[index], body)
            ttfb = None if first is None else first - scheduled
            samples.append((scheduled - start, loop.time() - scheduled, status, lag, index, ttfb))

        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while i < total:
            due = start + i / rate
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and start + i / rate <= now:  # catch up: everything due leaves now
                task = asyncio.create_task(one(start + i / rate, i % len(targets)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
        if tasks:
            await asyncio.wait(set(tasks), timeout=spec["timeout"] + 5)
    if spec.get("targets"):
        n = len(targets)
        return {
            "per_target": [
                _open_result([s for s in samples if s[4] == k], warmup, rate / n, len(range(k, total, n)))
                for k in range(n)
            ]
        }
    return _open_result(samples, warmup, rate, total)


def _open_result(
    samples: list[tuple[float, float, int | str, float, int, float | None]], warmup: float, rate: float, total: int
) -> dict[str, Any]:
    measured = [s for s in samples if s[0] >= warmup - 1e-9]
    ok = [s for s in measured if s[2] == 200]
    errors = Counter(str(s[2]) for s in measured if s[2] != 200)
    unanswered = total - len(samples)
    if unanswered:
        errors["unanswered"] += unanswered
    last_done = max((s[0] + s[1] for s in measured), default=warmup)
    span = max(last_done - warmup, 1e-9)
    lags = sorted(s[3] for s in measured)
    return {  # one segment; the orchestrator pools the segments of a (path, rate)
        "sent": total - int(round(warmup * rate)),
        "ok": len(ok),
        "error_kinds": dict(errors),
        "span_s": span,
        "latencies_ms": [round(s[1] * 1000, 3) for s in ok],
        "ttfb_ms": [round(s[5] * 1000, 3) for s in ok if s[5] is not None],
        "send_lag_p99_ms": round((percentile(lags, 99) or 0) * 1000, 3),
        "requests_total": len(samples),
    }


async def closed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    """`workers` connections, each sending its next request as soon as the last one answered."""
    warmup, duration, workers = spec["warmup"], spec["duration"], spec["workers"]
    body = spec["body"].encode()
    loop = asyncio.get_running_loop()
    done: list[tuple[float, float, int | str]] = []  # (completion offset, latency, status)
    async with _session(spec, workers) as session:
        start = loop.time()
        stop = start + warmup + duration

        async def worker() -> None:
            while (sent := loop.time()) < stop:
                status, _first = await _post(session, spec, body)
                finished = loop.time()
                done.append((finished - start, finished - sent, status))

        await asyncio.gather(*(worker() for _ in range(workers)))
    window = [d for d in done if warmup <= d[0] <= warmup + duration]
    ok = [d for d in window if d[2] == 200]
    errors = Counter(str(d[2]) for d in window if d[2] != 200)
    return {
        "workers": workers,
        "ok": len(ok),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "throughput_rps": round(len(ok) / duration, 1),
        "latency_ms": latency_summary([d[1] * 1000 for d in ok]),
        "requests_total": len(done),
    }


def loadgen_main() -> None:
    spec = json.loads(sys.stdin.read())
    runner = open_loop if spec["kind"] == "open" else closed_loop
    print(json.dumps(asyncio.run(runner(spec))))


# --------------------------------------------------------------------------------------------
# Orchestration: servers under test, one load-generator process per measurement.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclasses.dataclass(frozen=True)
class Pinning:
    """`--pin`: the proxy under test alone on `server` CPUs; the fake upstream and the load
    generator on `client` CPUs. Unpinned, all share the 2 cores and a proxy near its capacity
    competes with the load for them, so its queueing at 200 streams/s is the machine's, not its own."""

    server: frozenset[int]
    client: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Pinning:
        """CPU lists from `S/C` (each comma-separated): the server's, then the clients', e.g. `1/0`."""
        server, _, client = text.partition("/")
        pinning = cls(
            frozenset(int(c) for c in server.split(",") if c.strip()),
            frozenset(int(c) for c in client.split(",") if c.strip()),
        )
        allowed = os.sched_getaffinity(0)
        if not pinning.server or not pinning.client or pinning.server & pinning.client:
            raise ValueError("two disjoint, non-empty CPU lists, e.g. 1/0")
        if not (pinning.server | pinning.client) <= allowed:
            raise ValueError(f"CPUs this process may use: {sorted(allowed)}")
        return pinning


class Processes:
    """Started servers, each in its own process group; `stop_all` ends every group."""

    def __init__(self, log_dir: Path, pinning: Pinning | None = None) -> None:
        self.log_dir = log_dir
        self.pinning = pinning
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        # The upstream inherits the client CPUs from this process (`main` pins itself to them).
        cpus = None if self.pinning is None or name == "upstream" else self.pinning.server
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.log_dir,  # not the repo: `python -m` would import codexgate from the current directory
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Set in the child before it runs anything: every thread and child it starts inherits it.
                preexec_fn=None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus),
            )
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self.procs.clear()


def http_post(url: str, headers: dict[str, str], body: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an env proxy
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with opener.open(request, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def wait_ready(procs: Processes, name: str, target: dict[str, Any], body: str, timeout: float = 60) -> None:
    """Until one request through `target` is answered 200 (and the server is still alive)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        proc = procs.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        try:
            status, _headers, content = http_post(target["url"], target["headers"], body, timeout=2)
            if status == 200:
                return
            last = f"HTTP {status}: {content[:200]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise SystemExit(f"{name} not ready after {timeout:.0f}s ({last}):\n{procs.log_tail(name)}")


def sanity_check(name: str, target: dict[str, Any], body: str) -> list[str]:
    """One request: 200, a Responses object the OpenAI SDK accepts, and codexgate's own headers."""
    problems = []
    status, headers, content = http_post(target["url"], target["headers"], body)
    if status != 200:
        return [f"{name}: HTTP {status}: {content[:200]!r}"]
    if headers.get("content-type", "").startswith("text/event-stream") and b"event: message_start" in content:
        # The translated kind's bare paths: Anthropic's own stream, passed through.
        if b"event: message_stop" not in content or b'"output_tokens"' not in content:
            return [f"{name}: an Anthropic stream without message_stop or usage: {content[-200:]!r}"]
        return []
    if headers.get("content-type", "").startswith("text/event-stream"):
        lines = content.split(b"\n")
        completed = [line[5:] for line in lines if line.startswith(b"data:") and b'"response.completed"' in line]
        if not completed:
            return [f"{name}: a stream without response.completed: {content[-200:]!r}"]
        content = json.dumps(json.loads(completed[-1])["response"]).encode()
    try:
        from openai.types.responses import Response

        parsed = Response.model_validate_json(content)
        if parsed.usage is None or parsed.usage.total_tokens <= 0:
            problems.append(f"{name}: response without usage")
    except ImportError:
        json.loads(content)
    except ValueError as exc:
        problems.append(f"{name}: not a valid Responses API object: {exc}")
    if name.startswith("codexgate") and headers.get("x-codexgate-decision") != "allowed":
        problems.append(f"{name}: x-codexgate-decision={headers.get('x-codexgate-decision')!r}, expected allowed")
    return problems


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK  # minus idle and iowait


def wait_for_quiet(max_wait: float, threshold_pct: float = QUIET_PCT) -> float:
    """Wait (at most `max_wait` s) until other processes use < threshold % of a core; returns their last %."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, own0, wall0 = machine_busy_seconds(), time.process_time(), time.monotonic()
        time.sleep(2)
        other = 100 * (machine_busy_seconds() - busy0 - (time.process_time() - own0)) / (time.monotonic() - wall0)
        if other < threshold_pct or time.monotonic() >= deadline:
            return round(other, 1)
        print(f"# bench: machine busy ({other:.0f}% of a core used by others); waiting", file=sys.stderr)


def run_loadgen(spec: dict[str, Any], server_pid: int, upstream_pid: int) -> dict[str, Any]:
    """One measurement in a fresh load-generator process, plus where the CPU went meanwhile:
    the server under test, the upstream, the load generator, and everything else on the machine."""
    limit = spec["warmup"] + spec["duration"] + spec["timeout"] + 60
    pids = [server_pid] if server_pid == upstream_pid else [server_pid, upstream_pid]
    cpu_before = [cpu_seconds(pid) for pid in pids]
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, own0, wall0 = machine_busy_seconds(), time.process_time(), time.monotonic()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_loadgen"],
        input=json.dumps(spec).encode(),
        capture_output=True,
        timeout=limit,
        check=False,
    )
    wall = time.monotonic() - wall0
    busy = machine_busy_seconds() - busy0
    own = time.process_time() - own0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"load generator failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    result = json.loads(done.stdout)
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    loadgen = children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
    result["cpu_s"] = {
        "wall": wall,
        "server": cpu[0],
        "upstream": cpu[-1],
        "loadgen": loadgen,
        "other": busy - sum(cpu) - loadgen - own,
    }
    return result


def cpu_fields(cpu_s: dict[str, float], requests: int) -> dict[str, float]:
    """Where the CPU went, in % of one core; server CPU per request over the whole measurement
    (warm-up included: an idle server uses ~nothing)."""
    wall = max(cpu_s["wall"], 1e-9)
    return {
        "server_cpu_us_per_req": round(cpu_s["server"] / max(requests, 1) * 1e6, 1),
        "server_cpu_pct": round(100 * cpu_s["server"] / wall, 1),
        "upstream_cpu_pct": round(100 * cpu_s["upstream"] / wall, 1),
        "loadgen_cpu_pct": round(100 * cpu_s["loadgen"] / wall, 1),
        "other_cpu_pct": round(100 * cpu_s["other"] / wall, 1),
    }


def merge_open(path: str, rate: float, segments: list[dict[str, Any]]) -> dict[str, Any]:
    """One open-loop result from the interleaved segments (rounds) of a path at a rate."""
    errors: Counter[str] = Counter()
    cpu_s: Counter[str] = Counter()
    for segment in segments:
        errors.update(segment["error_kinds"])
        cpu_s.update(segment["cpu_s"])
    ok = sum(s["ok"] for s in segments)
    return {
        "path": path,
        "rate": rate,
        "rounds": len(segments),
        "sent": sum(s["sent"] for s in segments),
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "achieved_rps": round(ok / max(sum(s["span_s"] for s in segments), 1e-9), 1),
        "latency_ms": latency_summary([x for s in segments for x in s["latencies_ms"]]),
        "ttfb_ms": latency_summary([x for s in segments for x in s.get("ttfb_ms", [])]),
        "round_p50_ms": [percentile(sorted(s["latencies_ms"]), 50) for s in segments],
        "send_lag_p99_ms": max(s["send_lag_p99_ms"] for s in segments),
        **cpu_fields(dict(cpu_s), sum(s["requests_total"] for s in segments)),
    }


def merge_closed(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One path's closed-loop result from its alternated rounds: the median round (by throughput),
    with every round's throughput and CPU per request beside it (`round_rps`, `round_cpu_us`)."""
    ordered = sorted(rounds, key=lambda r: r["throughput_rps"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["round_rps"] = [r["throughput_rps"] for r in rounds]
    median["round_cpu_us"] = [r["server_cpu_us_per_req"] for r in rounds]
    return median


def round_ratio(closed: dict[str, dict[str, Any]], field: str, a: str, b: str) -> dict[str, Any] | None:
    """`a`'s figure over `b`'s within each closed-loop round (measured back to back), as the median
    and the range of the rounds' ratios; None unless both paths ran."""
    if a not in closed or b not in closed:
        return None
    ratios = sorted(x / y for x, y in zip(closed[a][field], closed[b][field], strict=True) if y)
    if not ratios:
        return None
    return {"median": round(statistics.median(ratios), 2), "min": round(ratios[0], 2), "max": round(ratios[-1], 2)}


def spread(figure: dict[str, Any] | None) -> str:
    """A median with its rounds' range, for the summary table."""
    return "–" if not figure else f"{figure['median']:g} ({figure['min']:g}–{figure['max']:g})"


def round_difference(closed: dict[str, dict[str, Any]], field: str, a: str, b: str) -> dict[str, Any] | None:
    """`a`'s figure minus `b`'s within each closed-loop round, as the median and the range."""
    if a not in closed or b not in closed:
        return None
    diffs = sorted(x - y for x, y in zip(closed[a][field], closed[b][field], strict=True))
    return {"median": round(statistics.median(diffs), 1), "min": round(diffs[0], 1), "max": round(diffs[-1], 1)}


DISPATCH_FRAMES = ("AddonManager.", "traverse ", "Hook.args", "_GeneratorContextManager", "contextmanager.<locals>")


def _ours(frame: str) -> bool:
    """A frame of codexgate's own code (this repository, or a copy of the package elsewhere), not of
    the libraries in a venv (which may live inside the repository, as `./dev` puts it)."""
    where = frame.partition(" (")[2]
    path = where.rsplit(":", 1)[0]
    if "site-packages" in path or path.endswith(("/codexgate/master.py", "/codexgate/cli.py")):
        return False  # libraries, and the process entry point that every stack passes through
    return where.startswith(str(REPO) + "/") or "/codexgate/" in where


def _frame_name(frame: str) -> str:
    """`func (/abs/path/file.py:123)` -> `func (pkg/file.py)`, or `[codexgate] func (addons/x.py)` for ours."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    if _ours(frame):
        short = where[len(str(REPO)) + 1 :] if where.startswith(str(REPO) + "/") else where.rsplit("/codexgate/", 1)[1]
        return f"[codexgate] {func} ({short})"
    return f"{func} ({'/'.join(where.split('/')[-2:])})" if where else func


def _classify(frames: list[str]) -> tuple[str, str]:
    """(category, detail) of one sampled main-thread stack."""
    ours = [f for f in frames if _ours(f)]
    if ours:
        # The step that runs, not the wrappers around it (fail-closed guard, the Pipeline's dispatcher).
        steps = [f for f in ours if "fail_closed" not in f and "/pipeline.py" not in f]
        outer = steps[0] if steps else ours[0]
        return "codexgate addons", outer.partition(" (")[0]
    invoke = [i for i, f in enumerate(frames) if f.startswith("AddonManager.invoke_addon ")]
    if invoke and invoke[-1] + 1 < len(frames) and not frames[invoke[-1] + 1].startswith(DISPATCH_FRAMES):
        return "mitmproxy built-in addons", frames[invoke[-1] + 1].partition(" (")[0]
    if invoke or any(f.startswith(("AddonManager.", "ProxyConnectionHandler.handle_hook")) for f in frames):
        return "mitmproxy hook dispatch", ""
    return "proxy core (I/O, HTTP, layers, event loop)", ""


def py_spy_summary(raw_file: Path, cpu_us_per_req: float | None = None, top: int = 25) -> dict[str, Any]:
    """Where the proxy's main thread spends its time, from py-spy's collapsed stacks ("raw", recorded with
    --threads --full-filenames). Shares are % of the main thread's busy samples (waiting in select()
    excluded); `us_per_req` spreads the process's measured CPU per request over them (an estimate:
    it also holds the kernel's and other threads' CPU)."""
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    addons: Counter[str] = Counter()
    idle = 0
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames.pop(0).partition(": ")[2] if frames[0].startswith("thread (") else "MainThread"
        threads[thread] += count
        if thread != "MainThread" or not frames:
            continue
        if frames[-1].startswith(("EpollSelector.select ", "select ")):
            idle += count
            continue
        names = [_frame_name(frame) for frame in frames]
        own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
        category, detail = _classify(frames)
        categories[category] += count
        if detail and category == "codexgate addons":
            addons[detail] += count
    total = max(sum(categories.values()), 1)

    def rows(counter: Counter[str], limit: int | None = top) -> list[dict[str, Any]]:
        out = []
        for name, n in counter.most_common(limit):
            row: dict[str, Any] = {"name": name, "pct": round(100 * n / total, 1)}
            if cpu_us_per_req:
                row["us_per_req"] = round(cpu_us_per_req * n / total)
            out.append(row)
        return out

    return {
        "threads": dict(threads),
        "main_busy_samples": total,
        "main_idle_samples": idle,
        "categories": rows(categories, None),
        "codexgate_by_addon": rows(addons),
        "self": rows(own),
        "inclusive_codexgate": [r for r in rows(inclusive, None) if r["name"].startswith("[codexgate] ")][:top],
    }


def profiled_loadgen(
    spec: dict[str, Any], pids: tuple[int, int], profile_dir: Path | None, name: str, py_spy: str
) -> dict[str, Any]:
    """`run_loadgen`, with py-spy sampling the server `pid` meanwhile when `profile_dir` is given."""
    if profile_dir is None:
        return run_loadgen(spec, *pids)
    profile_dir.mkdir(parents=True, exist_ok=True)
    raw = profile_dir / f"{name}.raw.txt"
    seconds = str(int(spec["warmup"] + spec["duration"]))
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pids[0]), "--format", "raw", "--rate", "250", "--nonblocking"]
        + ["--threads", "--full-filenames", "--duration", seconds, "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        result = run_loadgen(spec, *pids)
    finally:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(spy.pid, signal.SIGKILL)
            spy.wait()
    if raw.exists():
        cpu_us = cpu_fields(result["cpu_s"], result["requests_total"])["server_cpu_us_per_req"]
        result["profile"] = py_spy_summary(raw, cpu_us)
        (profile_dir / f"{name}.summary.json").write_text(json.dumps(result["profile"], indent=1))
    return result


def policy_text(upstream_port: int, limits: bool, guarded: bool = False) -> str:
    """The bench policy: one OpenAI-kind provider (the fake upstream), one priced model, one team.

    With `limits`: budgets and rate limits at org, team and model level (far above what the bench
    uses), so every request also reserves and settles in the counter store (4 counters).
    With `guarded`: the guardrails section (every built-in detector, action log)."""
    org = team = model = ""
    if limits:
        org = ", budgets: [{limit_usd: 1000000, period: 1M}]"
        team = ", budgets: [{limit_usd: 1000000, period: 1d}], rate_limits: [{requests: 100000000, per: 1m}]"
        model = "\n    rate_limits: [{tokens: 1000000000, per: 1m}]"
    return f"""# Generated by bench/bench_overhead.py
gateway:
  intercept_hosts: [api.openai.com]
  guard_hosts: [chatgpt.com]
providers:
  openai:
    kind: openai
    base_url: http://127.0.0.1:{upstream_port}/v1
    keys:
      - value: env:{UPSTREAM_KEY_ENV}
  anthropic:
    kind: anthropic
    base_url: http://127.0.0.1:{upstream_port}
    keys:
      - value: env:{UPSTREAM_KEY_ENV}
models:
  {MODEL}:
    routes: [{{provider: openai}}]
    price: {{input_per_mtok: 1.25, output_per_mtok: 10.0, cached_input_per_mtok: 0.125}}{model}
  {TRANSLATED_MODEL}:
    routes: [{{provider: anthropic}}]
    price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}{model}
orgs:
  bench: {{description: Benchmark{org}}}
teams:
  bench: {{org: bench, description: Benchmark{team}}}
keys: []
""" + ("guardrails: {action: log}\n" if guarded else "")


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for module in ("mitmproxy", "aiohttp"):
        try:
            if module == "mitmproxy":
                from mitmproxy.version import VERSION as version
            else:
                from importlib.metadata import version as dist_version

                version = dist_version(module)
            versions[module] = version
        except Exception:
            versions[module] = "unknown"
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        where = subprocess.run(
            [sys.executable, "-c", "import codexgate; print(codexgate.__file__)"],
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        source = Path(where).resolve().parent.parent if where else REPO
        git = ["git", "-C", str(source)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0 and source == REPO:
            commit = head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
        else:
            commit = f"imported from {source}"
    return {
        "codexgate_commit": commit,
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def added_ttfb(results: dict[tuple[str, float], Any], path: str, rate: float) -> float | None:
    """Time to the body's first bytes, p50, over direct's at the same rate."""
    mine, direct = results.get((path, rate)), results.get(("direct", rate))
    if not mine or not direct or mine["ttfb_ms"]["p50"] is None or direct["ttfb_ms"]["p50"] is None:
        return None
    return float(mine["ttfb_ms"]["p50"] - direct["ttfb_ms"]["p50"])


def added(results: dict[tuple[str, float], Any], path: str, rate: float, pct: str) -> float | None:
    mine = results.get((path, rate))
    direct = results.get(("direct", rate))
    if not mine or not direct:
        return None
    a, b = mine["latency_ms"][pct], direct["latency_ms"][pct]
    return None if a is None or b is None else a - b


def key_ratio(
    open_results: dict[Any, Any], rate: float, gateway: str = "codexgate", base: str = "mitmdump"
) -> float | None:
    gate, bare = added(open_results, gateway, rate, "p50"), added(open_results, base, rate, "p50")
    if gate is None or bare is None or bare <= 0:
        return None
    return gate / bare


def round_ratios(
    open_results: dict[Any, Any], rate: float, gateway: str = "codexgate", base: str = "mitmdump"
) -> list[float]:
    """The key ratio of each interleaved round on its own: how much it moves from round to round."""
    try:
        direct, bare, gate = (open_results[(p, rate)]["round_p50_ms"] for p in ("direct", base, gateway))
    except KeyError:
        return []
    return [
        round((g - d) / (b - d), 2)
        for d, b, g in zip(direct, bare, gate, strict=False)
        if None not in (d, b, g) and b - d > 0
    ]


def limits_cost(open_results: dict[Any, Any], rate: float, gateway: str) -> tuple[float, list[float]] | None:
    """What budgets and rate limits add: the limits path's p50 minus plain codexgate's (same run),
    overall and per interleaved round."""
    try:
        limited, plain = open_results[(gateway, rate)], open_results[("codexgate", rate)]
    except KeyError:
        return None
    a, b = limited["latency_ms"]["p50"], plain["latency_ms"]["p50"]
    if a is None or b is None:
        return None
    rounds = [
        round(x - y, 2)
        for x, y in zip(limited["round_p50_ms"], plain["round_p50_ms"], strict=False)
        if None not in (x, y)
    ]
    return a - b, rounds


def markdown_report(report: dict[str, Any]) -> str:
    cfg = report["config"]
    open_results = {(r["path"], r["rate"]): r for r in report["open_loop"]}
    lines = [
        f"Open loop: {cfg['duration']:g} s per rate and path, in {cfg['rounds']} interleaved rounds, each after "
        f"{cfg['warmup']:g} s warm-up. Latency in ms from "
        "the scheduled send time; added = this path minus direct at the same rate; server CPU = the proxy process "
        "(the upstream for direct) per request; other load = CPU used meanwhile by processes outside the bench, "
        "in % of one core.",
        "",
        "| path | req/s | achieved | ok | errors | p50 | p90 | p99 | added p50 | added p99 | first byte p50 "
        "| added first byte p50 | server CPU µs/req | other load % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["open_loop"]:
        lat = r["latency_ms"]
        is_direct = r["path"] == "direct"
        lines.append(
            f"| {r['path']} | {r['rate']:g} | {r['achieved_rps']:.1f} | {r['ok']} | {r['errors']} "
            f"| {fmt(lat['p50'])} | {fmt(lat['p90'])} | {fmt(lat['p99'])} "
            f"| {'–' if is_direct else fmt(added(open_results, r['path'], r['rate'], 'p50'))} "
            f"| {'–' if is_direct else fmt(added(open_results, r['path'], r['rate'], 'p99'))} "
            f"| {fmt(r['ttfb_ms']['p50'])} "
            f"| {'–' if is_direct else fmt(added_ttfb(open_results, r['path'], r['rate']))} "
            f"| {fmt(r['server_cpu_us_per_req'], 0)} | {fmt(r['other_cpu_pct'], 0)} |"
        )
    if report["open_loop"]:
        lag = max(r["send_lag_p99_ms"] for r in report["open_loop"])
        lines += ["", f"Load generator send lag (actual send − scheduled), worst p99 over all runs: {lag:.2f} ms."]
    if report["closed_loop"]:
        first = report["closed_loop"][0]
        lines += [
            "",
            f"Closed loop (max throughput): {first['workers']} concurrent keep-alive workers, "
            f"{cfg['closed_duration']:g} s after {cfg['warmup']:g} s warm-up, {len(first['round_rps'])} rounds "
            "in alternated order; each row is the path's median round (by max req/s). CPU columns in % of one core.",
            "",
            "| path | max req/s | rounds' req/s | p50 ms | p99 ms | errors | server CPU µs/req | rounds' µs/req "
            "| server CPU | upstream CPU | load-gen CPU | other load |",
            "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for r in report["closed_loop"]:
            lat = r["latency_ms"]
            lines.append(
                f"| {r['path']} | {r['throughput_rps']:.0f} | {', '.join(f'{x:.0f}' for x in r['round_rps'])} "
                f"| {fmt(lat['p50'])} | {fmt(lat['p99'])} | {r['errors']} "
                f"| {fmt(r['server_cpu_us_per_req'], 0)} | {', '.join(f'{x:.0f}' for x in r['round_cpu_us'])} "
                f"| {fmt(r['server_cpu_pct'], 0)} "
                f"| {fmt(r['upstream_cpu_pct'], 0)} | {fmt(r['loadgen_cpu_pct'], 0)} | {fmt(r['other_cpu_pct'], 0)} |"
            )
        for label, figure, unit in (
            ("max req/s codexgate / mitmdump", report.get("throughput_ratio_rounds"), "×"),
            ("chain CPU (codexgate − mitmproxy-core), µs per request", report.get("closed_chain_cpu_us_per_req"), ""),
        ):
            if figure:
                lines.append(
                    f"\n{label}, within each round: median **{figure['median']:g}{unit}** "
                    f"(rounds {figure['min']:g}–{figure['max']:g}{unit})"
                )
    rate = cfg["ratio_rate"]
    gateways = dict.fromkeys(r["path"] for r in report["open_loop"] if r["path"].startswith("codexgate"))
    for gateway in gateways or ["codexgate"]:
        ratio = key_ratio(open_results, rate, gateway)
        if ratio is None:
            if gateway == "codexgate":
                lines += ["", f"Key ratio at {rate:g} req/s: not computable (needs direct, mitmdump and codexgate)."]
            continue
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        gate, bare = added(open_results, gateway, rate, "p50"), added(open_results, "mitmdump", rate, "p50")
        per_round = ", ".join(f"{r:.2f}" for r in round_ratios(open_results, rate, gateway))
        lines += [
            "",
            f"**Key ratio** ({gateway} added p50) / (bare mitmdump added p50) at {rate:g} req/s: "
            f"{fmt(gate)} ms / {fmt(bare)} ms = **{ratio:.2f}** (target ≤ {TARGET_RATIO}: {verdict}; "
            f"per round: {per_round or '–'})",
        ]
        core_ratio = key_ratio(open_results, rate, gateway, base="mitmproxy-core")
        if core_ratio is not None:
            core = added(open_results, "mitmproxy-core", rate, "p50")
            core_rounds = ", ".join(f"{r:.2f}" for r in round_ratios(open_results, rate, gateway, "mitmproxy-core"))
            lines.append(
                f"\nThe chain on its own: ({gateway} added p50) / (mitmproxy-core added p50, the same master "
                f"without the chain): {fmt(gate)} ms / {fmt(core)} ms = **{core_ratio:.2f}** (per round: "
                f"{core_rounds or '–'})"
            )
    for gateway in gateways:
        if not gateway.endswith("-limits"):
            continue
        cost = limits_cost(open_results, rate, gateway)
        if cost is None:
            continue
        overall, rounds = cost
        middle = f"{statistics.median(rounds):+.2f}" if rounds else "–"
        per_round = ", ".join(f"{r:+.2f}" for r in rounds) or "–"
        lines.append(
            f"\n**Limits cost** ({gateway} p50 − codexgate p50) at {rate:g} req/s: **{overall:+.2f} ms** "
            f"(target for the Redis store ≤ +{TARGET_LIMITS_MS} ms; median of the per-round differences "
            f"{middle}; per round: {per_round})"
        )
    paired = report.get("paired")
    if paired:
        first = paired["paths"][0]
        base = paired["latency_ms"][0]["p50"]
        lines.append(
            f"\nPaired: requests take turns between {', '.join(paired['paths'])}, {paired['rate_each']:.4g} req/s to "
            f"each, {paired['duration']:g} s in {paired['rounds']} rounds; {first} p50 {fmt(base)} ms."
        )
        for k, path in enumerate(paired["paths"][1:], start=1):
            rounds = paired["round_differences_ms"][k]
            middle = f"{statistics.median(rounds):+.2f}" if rounds else "–"
            difference = paired["p50_difference_ms"][k]
            label = "Limits cost, paired" if path.endswith("-limits") else "Paired difference"
            target = f"target for the Redis store ≤ +{TARGET_LIMITS_MS} ms; " if path.endswith("-limits") else ""
            lines.append(
                f"\n**{label}** ({path} p50 − {first} p50): **{'–' if difference is None else f'{difference:+.2f}'} "
                f"ms** ({target}p50 {fmt(paired['latency_ms'][k]['p50'])} ms; ok {paired['ok'][k]}, errors "
                f"{sum(paired['errors'][k].values())}; median of the per-round differences {middle}; per round: "
                f"{', '.join(f'{r:+.2f}' for r in rounds) or '–'})"
            )
    for name, profile in report.get("profiles", {}).items():
        lines += [
            "",
            f"Profile {name} (py-spy, main thread, {profile['main_busy_samples']} busy samples; µs/req = share × "
            "measured CPU/req, an estimate):",
            "",
            "| where | share | µs/req |",
            "|---|---:|---:|",
        ]
        lines += [f"| {r['name']} | {r['pct']:.1f}% | {r.get('us_per_req', '–')} |" for r in profile["categories"]]
        lines += [
            f"| &nbsp;&nbsp;{r['name']} | {r['pct']:.1f}% | {r.get('us_per_req', '–')} |"
            for r in profile["codexgate_by_addon"][:12]
        ]
    busy = [r for r in report["open_loop"] + report["closed_loop"] if r["other_cpu_pct"] > QUIET_PCT]
    if busy:
        lines.append(
            f"\nWARNING: the machine was not quiet: other processes used > {QUIET_PCT:g}% of a core during "
            f"{len(busy)} run(s) (up to {max(r['other_cpu_pct'] for r in busy):.0f}%); compare with care."
        )
    for problem in report.get("problems", []):
        lines.append(f"\nWARNING: {problem}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Latency/throughput overhead: direct vs mitmdump vs codexgate.")
    parser.add_argument(
        "--kinds",
        default="sse,json",
        help="request kinds, measured one after the other (each on all paths, interleaved): sse (streamed, "
        "the bare proxies with stream_large_bodies=1), json (not streamed), translated (streamed from an "
        "Anthropic-shaped upstream: codexgate translates it, the bare proxies pass it through)",
    )
    parser.add_argument("--sse-events", type=int, default=50, help="events per streamed answer")
    parser.add_argument("--rates", default="50,200", help="open-loop rates in req/s, comma separated")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per rate and path (all rounds)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="split each open-loop measurement into this many interleaved rounds"
    )
    parser.add_argument("--warmup", type=float, default=1, help="unreported warm-up seconds before each measurement")
    parser.add_argument("--closed-duration", type=float, default=5, help="measured seconds of each closed loop")
    parser.add_argument(
        "--closed-rounds",
        type=int,
        default=3,
        help="closed loops per path, in alternated order; the max-rate ratio is the median of the rounds' ratios",
    )
    parser.add_argument("--workers", type=int, default=16, help="closed-loop concurrent workers (connections)")
    parser.add_argument("--no-closed", action="store_true", help="skip the closed-loop (max throughput) runs")
    parser.add_argument("--connections", type=int, default=64, help="open-loop connection pool size (keep-alive)")
    parser.add_argument("--timeout", type=float, default=10, help="per-request timeout in seconds")
    parser.add_argument(
        "--paths",
        default=",".join(DEFAULT_PATHS),
        help=f"comma-separated, from: {','.join(PATHS)} (codexgate-limits: the same gateway with budgets "
        "and rate limits in the policy, so each request also reserves/settles in the counter store)",
    )
    parser.add_argument("--ratio-rate", type=float, default=200, help="rate at which the key ratio is taken")
    parser.add_argument("--body-bytes", type=int, default=0, help="pad the request's input to about this size")
    parser.add_argument(
        "--body-file",
        help="send this JSON request body instead (its model replaced, not streamed), e.g. a real Codex turn: "
        "tests/fixtures/codex_request_tool_round_trip.json",
    )
    parser.add_argument(
        "--checks-off",
        action="store_true",
        help="also measure codexgate~checks-off: the gateway without the intake limits and upstream bounds "
        "(codexgate_intake_limits=false, codexgate_upstream_bounds=false), for --paired codexgate~checks-off,codexgate",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=60, help="wait up to this long for other load to drop before measuring"
    )
    parser.add_argument(
        "--gateway-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra mitmproxy/codexgate option for the gateway (repeatable), for A/B runs: "
        "e.g. codexgate_audit=false, termlog_verbosity=warn",
    )
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=6,
        help="measurements redone (per run, in total) when other processes used > 25%% of a core meanwhile",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE[,...]",
        help="one more gateway path, codexgate~LABEL, with these options; measured interleaved with the others, "
        "for A/B attribution (e.g. noaudit:codexgate_audit=false)",
    )
    parser.add_argument(
        "--paired",
        metavar="A,B",
        help="also measure these paths (from --paths or variants) in one open loop whose requests take turns "
        "between them, and report each p50 minus A's (e.g. codexgate,codexgate~redis-limits)",
    )
    parser.add_argument(
        "--paired-rate",
        type=float,
        help="req/s to EACH path of --paired (default: --ratio-rate divided among them, so the machine "
        "carries the same load as one path at --ratio-rate)",
    )
    parser.add_argument(
        "--paired-duration", type=float, help="measured seconds of the paired loop (default: --duration)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write all results as JSON ('-' for stdout)")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the proxies with py-spy during the last open-loop round at --ratio-rate and during the "
        "closed loop (collapsed stacks + summary into DIR)",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy", help="py-spy executable")
    parser.add_argument(
        "--store",
        metavar="URL",
        help="also measure codexgate~redis (and codexgate~redis-limits with codexgate-limits in --paths): the "
        "same gateways with this counter store (codexgate_store=URL, e.g. redis://127.0.0.1:6390/0)",
    )
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary dir (logs, policy, accounting)")
    parser.add_argument(
        "--pin",
        metavar="S/C",
        help="CPU affinity: each proxy under test on CPUs S, the fake upstream, the load generator and this "
        "script on CPUs C (comma-separated lists, disjoint), e.g. 1/0: a proxy near its capacity then queues "
        "on its own core, not behind the load it is measured with",
    )
    args = parser.parse_args(argv)
    try:
        args.pinning = Pinning.parse(args.pin) if args.pin else None
    except ValueError as exc:
        parser.error(f"--pin {args.pin}: {exc}")
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kind_list or not set(args.kind_list) <= set(KINDS):
        parser.error(f"--kinds: one or more of {', '.join(KINDS)}")
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.ratio_rate not in args.rate_list:
        args.rate_list.append(args.ratio_rate)
    if args.profile and not (shutil.which(args.py_spy) or Path(args.py_spy).is_file()):
        parser.error(f"--profile needs py-spy (pip install py-spy); not found: {args.py_spy}")
    args.path_list = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(args.path_list) - set(PATHS)
    args.path_list = [p for p in PATHS if p in args.path_list]
    if unknown or "direct" not in args.path_list:
        parser.error(f"--paths: choose from {PATHS}; direct is always needed (the baseline)")
    args.variant_options = {}
    if args.checks_off:
        args.variant.append("checks-off:codexgate_intake_limits=false,codexgate_upstream_bounds=false")
    if args.store:
        args.variant.append(f"redis:codexgate_store={args.store}")
        if "codexgate-limits" in args.path_list:
            args.variant.append(f"redis-limits:codexgate_store={args.store}")
    for variant in args.variant:
        label, _, options = variant.partition(":")
        if not label or not options or "=" not in options:
            parser.error(f"--variant {variant!r}: expected LABEL:NAME=VALUE[,NAME=VALUE...]")
        args.variant_options[f"codexgate~{label}"] = [o for o in options.split(",") if o]
        args.path_list.append(f"codexgate~{label}")
    if args.paired:
        args.paired = [p.strip() for p in args.paired.split(",")]
        if (
            len(args.paired) < 2
            or len(set(args.paired)) != len(args.paired)
            or not set(args.paired) <= set(args.path_list)
        ):
            parser.error(f"--paired: two or more different paths of this run, from {', '.join(args.path_list)}")
    args.paired_rate = args.paired_rate or args.ratio_rate / len(args.paired or [1, 1])
    args.paired_duration = args.paired_duration or args.duration
    return args


def anthropic_body(size: int) -> str:
    """What a client of Anthropic's API sends: the bare proxies' request in the translated kind."""
    text = "Say hello." if size <= 0 else "Say hello. " + "x" * max(0, size - 60)
    return compact_json(
        {"model": TRANSLATED_MODEL, "max_tokens": 1024, "stream": True, "messages": [{"role": "user", "content": text}]}
    )


def upstream_request(key: str, body: str, translated: bool, size: int = 0) -> tuple[dict[str, str], str, str]:
    """(headers, path, body) of a request sent to the upstream itself: what the direct path and
    the bare proxies send (`body`, or for the translated kind Anthropic's own request)."""
    if translated:
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "Content-Type": "application/json"}
        return headers, "/v1/messages", anthropic_body(size)
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, "/v1/responses", body


def compact_json(value: Any) -> str:
    """JSON as clients write a request body: Codex (serde_json), the Python SDK (httpx) and the
    Node SDK (`JSON.stringify`) all write it compact, UTF-8 unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def request_body(size: int, body_file: str | None = None, stream: bool = False, model: str = MODEL) -> str:
    if body_file:
        return compact_json(dict(json.loads(Path(body_file).read_text()), model=model, stream=stream))
    body: dict[str, Any] = {"model": model, "input": "Say hello.", "stream": stream}
    if size > 0:
        body["input"] = "Say hello. " + "x" * max(0, size - 60)
    return compact_json(body)


def start_mitmdump(
    procs: Processes,
    work: Path,
    upstream_base: str,
    port: int,
    env: dict[str, str],
    stream: bool = False,
    name: str = "mitmdump",
) -> None:
    """Bare mitmdump in reverse mode, no addons (its own confdir keeps ~/.mitmproxy untouched);
    with `stream`, every body is streamed as it arrives (stream_large_bodies=1). `mitmdump-O`:
    run by `python -O`."""
    confdir = work / f"{name}-conf"
    confdir.mkdir(exist_ok=True)
    flags = ["-O"] if name.endswith("-O") else []
    procs.start(
        name,
        [sys.executable, *flags, "-c", "from mitmproxy.tools.main import mitmdump; mitmdump()"]
        + ["--mode", f"reverse:{upstream_base}@127.0.0.1:{port}"]
        + ["--set", "flow_detail=0", "--set", "connection_strategy=lazy", "--set", f"confdir={confdir}"]
        + (["--set", "stream_large_bodies=1"] if stream else []),
        env,
    )


def start_proxy_core(
    procs: Processes, work: Path, upstream_base: str, port: int, env: dict[str, str], stream: bool = False
) -> None:
    """codexgate's own master without the codexgate chain (the mitmproxy addons it keeps, no
    others), in reverse mode, run with -O as `codexgate up` runs the master: what the chain itself
    adds is codexgate minus this path."""
    procs.start(
        "mitmproxy-core",
        [sys.executable, "-O", "-c", "from codexgate.master import main; main(with_chain=False)"]
        + ["--mode", f"reverse:{upstream_base}@127.0.0.1:{port}"]
        + ["--set", "connection_strategy=lazy", "--set", f"confdir={work / 'core-conf'}"]
        + (["--set", "stream_large_bodies=1"] if stream else []),
        env,
    )


def start_codexgate(
    procs: Processes,
    work: Path,
    name: str,
    upstream_port: int,
    env: dict[str, str],
    options: list[str],
    python: str = sys.executable,
) -> str:
    """`codexgate up` with the bench policy and a fresh virtual key; returns the key.

    `options` (NAME=VALUE) go into the gateway's confdir/config.yaml, which mitmproxy reads at start:
    for A/B runs that switch one part of the chain off (e.g. codexgate_audit=false). `python`: the
    interpreter whose installed codexgate runs (another checkout's venv, for a before/after pair)."""
    policy = work / f"{name}-policy.yaml"
    policy.write_text(
        policy_text(upstream_port, limits=name.endswith("-limits"), guarded="-guarded" in name), encoding="utf-8"
    )
    cli = [python, "-m", "codexgate.cli"]
    created = subprocess.run(
        cli
        + ["keys", "create", "--policy", str(policy), "--name", "bench", "--team", "bench"]
        + ["--models", MODEL, TRANSLATED_MODEL],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        raise SystemExit(f"codexgate keys create failed:\n{created.stderr}")
    data_dir = work / f"{name}-data"
    if options:
        (data_dir / "mitmproxy").mkdir(parents=True, exist_ok=True)
        # YAML 1.1 (mitmproxy's config file) reads off/on/yes/no as booleans: a word option such as
        # codexgate_wal_fsync=off must stay the string.
        words = {"off", "on", "yes", "no", "y", "n"}
        lines = [
            f"{k.strip()}: " + (json.dumps(v.strip()) if v.strip().lower() in words else v.strip())
            for k, _, v in (o.partition("=") for o in options)
        ]
        (data_dir / "mitmproxy" / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    up = [*cli, "up", "--policy", str(policy), "--data-dir", str(data_dir)]
    if name.endswith("-checks"):
        up.append("--python-checks")
    up += ["--proxy-port", str(free_port()), "--gateway-port", str(procs.ports[name])]
    help_text = subprocess.run(
        [*cli, "up", "--help"], env=env, cwd=work, capture_output=True, text=True, check=False
    ).stdout
    if "--metrics-port" in help_text:
        up += ["--metrics-port", str(free_port())]  # metrics on, as by default, but on a free port
    procs.start(name, up, env)
    return created.stdout.splitlines()[0].strip()


def check_accounting(work: Path, name: str) -> tuple[dict[str, int], list[str]]:
    """The gateway really governed: one accounting line per request, forwarded, with usage."""
    accounting = work / f"{name}-data" / "accounting.jsonl"
    lines = accounting.read_text().splitlines() if accounting.exists() else []
    forwarded = sum(1 for line in lines if '"decision":"forwarded"' in line and '"usage":{' in line)
    problems = [] if lines and forwarded == len(lines) else [f"{name}: {forwarded} of {len(lines)} accounted ok"]
    return {"records": len(lines), "forwarded_with_usage": forwarded}, problems


def measure_paired(
    args: argparse.Namespace,
    targets: dict[str, dict[str, Any]],
    measure: Callable[[dict[str, Any], str], dict[str, Any]],
    spec_for: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """The paired measurement: requests take turns between the paths, `--paired-rate` req/s to each,
    in `--rounds` rounds; each path's p50 minus the first's, overall and per round."""
    paths = args.paired
    latencies: list[list[float]] = [[] for _ in paths]
    round_p50: list[list[float | None]] = [[] for _ in paths]
    errors: list[Counter[str]] = [Counter() for _ in paths]
    for _round in range(args.rounds):
        spec = spec_for(
            paths[0],
            kind="open",
            targets=[{k: targets[name][k] for k in ("url", "headers")} for name in paths],
            rate=len(paths) * args.paired_rate,
            duration=args.paired_duration / args.rounds,
            warmup=args.warmup,
            connections=args.connections,
        )
        result = measure(spec, paths[0])
        for k, part in enumerate(result["per_target"]):
            latencies[k] += part["latencies_ms"]
            round_p50[k].append(percentile(sorted(part["latencies_ms"]), 50))
            errors[k].update(part["error_kinds"])
    summaries = [latency_summary(values) for values in latencies]
    base = summaries[0]["p50"]
    paired = {
        "paths": list(paths),
        "rate_each": args.paired_rate,
        "rounds": args.rounds,
        "duration": args.paired_duration,
        "ok": [len(values) for values in latencies],
        "errors": [dict(e) for e in errors],
        "latency_ms": summaries,
        "round_p50_ms": round_p50,
        "p50_difference_ms": [
            None if base is None or summary["p50"] is None else round(summary["p50"] - base, 3) for summary in summaries
        ],
        "round_differences_ms": [
            [round(y - x, 3) for x, y in zip(round_p50[0], values, strict=True) if x is not None and y is not None]
            for values in round_p50
        ],
    }
    print(
        f"# paired at {args.paired_rate:g} req/s each: "
        + ", ".join(f"{path} p50 {fmt(summary['p50'])} ms" for path, summary in zip(paths, summaries, strict=True)),
        file=sys.stderr,
    )
    return paired


def run_all(
    args: argparse.Namespace,
    procs: Processes,
    work: Path,
    body: str,
    report: dict[str, Any],
    stream: bool = False,
    translated: bool = False,
) -> None:
    """Every path of one kind. `translated`: codexgate is asked for a model it routes to the
    upstream's Anthropic-shaped API, the other paths send Anthropic's own request there."""
    upstream_key = "sk-bench-upstream-" + os.urandom(8).hex()
    env = {**os.environ, UPSTREAM_KEY_ENV: upstream_key, "PYTHONUNBUFFERED": "1"}
    procs.ports = {name: free_port() for name in ("upstream", *args.path_list)}
    upstream_cmd = [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(procs.ports["upstream"])]
    procs.start("upstream", upstream_cmd + ["--sse-events", str(args.sse_events)], env)
    upstream_base = f"http://127.0.0.1:{procs.ports['upstream']}"
    upstream_headers, upstream_path, upstream_body = upstream_request(upstream_key, body, translated, args.body_bytes)
    targets: dict[str, dict[str, Any]] = {}
    for name in args.path_list:
        if name == "direct":
            targets[name] = {"url": f"{upstream_base}{upstream_path}", "headers": upstream_headers,
                             "server": "upstream", "body": upstream_body}  # fmt: skip
            continue
        if name in ("mitmdump", "mitmdump-O", "mitmproxy-core"):
            if name == "mitmproxy-core":
                start_proxy_core(procs, work, upstream_base, procs.ports[name], env, stream)
            else:
                start_mitmdump(procs, work, upstream_base, procs.ports[name], env, stream, name)
            headers, path, path_body = upstream_headers, upstream_path, upstream_body
        else:
            options = args.gateway_set + args.variant_options.get(name, [])
            key = start_codexgate(procs, work, name, procs.ports["upstream"], env, options)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            path, path_body = "/v1/responses", body
        targets[name] = {
            "url": f"http://127.0.0.1:{procs.ports[name]}{path}",
            "headers": headers,
            "server": name,
            "body": path_body,
        }
    for name, target in targets.items():
        wait_ready(procs, target["server"], target, target["body"])
        report["problems"] += sanity_check(name, target, target["body"])
    print(f"# bench: servers ready ({', '.join(targets)}); logs in {work}", file=sys.stderr)
    report["other_load_at_start_pct"] = wait_for_quiet(args.quiet_wait)

    def pids_of(name: str) -> tuple[int, int]:
        return procs.procs[targets[name]["server"]].pid, procs.procs["upstream"].pid

    retries_left = args.busy_retries

    def measure(spec: dict[str, Any], name: str, profile_as: str | None = None) -> dict[str, Any]:
        """One measurement; redone (a bounded number of times per run) when other processes disturbed it.
        With `profile_as` (and --profile), py-spy samples the server meanwhile."""
        nonlocal retries_left
        profile_dir = Path(args.profile) if args.profile and profile_as and name != "direct" else None
        while True:
            result = profiled_loadgen(spec, pids_of(name), profile_dir, profile_as or name, args.py_spy)
            if "profile" in result:
                report.setdefault("profiles", {})[profile_as] = result.pop("profile")
            other = 100 * result["cpu_s"]["other"] / max(result["cpu_s"]["wall"], 1e-9)
            if other <= QUIET_PCT or retries_left <= 0:
                return result
            retries_left -= 1
            report["busy_retries"] = report.get("busy_retries", 0) + 1
            print(
                f"# bench: {name} disturbed ({other:.0f}% of a core used by others); measuring again", file=sys.stderr
            )
            wait_for_quiet(min(args.quiet_wait, 30))

    def spec_for(name: str, **extra: Any) -> dict[str, Any]:
        target = targets[name]
        # A paired loop sends its first path's body to every path: pair paths of one shape (codexgate's).
        return {"url": target["url"], "headers": target["headers"], "body": target["body"], "timeout": args.timeout,
                **extra}  # fmt: skip

    for rate in args.rate_list:
        segments: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _round in range(args.rounds):  # interleaved, so slow drifts of the machine hit every path alike
            for name in targets:
                spec = spec_for(
                    name,
                    kind="open",
                    rate=rate,
                    duration=args.duration / args.rounds,
                    warmup=args.warmup,
                    connections=args.connections,
                )
                last = _round == args.rounds - 1 and rate == args.ratio_rate
                segments[name].append(measure(spec, name, f"{name}-open{rate:g}" if last else None))
        for name in targets:
            result = merge_open(name, rate, segments[name])
            report["open_loop"].append(result)
            lat = result["latency_ms"]
            print(
                f"# open   {name:16s} {rate:5.0f} req/s: p50 {fmt(lat['p50'])} p99 {fmt(lat['p99'])} ms, "
                f"achieved {result['achieved_rps']:.1f}, errors {result['errors']}",
                file=sys.stderr,
            )
    if args.paired:
        report["paired"] = measure_paired(args, targets, measure, spec_for)
    closed_rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for round_number in range(0 if args.no_closed else args.closed_rounds):
        # Alternated order (forward, then backward): the machine's drift between one measurement and
        # the next moves the paths of a round alike, and the ratios are taken within each round.
        order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
        for name in order:
            duration = args.closed_duration
            spec = spec_for(name, kind="closed", duration=duration, warmup=args.warmup, workers=args.workers)
            last = round_number == args.closed_rounds - 1
            result = measure(spec, name, f"{name}-closed" if last else None)
            result.update(path=name, **cpu_fields(result["cpu_s"], result["requests_total"]))
            closed_rounds[name].append(result)
            print(
                f"# closed {name:16s} {args.workers} workers, round {round_number + 1}: "
                f"{result['throughput_rps']:.0f} req/s, errors {result['errors']}",
                file=sys.stderr,
            )
    for rounds in closed_rounds.values():
        if rounds:
            report["closed_loop"].append(merge_closed(rounds))
    for name in targets:
        options = args.gateway_set + args.variant_options.get(name, [])
        if name.startswith("codexgate") and "codexgate_accounting=false" not in options:
            summary, problems = check_accounting(work, name)
            report.setdefault("accounting", {})[name] = summary
            report["problems"] += problems


def measure_kind(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """All paths for one kind of request (sse or json), in processes of their own."""
    streamed = kind in ("sse", "translated")
    model = TRANSLATED_MODEL if kind == "translated" else MODEL
    body = request_body(args.body_bytes, args.body_file, stream=streamed, model=model)
    report: dict[str, Any] = {
        "config": {
            "kind": kind,
            "sse_events": args.sse_events if streamed else None,
            "rates": args.rate_list,
            "duration": args.duration,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "closed_duration": args.closed_duration,
            "workers": args.workers,
            "connections": args.connections,
            "ratio_rate": args.ratio_rate,
            "request_bytes": len(body),
            "paths": args.path_list,
            "gateway_set": args.gateway_set,
            "variants": args.variant_options,
            "paired": args.paired,
            "pin": args.pin,
        },
        "machine": machine_info(),
        "open_loop": [],
        "closed_loop": [],
        "problems": [],
    }
    work = Path(tempfile.mkdtemp(prefix=f"codexgate-bench-{kind}-"))
    procs = Processes(work, args.pinning)
    try:
        run_all(args, procs, work, body, report, stream=streamed, translated=kind == "translated")
    finally:
        procs.stop_all()
        if args.keep_dir:
            print(f"# bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    open_results = {(r["path"], r["rate"]): r for r in report["open_loop"]}
    report["key_ratio"] = key_ratio(open_results, args.ratio_rate)
    report["key_ratio_rounds"] = round_ratios(open_results, args.ratio_rate)
    report["limits_cost_ms"] = {
        path: {"p50_difference": round(cost[0], 3), "rounds": cost[1]}
        for path in dict.fromkeys(r["path"] for r in report["open_loop"])
        if path.endswith("-limits") and (cost := limits_cost(open_results, args.ratio_rate, path)) is not None
    }
    report["key_ratio_by_path"] = {
        name: {
            "ratio": key_ratio(open_results, args.ratio_rate, name),
            "rounds": round_ratios(open_results, args.ratio_rate, name),
            "ratio_over_mitmproxy_core": key_ratio(open_results, args.ratio_rate, name, "mitmproxy-core"),
        }
        for name in args.path_list
        if name.startswith("codexgate")
    }
    report["ttfb_over_mitmdump_ms"] = {
        rate: round(gate - bare, 3)
        for rate in args.rate_list
        if (gate := (open_results.get(("codexgate", rate)) or {}).get("ttfb_ms", {}).get("p50")) is not None
        and (bare := (open_results.get(("mitmdump", rate)) or {}).get("ttfb_ms", {}).get("p50")) is not None
    }
    closed = {r["path"]: r for r in report["closed_loop"]}
    # Max rate and chain CPU in the closed loop, as ratios and differences within each alternated round.
    report["throughput_ratio_rounds"] = round_ratio(closed, "round_rps", "codexgate", "mitmdump")
    report["throughput_ratio"] = (report["throughput_ratio_rounds"] or {}).get("median")
    report["closed_chain_cpu_us_per_req"] = round_difference(closed, "round_cpu_us", "codexgate", "mitmproxy-core")
    cpu = {r["path"]: r["server_cpu_us_per_req"] for r in report["open_loop"] if r["rate"] == args.ratio_rate}
    report["chain_cpu_us_per_req"] = (
        round(cpu["codexgate"] - cpu["mitmproxy-core"], 1) if "codexgate" in cpu and "mitmproxy-core" in cpu else None
    )
    return report


def kind_label(report: dict[str, Any]) -> str:
    cfg = report["config"]
    if cfg["kind"] == "sse":
        return f"streamed (SSE, {cfg['sse_events']} events per answer; bare proxies with stream_large_bodies=1)"
    if cfg["kind"] == "translated":
        return (
            f"streamed and translated (an Anthropic-shaped upstream, {cfg['sse_events']} events per answer, to "
            "Responses events; the bare proxies pass the Anthropic stream through, stream_large_bodies=1)"
        )
    return "not streamed (one JSON answer)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pinning is not None:  # before anything starts: the upstream and the load generator inherit it
        os.sched_setaffinity(0, args.pinning.client)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally block on SIGTERM too
    reports = {kind: measure_kind(args, kind) for kind in args.kind_list}
    machine = next(iter(reports.values()))["machine"]
    print(
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"mitmproxy {machine['mitmproxy']}, aiohttp {machine['aiohttp']}; codexgate {machine['codexgate_commit']}"
        + (f"; pinned: proxies on CPU {args.pin.replace('/', ', clients on CPU ')}" if args.pin else "")
    )
    for report in reports.values():
        print(f"\n## {kind_label(report)}; request body {report['config']['request_bytes']} bytes\n")
        print(markdown_report(report))
        for name, acc in report.get("accounting", {}).items():
            print(f"\n{name} accounting lines: {acc['records']} ({acc['forwarded_with_usage']} forwarded with usage)")
    print("\n## All kinds\n")
    print(
        "| kind | key ratio (added p50 / mitmdump's) | max req/s codexgate / mitmdump (rounds) "
        "| chain CPU µs/req over mitmproxy-core: open loop | closed loop (rounds) "
        "| first byte p50 over mitmdump's, ms |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for kind, report in reports.items():
        ratio = report["key_ratio"]
        ttfb = ", ".join(f"{d:+.2f} at {rate:g}/s" for rate, d in report["ttfb_over_mitmdump_ms"].items()) or "–"
        print(
            f"| {kind} | {fmt(ratio)} | {spread(report.get('throughput_ratio_rounds'))} "
            f"| {fmt(report['chain_cpu_us_per_req'], 0)} | {spread(report.get('closed_chain_cpu_us_per_req'))} "
            f"| {ttfb} |"
        )
    if args.json:
        text = json.dumps(reports, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 1 if any(report["problems"] for report in reports.values()) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_loadgen":
        loadgen_main()
    else:
        sys.exit(main())
