"""Policy edits apply to the next request; a broken edit keeps the last good policy."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway, policy_text
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import add_key


@pytest.fixture
def own_gateway(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, tmp_path / "data").start()
    yield gateway
    gateway.stop()


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    # Make the change visible to an mtime check even within one timestamp tick.
    stamp = time.time_ns() + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def ask(gateway: Gateway, key: str) -> openai.types.responses.Response:
    sdk = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0, timeout=20)
    return sdk.responses.create(model="mock-model", input="hello")


def test_edits_apply_on_next_request(own_gateway: Gateway) -> None:
    assert ask(own_gateway, ALICE_KEY).status == "completed"
    original = own_gateway.policy.read_text()

    # Revoke alice: the very next request is refused, no restart.
    rewrite(
        own_gateway.policy,
        original.replace("name: alice, team: platform,", "name: alice, team: platform, disabled: true,"),
    )
    with pytest.raises(openai.AuthenticationError, match="alice is disabled"):
        ask(own_gateway, ALICE_KEY)

    # A broken edit: the last good policy (alice disabled) stays, and the log says why.
    rewrite(own_gateway.policy, original.replace("providers:", "providers:\n  oops: {kind: nope}"))
    with pytest.raises(openai.AuthenticationError):
        ask(own_gateway, ALICE_KEY)
    log = own_gateway.wait_log("providers.oops")
    assert "policy reload failed; keeping the last good policy" in log
    assert "providers.oops" in log

    # A key created with the CLI helper works at once.
    rewrite(own_gateway.policy, original)
    new_key = add_key(own_gateway.policy, "dave", "platform", ["mock-*"])
    assert ask(own_gateway, new_key).status == "completed"
    assert ask(own_gateway, ALICE_KEY).status == "completed"
