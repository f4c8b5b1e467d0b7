"""`codexgate up` (the gateway master running the codexgate chain), driven with the official openai SDK."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, BOB_KEY, CAROL_KEY, UPSTREAM_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI


def client(gateway: Gateway, key: str = ALICE_KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=20)


def proxy_client(gateway: Gateway, key: str = ALICE_KEY) -> openai.OpenAI:
    context = ssl.create_default_context(cafile=str(gateway.ca_cert))
    http_client = openai.DefaultHttpxClient(proxy=gateway.proxy_url, verify=context)
    return openai.OpenAI(api_key=key, max_retries=0, timeout=20, http_client=http_client)


def test_codexgate_up_runs_the_gateway_master(gateway: Gateway) -> None:
    assert gateway.process is not None  # `codexgate up` exec'd it in place of itself
    argv = Path(f"/proc/{gateway.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"from codexgate.master import main; main()" in argv
    # Optimised (docs/benchmarks.md): every test that starts a gateway runs the chain as deployed.
    assert b"-O" in argv[: argv.index(b"-c")]


def _started_with(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI, *extra_args: str) -> Gateway:
    """A gateway of its own on the integration policy, `codexgate up` given `extra_args`."""
    from fakes.gateway import policy_text

    root = tmp_path_factory.mktemp("gateway")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, root / "data")
    gateway.extra_args = list(extra_args)
    return gateway.start()


def test_python_checks_run_the_gateway_master_with_asserts_on(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> None:
    checked = _started_with(tmp_path_factory, fake_openai, "--python-checks")
    try:
        assert checked.process is not None
        argv = Path(f"/proc/{checked.process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"from codexgate.master import main; main()" in argv and b"-O" not in argv
        assert client(checked).responses.create(model="mock-model", input="checked").status == "completed"
    finally:
        checked.stop()


def test_mock_responses_non_streamed(gateway: Gateway) -> None:
    response = client(gateway).responses.create(model="mock-model", input="hello there")
    assert response.status == "completed"
    assert "hello there" in response.output_text
    assert response.usage is not None and response.usage.output_tokens == 5


def test_mock_responses_streamed_with_tool_call(gateway: Gateway) -> None:
    tools = [
        {
            "type": "function",
            "name": "exec_command",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
        }
    ]
    with client(gateway).responses.stream(model="mock", input="please run `ls -la`", tools=tools) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert events[0] == "response.created" and events[-1] == "response.completed"
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"cmd": "ls -la"}


def test_mock_chat_completions(gateway: Gateway) -> None:
    completion = client(gateway).chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content and "hi" in completion.choices[0].message.content
    chunks = list(
        client(gateway).chat.completions.create(
            model="mock-model", messages=[{"role": "user", "content": "stream me"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream me" in text
    # The gateway asked for usage so the request could be accounted.
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_models_lists_what_the_key_may_use(gateway: Gateway) -> None:
    alice = {model.id for model in client(gateway).models.list()}
    carol = {model.id for model in client(gateway, CAROL_KEY).models.list()}
    assert {"gpt-test", "gpt-renamed", "mock-model"} <= alice and "claude-mock" not in alice
    assert carol == {"mock-model", "mock"}  # aliases are usable names too


@pytest.mark.parametrize(
    ("key", "model", "status", "code"),
    [
        ("sk-cg-not-a-real-key", "mock-model", 401, "invalid_api_key"),
        (BOB_KEY, "mock-model", 401, "key_disabled"),
        (CAROL_KEY, "gpt-test", 403, "model_not_allowed"),
        (ALICE_KEY, "gpt-unknown", 404, "model_not_found"),
    ],
)
def test_refusals_are_openai_shaped(gateway: Gateway, key: str, model: str, status: int, code: str) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway, key).responses.create(model=model, input="x")
    assert caught.value.status_code == status
    assert caught.value.body["code"] == code  # type: ignore[index]
    assert caught.value.response.headers["x-codexgate-decision"] == "refused"


def test_not_allowed_message_is_actionable(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(gateway, CAROL_KEY).responses.create(model="gpt-test", input="x")
    assert "model gpt-test is not allowed for key carol; allowed: mock-*" in str(caught.value)


def test_malformed_and_unknown_requests(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {ALICE_KEY}", "content-type": "application/json"}
    bad = httpx.post(f"{gateway.base_url}/responses", content=b"{not json", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    no_model = httpx.post(f"{gateway.base_url}/responses", json={"input": "x"}, headers=headers)
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    unknown = httpx.post(f"{gateway.base_url}/files", json={}, headers=headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_endpoint"
    missing = httpx.post(f"{gateway.base_url}/responses", json={"model": "mock-model", "input": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"


def test_a_body_naming_a_key_twice_is_refused_before_it_leaves(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    """A pass-through body is forwarded as it came: had the gateway read the last `model` (as Python
    does) and the provider the first, carol's key (mock-* only) would have been served a gpt-* model."""
    headers = {"authorization": f"Bearer {CAROL_KEY}", "content-type": "application/json"}
    before = len(fake_openai.received)
    smuggled = b'{"model": "gpt-test", "input": "x", "model": "mock-model"}'
    compact = b'{"model":"gpt-test","input":"x","model":"mock-model"}'  # as Codex writes a body: the fast read
    for body in (smuggled, compact):
        refused = httpx.post(f"{gateway.base_url}/responses", content=body, headers=headers)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "duplicate_key" and "'model'" in refused.json()["error"]["message"]
    nested = b'{"model": "gpt-test", "input": [{"role": "user", "content": "a", "content": "b"}]}'
    headers["authorization"] = f"Bearer {ALICE_KEY}"
    assert httpx.post(f"{gateway.base_url}/responses", content=nested, headers=headers).status_code == 400
    assert len(fake_openai.received) == before  # nothing reached the provider


def test_pass_through_swaps_key_and_renames_model(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.received)
    response = client(gateway).responses.create(model="gpt-renamed", input="hi upstream")
    assert response.model == "gpt-upstream-name"
    received = fake_openai.received[before:]
    assert len(received) == 1
    assert received[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert json.loads(received[0].body)["model"] == "gpt-upstream-name"
    assert ALICE_KEY not in json.dumps(received[0].headers) and ALICE_KEY.encode() not in received[0].body
    assert not fake_openai.invalid


def test_stream_is_not_buffered(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    """The first event reaches the client while the upstream still holds the rest back."""
    fake_openai.hold_stream.set()
    fake_openai.release_stream.clear()
    try:
        with client(gateway).responses.create(model="gpt-test", input="stream it", stream=True) as stream:
            first = next(iter(stream))
            assert first.type == "response.created"
            assert not fake_openai.release_stream.is_set()  # the upstream is still holding the rest
            fake_openai.release_stream.set()
            rest = [event.type for event in stream]
        assert rest[-1] == "response.completed"
    finally:
        fake_openai.hold_stream.clear()
        fake_openai.release_stream.set()


def test_provider_without_credentials_fails_clearly(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).responses.create(model="gpt-nokey", input="x")
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "provider_credentials_unavailable"  # type: ignore[index]
    assert "CG_TEST_NOT_SET" not in str(caught.value)  # setup details stay in the gateway's log
    expected = "provider nokey has no usable key: environment variable CG_TEST_NOT_SET is not set"
    assert expected in gateway.wait_log(expected)


def test_provider_refusing_the_gateway_key_is_not_passed_through(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    leaked = "Incorrect API key provided: sk-upst****test"
    fake_openai.failures.append((401, {}))
    fake_openai.failure_message = leaked
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            client(gateway).responses.create(model="gpt-test", input="x")
    finally:
        fake_openai.failure_message = None
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    assert "sk-upst" not in caught.value.response.text


def test_accounting_line_per_request_with_usage(gateway: Gateway) -> None:
    session = "session-accounting-test"
    extra = {"session-id": session}
    client(gateway).responses.create(model="gpt-test", input="count me", extra_headers=extra)
    with client(gateway).responses.create(
        model="gpt-test", input="count me too", stream=True, extra_headers=extra
    ) as s:
        for _ in s:
            pass
    lines = gateway.wait_accounting(lambda line: line["session_id"] == session, count=2)
    assert len(lines) == 2
    for line in lines:
        assert (line["key"], line["team"], line["org"], line["provider"]) == ("alice", "platform", "acme", "openai")
        assert line["usage"] == {"input_tokens": 11, "cached_tokens": 3, "output_tokens": 7, "reasoning_tokens": 2}
        assert line["status"] == 200
    assert lines[1]["stream"] and lines[1]["stream_outcome"] == "completed"


def test_proxy_mode_governs_api_openai_com(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.received)
    response = proxy_client(gateway).responses.create(model="gpt-test", input="via the proxy")
    assert response.status == "completed"
    received = fake_openai.received[before:]
    assert len(received) == 1 and received[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    with pytest.raises(openai.PermissionDeniedError):
        proxy_client(gateway, CAROL_KEY).responses.create(model="gpt-test", input="x")


def test_proxy_credentials_identify_the_key(gateway: Gateway) -> None:
    context = ssl.create_default_context(cafile=str(gateway.ca_cert))
    proxy = f"http://codex:{ALICE_KEY}@127.0.0.1:{gateway.proxy_port}"
    http_client = openai.DefaultHttpxClient(proxy=proxy, verify=context)
    # The client's own API key is a placeholder: the proxy credentials carry the virtual key.
    sdk = openai.OpenAI(api_key="placeholder", max_retries=0, http_client=http_client)
    result = sdk.responses.create(model="mock-model", input="who am I")
    assert result.status == "completed"


@pytest.fixture(scope="module")
def loopback_egress(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    """A gateway whose egress policy names loopback explicitly, so that test servers on 127.0.0.1
    can stand in for hosts the proxy tunnels to (tests/security/test_egress.py: what is refused)."""
    from fakes.gateway import policy_text

    root = tmp_path_factory.mktemp("loopback-egress")
    policy = root / "policy.yaml"
    policy.write_text('gateway: {egress: {allow: ["127.0.0.1:*"]}}\n' + policy_text(fake_openai.url))
    gw = Gateway(policy, root / "data").start()
    yield gw
    gw.stop()


def test_virtual_key_never_leaves_for_other_hosts(loopback_egress: Gateway, fake_openai: FakeOpenAI) -> None:
    other_host = FakeOpenAI().start()  # a server that is not a provider in the policy
    try:
        _check_key_stays(loopback_egress, fake_openai, other_host)
    finally:
        other_host.stop()


def _check_key_stays(gateway: Gateway, fake_openai: FakeOpenAI, other_host: FakeOpenAI) -> None:
    # chatgpt.com is a guard host: Codex sends its key there; the gateway answers itself (the model
    # catalog with the key's models, tests/integration/test_codex_backend.py; anything else 403).
    context = ssl.create_default_context(cafile=str(gateway.ca_cert))
    with httpx.Client(proxy=gateway.proxy_url, verify=context) as http:
        guarded = http.get(
            "https://chatgpt.com/backend-api/wham/usage", headers={"authorization": f"Bearer {ALICE_KEY}"}
        )
    assert guarded.status_code == 403 and guarded.json()["error"]["code"] == "virtual_key_not_forwarded"
    # Any other host through the proxy: forwarded, but without the virtual key.
    with httpx.Client(proxy=gateway.proxy_url) as http:
        other = http.post(
            f"http://127.0.0.1:{other_host.port}/elsewhere",
            headers={
                "authorization": f"Bearer {ALICE_KEY}",
                "x-api-key": ALICE_KEY,
                "x-goog-api-key": ALICE_KEY,
                "x-other": "kept",
            },  # fmt: skip
            content=b"{}",
        )
    assert other.status_code == 401  # the fake upstream saw no credentials at all
    received = other_host.received
    assert len(received) == 1
    assert "authorization" not in received[0].headers and "x-api-key" not in received[0].headers
    assert "x-goog-api-key" not in received[0].headers
    assert received[0].headers["x-other"] == "kept"
    assert all(ALICE_KEY not in r.headers.get("authorization", "") for r in fake_openai.received)


def _self_signed_tls_server() -> tuple[int, bytes, threading.Event]:
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
    import tempfile

    directory = tempfile.mkdtemp()
    cert_file, key_file = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_file, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(100)
            tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        listener.close()
        done.set()

    threading.Thread(target=serve, daemon=True).start()
    return port, cert.public_bytes(serialization.Encoding.DER), done


def test_non_provider_host_is_tunnelled_not_intercepted(loopback_egress: Gateway) -> None:
    port, server_cert, done = _self_signed_tls_server()
    with socket.create_connection(("127.0.0.1", loopback_egress.proxy_port), timeout=10) as raw:
        raw.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert raw.recv(1024).startswith(b"HTTP/1.1 200")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw, server_hostname="tunnel-test.local") as tls:
            # The certificate is the server's own, not one minted by the gateway CA.
            assert tls.getpeercert(binary_form=True) == server_cert
            tls.sendall(b"GET / HTTP/1.1\r\nHost: tunnel-test.local\r\n\r\n")
            assert tls.recv(1024).endswith(b"ok")
    assert done.wait(5)


def test_the_chain_governs_the_same_under_stock_mitmdump(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> None:
    """`codexgate up --mitmdump`: the chain as a script in stock mitmdump (all of mitmproxy's addons)."""
    stock = _started_with(tmp_path_factory, fake_openai, "--mitmdump")
    try:
        before = len(fake_openai.received)
        assert client(stock).responses.create(model="gpt-renamed", input="via mitmdump").model == "gpt-upstream-name"
        assert proxy_client(stock).responses.create(model="gpt-test", input="and its proxy").status == "completed"
        received = fake_openai.received[before:]
        assert [r.headers["authorization"] for r in received] == [f"Bearer {UPSTREAM_KEY}"] * 2
        assert all(ALICE_KEY not in json.dumps(r.headers) for r in received)
        with pytest.raises(openai.PermissionDeniedError):
            client(stock, CAROL_KEY).responses.create(model="gpt-test", input="x")
        lines = stock.wait_accounting(lambda _: True, count=3)
        assert [line["decision"] for line in lines] == ["forwarded", "forwarded", "model_not_allowed"]
        # It really is stock mitmdump (the CLI exec'd it in place), and the default run is not.
        assert stock.process is not None
        stock_argv = Path(f"/proc/{stock.process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"from mitmproxy.tools.main import mitmdump; mitmdump()" in stock_argv
        assert b"-O" not in stock_argv  # stock mitmdump, as mitmproxy ships it: its checks on
        # Its flow log is off: the accounting line is the one record per request.
        assert "<< 200" not in stock.log_text()
    finally:
        stock.stop()
