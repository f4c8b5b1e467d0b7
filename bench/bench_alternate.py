"""Two ways of running the same proxy, closed loop, in alternated short rounds: the median of the
pairs' ratios, CPU per request and maximum rate.

`bench_overhead.py` measures each path once per run, one after the other; on the shared 2-core VM the
machine's speed drifts between those measurements by more than a 10 % change. Here each pair (A, B)
is measured back to back, N times, in alternating order (A B, B A, A B, ...), and the ratio is taken
within each pair: the drift moves both sides of a pair alike.

    .venv/bin/python bench/bench_alternate.py --kind json --rounds 8 --seconds 3
    .venv/bin/python bench/bench_alternate.py --kind sse --pairs codexgate,codexgate-checks

    .venv/bin/python bench/bench_alternate.py --kind json --pairs codexgate,codexgate-baseline \
        --baseline /path/to/other-checkout/.venv/bin/python      # this checkout against another

Paths (bench_overhead.py's): codexgate (`codexgate up`, run with -O), codexgate-checks (`codexgate
up --python-checks`), mitmdump, mitmdump-O (the same mitmdump run by `python -O`), mitmproxy-core
(codexgate's master without the chain), codexgate-baseline (`codexgate up` as installed for the
interpreter `--baseline` names: another checkout's venv, e.g. the commit before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_overhead as bench  # noqa: E402

UPSTREAM_KEY = "sk-bench-upstream-alternate"


def start(
    procs: bench.Processes, work: Path, names: list[str], kind: str, env: dict[str, str], baseline: str | None
) -> dict[str, Any]:
    """Each path's target (url, headers, body), started and answering."""
    stream = kind in ("sse", "translated")
    upstream_base = f"http://127.0.0.1:{procs.ports['upstream']}"
    targets: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.startswith("mitmdump") or name == "mitmproxy-core":
            if name == "mitmproxy-core":
                bench.start_proxy_core(procs, work, upstream_base, procs.ports[name], env, stream)
            else:
                bench.start_mitmdump(procs, work, upstream_base, procs.ports[name], env, stream, name)
            plain = bench.request_body(0, None, stream=stream)
            headers, path, body = bench.upstream_request(UPSTREAM_KEY, plain, kind == "translated")
        else:
            python = baseline if name == "codexgate-baseline" and baseline else sys.executable
            key = bench.start_codexgate(procs, work, name, procs.ports["upstream"], env, [], python)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            model = bench.TRANSLATED_MODEL if kind == "translated" else bench.MODEL
            path, body = "/v1/responses", bench.request_body(0, None, stream=stream, model=model)
        targets[name] = {"url": f"http://127.0.0.1:{procs.ports[name]}{path}", "headers": headers,
                         "server": name, "body": body}  # fmt: skip
    for name, target in targets.items():
        bench.wait_ready(procs, name, target, target["body"])
        problems = bench.sanity_check(name, target, target["body"])
        if problems:
            raise SystemExit(f"{name}: {problems}")
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("json", "sse", "translated"), default="json")
    parser.add_argument("--pairs", nargs="+", default=["codexgate,codexgate-checks", "mitmdump-O,mitmdump"],
                        help="A,B: A measured against B (ratios A/B)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=8, help="pairs measured, each in alternating order")
    parser.add_argument("--seconds", type=float, default=3.0, help="closed-loop seconds per measurement")
    parser.add_argument("--workers", type=int, default=8, help="closed-loop connections")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--baseline", help="the interpreter (another checkout's venv) codexgate-baseline runs with")
    args = parser.parse_args()
    pairs = [tuple(pair.split(",")) for pair in args.pairs]
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    known = ("codexgate", "codexgate-checks", "codexgate-baseline", "mitmdump", "mitmdump-O", "mitmproxy-core")
    unknown = [name for name in names if name not in known]
    if unknown or any(len(pair) != 2 for pair in pairs):
        parser.error(f"--pairs: A,B of {', '.join(known)} (got {args.pairs})")
    if "codexgate-baseline" in names and not args.baseline:
        parser.error("codexgate-baseline needs --baseline PYTHON")
    work = Path(tempfile.mkdtemp(prefix="bench-alternate-"))
    procs = bench.Processes(work)
    # Per pair, each path's measurements in that pair: a path named in several pairs is measured once
    # per pair and round, so every ratio is of two measurements taken back to back.
    results: list[dict[str, list[dict[str, float]]]] = [{name: [] for name in pair} for pair in pairs]
    try:
        env = {**os.environ, bench.UPSTREAM_KEY_ENV: UPSTREAM_KEY, "PYTHONUNBUFFERED": "1"}
        procs.ports = {"upstream": bench.free_port(), **{name: bench.free_port() for name in names}}
        procs.start(
            "upstream",
            [sys.executable, str(bench.HERE / "fake_upstream.py"), "--port", str(procs.ports["upstream"])]
            + ["--sse-events", "50"],
            env,
        )
        targets = start(procs, work, names, args.kind, env, args.baseline)
        stream = args.kind != "json"
        for round_number in range(args.rounds):
            for pair, measured_pair in zip(pairs, results, strict=True):
                for name in pair if round_number % 2 == 0 else reversed(pair):
                    spec = {"kind": "closed", "warmup": 0.5, "duration": args.seconds, "workers": args.workers,
                            "timeout": 10, "stream": stream, **targets[name]}  # fmt: skip
                    server = procs.procs[name].pid
                    measured = bench.run_loadgen(spec, server, procs.procs["upstream"].pid)
                    fields = bench.cpu_fields(measured["cpu_s"], measured["requests_total"])
                    measured_pair[name].append(
                        {"rps": measured["throughput_rps"], "cpu_us": fields["server_cpu_us_per_req"]}
                    )
    finally:
        procs.stop_all()
    print(f"{args.kind}, closed loop ({args.workers} connections, {args.seconds:g} s), {args.rounds} alternated pairs:")
    for (a, b), measured_pair in zip(pairs, results, strict=True):
        both = list(zip(measured_pair[a], measured_pair[b], strict=True))
        cpu = sorted(x["cpu_us"] / y["cpu_us"] for x, y in both)
        rps = sorted(x["rps"] / y["rps"] for x, y in both)
        extra = sorted(x["cpu_us"] - y["cpu_us"] for x, y in both)
        print(
            f"  {a} / {b}: CPU per request {statistics.median(cpu):.2f}x (pairs {cpu[0]:.2f}-{cpu[-1]:.2f}), "
            f"{statistics.median(extra):+.0f} us ({extra[0]:+.0f} to {extra[-1]:+.0f}); "
            f"max rate {statistics.median(rps):.2f}x ({rps[0]:.2f}-{rps[-1]:.2f}); medians "
            f"{statistics.median(x['cpu_us'] for x, _ in both):.0f} / "
            f"{statistics.median(y['cpu_us'] for _, y in both):.0f} us per request"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"kind": args.kind, "pairs": args.pairs, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
