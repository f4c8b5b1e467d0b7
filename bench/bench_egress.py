"""What the egress policy, the CONNECT-target scope and provider restrictions cost, in process.

The code these checks add to a *governed request* is a handful of dictionary lookups, far below
what an end-to-end p50 on this 2-core machine can resolve (its run-to-run drift is ~0.1 ms), so
it is timed here call by call on the real addon objects and a real compiled policy, against the
same calls with the checks off (the pre-change hooks' early returns). Per connection (CONNECT,
ClientHello) the costs are timed the same way. Runs in a few seconds:

    .venv/bin/python bench/bench_egress.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from mitmproxy import connection, options, tls
from mitmproxy.proxy import context, mode_specs
from mitmproxy.test import tflow

from codexgate.addons.egress import EgressGuard
from codexgate.addons.tls_scope import TlsScope
from codexgate.metrics import GatewayMetrics
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import parse_policy

POLICY = f"""\
gateway: {{egress: {{allow: [artifacts.acme.internal]}}}}
providers:
  openai: {{kind: openai, keys: [{{value: "env:OPENAI_API_KEY"}}]}}
  claude: {{kind: anthropic, keys: [{{value: "env:ANTHROPIC_API_KEY"}}]}}
  local: {{kind: mock}}
models:
  gpt-5.5: {{routes: [{{provider: openai, weight: 3}}, {{provider: local}}], fallbacks: [claude-sonnet-4-5]}}
  claude-sonnet-4-5: {{routes: [{{provider: claude}}]}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme, providers: [openai, claude]}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key("sk-cg-bench")}", providers: [claude]}}
"""


class Source:
    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def current(self) -> Any:
        return self.compiled


def per_call(function: Callable[[], Any], calls: int = 20000, repeats: int = 7) -> float:
    """Median over `repeats` runs of the mean µs per call."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def per_await(loop: asyncio.AbstractEventLoop, make: Callable[[], Any], calls: int = 20000, repeats: int = 7) -> float:
    """`per_call` for a coroutine, awaited inside one running loop as the Pipeline awaits it."""

    async def many() -> None:
        for _ in range(calls):
            await make()

    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        loop.run_until_complete(many())
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    compiled = parse_policy(POLICY, "bench.yaml")
    source = Source(compiled)
    egress = EgressGuard(source, GatewayMetrics())  # type: ignore[arg-type]
    scope = TlsScope(source, egress)  # type: ignore[arg-type]
    key = compiled.policy.keys[0]

    reverse = tflow.tflow()
    reverse.client_conn.proxy_mode = mode_specs.ProxyMode.parse("reverse:http://127.0.0.1:9")
    tunnelled = tflow.tflow()
    tunnelled.client_conn.proxy_mode = mode_specs.ProxyMode.parse("regular")
    tunnelled.request.host, tunnelled.request.port = "api.openai.com", 443
    connect = tflow.tflow()
    connect.client_conn = tunnelled.client_conn
    connect.request.method, connect.request.host, connect.request.port = "CONNECT", "api.openai.com", 443
    loop = asyncio.new_event_loop()
    loop.run_until_complete(egress.http_connect(connect))  # records the governed tunnel
    assert connect.response is None and egress.target_of(tunnelled.client_conn) is not None

    async def connect_once() -> None:
        connect.response = None
        await egress.http_connect(connect)

    hello_context = context.Context(tunnelled.client_conn, options.Options())
    hello_context.server = connection.Server(address=("api.openai.com", 443))
    client_hello = SimpleNamespace(sni="api.openai.com")  # TlsScope reads only the server name
    hello = tls.ClientHelloData(hello_context, client_hello)  # type: ignore[arg-type]

    def empty_hook() -> None:
        return None

    async def empty_coroutine() -> None:
        return None

    rows = [
        ("governed request, base-URL listener: EgressGuard.requestheaders", lambda: egress.requestheaders(reverse)),
        ("governed request in a tunnel: EgressGuard.requestheaders", lambda: egress.requestheaders(tunnelled)),
        ("governed request: EgressGuard.request (a coroutine, awaited)", lambda: egress.request(tunnelled)),
        ("  an empty coroutine, awaited (what awaiting alone costs)", empty_coroutine),
        ("Admit: reachable_providers(key, model)", lambda: compiled.reachable_providers(key, "gpt-5.5")),
        ("Route: allowed_providers(key)", lambda: compiled.allowed_providers(key)),
        ("checks off: an empty hook call", empty_hook),
        ("per CONNECT (governed): EgressGuard.http_connect", connect_once),
        ("per TLS ClientHello: TlsScope.tls_clienthello", lambda: scope.tls_clienthello(hello)),
    ]
    print("| what | µs per call (median of 7 × 20,000) |\n|---|---:|")
    awaited = {"governed request: EgressGuard.request (a coroutine, awaited)",
               "  an empty coroutine, awaited (what awaiting alone costs)",
               "per CONNECT (governed): EgressGuard.http_connect"}  # fmt: skip
    for label, function in rows:
        cost = per_await(loop, function) if label in awaited else per_call(function)
        print(f"| {label} | {cost:.2f} |")


if __name__ == "__main__":
    main()
