"""`codexgate up --web`: mitmweb shows the flows, with comments, without any secret, and not forever."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, CAROL_KEY, UPSTREAM_KEY, Gateway, free_port, policy_text
from fakes.openai_upstream import FakeOpenAI

PASSWORD = "test-web-password"


@pytest.fixture
def web_gateway(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, tmp_path / "data", extra_env={"CODEXGATE_WEB_PASSWORD": PASSWORD})
    gateway.web_port = free_port()  # type: ignore[attr-defined]
    gateway.extra_args = ["--web", "--web-port", str(gateway.web_port), "--set", "codexgate_web_max_flows=4"]  # type: ignore[attr-defined]
    gateway.start()
    yield gateway
    gateway.stop()


def web_flows(gateway: Gateway) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{gateway.web_port}/flows?token={PASSWORD}", timeout=5)  # type: ignore[attr-defined]
            answer.raise_for_status()
            return answer.json()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def web_flows_when(gateway: Gateway, ready: Callable[[list[dict]], bool], timeout: float = 10) -> list[dict]:
    """mitmweb's flows once `ready` holds for them (they are updated as answers finish)."""
    deadline = time.monotonic() + timeout
    while True:
        flows = web_flows(gateway)
        if ready(flows) or time.monotonic() > deadline:
            return flows
        time.sleep(0.05)


def _comments(flows: list[dict]) -> list[str]:
    return [flow.get("comment", "") for flow in flows]


def test_mitmweb_masks_secrets_comments_flows_and_bounds_memory(web_gateway: Gateway) -> None:
    sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=web_gateway.base_url, max_retries=0, timeout=20)
    sdk.responses.create(model="gpt-test", input="through mitmweb")
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(api_key=CAROL_KEY, base_url=web_gateway.base_url, max_retries=0).responses.create(
            model="gpt-test", input="x"
        )
    flows = web_flows_when(
        web_gateway, lambda found: sum("codexgate" in c for c in _comments(found)) >= 2
    )  # both answers finished and commented
    dump = json.dumps(flows)
    assert UPSTREAM_KEY not in dump and ALICE_KEY not in dump and CAROL_KEY not in dump
    assert "***codexgate-masked***" in dump
    comments = _comments(flows)
    assert any("codexgate forwarded: key=alice" in c and "model=gpt-test" in c for c in comments), comments
    assert any("codexgate model_not_allowed: key=carol" in c for c in comments), comments
    # Retention: at most 4 finished flows are kept however many pass (8 have passed).
    for _ in range(6):
        sdk.responses.create(model="mock-model", input="more")
    flows = web_flows_when(web_gateway, lambda found: len(found) <= 4)
    assert len(flows) <= 4
    assert ALICE_KEY not in json.dumps(flows) and UPSTREAM_KEY not in json.dumps(flows)
