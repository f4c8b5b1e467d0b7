"""Vertex AI access tokens through a real gateway process: whose they are and when they are
dropped. The fake Google token endpoint serves several service accounts (each provider below has
its own), and the fake Vertex answers a token it no longer honours — revoked, or expired early —
with Google's 401 UNAUTHENTICATED (ErrorInfo reason ACCESS_TOKEN_EXPIRED).

Each test uses providers and accounts of its own, so the token counts it reads are its own."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway
from fakes.vertex_upstream import LOCATION, PROJECT, FakeTokenEndpoint, FakeVertex, ServiceAccountKey

from codexgate.policies.keys import hash_key

ACCOUNTS = ("revoked", "shared", "first", "second", "reload", "reload-next")


def email(account: str) -> str:
    return f"{account}@{PROJECT}.iam.gserviceaccount.com"


def env_name(account: str) -> str:
    return "CG_VERTEX_KEY_" + account.upper().replace("-", "_")


@pytest.fixture(scope="module")
def token_endpoint() -> Iterator[FakeTokenEndpoint]:
    endpoint = FakeTokenEndpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def vertex_fake(token_endpoint: FakeTokenEndpoint) -> Iterator[FakeVertex]:
    fake = FakeVertex(token_endpoint).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def keys(token_endpoint: FakeTokenEndpoint) -> dict[str, ServiceAccountKey]:
    return {account: token_endpoint.key(email(account)) for account in ACCOUNTS}


def policy(vertex_url: str, reload_settings: str = "", reload_account: str = "reload") -> str:
    common = f'project: {PROJECT}, location: {LOCATION}, base_url: "{vertex_url}"'

    def provider(name: str, account: str, extra: str = "") -> str:
        return f"  {name}: {{kind: vertex, {common}, credentials: {{value: env:{env_name(account)}}}{extra}}}\n"

    return (
        "providers:\n"
        + provider("vx-revoked", "revoked")
        + provider("vx-shared", "shared")
        + provider("vx-first", "first")
        + provider("vx-second", "second")
        + provider("vx-reload", reload_account, reload_settings)
        + f"""\
models:
  gemini-revoked: {{routes: [{{provider: vx-revoked, model: gemini-2.5-pro}}]}}
  gemini-shared: {{routes: [{{provider: vx-shared, model: gemini-2.5-pro}}]}}
  # several deployments: sent by the failover relay, not by mitmproxy itself
  gemini-shared-relayed: {{routes: [{{provider: vx-shared, model: gemini-2.5-pro}}], fallbacks: [gemini-first]}}
  gemini-first: {{routes: [{{provider: vx-first, model: gemini-2.5-pro}}]}}
  gemini-second: {{routes: [{{provider: vx-second, model: gemini-2.5-pro}}]}}
  gemini-reload: {{routes: [{{provider: vx-reload, model: gemini-2.5-pro}}]}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, vertex_fake: FakeVertex, keys: dict[str, ServiceAccountKey]
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("vertex-tokens")
    path = root / "policy.yaml"
    path.write_text(policy(vertex_fake.url))
    env = {env_name(account): key.json for account, key in keys.items()}
    gateway = Gateway(path, root / "data", extra_env=env).start()
    yield gateway
    gateway.stop()


def ask(gateway: Gateway, model: str, stream: bool = False) -> str:
    """The answer's text; an error answer raises the SDK's error."""
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
    if not stream:
        return client.responses.create(model=model, input="hello").output_text
    with client.responses.create(model=model, input="hello", stream=True) as events:
        last = list(events)[-1]
    assert last.type == "response.completed", last
    return last.response.output_text


def bearers(vertex_fake: FakeVertex, since: int) -> list[str]:
    """The tokens the fake Vertex received, in order, from request number `since` on."""
    return [r.headers["authorization"].removeprefix("Bearer ") for r in vertex_fake.received[since:]]


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    # The gateway reloads when the file's mtime changes: make it change even within one tick.
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_a_revoked_token_fails_one_request_and_the_next_fetches_a_new_one(
    gateway: Gateway, vertex_fake: FakeVertex, token_endpoint: FakeTokenEndpoint
) -> None:
    account = email("revoked")
    assert ask(gateway, "gemini-revoked") == "fake-gemini reply"
    [first] = bearers(vertex_fake, len(vertex_fake.received) - 1)
    assert token_endpoint.owners[first] == account
    token_endpoint.revoke(first)  # an hour's token, dead early: Vertex answers 401 until a new one is sent

    sent = len(vertex_fake.received)
    with pytest.raises(openai.InternalServerError) as refused:
        ask(gateway, "gemini-revoked", stream=True)
    error = refused.value.response.json()["error"]
    assert refused.value.status_code == 502 and error["code"] == "upstream_auth_error"
    assert "refused the gateway's access token" in error["message"] and "retry" in error["message"]
    assert "ya29" not in refused.value.response.text
    assert bearers(vertex_fake, sent) == [first]  # Vertex did see the revoked token, and refused it

    assert ask(gateway, "gemini-revoked", stream=True) == "fake-gemini reply"
    [second] = bearers(vertex_fake, sent + 1)
    assert second != first and token_endpoint.valid(second) and token_endpoint.owners[second] == account
    assert len(token_endpoint.grants_of(account)) == 2  # the first token, and the one after the 401
    assert ask(gateway, "gemini-revoked") == "fake-gemini reply"  # ... which is cached again
    assert bearers(vertex_fake, sent + 2) == [second] and len(token_endpoint.grants_of(account)) == 2
    log = gateway.wait_log(f"the access token for {account} was refused")
    assert f"the access token for {account} was refused (HTTP 401)" in log and first not in log


def test_one_token_per_provider_whichever_path_sends_its_requests(
    gateway: Gateway, vertex_fake: FakeVertex, token_endpoint: FakeTokenEndpoint
) -> None:
    """A provider's requests go out through mitmproxy (one deployment) or the failover relay
    (several): both use the provider's one token. On the relayed path a 401 to it drops it and the
    relay makes the attempt again with a fresh one: the request is answered by that deployment,
    which is not cooled down (the next relayed request goes there too, not to the fallback)."""
    account = email("shared")
    sent = len(vertex_fake.received)
    assert ask(gateway, "gemini-shared") == "fake-gemini reply"
    assert ask(gateway, "gemini-shared-relayed") == "fake-gemini reply"
    first, relayed = bearers(vertex_fake, sent)
    assert relayed == first and len(token_endpoint.grants_of(account)) == 1

    token_endpoint.revoke(first)
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
    answer = client.responses.with_raw_response.create(model="gemini-shared-relayed", input="hello")
    assert answer.parse().output_text == "fake-gemini reply"
    attempts = json.loads(answer.headers["x-codexgate-attempts"])
    deployment = "vx-shared/gemini-2.5-pro"
    assert [(a["deployment"], a["outcome"]) for a in attempts] == [(deployment, "auth_refreshed"), (deployment, "ok")]
    *_, refused_bearer, fresh = bearers(vertex_fake, sent)
    assert refused_bearer == first and fresh != first and token_endpoint.owners[fresh] == account
    assert len(token_endpoint.grants_of(account)) == 2
    before = len(vertex_fake.received)
    assert ask(gateway, "gemini-shared-relayed") == "fake-gemini reply"  # not the fallback's account
    assert bearers(vertex_fake, before) == [fresh]
    assert ask(gateway, "gemini-shared") == "fake-gemini reply"
    assert bearers(vertex_fake, before + 1) == [fresh] and len(token_endpoint.grants_of(account)) == 2


def test_two_providers_with_different_service_accounts_get_their_own_tokens(
    gateway: Gateway, vertex_fake: FakeVertex, token_endpoint: FakeTokenEndpoint
) -> None:
    sent = len(vertex_fake.received)
    for model in ("gemini-first", "gemini-second", "gemini-first", "gemini-second"):
        assert ask(gateway, model) == "fake-gemini reply"
    first, second, first_again, second_again = bearers(vertex_fake, sent)
    assert first != second and (first_again, second_again) == (first, second)
    assert token_endpoint.owners[first] == email("first") and token_endpoint.owners[second] == email("second")
    assert len(token_endpoint.grants_of(email("second"))) == 1


def test_a_policy_reload_never_sends_a_token_cached_under_the_old_policy(
    gateway: Gateway, vertex_fake: FakeVertex, token_endpoint: FakeTokenEndpoint
) -> None:
    """The operator edits the provider (here its max tokens); its token, revoked meanwhile with no
    request to notice, is not sent again. An edit to its key gets that key's account's token."""
    account = email("reload")
    sent = len(vertex_fake.received)
    assert ask(gateway, "gemini-reload") == "fake-gemini reply"
    [first] = bearers(vertex_fake, sent)
    token_endpoint.revoke(first)

    reloads = gateway.log_text().count("policy reloaded from")
    rewrite(gateway.policy, policy(vertex_fake.url, reload_settings=", default_max_tokens: 8192"))
    assert ask(gateway, "gemini-reload") == "fake-gemini reply"
    assert gateway.wait_log("policy reloaded from").count("policy reloaded from") == reloads + 1
    [_, fresh] = bearers(vertex_fake, sent)
    assert fresh != first and token_endpoint.owners[fresh] == account

    rewrite(gateway.policy, policy(vertex_fake.url, reload_account="reload-next"))
    assert ask(gateway, "gemini-reload") == "fake-gemini reply"
    [*_, other] = bearers(vertex_fake, sent)
    assert token_endpoint.owners[other] == email("reload-next")
