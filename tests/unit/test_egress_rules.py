"""gateway.egress: entry syntax, which addresses count as internal, and the verdicts."""

from __future__ import annotations

import ipaddress

import pytest
from mitmproxy import connection
from mitmproxy.test import tflow

from codexgate.addons.key_guard import scrub_request_head
from codexgate.policies.egress import Egress, is_internal, parse_rule
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import PolicyError, parse_policy

BASE = """\
providers: {local: {kind: mock}}
models: {mock-model: {routes: [{provider: local}]}}
"""


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "100.100.100.200", "0.0.0.0", "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1", "64:ff9b::a00:1",
        "224.0.0.1", "::",
    ],
)  # fmt: skip
def test_internal_addresses(address: str) -> None:
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "140.82.112.3", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert not is_internal(ipaddress.ip_address(address))


def test_entry_syntax() -> None:
    assert parse_rule("pypi.org").ports == frozenset({80, 443})
    assert parse_rule("git.corp:*").ports is None
    assert parse_rule("[fd00::1]:8443").network == ipaddress.ip_network("fd00::1/128")
    assert parse_rule("10.1.0.0/16:5000").ports == frozenset({5000})
    for bad in ("host:99999", "ho st", "[::1", "a:b:c/x", ""):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_verdicts() -> None:
    rules = Egress(allow=["*.corp.example:8443", "10.2.0.0/16:*"], deny=["gist.github.com"]).rules()
    assert rules.check_destination("pypi.org", 443).allowed  # a default
    assert not rules.check_destination("pypi.org", 6379).allowed  # defaults cover web ports only
    assert rules.check_destination("api.corp.example", 8443).allowed
    assert not rules.check_destination("corp.example.evil.com", 8443).allowed
    assert rules.check_destination("gist.github.com", 443).reason == "denied"
    assert rules.check_destination("10.2.3.4", 22).allowed  # named as a network: internal is fine
    assert rules.check_destination("10.3.0.1", 443).reason == "internal_address"
    assert rules.check_destination("93.184.216.34", 443).reason == "not_allowed"  # literal, not listed
    # A name the policy allows that resolves inside: refused, unless the address is named.
    assert rules.check_address(ipaddress.ip_address("127.0.0.1"), 443, "pypi.org").reason == "internal_address"
    assert rules.check_address(ipaddress.ip_address("10.2.0.9"), 443, "pypi.org").allowed
    assert not Egress(defaults=False).rules().check_destination("pypi.org", 443).allowed


def test_bad_egress_entries_name_file_line_and_field() -> None:
    text = 'gateway:\n  egress:\n    allow: ["pypi.org", "bad host"]\n  proxy_auth: sometimes\n' + BASE
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    problems = "\n".join(error.value.problems)
    assert "p.yaml:3: gateway.egress.allow:" in problems and "'bad host'" in problems
    assert "p.yaml:4: gateway.proxy_auth:" in problems


def test_provider_lists_are_checked() -> None:
    text = BASE + (
        "orgs: {acme: {}}\n"
        "teams: {t: {org: acme, providers: [local]}, u: {org: acme, providers: [nope]}}\n"
        f'keys: [{{name: k, team: t, hash: "{hash_key("sk-cg-x")}", providers: [local, other]}}]\n'
    )
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    problems = "\n".join(error.value.problems)
    assert "teams.u.providers[0]: unknown provider 'nope'" in problems
    assert "keys[0].providers[1]: unknown provider 'other'" in problems


def test_a_key_may_only_narrow_its_teams_providers() -> None:
    text = BASE.replace("providers: {local: {kind: mock}}", "providers: {local: {kind: mock}, other: {kind: mock}}")
    text += (
        "orgs: {acme: {}}\nteams: {t: {org: acme, providers: [local]}}\n"
        f'keys: [{{name: k, team: t, hash: "{hash_key("sk-cg-x")}", providers: [other]}}]\n'
    )
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "p.yaml")
    assert "a key may only narrow its team's providers" in "\n".join(error.value.problems)


def test_scrub_request_head_removes_keys_everywhere() -> None:
    key = "sk-cg-unit-key-000000000000"
    flow = tflow.tflow()
    flow.request.path = f"/a/{key}/b?token={key}&keep=1&other=x"
    flow.request.headers["x-trace"] = f"v={key}"
    flow.request.headers["authorization"] = "Bearer opaque-known-key"
    flow.request.headers["x-fine"] = "yes"
    removed = scrub_request_head(flow.request, {hash_key("opaque-known-key"): object()})
    assert set(removed) == {"x-trace", "authorization", "query:token", "path"}
    assert key not in flow.request.path and "keep=1" in flow.request.path and "other=x" in flow.request.path
    assert flow.request.headers["x-fine"] == "yes" and "authorization" not in flow.request.headers


class _Source:
    def __init__(self, text: str) -> None:
        self.compiled = parse_policy(text, "p.yaml")

    def current(self) -> object:
        return self.compiled


def test_server_connect_backstop_checks_every_upstream_connection_not_named_by_the_policy() -> None:
    """The last check before any upstream connection: named destinations pass without a lookup,
    internal addresses and names resolving to them are killed before connect."""
    import asyncio

    from mitmproxy import connection
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData

    from codexgate.addons.egress import EgressGuard
    from codexgate.metrics import GatewayMetrics

    text = (
        'gateway: {egress: {allow: ["localhost:*", "10.9.0.0/16:*"]}}\n'
        "providers: {ollama: {kind: chat, preset: ollama, base_url: 'http://127.0.0.1:11434/v1'}}\n"
        "models: {llama: {routes: [{provider: ollama}]}}\n"
    )
    guard = EgressGuard(_Source(text), GatewayMetrics(), lambda: (7001,))  # type: ignore[arg-type]
    client = connection.Client(peername=("10.0.0.5", 5555), sockname=("10.0.0.1", 8080))

    def attempt(host: str, port: int) -> connection.Server:
        server = connection.Server(address=(host, port))
        asyncio.run(guard.server_connect(ServerConnectionHookData(server=server, client=client)))
        return server

    assert attempt("127.0.0.1", 11434).error is None  # a provider the policy names
    assert attempt("127.0.0.1", 7001).error is None  # the gateway's own relay
    assert attempt("10.9.1.2", 5432).error is None  # a network the policy names
    for host, port in (("127.0.0.1", 6379), ("169.254.169.254", 80), ("localhost", 6379), ("10.8.0.1", 443)):
        server = attempt(host, port)
        assert server.error is not None and "codexgate egress policy" in server.error, (host, port)


def test_key_guard_scrubs_bodies_within_a_bound() -> None:
    import gzip
    import zlib

    from codexgate.addons.key_guard import MAX_SCANNED_BODY, KeyGuard

    guard = KeyGuard(_Source(BASE))  # type: ignore[arg-type]
    key = "sk-cg-body-key-0000000000"

    def sent(body: bytes, encoding: str | None) -> tuple[object, bytes]:
        flow = tflow.tflow()
        if encoding:
            flow.request.headers["content-encoding"] = encoding
        flow.request.raw_content = body
        guard.request(flow)
        return flow.response, flow.request.raw_content or b""

    plain = f'{{"k": "{key}", "keep": 1}}'.encode()
    response, raw = sent(plain, None)
    assert response is None and key.encode() not in raw and b'"keep": 1' in raw
    response, raw = sent(zlib.compress(plain), "deflate")
    assert response is None and key.encode() not in zlib.decompress(raw)
    response, raw = sent(gzip.compress(b"nothing secret"), "gzip")
    assert response is None and gzip.decompress(raw) == b"nothing secret"
    # A body that inflates past the bound is refused, not inflated: decoding stops at the bound.
    bomb = gzip.compress(b"\0" * (MAX_SCANNED_BODY + 1024 * 1024))
    response, _ = sent(bomb, "gzip")
    assert response is not None and response.status_code == 403  # type: ignore[attr-defined]
    assert b"body_not_checkable" in response.content  # type: ignore[attr-defined]
    import brotli
    import zstandard

    response, raw = sent(brotli.compress(plain), "br")
    assert response is None and key.encode() not in brotli.decompress(raw)
    response, raw = sent(zstandard.ZstdCompressor().compress(plain), "zstd")
    assert response is None and key.encode() not in zstandard.ZstdDecompressor().decompress(raw)
    response, _ = sent(zstandard.ZstdCompressor().compress(b"\0" * (MAX_SCANNED_BODY + 1)), "zstd")
    assert response is not None and response.status_code == 403  # type: ignore[attr-defined]
    # Malformed, or an encoding the gateway does not decode: it cannot be checked either.
    for body, encoding in ((b"not brotli" + plain, "br"), (plain, "compress")):
        response, _ = sent(body, encoding)
        assert response is not None and response.status_code == 403, encoding  # type: ignore[attr-defined]


def test_a_connect_is_pinned_to_the_address_that_was_checked() -> None:
    """DNS rebinding: the name answers a public address at the check and loopback afterwards. The
    tunnel connects to the checked address; no second lookup is made that could be rebound."""
    import asyncio
    import socket

    from mitmproxy.proxy import mode_specs
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData

    from codexgate.addons.egress import EgressGuard
    from codexgate.metrics import GatewayMetrics

    answers = ["93.184.216.34", "127.0.0.1", "127.0.0.1"]
    lookups: list[str] = []

    async def rebinding_getaddrinfo(host: str, port: int, **_: object) -> list[tuple]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[len(lookups) - 1], port))]

    guard = EgressGuard(_Source('gateway: {egress: {allow: ["rebind.example"]}}\n' + BASE), GatewayMetrics())  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    loop.getaddrinfo = rebinding_getaddrinfo  # type: ignore[method-assign, assignment]

    def connect() -> object:
        flow = tflow.tflow()
        flow.client_conn.proxy_mode = mode_specs.ProxyMode.parse("regular")
        flow.request.method, flow.request.host, flow.request.port = "CONNECT", "rebind.example", 443
        loop.run_until_complete(guard.http_connect(flow))
        return flow

    first = connect()
    assert first.response is None and first.request.host == "93.184.216.34"  # type: ignore[attr-defined]
    server = connection.Server(address=(first.request.host, 443))  # type: ignore[attr-defined]
    loop.run_until_complete(guard.server_connect(ServerConnectionHookData(server=server, client=first.client_conn)))  # type: ignore[attr-defined]
    assert server.error is None and server.address == ("93.184.216.34", 443) and len(lookups) == 1
    # The next CONNECT sees the rebound answer: refused.
    second = connect()
    assert second.response is not None and second.response.status_code == 403  # type: ignore[attr-defined]
    assert b"internal address" in second.response.content  # type: ignore[attr-defined]
    # A connection to the name itself (no CONNECT pinned it) is looked up and checked at connect.
    named = connection.Server(address=("rebind.example", 443))
    loop.run_until_complete(guard.server_connect(ServerConnectionHookData(server=named, client=first.client_conn)))  # type: ignore[attr-defined]
    assert named.error is not None and "internal address" in named.error
    loop.close()
