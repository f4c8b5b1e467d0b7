"""Vertex AI: its URLs, and OAuth2 tokens minted from a service-account key against a fake Google
token endpoint that verifies the RS256 JWT assertion (tests/fakes/vertex_upstream.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest
from fakes.vertex_upstream import FakeTokenEndpoint

from codexgate.policies.schema import SecretRef, VertexProvider
from codexgate.providers.family import Prepared
from codexgate.providers.gemini import vertex
from codexgate.providers.gemini.family import VertexFamily
from codexgate.providers.gemini.vertex import ServiceAccountTokens, TokenUnavailable, VertexAuth
from codexgate.secrets import SecretResolver, SecretUnavailable


@pytest.fixture
def token_endpoint() -> Iterator[FakeTokenEndpoint]:
    endpoint = FakeTokenEndpoint().start()
    try:
        yield endpoint
    finally:
        if endpoint.hold is not None:
            endpoint.hold.set()
        endpoint.stop()


class Clock:
    def __init__(self) -> None:
        import time

        self.offset = 0.0
        self._time = time.time

    def __call__(self) -> float:
        return self._time() + self.offset


def test_urls_name_project_location_and_model() -> None:
    settings = VertexProvider(kind="vertex", project="acme-prod-1", location="europe-west4", access_token=_ref("T"))
    assert settings.endpoint == "https://europe-west4-aiplatform.googleapis.com"
    url = vertex.request_target(settings.endpoint, settings.project, settings.location, "gemini-2.5-pro", True)
    assert url == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/acme-prod-1/locations/europe-west4"
        "/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )
    assert vertex.request_target("http://127.0.0.1:9", "p-12345", "global", "m", False).endswith(
        "/v1/projects/p-12345/locations/global/publishers/google/models/m:generateContent"
    )
    glob = VertexProvider(kind="vertex", project="acme-prod-1", location="global", access_token=_ref("T"))
    assert glob.endpoint == "https://aiplatform.googleapis.com"


def _ref(name: str) -> SecretRef:
    return SecretRef(value=f"env:{name}")


@pytest.mark.parametrize(
    "fields",
    [{}, {"credentials": "env:A", "access_token": "env:B"}],
    ids=["neither", "both"],
)
def test_settings_want_exactly_one_credential(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly one of credentials"):
        VertexProvider.model_validate(
            {"kind": "vertex", "project": "acme-prod-1", **{k: {"value": v} for k, v in fields.items()}}
        )


def test_a_token_is_minted_from_a_verified_assertion_and_cached(token_endpoint: FakeTokenEndpoint) -> None:
    key = token_endpoint.key()
    tokens = ServiceAccountTokens(key.json)

    async def twice() -> tuple[str, str]:
        return await tokens.token(), await tokens.token()

    first, second = asyncio.run(twice())
    assert first == second and token_endpoint.valid(first)
    assert len(token_endpoint.grants) == 1, token_endpoint.refused
    assert token_endpoint.grants[0]["iss"] == key_email(token_endpoint)


def key_email(endpoint: FakeTokenEndpoint) -> str:
    return endpoint.client_email


def test_a_key_the_endpoint_does_not_know_is_refused(token_endpoint: FakeTokenEndpoint) -> None:
    other = ServiceAccountTokens(token_endpoint.key().json)
    token_endpoint.key()  # the account's key was replaced: the first one's signatures no longer verify
    with pytest.raises(TokenUnavailable, match="invalid_grant|Invalid JWT Signature"):
        asyncio.run(other.token())
    assert token_endpoint.refused and not token_endpoint.grants


def test_the_next_token_is_fetched_ahead_of_expiry_while_the_current_one_serves(
    token_endpoint: FakeTokenEndpoint,
) -> None:
    clock = Clock()
    tokens = ServiceAccountTokens(token_endpoint.key().json, clock=clock)

    async def scenario() -> tuple[str, str, str]:
        first = await tokens.token()
        clock.offset = 3600 - vertex.REFRESH_AHEAD_SECONDS + 10  # inside the refresh window
        still = await tokens.token()  # served at once, the next one fetched behind it
        for _ in range(200):
            if len(token_endpoint.grants) == 2 and tokens._fetch is not None and tokens._fetch.done():
                break
            await asyncio.sleep(0.05)
        return first, still, await tokens.token()

    first, still, fresh = asyncio.run(scenario())
    assert still == first
    assert fresh != first and len(token_endpoint.grants) == 2


def test_the_event_loop_runs_while_a_token_is_fetched(token_endpoint: FakeTokenEndpoint) -> None:
    """The grant is held until a coroutine on the gateway's loop releases it: were the fetch run
    on the loop, nothing could release it and the endpoint would answer 503 after 10 s."""
    tokens = ServiceAccountTokens(token_endpoint.key().json)
    token_endpoint.hold = threading.Event()

    async def scenario() -> str:
        fetching = asyncio.ensure_future(tokens.token())
        for _ in range(500):  # this coroutine runs only while the loop is free
            if token_endpoint.arrived.is_set():
                break
            await asyncio.sleep(0.01)
        token_endpoint.hold.set()  # type: ignore[union-attr]
        return await fetching

    assert token_endpoint.valid(asyncio.run(scenario()))


def test_a_failing_token_endpoint_is_a_clear_error_without_secrets(token_endpoint: FakeTokenEndpoint) -> None:
    key = token_endpoint.key()
    token_endpoint.fail_status = 503
    tokens = ServiceAccountTokens(key.json)

    async def scenario() -> tuple[str, str]:
        with pytest.raises(TokenUnavailable) as first:
            await tokens.token()
        with pytest.raises(TokenUnavailable) as again:  # held: the endpoint is not asked again at once
            await tokens.token()
        return str(first.value), str(again.value)

    first, again = asyncio.run(scenario())
    assert "token endpoint" in first and key_email(token_endpoint) in first and again == first
    assert "PRIVATE KEY" not in first and key.private_key_pem[40:80] not in first
    assert isinstance(TokenUnavailable("x"), SecretUnavailable)  # what Credentials answers 503 to


def test_a_key_that_is_not_a_service_account_key_names_no_content() -> None:
    with pytest.raises(SecretUnavailable) as refused:
        ServiceAccountTokens('{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIsecret"}')
    assert "MIIsecret" not in str(refused.value)


def test_vertex_auth_caches_a_token_and_uses_an_explicit_token_as_it_is(
    token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERTEX_KEY", token_endpoint.key().json)
    monkeypatch.setenv("VERTEX_TOKEN", "ya29.given")
    secrets = SecretResolver()
    keyed = VertexProvider(kind="vertex", project="acme-prod-1", credentials=_ref("VERTEX_KEY"))
    given = VertexProvider(kind="vertex", project="acme-prod-1", access_token=_ref("VERTEX_TOKEN"))
    auth = VertexAuth()

    async def scenario() -> list[tuple[dict[str, str], vertex.Issued | None]]:
        return [
            await auth.headers(keyed, secrets),
            await auth.headers(keyed, secrets),
            await VertexAuth().headers(given, secrets),
        ]

    (first, issued), (second, again), (explicit, none) = asyncio.run(scenario())
    assert first == second and first["authorization"].startswith("Bearer ya29.fake-")
    assert issued == again and issued is not None and issued.serial == 1
    assert len(token_endpoint.grants) == 1
    assert explicit == {"authorization": "Bearer ya29.given"} and none is None


def google_error(status: int, google_status: str, reason: str) -> bytes:
    """Google's error body (google.rpc.Status with an ErrorInfo)."""
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "googleapis.com"}
    return json.dumps({"error": {"code": status, "message": "m", "status": google_status, "details": [info]}}).encode()


EXPIRED = google_error(401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED")
NO_PERMISSION = google_error(403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED")


def test_which_refusals_a_new_token_can_cure() -> None:
    assert vertex.token_refused(401, EXPIRED) and vertex.token_refused(401, b"not json")
    assert not vertex.token_refused(403, NO_PERMISSION)  # the account's next token lacks it too
    assert not vertex.token_refused(403, google_error(403, "PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"))
    assert vertex.token_refused(403, google_error(403, "PERMISSION_DENIED", "ACCESS_TOKEN_EXPIRED"))
    assert vertex.token_refused(403, b"[" + google_error(403, "UNAUTHENTICATED", "X") + b"]")
    assert not vertex.token_refused(403, b"<html>") and not vertex.token_refused(429, EXPIRED)
    odd = b'{"error": {"details": [{"reason": ["a list"]}, "text"], "status": 7}}'
    assert not vertex.token_refused(403, odd) and not vertex.token_refused(403, b"[" * 100_000)  # never raises


def test_a_refused_token_is_dropped_and_a_late_refusal_of_it_keeps_the_next(
    token_endpoint: FakeTokenEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests in flight with a revoked token each get a 401; the first drops it, the later ones
    must not drop the new token fetched meanwhile."""
    monkeypatch.setenv("VERTEX_KEY", token_endpoint.key().json)
    family = VertexFamily(VertexProvider(kind="vertex", project="acme-prod-1", credentials=_ref("VERTEX_KEY")))
    secrets = SecretResolver()

    async def send() -> tuple[str, Prepared]:
        prepared = Prepared("https://vertex.test/", {}, b"{}", False, "gemini-2.5-pro")
        headers = await family.credentials(prepared, 0, secrets)
        return headers["authorization"], prepared

    async def scenario() -> list[str]:
        (first, sent), (_, also_sent) = await send(), await send()
        family.on_auth_error(sent, 403, NO_PERMISSION)  # not the token's fault: kept
        kept, _ = await send()
        family.on_auth_error(sent, 401, EXPIRED)
        fresh, _ = await send()
        family.on_auth_error(also_sent, 401, EXPIRED)  # the old token again: the new one stays
        still, _ = await send()
        return [first, kept, fresh, still]

    first, kept, fresh, still = asyncio.run(scenario())
    assert kept == first and fresh != first and still == fresh
    assert len(token_endpoint.grants) == 2


def test_an_explicit_access_token_has_nothing_to_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERTEX_TOKEN", "ya29.given")
    family = VertexFamily(VertexProvider(kind="vertex", project="acme-prod-1", access_token=_ref("VERTEX_TOKEN")))
    prepared = Prepared("https://vertex.test/", {}, b"{}", False, "gemini-2.5-pro")
    assert asyncio.run(family.credentials(prepared, 0, SecretResolver())) == {"authorization": "Bearer ya29.given"}
    family.on_auth_error(prepared, 401, EXPIRED)  # nothing cached: nothing happens
    status, body = family.error(401, EXPIRED)  # and the operator is told it is the given token
    assert status == 502 and "refused by Google" in body["error"]["message"]
