"""A stream is forwarded as it comes, event by event, on every route that carries one: each event
reaches the client before the provider sends the next (the fake provider sends the next only when
the test, having seen the previous one arrive, lets it), and the usage of the last one is still
accounted. No timing: the provider cannot run ahead of the client."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes.gateway import Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

KEY = "sk-cg-stream-forwarding-key-000000000000000000"


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[Gateway]:
    price = "price: {input_per_mtok: 1, output_per_mtok: 8}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""\
providers:
  openai: {{kind: openai, base_url: "{upstream.url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
  openai-b: {{kind: openai, base_url: "{upstream.url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
models:
  gpt-direct: {{routes: [{{provider: openai}}], {price}}}
  gpt-relayed: {{routes: [{{provider: openai}}, {{provider: openai-b}}], {price}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: streamer, team: platform, hash: "{hash_key(KEY)}", budgets: [{{limit_usd: 50, period: 1d}}]}}
""")
    running = Gateway(policy, tmp_path / "data").start()
    yield running
    running.stop()


def event_types(lines: Iterator[str]) -> Iterator[str]:
    """The `event:` names of an SSE stream, each as soon as its event is complete."""
    name = ""
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line == "" and name:
            yield name
            name = ""


@pytest.mark.parametrize("model", ["gpt-direct", "gpt-relayed"])
def test_each_event_reaches_the_client_before_the_next_is_sent(
    gateway: Gateway, upstream: FakeOpenAI, model: str
) -> None:
    steps: queue.Queue[None] = queue.Queue()
    upstream.step_stream = steps
    body = {"model": model, "input": "stream it, event by event", "stream": True}
    headers = {"authorization": f"Bearer {KEY}"}
    seen: list[str] = []
    with httpx.stream("POST", f"{gateway.base_url}/responses", json=body, headers=headers, timeout=20) as answer:
        assert answer.status_code == 200
        for name in event_types(answer.iter_lines()):
            seen.append(name)
            # The provider has sent exactly what the client has: it waits for the next step.
            assert upstream.stream_sent == seen
            steps.put(None)
    assert len(seen) >= 3
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    (line,) = gateway.wait_accounting(lambda r: r["model"] == model)
    assert line["decision"] == "forwarded"
    assert line["stream_outcome"] == "completed"
    assert line["charge"] == "actual"
    assert line["usage"]["input_tokens"] == 11 and line["usage"]["output_tokens"] == 7  # the fake's usage
