"""Responses over WebSocket through a real gateway process, spoken as Codex speaks it
(fakes/codex_socket.py): each response.create is governed and accounted like an HTTP request."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes.codex_socket import CodexSocket, output_text, user
from fakes.gateway import ALICE_KEY, BOB_KEY, UPSTREAM_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI
from fakes.sdk_validation import valid_stream_event

from codexgate.policies.keys import hash_key


def socket_for(gateway: Gateway, mode: str, key: str = ALICE_KEY, **kwargs: Any) -> CodexSocket:
    if mode == "proxy":
        return CodexSocket(
            "wss://api.openai.com/v1/responses", key, proxy=gateway.proxy_url, ca_file=str(gateway.ca_cert), **kwargs
        )
    return CodexSocket(gateway.base_url.replace("http://", "ws://") + "/responses", key, **kwargs)


def request(model: str, items: list[Any]) -> dict[str, Any]:
    """The fields Codex sends with every request (here a small subset), and the input."""
    return {
        "model": model, "instructions": "be brief", "input": items, "tools": [], "tool_choice": "auto",
        "parallel_tool_calls": False, "store": False, "stream": True, "include": [],
        "prompt_cache_key": "cache-key-1",
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["base-url", "proxy"])
def test_multi_turn_session_over_one_socket(gateway: Gateway, fake_openai: FakeOpenAI, mode: str) -> None:
    session_id = f"sess-{uuid.uuid4().hex[:10]}"
    before = len(fake_openai.received)
    system = {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]}

    async def session() -> tuple[CodexSocket, list[list[dict[str, Any]]]]:
        turns = []
        async with socket_for(gateway, mode, session_id=session_id) as codex:
            warm = await codex.warm_up(request("gpt-test", [system]))
            assert [e["type"] for e in warm] == ["response.created", "response.completed"]
            conversation = [system]
            for text in ("first question", "second question", "third question"):
                conversation = [*conversation, user(text)]
                events = await codex.create(request("gpt-test", conversation))
                turns.append(events)
                conversation = [*conversation, *codex.items_added]
        return codex, turns

    codex, turns = asyncio.run(session())
    # Codex's continuations: after the warm-up every request went as previous_response_id + delta.
    assert [("previous_response_id" in m, len(m["input"])) for m in codex.sent] == [
        (False, 1), (True, 1), (True, 1), (True, 1)
    ]  # fmt: skip
    for events in turns:
        assert events[-1]["type"] == "response.completed" and output_text(events)
        for event in events:
            valid_stream_event(event)
    # Upstream saw three ordinary Responses requests, each with the whole conversation, the
    # gateway's provider key, and nothing of the socket protocol or the virtual key.
    received = fake_openai.received[before:]
    assert len(received) == 3
    bodies = [json.loads(r.body) for r in received]
    assert [len(b["input"]) for b in bodies] == [2, 4, 6]  # system + (user, answer) per earlier turn + user
    assert bodies[2]["input"][1:4] == [user("first question"), turns[0][-2]["item"], user("second question")]
    for r, body in zip(received, bodies, strict=True):
        assert r.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert not {"type", "previous_response_id", "generate"} & body.keys()
        assert "sk-cg-" not in json.dumps(r.headers) and "x-codexgate-ws-relay" not in r.headers
        assert r.headers["session-id"] == session_id
    # One accounting line per response (the warm-up asked no model: none for it), marked ws.
    lines = gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=3)
    assert len(lines) == 3, lines
    assert {(r["transport"], r["mode"], r["endpoint"], r["key"], r["status"]) for r in lines} == {
        ("ws", "gateway" if mode == "base-url" else "proxy", "responses", "alice", 200)
    }
    assert all(r["usage"]["input_tokens"] > 0 and r["decision"] == "forwarded" for r in lines)


def test_key_in_proxy_credentials_identifies_the_socket(gateway: Gateway) -> None:
    """`HTTPS_PROXY=http://user:KEY@gateway:8080`: the key comes on the CONNECT, not the upgrade."""
    session_id = f"sess-{uuid.uuid4().hex[:10]}"

    async def session() -> list[dict[str, Any]]:
        proxy_auth = aiohttp.BasicAuth("codex", ALICE_KEY)
        async with socket_for(gateway, "proxy", key="placeholder", session_id=session_id, proxy_auth=proxy_auth) as c:
            return await c.create(request("mock-model", [user("hi")]))

    assert asyncio.run(session())[-1]["type"] == "response.completed"
    [line] = gateway.wait_accounting(lambda r: r["session_id"] == session_id)
    assert (line["key"], line["transport"], line["mode"]) == ("alice", "ws", "proxy")
    # The audit record says how the turn came, too (the accounting line and it are one record).
    audited = [
        record
        for path in sorted((gateway.data_dir / "audit").glob("*.jsonl"))
        for record in map(json.loads, path.read_text().splitlines())
        if record.get("request_id") == line["request_id"]
    ]
    assert [(record["transport"], record["mode"]) for record in audited] == [("ws", "proxy")]


def test_unknown_and_disabled_keys_are_refused_at_the_upgrade(gateway: Gateway) -> None:
    async def connect(key: str) -> int:
        try:
            async with socket_for(gateway, "base-url", key=key):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    assert asyncio.run(connect("sk-cg-not-a-key-000000000000000000000000000")) == 401
    assert asyncio.run(connect(BOB_KEY)) == 401
    decisions = [r["decision"] for r in gateway.accounting()[-2:]]
    assert decisions == ["unknown_key", "key_disabled"]
    assert {r["transport"] for r in gateway.accounting()[-2:]} == {"ws"}


def test_unknown_previous_response_is_reported_then_a_full_request_works(gateway: Gateway) -> None:
    async def session() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with socket_for(gateway, "base-url") as codex:
            missing = await codex.send_raw(
                {**request("mock-model", [user("more")]), "previous_response_id": "resp_from_another_socket"}
            )
            full = await codex.create(request("mock-model", [user("hello")]))
            return missing, full

    missing, full = asyncio.run(session())
    assert missing == [
        {"type": "error", "status": 400, "error": {
            "message": "Previous response with id 'resp_from_another_socket' not found.",
            "type": "invalid_request_error", "code": "previous_response_not_found", "param": "previous_response_id",
        }}
    ]  # fmt: skip
    assert full[-1]["type"] == "response.completed"


def test_model_refusal_and_bad_messages_arrive_as_error_events(gateway: Gateway) -> None:
    async def session() -> list[list[dict[str, Any]]]:
        async with socket_for(gateway, "base-url") as codex:
            assert codex.socket is not None
            not_allowed = await codex.create(request("claude-mock", [user("hi")]))
            await codex.socket.send_str('{"type": "session.update"}')
            unsupported = json.loads((await codex.socket.receive(timeout=10)).data)
            await codex.socket.send_str("not json")
            invalid = json.loads((await codex.socket.receive(timeout=10)).data)
            after = await codex.create(request("mock-model", [user("still there?")]))
            return [not_allowed, [unsupported], [invalid], after]

    not_allowed, unsupported, invalid, after = asyncio.run(session())
    assert not_allowed[-1]["type"] == "error" and not_allowed[-1]["status"] == 403
    assert not_allowed[-1]["error"]["code"] == "model_not_allowed"
    assert "not allowed for key alice" in not_allowed[-1]["error"]["message"]
    assert unsupported[0]["status"] == 400 and unsupported[0]["error"]["code"] == "unsupported_message"
    assert invalid[0]["status"] == 400 and invalid[0]["error"]["code"] == "invalid_json"
    assert after[-1]["type"] == "response.completed"  # the socket stays usable


def test_relay_marker_from_a_client_is_ignored_and_never_forwarded(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    session_id = f"sess-{uuid.uuid4().hex[:10]}"
    before = len(fake_openai.received)
    response = httpx.post(
        f"{gateway.base_url}/responses",
        json={"model": "gpt-test", "input": "hi"},
        headers={"authorization": f"Bearer {ALICE_KEY}", "session-id": session_id, "x-codexgate-ws-relay": "x proxy"},
    )
    assert response.status_code == 200
    [line] = gateway.wait_accounting(lambda r: r["session_id"] == session_id)
    assert (line["transport"], line["mode"]) == ("http", "gateway")
    assert "x-codexgate-ws-relay" not in fake_openai.received[before].headers
    assert "carried a WebSocket relay marker that is not this gateway's" in gateway.log_text()


def test_relay_is_not_reachable_through_the_proxy_listener(gateway: Gateway) -> None:
    port = re.search(r"Responses WebSocket relay listening on 127\.0\.0\.1:(\d+)", gateway.log_text())
    assert port is not None
    with httpx.Client(proxy=gateway.proxy_url) as client:
        response = client.get(f"http://127.0.0.1:{port.group(1)}/responses-ws/anything")
    assert response.status_code == 403 and response.json()["error"]["code"] == "egress_not_allowed"


# -- refusals by budget and rate, on a gateway of their own -----------------------------------

PACED_KEY = "sk-cg-paced-ws-key-0000000000000000000000000000"
EXPIRED_KEY = "sk-cg-expired-ws-key-00000000000000000000000000"


@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("ws-limited")
    policy = root / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  local: {{kind: mock, output_tokens: 20}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 1.25, output_per_mtok: 10}}}}
teams:
  platform: {{org: acme, budgets: [{{limit_usd: 0.000001, period: 1M}}]}}
  paced: {{org: acme}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
  - {{name: pacer, team: paced, hash: "{hash_key(PACED_KEY)}", rate_limits: [{{requests: 1, per: 1h}}]}}
  - {{name: gone, team: paced, hash: "{hash_key(EXPIRED_KEY)}", expires_at: 2026-01-01T00:00:00Z}}
"""
    )
    gateway = Gateway(policy, root / "data").start()
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("mode", ["base-url", "proxy"])
def test_budget_refusal_arrives_as_the_error_event_codex_shows(limited_gateway: Gateway, mode: str) -> None:
    session_id = f"sess-{uuid.uuid4().hex[:10]}"

    async def session() -> list[dict[str, Any]]:
        async with socket_for(limited_gateway, mode, session_id=session_id) as codex:
            return await codex.create(request("mock-model", [user("hello " * 200)]))

    [event] = asyncio.run(session())
    # Codex turns {"type": "error", "status": ...} into the HTTP error it stands for and prints
    # error.message: "unexpected status 402 Payment Required: team platform: monthly budget ..."
    assert event["type"] == "error" and event["status"] == 402
    assert event["error"]["code"] == "budget_exceeded"
    assert event["error"]["message"].startswith("team platform: monthly budget $0.00 used")
    assert event["headers"]["x-codexgate-error"] == "budget_exceeded"
    [line] = limited_gateway.wait_accounting(lambda r: r["session_id"] == session_id)
    assert (line["decision"], line["status"], line["transport"], line["cost_usd"]) == ("budget_exceeded", 402, "ws", 0)


def test_after_a_refusal_retrying_cannot_cure_the_sessions_next_upgrade_goes_to_http(
    limited_gateway: Gateway,
) -> None:
    """Codex retries a 402 five times on the socket, then five times over HTTP; answering the
    refused session's next upgrade 426 sends it to HTTP at once (once: later upgrades open)."""
    session_id = f"sess-{uuid.uuid4().hex[:10]}"

    async def upgrade(session: str) -> int:
        try:
            async with socket_for(limited_gateway, "base-url", session_id=session):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    async def session() -> list[int]:
        async with socket_for(limited_gateway, "base-url", session_id=session_id) as codex:
            [event] = await codex.create(request("mock-model", [user("hello")]))
            assert event["status"] == 402
        return [await upgrade("another-session"), await upgrade(session_id), await upgrade(session_id)]

    assert asyncio.run(session()) == [101, 426, 101]
    lines = limited_gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=2)
    assert [(r["decision"], r["status"]) for r in lines] == [("budget_exceeded", 402), ("websocket_refused", 426)]


def test_expired_key_is_refused_at_the_upgrade(limited_gateway: Gateway) -> None:
    async def connect() -> int:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with socket_for(limited_gateway, "base-url", key=EXPIRED_KEY):
                pass
        return refused.value.status

    assert asyncio.run(connect()) == 401
    [line] = limited_gateway.wait_accounting(lambda r: r["key"] == "gone")
    assert (line["decision"], line["transport"]) == ("key_expired", "ws")


def test_rate_limit_refusal_carries_retry_after(limited_gateway: Gateway) -> None:
    session_id = f"sess-{uuid.uuid4().hex[:10]}"

    async def session() -> list[list[dict[str, Any]]]:
        async with socket_for(limited_gateway, "base-url", key=PACED_KEY, session_id=session_id) as codex:
            first = await codex.create(request("mock-model", [user("one")]))
            second = await codex.create(request("mock-model", [user("one"), *codex.items_added, user("two")]))
            return [first, second]

    first, second = asyncio.run(session())
    assert first[-1]["type"] == "response.completed"
    [event] = second
    assert event["status"] == 429 and event["error"]["code"] == "rate_limit_exceeded"
    assert int(event["headers"]["retry-after"]) > 0  # Codex waits exactly this long, then retries
    assert event["headers"]["x-ratelimit-limit-requests"] == "1"
    lines = limited_gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=2)
    assert [(r["decision"], r["transport"]) for r in lines] == [("answered", "ws"), ("rate_limited", "ws")]


# -- a translated provider over the socket ------------------------------------------------------


def test_translated_provider_answers_over_the_socket(
    claude_gateway: Gateway, claude: anthropic_fake.FakeAnthropic
) -> None:
    session_id = f"sess-{uuid.uuid4().hex[:10]}"
    claude.reset()
    claude.replies.append(anthropic_fake.Reply(content=[{"type": "text", "text": "Bonjour from Claude."}]))
    claude.replies.append(anthropic_fake.Reply(content=[{"type": "text", "text": "Still Claude."}]))

    async def session() -> list[list[dict[str, Any]]]:
        async with socket_for(claude_gateway, "base-url", session_id=session_id) as codex:
            first = await codex.create(request("claude-sonnet-4-5", [user("hi")]))
            second = await codex.create(request("claude-sonnet-4-5", [user("hi"), *codex.items_added, user("again")]))
            assert "previous_response_id" in codex.sent[-1]
            return [first, second]

    first, second = asyncio.run(session())
    assert output_text(first) == "Bonjour from Claude." and output_text(second) == "Still Claude."
    for event in first + second:
        valid_stream_event(event)
    assert claude.invalid == []
    # The continuation reached Claude as the whole conversation, its first answer included.
    messages = json.loads(claude.received[-1].body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "Bonjour from Claude." in json.dumps(messages[1])
    assert all("sk-cg-" not in json.dumps(r.headers) for r in claude.received)
    lines = claude_gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=2)
    assert [(r["provider"], r["transport"], r["status"]) for r in lines] == [("claude", "ws", 200)] * 2
    assert all(r["usage"]["output_tokens"] == 40 for r in lines)


# -- the 426 fallback, as an option --------------------------------------------------------------


@pytest.fixture(scope="module")
def refusing_gateway(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    from fakes.gateway import policy_text

    root = tmp_path_factory.mktemp("ws-refuse")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, root / "data")
    gateway.extra_args = ["--set", "codexgate_websocket=refuse"]
    yield gateway.start()
    gateway.stop()


def test_refuse_option_answers_426_so_codex_falls_back_to_http(refusing_gateway: Gateway) -> None:
    async def connect() -> aiohttp.WSServerHandshakeError:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with socket_for(refusing_gateway, "base-url"):
                pass
        return refused.value

    assert asyncio.run(connect()).status == 426
    [line] = refusing_gateway.wait_accounting(lambda r: r["decision"] == "websocket_refused")
    assert (line["status"], line["transport"]) == (426, "ws")


def test_ws_relay_helpers_expand_continuations() -> None:
    from codexgate.ws_relay import Conversation, input_items

    conversation = Conversation()
    conversation.remember("resp_1", [user("a")], [{"type": "message", "role": "assistant", "content": []}])
    assert conversation.expand("resp_1", [user("b")]) == [
        user("a"), {"type": "message", "role": "assistant", "content": []}, user("b")
    ]  # fmt: skip
    assert conversation.expand("resp_other", [user("b")]) is None
    assert input_items("hi") == [user("hi")] and input_items(3) is None


def test_socket_relayed_by_mitmproxys_websocket_layer_when_raw_tcp_is_off(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> None:
    """The relayed socket normally passes mitmproxy as raw TCP (cheaper); with `rawtcp` off,
    mitmproxy's WebSocket layer relays it, message by message, just as well."""
    from fakes.gateway import policy_text

    root = tmp_path_factory.mktemp("ws-no-rawtcp")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, root / "data")
    gateway.extra_args = ["--set", "rawtcp=false"]
    gateway.start()
    session_id = f"sess-{uuid.uuid4().hex[:10]}"
    try:

        async def session() -> list[list[dict[str, Any]]]:
            async with socket_for(gateway, "base-url", session_id=session_id) as codex:
                first = await codex.create(request("mock-model", [user("one")]))
                second = await codex.create(request("mock-model", [user("one"), *codex.items_added, user("two")]))
                return [first, second]

        turns = asyncio.run(session())
        assert [events[-1]["type"] for events in turns] == ["response.completed"] * 2
        lines = gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=2)
        assert [r["transport"] for r in lines] == ["ws", "ws"]
    finally:
        gateway.stop()


def test_key_revoked_mid_session_is_refused_on_the_open_socket(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> None:
    """Every response.create is identified anew: a socket opened with a good key does not outlive
    the key's revocation in the policy (hot reload)."""
    import os
    import time

    from fakes.gateway import policy_text

    root = tmp_path_factory.mktemp("ws-revoke")
    policy = root / "policy.yaml"
    text = policy_text(fake_openai.url)
    policy.write_text(text)
    gateway = Gateway(policy, root / "data").start()
    alice = f'hash: "{hash_key(ALICE_KEY)}"'
    assert alice in text
    try:

        async def session() -> list[list[dict[str, Any]]]:
            async with socket_for(gateway, "base-url") as codex:
                before = await codex.create(request("mock-model", [user("one")]))
                policy.write_text(text.replace(alice, f"{alice}, disabled: true"))
                stamp = time.time_ns() + 1_000_000_000  # visible to an mtime check within one tick
                os.utime(policy, ns=(stamp, stamp))
                after = await codex.create(request("mock-model", [user("two")]))
                return [before, after]

        before, after = asyncio.run(session())
    finally:
        gateway.stop()
    assert before[-1]["type"] == "response.completed"
    [event] = after
    assert (event["status"], event["error"]["code"]) == (401, "key_disabled")


def test_interrupt_stops_the_response_and_its_continuation_is_resent_in_full(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    """Codex 0.169 can interrupt a response on the socket (`response.interrupt`, e.g. the developer
    stops the turn): the relayed request is closed, the response ends with `response.completed`,
    and a continuation naming it is answered `previous_response_not_found` (Codex resends in full)."""
    session_id = f"sess-{uuid.uuid4().hex[:10]}"
    fake_openai.release_stream.clear()
    fake_openai.hold_stream.set()  # the upstream sends response.created, then waits

    async def session() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        async with socket_for(gateway, "base-url", session_id=session_id) as codex:
            assert codex.socket is not None
            first = {"type": "response.create", **request("gpt-test", [user("a long answer please")])}
            await codex.socket.send_str(json.dumps(first))
            created = json.loads((await codex.socket.receive(timeout=20)).data)
            response_id = created["response"]["id"]
            await codex.socket.send_str(
                json.dumps({"type": "response.interrupt", "response_id": response_id, "mode": "discard_partial_items"})
            )
            ack = json.loads((await codex.socket.receive(timeout=20)).data)
            fake_openai.hold_stream.clear()
            fake_openai.release_stream.set()
            missing = await codex.send_raw({**request("gpt-test", [user("next")]), "previous_response_id": response_id})
            full = await codex.create(request("gpt-test", [user("a long answer please"), user("next")]))
            return created, ack, missing, full

    try:
        created, ack, missing, full = asyncio.run(session())
    finally:
        fake_openai.hold_stream.clear()
        fake_openai.release_stream.set()
    assert created["type"] == "response.created"
    assert ack["type"] == "response.completed" and ack["response"]["id"] == created["response"]["id"]
    assert ack["response"]["output"] == []
    assert missing[0]["error"]["code"] == "previous_response_not_found"
    assert full[-1]["type"] == "response.completed"
    lines = gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=2)
    assert [r["transport"] for r in lines] == ["ws", "ws"]
    # The interrupted request ended as a client disconnect does over HTTP: charged its estimate.
    assert (lines[0]["error"], lines[0]["charge"]) == ("Client disconnected.", "estimate")
    assert lines[0]["cost_usd"] > 0


def test_under_mitmweb_the_socket_works_and_no_flow_shows_the_key(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> None:
    """mitmweb publishes every flow, the upgrade and each relayed request included: none shows
    the virtual key (the upgrade's is kept aside for the relay, the relayed POSTs' are masked)."""
    from fakes.gateway import free_port, policy_text

    root = tmp_path_factory.mktemp("ws-web")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    password = "test-web-password"
    web_port = free_port()
    gateway = Gateway(policy, root / "data", extra_env={"CODEXGATE_WEB_PASSWORD": password})
    gateway.extra_args = ["--web", "--web-port", str(web_port)]
    gateway.start()
    session_id = f"sess-{uuid.uuid4().hex[:10]}"
    try:

        async def session() -> list[list[dict[str, Any]]]:
            async with socket_for(gateway, "base-url", session_id=session_id) as codex:
                first = await codex.create(request("gpt-test", [user("one")]))
                second = await codex.create(request("gpt-test", [user("one"), *codex.items_added, user("two")]))
                return [first, second]

        turns = asyncio.run(session())
        assert [events[-1]["type"] for events in turns] == ["response.completed"] * 2
        gateway.wait_accounting(lambda r: r["session_id"] == session_id, count=2)
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows?token={password}", timeout=10).json()
    finally:
        gateway.stop()
    shown = json.dumps(flows)
    assert ALICE_KEY not in shown and ALICE_KEY[len("sk-cg-") :] not in shown
    assert any("Responses WebSocket for key alice" in flow.get("comment", "") for flow in flows)
    assert sum(1 for flow in flows if flow.get("request", {}).get("path") == "/v1/responses") >= 2


def test_gateway_stop_closes_open_sockets_going_away(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> None:
    """SIGTERM: an idle Codex socket is closed with 1001 (going away), so Codex reconnects, and
    the gateway still stops cleanly."""
    from fakes.gateway import policy_text

    root = tmp_path_factory.mktemp("ws-stop")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, root / "data").start()

    async def session() -> tuple[aiohttp.WSMsgType, Any]:
        async with socket_for(gateway, "base-url") as codex:
            assert codex.socket is not None
            assert (await codex.create(request("mock-model", [user("one")])))[-1]["type"] == "response.completed"
            await asyncio.get_running_loop().run_in_executor(None, gateway.stop)
            closing = await codex.socket.receive(timeout=20)
            return closing.type, closing.data

    try:
        kind, code = asyncio.run(session())
    finally:
        gateway.stop()
    assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)
    assert code == 1001
    assert gateway.process is not None and gateway.process.returncode == 0, gateway.log_text()[-2000:]
