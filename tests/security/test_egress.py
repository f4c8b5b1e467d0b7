"""The proxy listener as a hostile client on the same network would use it: no open proxy, no
SSRF to the gateway's own Redis or metrics port, no DNS-name detour to loopback, no SNI or Host
header detour around governance, proxy credentials when required, no virtual key forwarded."""

from __future__ import annotations

import gzip
import http.server
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import redis
from fakes.gateway import ALICE_KEY, BOB_KEY, Gateway, free_port, policy_text
from fakes.openai_upstream import FakeOpenAI
from fakes.redis_server import RedisServer


class Recorder:
    """A plain HTTP server that records exactly what reaches it (path with query, headers, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _record

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TlsServer:
    """A TLS server with its own self-signed certificate, counting the connections it accepts."""

    def __init__(self, directory: Path) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunnel-test.local")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
        )  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem = serialization.Encoding.PEM
        (directory / "key.pem").write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            with self.context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1000)
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path_factory.mktemp("tls-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A TLS server the policy names as a provider's host: governed."""
    server = TlsServer(tmp_path_factory.mktemp("provider-tls"))
    yield server
    server.stop()


def egress_policy(upstream_url: str, allow: list[str], extra: str = "", governed_tls: int | None = None) -> str:
    entries = ", ".join(json.dumps(entry) for entry in allow)
    text = f"gateway: {{egress: {{allow: [{entries}]}}{extra}}}\n" + policy_text(upstream_url)
    if governed_tls is not None:
        provider = (
            f'  tlsprov: {{kind: openai, base_url: "https://127.0.0.1:{governed_tls}/v1", '
            'keys: [{value: "env:CG_TEST_UPSTREAM_KEY"}]}\n'
        )
        text = text.replace("providers:\n", "providers:\n" + provider, 1)
    return text


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai: FakeOpenAI,
    redis_server: RedisServer,
    recorder: Recorder,
    tls_server: TlsServer,
    provider_tls: TlsServer,
) -> Iterator[Gateway]:
    """A gateway whose egress policy names two loopback test servers by address, the name
    `localhost` (which resolves to loopback: the DNS-rebinding case), and its own proxy port."""
    root = tmp_path_factory.mktemp("egress")
    policy = root / "policy.yaml"
    gateway = Gateway(policy, root / "data")
    gateway.metrics_port = free_port()
    allow = [f"127.0.0.1:{recorder.port}", f"127.0.0.1:{tls_server.port}", "localhost:*"]
    allow.append(f"127.0.0.1:{gateway.proxy_port}")
    policy.write_text(egress_policy(fake_openai.url, allow, governed_tls=provider_tls.port))
    gateway.start()
    yield gateway
    gateway.stop()


def connect(gateway: Gateway, target: str, extra: str = "") -> tuple[socket.socket, bytes]:
    """A raw CONNECT on the proxy listener: the socket and the proxy's whole answer head (+ body)."""
    raw = socket.create_connection(("127.0.0.1", gateway.proxy_port), timeout=10)
    raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = raw.recv(4096)
        if not chunk:
            break
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    while match and len(body) < int(match.group(1)):
        chunk = raw.recv(4096)
        if not chunk:
            break
        body += chunk
    return raw, head + b"\r\n\r\n" + body


def refusal(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403"), answer[:300]
    return json.loads(body)["error"]


def metric(gateway: Gateway, name: str, labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).text
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_connect_to_the_gateways_redis_is_refused_and_redis_untouched(
    guarded: Gateway, redis_server: RedisServer
) -> None:
    store = redis.Redis.from_url(redis_server.url)
    store.set("codexgate:budget:team:platform", "499.5")
    before = store.info("stats")
    raw, answer = connect(guarded, f"127.0.0.1:{redis_server.port}")
    with raw:
        raw.sendall(b"PING\r\nDEL codexgate:budget:team:platform\r\n")  # what an open proxy would pass on
        error = refusal(answer)
    assert error["code"] == "egress_not_allowed" and "internal address" in error["message"]
    after = store.info("stats")
    # Only this test's own first INFO reached Redis in between: no connection from the gateway, no command.
    assert int(after["total_connections_received"]) == int(before["total_connections_received"])
    assert int(after["total_commands_processed"]) == int(before["total_commands_processed"]) + 1
    assert store.get("codexgate:budget:team:platform") == b"499.5"
    assert "egress refused (internal_address): CONNECT 127.0.0.1" in guarded.wait_log("egress refused")


def test_plain_http_proxy_requests_to_redis_and_metrics_are_refused(
    guarded: Gateway, redis_server: RedisServer
) -> None:
    store = redis.Redis.from_url(redis_server.url)
    connections_before = int(store.info("stats")["total_connections_received"])
    before = metric(guarded, "codexgate_egress_refusals_total", 'reason="internal_address"')
    with httpx.Client(proxy=guarded.proxy_url, timeout=10) as http:
        for url in (
            f"http://127.0.0.1:{redis_server.port}/",
            f"http://127.0.0.1:{guarded.metrics_port}/metrics",
            f"http://0.0.0.0:{guarded.metrics_port}/metrics",  # reaches loopback on Linux
            "http://169.254.169.254/latest/meta-data/",  # cloud metadata: refused before any connect
        ):
            answer = http.post(url, content=b"SET x 1\r\n")
            assert answer.status_code == 403, (url, answer.text)
            assert answer.json()["error"]["code"] == "egress_not_allowed"
            assert answer.headers["x-codexgate-refusal"] == "internal_address"
    raw, answer = connect(guarded, f"127.0.0.1:{guarded.metrics_port}")
    raw.close()
    assert refusal(answer)["code"] == "egress_not_allowed"
    assert int(store.info("stats")["total_connections_received"]) == connections_before
    assert metric(guarded, "codexgate_egress_refusals_total", 'reason="internal_address"') >= before + 5


def test_the_gateways_own_listeners_are_refused_even_when_named(guarded: Gateway) -> None:
    """The policy names 127.0.0.1:<proxy port>; the proxy still does not loop into itself."""
    raw, answer = connect(guarded, f"127.0.0.1:{guarded.proxy_port}")
    raw.close()
    assert "one of the gateway's own listeners" in refusal(answer)["message"]
    with httpx.Client(proxy=guarded.proxy_url, timeout=10) as http:
        answer_http = http.get(f"http://127.0.0.1:{guarded.proxy_port}/")
    assert answer_http.status_code == 403 and answer_http.headers["x-codexgate-refusal"] == "gateway_itself"


def test_hosts_outside_the_allow_list_are_refused(guarded: Gateway) -> None:
    raw, answer = connect(guarded, "evil.example:443")
    raw.close()
    error = refusal(answer)
    assert "not in the gateway's egress allow list" in error["message"]
    # A public-looking address literal is not on the allow list either (only names are, by default).
    raw, answer = connect(guarded, "93.184.216.34:443")
    raw.close()
    assert "not in the gateway's egress allow list" in refusal(answer)["message"]


def test_an_allowed_address_still_tunnels_untouched(guarded: Gateway, tls_server: TlsServer) -> None:
    raw, answer = connect(guarded, f"127.0.0.1:{tls_server.port}")
    assert answer.startswith(b"HTTP/1.1 200"), answer
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(raw, server_hostname="tunnel-test.local") as tls:
        assert tls.getpeercert(binary_form=True) == tls_server.cert_der  # the server's own, not minted
        tls.sendall(b"GET / HTTP/1.1\r\nHost: tunnel-test.local\r\n\r\n")
        assert tls.recv(1024).endswith(b"ok")


def test_an_allowed_name_resolving_to_loopback_is_refused(guarded: Gateway, redis_server: RedisServer) -> None:
    """`localhost:*` is allowed by name, but names never open internal addresses: what the name
    resolves to is checked (and the connection pinned to it), as with a DNS-rebinding name."""
    store = redis.Redis.from_url(redis_server.url)
    connections_before = int(store.info("stats")["total_connections_received"])
    raw, answer = connect(guarded, f"localhost:{redis_server.port}")
    raw.close()
    error = refusal(answer)
    assert re.search(r"localhost \((127\.0\.0\.1|::1)\):\d+ is an internal address", error["message"]), error
    with httpx.Client(proxy=guarded.proxy_url, timeout=10) as http:
        answer_http = http.get(f"http://localhost:{guarded.metrics_port}/metrics")
    assert answer_http.status_code == 403 and answer_http.headers["x-codexgate-refusal"] == "internal_address"
    assert int(store.info("stats")["total_connections_received"]) == connections_before


def _tls_through(raw: socket.socket, server_name: str) -> bytes:
    """A TLS handshake through the tunnel with this server name; what came back (b'' if refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {server_name}\r\n\r\n".encode())
            return tls.recv(1024)
    except (ssl.SSLError, OSError):
        return b""


def test_a_tunnel_cannot_carry_a_governed_server_name(guarded: Gateway, tls_server: TlsServer) -> None:
    """CONNECT to an allowed host, then TLS for api.openai.com (governed): refused, never tunnelled
    past admission and metering."""
    before = metric(guarded, "codexgate_egress_refusals_total", 'reason="sni_mismatch"')
    accepted = tls_server.accepted
    raw, answer = connect(guarded, f"127.0.0.1:{tls_server.port}")
    assert answer.startswith(b"HTTP/1.1 200")
    assert _tls_through(raw, "api.openai.com") == b""
    assert tls_server.accepted == accepted  # the tunnel's upstream connection was never opened
    assert "does not match the CONNECT target 127.0.0.1" in guarded.wait_log("does not match the CONNECT target")
    assert metric(guarded, "codexgate_egress_refusals_total", 'reason="sni_mismatch"') == before + 1


def test_a_governed_connect_cannot_carry_another_server_name(guarded: Gateway, provider_tls: TlsServer) -> None:
    """CONNECT to a provider's host (governed), TLS naming another host: refused, not tunnelled to
    the provider untouched (which would skip admission, metering and audit)."""
    accepted = provider_tls.accepted
    raw, answer = connect(guarded, f"127.0.0.1:{provider_tls.port}")
    assert answer.startswith(b"HTTP/1.1 200")
    assert _tls_through(raw, "elsewhere.example") == b""
    assert provider_tls.accepted == accepted


def test_the_host_header_cannot_redirect_a_governed_tunnel(guarded: Gateway, redis_server: RedisServer) -> None:
    """Inside an intercepted tunnel the CONNECT target decides: a Host header naming Redis gets the
    gateway's own answer for api.openai.com, and Redis sees nothing."""
    store = redis.Redis.from_url(redis_server.url)
    connections_before = int(store.info("stats")["total_connections_received"])
    raw, answer = connect(guarded, "api.openai.com:443")
    assert answer.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(guarded.ca_cert))
    with context.wrap_socket(raw, server_hostname="api.openai.com") as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{redis_server.port}\r\nconnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 404") and b"x-codexgate-error: unknown_endpoint" in reply, reply[:300]
    assert int(store.info("stats")["total_connections_received"]) == connections_before


def test_virtual_key_scrubbed_from_query_headers_and_body(guarded: Gateway, recorder: Recorder) -> None:
    received = len(recorder.received)
    url = f"http://127.0.0.1:{recorder.port}/upload/{ALICE_KEY}/x?token={ALICE_KEY}&keep=1"
    body = json.dumps({"note": f"my key is {ALICE_KEY}", "keep": "this"}).encode()
    with httpx.Client(proxy=guarded.proxy_url, timeout=10) as http:
        plain = http.post(url, content=body, headers={"x-debug": f"key={ALICE_KEY}", "x-other": "kept"})
        zipped = http.post(
            f"http://127.0.0.1:{recorder.port}/zipped",
            content=gzip.compress(body),
            headers={"content-encoding": "gzip"},
        )
    assert plain.status_code == 200 and zipped.status_code == 200
    arrived = recorder.received[received:]
    assert len(arrived) == 2
    path, headers, sent = arrived[0]
    assert ALICE_KEY not in path and "keep=1" in path and "token=" not in path
    assert "x-debug" not in headers and headers["x-other"] == "kept"
    assert ALICE_KEY not in sent.decode() and json.loads(sent)["keep"] == "this"
    zipped_path, _, zipped_sent = arrived[1]
    unpacked = gzip.decompress(zipped_sent)
    assert ALICE_KEY not in unpacked.decode() and json.loads(unpacked)["keep"] == "this"
    assert all(ALICE_KEY not in repr(item) for item in arrived)
    assert metric(guarded, "codexgate_virtual_keys_scrubbed_total", 'where="body"') >= 2


def test_the_base_url_listener_reaches_no_arbitrary_host(guarded: Gateway, redis_server: RedisServer) -> None:
    store = redis.Redis.from_url(redis_server.url)
    connections_before = int(store.info("stats")["total_connections_received"])
    with httpx.Client(timeout=10) as http:
        answer = http.post(
            f"http://127.0.0.1:{guarded.gateway_port}/v1/responses",
            headers={"host": f"127.0.0.1:{redis_server.port}", "authorization": f"Bearer {ALICE_KEY}"},
            content=b"PING\r\n",
        )
        absolute = http.get(
            f"http://127.0.0.1:{guarded.gateway_port}/anything", headers={"host": f"127.0.0.1:{redis_server.port}"}
        )
    assert answer.status_code == 400 and absolute.status_code == 404
    for target in (f"127.0.0.1:{redis_server.port}", "pypi.org:443"):
        raw = socket.create_connection(("127.0.0.1", guarded.gateway_port), timeout=10)
        with raw:
            raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nPING\r\n".encode())
            reply = raw.recv(4096)
        # mitmproxy's reverse mode refuses CONNECT before any addon sees it.
        assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert int(store.info("stats")["total_connections_received"]) == connections_before


# -- proxy_auth: required ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authenticated(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("proxy-auth")
    policy = root / "policy.yaml"
    policy.write_text(egress_policy(fake_openai.url, [], extra=", proxy_auth: required"))
    gateway = Gateway(policy, root / "data").start()
    yield gateway
    gateway.stop()


def test_proxy_auth_required_refuses_clients_without_a_key(authenticated: Gateway) -> None:
    import base64

    raw, answer = connect(authenticated, "api.openai.com:443")
    raw.close()
    assert answer.startswith(b"HTTP/1.1 407")
    assert b'proxy-authenticate: basic realm="codexgate"' in answer.lower()
    bob = base64.b64encode(f"codex:{BOB_KEY}".encode()).decode()  # a disabled key
    raw, answer = connect(authenticated, "api.openai.com:443", extra=f"Proxy-Authorization: Basic {bob}\r\n")
    raw.close()
    assert answer.startswith(b"HTTP/1.1 407") and b"not a valid, active virtual key" in answer
    with httpx.Client(proxy=authenticated.proxy_url, timeout=10) as http:
        plain = http.get("http://pypi.org/simple/")
    assert plain.status_code == 407 and plain.json()["error"]["code"] == "proxy_auth_required"


def test_proxy_auth_required_serves_a_client_with_its_key(authenticated: Gateway) -> None:
    context = ssl.create_default_context(cafile=str(authenticated.ca_cert))
    proxy = f"http://codex:{ALICE_KEY}@127.0.0.1:{authenticated.proxy_port}"
    http_client = openai.DefaultHttpxClient(proxy=proxy, verify=context)
    sdk = openai.OpenAI(api_key="placeholder", max_retries=0, timeout=20, http_client=http_client)
    assert sdk.responses.create(model="mock-model", input="through an authenticated proxy").status == "completed"


def test_virtual_key_scrubbed_from_plain_http_inside_a_tunnel(guarded: Gateway, recorder: Recorder) -> None:
    received = len(recorder.received)
    raw, answer = connect(guarded, f"127.0.0.1:{recorder.port}")
    assert answer.startswith(b"HTTP/1.1 200")
    body = f"key={ALICE_KEY}".encode()
    with raw:
        raw.sendall(
            f"POST /in-tunnel?api_key={ALICE_KEY}&keep=1 HTTP/1.1\r\nHost: 127.0.0.1:{recorder.port}\r\n"
            f"x-api-key: {ALICE_KEY}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"ok")  # (the recorder speaks HTTP/1.0)
    [(path, headers, sent)] = recorder.received[received:]
    assert path == "/in-tunnel?keep=1" and "x-api-key" not in headers
    assert sent == b"key=sk-cg-REMOVED"


def test_a_virtual_key_in_a_body_to_a_guard_host_is_answered_locally(guarded: Gateway) -> None:
    """chatgpt.com (a guard host) is intercepted; a virtual key in the body alone is enough for
    the gateway to answer itself (nothing is sent: this test runs offline)."""
    context = ssl.create_default_context(cafile=str(guarded.ca_cert))
    with httpx.Client(proxy=guarded.proxy_url, verify=context, timeout=10) as http:
        answer = http.post("https://chatgpt.com/backend-api/anything", json={"token": ALICE_KEY})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "virtual_key_not_forwarded"
