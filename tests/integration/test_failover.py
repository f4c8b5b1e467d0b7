"""Failover through the relay: fallback providers, cooldowns, exhaustion, weights, broken streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway, free_port
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

BROKE_KEY = "sk-cg-failover-broke-" + "0" * 24  # a budget no request fits: Limits refuses after Route


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeOpenAI]]:
    fakes = {name: FakeOpenAI().start() for name in ("primary", "backup", "heavy", "light")}
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.fixture(scope="module")
def ha_gateway(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, FakeOpenAI]) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("failover")
    policy = root / "policy.yaml"
    key = '[{value: "env:CG_TEST_UPSTREAM_KEY"}]'
    price = "price: {input_per_mtok: 1, output_per_mtok: 8}"
    policy.write_text(
        f"""\
gateway: {{resilience: {{cooldown_seconds: 1.5, first_byte_timeout: 5, retry_after_max: 1}}}}
providers:
  primary: {{kind: openai, base_url: "{upstreams["primary"].url}", keys: {key}}}
  backup: {{kind: openai, base_url: "{upstreams["backup"].url}", keys: {key}}}
  heavy: {{kind: openai, base_url: "{upstreams["heavy"].url}", keys: {key}}}
  light: {{kind: openai, base_url: "{upstreams["light"].url}", keys: {key}}}
models:
  gpt-ha: {{routes: [{{provider: primary}}], fallbacks: [gpt-backup], {price}}}
  gpt-backup: {{routes: [{{provider: backup}}], {price}}}
  gpt-weighted: {{routes: [{{provider: heavy, weight: 3}}, {{provider: light, weight: 1}}], {price}}}
teams: {{platform: {{org: acme, budgets: [{{limit_usd: 100, period: 1M}}]}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
  - {{name: broke, team: platform, hash: "{hash_key(BROKE_KEY)}", budgets: [{{limit_usd: 0.000001, period: 1d}}]}}
"""
    )
    gateway = Gateway(policy, root / "data")
    gateway.metrics_port = free_port()
    gateway.start()
    yield gateway
    gateway.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)


def records(gateway: Gateway, session: str) -> list[dict]:
    """The accounting lines of a session, once its line has been written."""
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in gateway.accounting() if r["session_id"] == session]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_fallback_answers_when_primary_fails(
    ha_gateway: Gateway, upstreams: dict[str, FakeOpenAI], status: int
) -> None:
    primary, backup = upstreams["primary"], upstreams["backup"]
    time.sleep(1.6)  # any earlier cooldown of the primary is over
    before = (len(primary.received), len(backup.received))
    primary.failures.append((status, {}))
    session = f"fallback-{status}"
    raw = sdk(ha_gateway).responses.with_raw_response.create(
        model="gpt-ha", input="hello", extra_headers={"session-id": session}
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-codexgate-fallback"].startswith("backup/")
    assert raw.headers["x-codexgate-provider"] == "backup"
    assert (len(primary.received) - before[0], len(backup.received) - before[1]) == (1, 1)
    (record,) = records(ha_gateway, session)  # one request, one accounting line, one charge
    assert record["provider"] == "backup" and record["charge"] == "actual"
    assert (record["model_requested"], record["model"]) == ("gpt-ha", "gpt-backup")  # what answered
    assert [a["outcome"] for a in record["attempts"]] == [
        "rate_limited" if status == 429 else "overloaded" if status == 503 else "server_error",
        "ok",
    ]
    assert record["cost_usd"] == pytest.approx((11 * 1 + 7 * 8) / 1e6)


def test_failing_deployment_cools_down_and_comes_back(ha_gateway: Gateway, upstreams: dict[str, FakeOpenAI]) -> None:
    primary, backup = upstreams["primary"], upstreams["backup"]
    time.sleep(1.6)
    primary.failures.append((503, {}))
    tripped_by = time.monotonic()  # the primary fails after this instant: its 1.5 s cooldown ends later
    sdk(ha_gateway).responses.create(model="gpt-ha", input="trip the primary")
    during = len(primary.received)
    checked = 0
    for _ in range(3):  # while it cools down the primary receives nothing
        sdk(ha_gateway).responses.create(model="gpt-ha", input="during cooldown")
        if time.monotonic() - tripped_by >= 1.5:
            break  # a slow machine: this request may have ended after the cooldown; not evidence
        assert len(primary.received) == during
        checked += 1
    if checked == 0:
        pytest.skip("no request completed within the 1.5 s cooldown on this machine")
    time.sleep(1.7)  # the cooldown is over: it is tried first again
    before_backup = len(backup.received)
    sdk(ha_gateway).responses.create(model="gpt-ha", input="after cooldown")
    assert len(primary.received) == during + 1 and len(backup.received) == before_backup


def test_all_rate_limited_answers_429_with_retry_after(ha_gateway: Gateway, upstreams: dict[str, FakeOpenAI]) -> None:
    time.sleep(1.6)
    upstreams["primary"].failures.append((429, {"retry-after": "30"}))
    upstreams["backup"].failures.append((429, {"retry-after": "20"}))
    answer = httpx.post(
        f"{ha_gateway.base_url}/responses",
        json={"model": "gpt-ha", "input": "x"},
        headers={"authorization": f"Bearer {ALICE_KEY}", "session-id": "exhausted"},
        timeout=30,
    )
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "20"  # Codex retries a 429 only with it
    error = answer.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert [a["deployment"].split("/")[0] for a in error["attempts"]] == ["primary", "backup"]
    (record,) = records(ha_gateway, "exhausted")
    assert record["decision"] == "upstream_exhausted" and not record["cost_usd"]


def test_stream_from_fallback_and_broken_stream(ha_gateway: Gateway, upstreams: dict[str, FakeOpenAI]) -> None:
    time.sleep(1.6)
    upstreams["primary"].failures.append((500, {}))
    with sdk(ha_gateway).responses.create(model="gpt-ha", input="stream please", stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    # A stream that breaks after bytes reached the client ends with response.failed, charged once.
    time.sleep(1.6)
    upstreams["primary"].failures.append((500, {}))
    upstreams["backup"].cut_stream.set()
    try:
        with sdk(ha_gateway).responses.create(
            model="gpt-ha", input="cut me", stream=True, extra_headers={"session-id": "broken-stream"}
        ) as stream:
            kinds = [event.type for event in stream]
    finally:
        upstreams["backup"].cut_stream.clear()
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    (record,) = records(ha_gateway, "broken-stream")
    assert record["charge"] == "estimate" and record["cost_usd"] > 0


def test_weights_split_traffic(ha_gateway: Gateway, upstreams: dict[str, FakeOpenAI]) -> None:
    heavy, light = upstreams["heavy"], upstreams["light"]
    before = (len(heavy.received), len(light.received))
    client = sdk(ha_gateway)
    for _ in range(200):
        client.responses.create(model="gpt-weighted", input="w")
    counts = (len(heavy.received) - before[0], len(light.received) - before[1])
    assert sum(counts) == 200
    # 3:1 -> 150 expected; the standard deviation is about 6, so 120..180 is a wide-enough band.
    assert 120 <= counts[0] <= 180, counts
    body = json.loads(heavy.received[-1].body)
    assert body["model"] == "gpt-weighted"


def test_relay_is_not_reachable_through_the_proxy(ha_gateway: Gateway) -> None:
    import re

    port = int(re.search(r"failover relay listening on 127\.0\.0\.1:(\d+)", ha_gateway.log_text()).group(1))  # type: ignore[union-attr]
    with httpx.Client(proxy=ha_gateway.proxy_url) as http:
        answer = http.post(f"http://127.0.0.1:{port}/relay/guessed-token", content=b"{}")
    # Refused by the egress policy (loopback) before the relay's own guard would see it.
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "egress_not_allowed"


def relay_plans(gateway: Gateway) -> float:
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text
    (line,) = [line for line in text.splitlines() if line.startswith("codexgate_relay_plans ")]
    return float(line.split()[1])


def test_refused_multi_route_requests_leave_no_relay_plan(
    ha_gateway: Gateway, upstreams: dict[str, FakeOpenAI]
) -> None:
    """Route registers a relay plan before Limits refuses; the plan (its closure and the request
    body) must go with the refusal, not linger for total_timeout (900 s)."""
    before = {name: len(fake.received) for name, fake in upstreams.items()}
    broke = openai.OpenAI(api_key=BROKE_KEY, base_url=ha_gateway.base_url, max_retries=0, timeout=30)
    for model in ("gpt-ha", "gpt-weighted", "gpt-ha"):  # fallbacks and weighted routes: relayed
        with pytest.raises(openai.APIStatusError) as refused:
            broke.responses.create(model=model, input="over budget")
        assert refused.value.status_code == 402
    assert {name: len(fake.received) for name, fake in upstreams.items()} == before
    assert relay_plans(ha_gateway) == 0
    # ...while a request that is relayed still goes through, and its plan is used up.
    assert sdk(ha_gateway).responses.create(model="gpt-weighted", input="hello").output_text
    assert relay_plans(ha_gateway) == 0
