"""Vertex AI through a real gateway process, the official openai SDK as the client: Codex's
Responses requests reach a fake Vertex AI (the fake Gemini wire format under Vertex's paths) with an
OAuth2 bearer token the gateway minted from a service-account key at a fake Google token endpoint
(which verifies the RS256 JWT assertion); a failing token endpoint is a clear 503."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from fakes import gemini_upstream as gemini_fake
from fakes.gateway import ALICE_KEY, Gateway, free_port
from fakes.vertex_upstream import LOCATION, PROJECT, FakeTokenEndpoint, FakeVertex, ServiceAccountKey
from prometheus_client.parser import text_string_to_metric_families

from codexgate.policies.keys import hash_key


@pytest.fixture(scope="module")
def token_endpoint() -> Iterator[FakeTokenEndpoint]:
    endpoint = FakeTokenEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def failing_token_endpoint() -> Iterator[FakeTokenEndpoint]:
    endpoint = FakeTokenEndpoint().start()
    endpoint.fail_status = 503
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def vertex_fake(token_endpoint: FakeTokenEndpoint) -> Iterator[FakeVertex]:
    fake = FakeVertex(token_endpoint).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def keys(token_endpoint: FakeTokenEndpoint, failing_token_endpoint: FakeTokenEndpoint) -> dict[str, ServiceAccountKey]:
    return {"good": token_endpoint.key(), "failing": failing_token_endpoint.key()}


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, vertex_fake: FakeVertex, keys: dict[str, ServiceAccountKey]
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("vertex")
    policy = root / "policy.yaml"
    common = f'project: {PROJECT}, location: {LOCATION}, base_url: "{vertex_fake.url}"'
    policy.write_text(
        f"""\
providers:
  vertex: {{kind: vertex, {common}, credentials: {{value: env:CG_VERTEX_KEY}}}}
  vertex-down: {{kind: vertex, {common}, credentials: {{value: env:CG_VERTEX_DOWN_KEY}}}}
models:
  gemini-2.5-pro: {{routes: [{{provider: vertex}}]}}
  gemini-down: {{routes: [{{provider: vertex-down, model: gemini-2.5-pro}}]}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    env = {"CG_VERTEX_KEY": keys["good"].json, "CG_VERTEX_DOWN_KEY": keys["failing"].json}
    gateway = Gateway(policy, root / "data", extra_env=env)
    gateway.metrics_port = free_port()
    gateway.start()
    yield gateway
    gateway.stop()


def sdk(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)


def test_responses_reach_vertex_with_a_minted_bearer_token_fetched_once(
    gateway: Gateway, vertex_fake: FakeVertex, token_endpoint: FakeTokenEndpoint
) -> None:
    vertex_fake.reset()
    client = sdk(gateway)
    with client.responses.create(model="gemini-2.5-pro", input="hello", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "fake-gemini reply"
    whole = client.responses.create(model="gemini-2.5-pro", input="again")
    assert whole.status == "completed" and whole.output_text == "fake-gemini reply"

    assert [r.mode.value for r in vertex_fake.received] == ["streamGenerateContent", "generateContent"]
    assert not vertex_fake.invalid
    first, second = vertex_fake.received
    assert first.path == (
        f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/gemini-2.5-pro:streamGenerateContent"
    )
    bearer = first.headers["authorization"]
    assert bearer.startswith("Bearer ya29.fake-") and second.headers["authorization"] == bearer
    assert len(token_endpoint.grants) == 1  # cached: one token for both requests
    for received in vertex_fake.received:  # neither the virtual key nor an API-key header went upstream
        assert ALICE_KEY not in str(received.headers) and "x-goog-api-key" not in received.headers
    # accounted to the provider that answered, priced by genai-prices as Google's model
    records = gateway.wait_accounting(lambda r: r.get("model_requested") == "gemini-2.5-pro", count=2)
    assert [r["provider"] for r in records[-2:]] == ["vertex", "vertex"], records
    assert all(r["usage"]["output_tokens"] == 3 and r["cost_usd"] > 0 for r in records[-2:]), records


def test_a_failing_token_endpoint_is_a_503_with_a_log_line_and_a_metric(
    gateway: Gateway, failing_token_endpoint: FakeTokenEndpoint, keys: dict[str, ServiceAccountKey]
) -> None:
    with pytest.raises(openai.InternalServerError) as refused:
        sdk(gateway).responses.create(model="gemini-down", input="hello")
    assert refused.value.status_code == 503
    body = refused.value.response.json()
    assert body["error"]["code"] == "provider_credentials_unavailable"
    assert "vertex-down" in body["error"]["message"] and "ya29" not in body["error"]["message"]
    assert failing_token_endpoint.refused  # the gateway did ask

    log = gateway.log_text()
    assert "vertex: no access token for" in log and "provider vertex-down has no usable key" in log
    assert keys["failing"].private_key_pem.splitlines()[1] not in log
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text
    refusals = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "codexgate_refusals_total" and sample.labels.get("reason") == "provider_unavailable"
    ]
    assert sum(refusals) >= 1


def test_an_upstream_connection_dropped_mid_stream_ends_in_response_failed(
    gateway: Gateway, vertex_fake: FakeVertex
) -> None:
    """Codex retries a turn that ends in `response.failed`; a cut client connection instead shows
    as a stream error and loses what the turn had."""
    vertex_fake.reset()
    vertex_fake.script(
        gemini_fake.Reply(
            chunks=[
                gemini_fake.chunk([gemini_fake.text_part("Partial answer, then the line drops")]),
                gemini_fake.chunk([gemini_fake.text_part(" never sent")], "STOP", gemini_fake.usage_metadata(5, 9)),
            ],
            cut_after=1,
        )
    )
    with sdk(gateway).responses.create(model="gemini-2.5-pro", input="hello", stream=True) as stream:
        events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None and events[-1].response.error.code == "server_error"
