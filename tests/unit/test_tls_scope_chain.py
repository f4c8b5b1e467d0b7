"""TlsScope (what is TLS-intercepted in proxy mode), and the whole addon chain on one flow."""

from __future__ import annotations

import asyncio
import inspect
import json
import ssl

import pytest
from mitmproxy import connection, http, options, tls
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.test import taddons, tflow
from unit_support import KEYS, UPSTREAM_SECRET, make_flow

from codexgate.addons import chain
from codexgate.addons.accounting import ACCOUNTING_FILE
from codexgate.addons.intake import Intake
from codexgate.addons.policy_source import PolicySource
from codexgate.addons.tls_scope import TlsScope
from codexgate.flowstate import state_of
from codexgate.sse import SSEParser, encode_responses_stream

pytest_plugins = ["unit_support"]


def client_hello(sni: str | None) -> tls.ClientHello:
    """A real ClientHello, as Python's own TLS client sends it."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    if sni is None:
        context.check_hostname = False
    tls_object = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls_object.do_handshake()
    hello = parse_client_hello(outgoing.read())
    assert hello is not None
    return hello


def hello_data(host: str, port: int, sni: str | None) -> tls.ClientHelloData:
    context = Context(tflow.tclient_conn(), options.Options())
    context.server = connection.Server(address=(host, port))
    return tls.ClientHelloData(context, client_hello(sni))


@pytest.mark.parametrize(
    ("address", "sni", "intercepted"),
    [
        (("api.openai.com", 443), "api.openai.com", True),
        (("162.159.140.245", 443), "api.openai.com", True),
        (("api.openai.com", 443), None, True),
        (("upstream.example.net", 8443), "upstream.example.net", True),
        (("upstream.example.net", 443), "upstream.example.net", False),
        (("chatgpt.com", 443), "chatgpt.com", True),
        (("github.com", 443), "github.com", False),
        (("10.0.0.1", 443), None, False),
    ],
)
def test_only_governed_and_guard_hosts_intercepted(source, address, sni, intercepted):
    data = hello_data(*address, sni)
    TlsScope(source).tls_clienthello(data)
    assert data.ignore_connection is (not intercepted)


def test_unsure_means_intercept(source, monkeypatch):
    def broken(self):
        raise RuntimeError("policy unavailable")

    monkeypatch.setattr(PolicySource, "current", broken)
    data = hello_data("github.com", 443, "github.com")
    TlsScope(source).tls_clienthello(data)
    assert data.ignore_connection is False


def test_guard_host_subdomain_intercepted(source):
    data = hello_data("ab.chatgpt.com", 443, "ab.chatgpt.com")
    TlsScope(source).tls_clienthello(data)
    assert data.ignore_connection is False


def test_proxy_mode_request_to_provider_base_path_is_served(source):
    flow = make_flow(
        url="https://upstream.example.net:8443/openai/v1/responses", body={"model": "gpt-5.5"}, mode="regular"
    )
    intake = Intake(source)
    intake.requestheaders(flow)
    intake.request(flow)
    assert flow.response is None
    assert state_of(flow).endpoint == "responses"


async def run_hooks(addons, name: str, flow: http.HTTPFlow) -> None:
    for addon in addons:
        hook = getattr(addon, name, None)
        if hook is not None:
            result = hook(flow)
            if inspect.isawaitable(result):
                await result


@pytest.fixture
def gateway(policy_file, tmp_path, upstream_env):
    addons = chain()
    with taddons.context(*addons) as tctx:
        tctx.configure(addons[0], codexgate_policy=str(policy_file), codexgate_data_dir=str(tmp_path / "data"))
        yield addons

        async def done():
            for addon in addons:
                if hasattr(addon, "done"):
                    result = addon.done()
                    if inspect.isawaitable(result):
                        await result

        asyncio.run(done())


@pytest.fixture
def unshown_gateway(policy_file, tmp_path, upstream_env):
    """The chain as the gateway master runs it: no mitmweb, so nothing to mask for."""
    addons = chain(shown=False)
    with taddons.context(*addons) as tctx:
        tctx.configure(addons[0], codexgate_policy=str(policy_file), codexgate_data_dir=str(tmp_path / "data"))
        yield addons
        asyncio.run(addons[-1].done())


def accounting_lines(tmp_path):
    return [json.loads(line) for line in (tmp_path / "data" / ACCOUNTING_FILE).read_text().splitlines()]


def test_chain_answers_mock_model_stream(gateway, tmp_path):
    body = {"model": "mock", "stream": True, "input": [{"role": "user", "content": "hello"}]}
    flow = make_flow(body=body, headers={"authorization": f"Bearer {KEYS['alice']}", "session-id": "s1"})

    async def go():
        await run_hooks(gateway, "requestheaders", flow)
        await run_hooks(gateway, "request", flow)
        await run_hooks(gateway, "responseheaders", flow)
        await run_hooks(gateway, "response", flow)

    asyncio.run(go())
    assert flow.response.status_code == 200
    assert flow.response.headers["content-type"] == "text/event-stream"
    events = SSEParser().feed(flow.response.content)
    assert events[-1][0] == "response.completed"
    assert flow.response.headers["x-codexgate-decision"] == "allowed"
    assert flow.response.headers["x-codexgate-provider"] == "local"
    (record,) = accounting_lines(tmp_path)
    assert record["key"] == "alice"
    assert record["model"] == "mock-model"
    assert record["session_id"] == "s1"
    assert record["decision"] == "answered"
    assert record["stream_outcome"] == "completed"
    assert record["usage"] == {"input_tokens": 11, "cached_tokens": 0, "output_tokens": 7, "reasoning_tokens": 0}


def test_chain_forwards_openai_model_with_provider_key(gateway, tmp_path):
    body = {"model": "gpt-5.5", "stream": True, "input": "hi"}
    flow = make_flow(body=body, headers={"authorization": f"Bearer {KEYS['alice']}", "host": "127.0.0.1:4000"})

    async def go():
        await run_hooks(gateway, "requestheaders", flow)
        await run_hooks(gateway, "request", flow)

    asyncio.run(go())
    assert flow.response is None  # would be forwarded
    assert flow.request.url == "https://upstream.example.net:8443/openai/v1/responses"
    assert flow.request.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert json.loads(flow.request.content)["model"] == "gpt-5.5-2026-01-01"
    assert state_of(flow).decision == "forwarded"

    usage = {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 2}
    upstream = encode_responses_stream(
        [{"type": "response.completed", "response": {"id": "resp_x", "usage": usage}, "sequence_number": 0}]
    )
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})

    async def answer():
        await run_hooks(gateway, "responseheaders", flow)
        for index in range(len(upstream)):
            assert flow.response.stream(upstream[index : index + 1]) == upstream[index : index + 1]
        flow.response.stream(b"")
        await run_hooks(gateway, "response", flow)

    asyncio.run(answer())
    (record,) = accounting_lines(tmp_path)
    assert record["provider"] == "openai"
    assert record["upstream_model"] == "gpt-5.5-2026-01-01"
    assert record["usage"]["input_tokens"] == 3
    assert record["usage"]["output_tokens"] == 2
    assert record["stream_outcome"] == "completed"


def test_chain_refusal_is_recorded_not_forwarded(gateway, tmp_path):
    flow = make_flow(body={"model": "o9-secret"}, headers={"authorization": f"Bearer {KEYS['alice']}"})

    async def go():
        for name in ("requestheaders", "request", "responseheaders", "response"):
            await run_hooks(gateway, name, flow)

    asyncio.run(go())
    assert flow.response.status_code == 403
    assert flow.response.headers["x-codexgate-decision"] == "refused"
    # Never swapped for a provider key; and masked for mitmweb, which shows this flow.
    assert flow.request.headers["authorization"] == "Bearer ***codexgate-masked***"
    (record,) = accounting_lines(tmp_path)
    assert record["decision"] == "model_not_allowed"
    assert record["status"] == 403
    assert record["usage"] is None


def test_unshown_chain_skips_masking_but_still_removes_virtual_keys_bound_elsewhere(unshown_gateway):
    (pipeline,) = unshown_gateway  # one addon for mitmproxy to dispatch to
    names = [type(step).__name__ for step in pipeline.steps]
    assert "FlowRetention" not in names and "ShownSecretMask" not in names
    assert names[0] == "SecretMask"  # first: virtual keys go before any other step sees the request
    governed_flow = make_flow(
        body={"model": "gpt-5.5", "input": "hi"}, headers={"authorization": f"Bearer {KEYS['alice']}"}
    )
    # A plain-http request through the proxy listener to a host the policy does not govern.
    elsewhere = make_flow(
        url="http://example.org/collect", body={"x": 1}, headers={"x-api-key": KEYS["alice"]}, mode="regular"
    )

    async def go():
        for flow in (governed_flow, elsewhere):
            await run_hooks(unshown_gateway, "requestheaders", flow)
            await run_hooks(unshown_gateway, "request", flow)

    asyncio.run(go())
    # Identified from the headers themselves and swapped for the provider key (nothing masked: no one looks).
    assert state_of(governed_flow).key.name == "alice"
    assert governed_flow.request.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    # The virtual key never leaves for another host, viewer or not.
    assert "x-api-key" not in elsewhere.request.headers
