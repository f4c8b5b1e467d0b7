"""A client that goes away mid-stream is its own outcome, not a provider failure: the request is
recorded as `client_disconnected` and charged what the provider produced when its usage can still
be read (the relay reads the stream on to its usage event), else its estimate — said in `charge`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes.gateway import Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

KEY = "sk-cg-client-leaves-key-00000000000000000000000"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def start_gateway(tmp_path: Path, upstream: FakeOpenAI, gateway_settings: str = "{}") -> Gateway:
    price = "price: {input_per_mtok: 1, output_per_mtok: 8}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""\
gateway: {gateway_settings}
providers:
  openai: {{kind: openai, base_url: "{upstream.url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
  openai-b: {{kind: openai, base_url: "{upstream.url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
models:
  gpt-direct: {{routes: [{{provider: openai}}], {price}}}
  gpt-relayed: {{routes: [{{provider: openai}}, {{provider: openai-b}}], {price}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: leaver, team: platform, hash: "{hash_key(KEY)}", budgets: [{{limit_usd: 50, period: 1d}}]}}
""")
    return Gateway(policy, tmp_path / "data").start()


@pytest.fixture
def gateway(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = start_gateway(tmp_path, upstream)
    yield running
    running.stop()


def leave_after_first_event(gateway: Gateway, model: str) -> None:
    """Starts a streamed request and closes the connection once the first event arrived."""
    body = {"model": model, "input": "a long answer, please", "stream": True}
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{gateway.base_url}/responses", json=body, headers=headers, timeout=20) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_raw():
            if b"response.created" in chunk:
                break


def test_relayed_stream_is_charged_what_the_provider_produced(gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.hold_stream.set()  # the provider sends its first event, then waits
    leave_after_first_event(gateway, "gpt-relayed")
    # Only once the gateway saw the client go does the provider write the rest, usage last.
    assert "reading the answer on for its usage" in gateway.wait_log("reading the answer on for its usage")
    upstream.release_stream.set()
    (line,) = gateway.wait_accounting(lambda r: r["model"] == "gpt-relayed")
    assert line["decision"] == "client_disconnected"
    assert line["charge"] == "actual"
    assert line["usage"]["output_tokens"] == 7 and line["usage"]["input_tokens"] == 11  # the fake's usage
    assert line["cost_usd"] == pytest.approx((11 * 1 + 7 * 8) / 1_000_000)


def test_direct_stream_is_charged_its_estimate_and_says_so(gateway: Gateway, upstream: FakeOpenAI) -> None:
    upstream.hold_stream.set()
    leave_after_first_event(gateway, "gpt-direct")
    (line,) = gateway.wait_accounting(lambda r: r["model"] == "gpt-direct")
    upstream.release_stream.set()
    # mitmproxy closes the provider's connection when the client goes: the usage is never read.
    assert line["decision"] == "client_disconnected"
    assert line["charge"] == "estimate"
    assert line["cost_usd"] > 0
    assert "upstream_error" not in gateway.log_text()


def test_reading_on_can_be_turned_off(tmp_path: Path, upstream: FakeOpenAI) -> None:
    """read_after_client_left: 0 — the provider's stream is closed with the client's (it stops
    generating), and the request is charged its estimate."""
    gateway = start_gateway(tmp_path, upstream, "{resilience: {read_after_client_left: 0}}")
    try:
        upstream.hold_stream.set()
        leave_after_first_event(gateway, "gpt-relayed")
        (line,) = gateway.wait_accounting(lambda r: r["model"] == "gpt-relayed")
        upstream.release_stream.set()
        assert line["decision"] == "client_disconnected"
        assert line["charge"] == "estimate"
        assert "reading the answer on" not in gateway.log_text()
    finally:
        gateway.stop()
