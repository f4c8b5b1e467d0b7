"""policies/keys.py add_key and `codexgate keys create`: shown once, hash stored, file kept as written."""

from __future__ import annotations

import difflib
import hashlib
import os
from importlib import resources
from pathlib import Path

import pytest

from codexgate.cli import main
from codexgate.policies.keys import KEY_PREFIX, add_key, hash_key
from codexgate.policies.loader import PolicyError, load_policy

ZERO = "sha256:" + "0" * 64
ONE = "sha256:" + "1" * 64
POLICY = f"""\
# codexgate policy for the payments team
# reviewed in pull requests

gateway:
  intercept_hosts: [api.openai.com]   # governed
  guard_hosts: [chatgpt.com]

providers:
  # the mock answers locally
  local:
    kind: mock
    latency_ms: 0
models:
  mock-model:
    routes:
      - provider: local
        model: m1  # upstream name
    aliases: [mock]
keys:
  # alice's laptop
  - name: alice
    team: platform
    hash: {ZERO}
    models: [mock-*]
  - {{name: zed, team: platform, hash: {ONE}}}

# teams after keys
teams:
  platform: {{org: acme, description: Platform}}
orgs:
  acme: {{}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def added_lines(before: str, after: str) -> list[str]:
    """Lines `after` adds to `before`; fails if any line of `before` was changed or removed."""
    added = []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        assert not line.startswith("- "), f"line changed or removed: {line[2:]!r}"
        if line.startswith("+ "):
            added.append(line[2:])
    return added


def test_add_key_stores_only_the_hash_and_keeps_the_file(policy):
    secret = add_key(policy, "bob", "platform", ["mock*", "gpt-5*"])
    assert secret.startswith(KEY_PREFIX)
    assert len(secret) >= len(KEY_PREFIX) + 40
    after = policy.read_text()
    assert secret not in after
    assert secret[len(KEY_PREFIX) :] not in after
    digest = hashlib.sha256(secret.encode()).hexdigest()
    (line,) = added_lines(POLICY, after)
    assert line.strip() == f"- {{name: bob, team: platform, hash: sha256:{digest}, models: [mock*, gpt-5*]}}"
    # the new entry sits right after the last key, before the comment that followed the keys
    assert after.index(line) < after.index("# teams after keys")

    compiled = load_policy(policy)
    assert [key.name for key in compiled.policy.keys] == ["alice", "zed", "bob"]
    bob = compiled.keys_by_hash[hash_key(secret)]
    assert bob.name == "bob" and bob.team == "platform"
    assert bob.models == ["mock*", "gpt-5*"]


def test_two_keys_differ_and_default_to_all_models(policy):
    first = add_key(policy, "bob", "platform", None)
    second = add_key(policy, "carl", "platform", ["*"])
    assert first != second
    compiled = load_policy(policy)
    assert compiled.keys_by_hash[hash_key(first)].models == ["*"]
    assert compiled.keys_by_hash[hash_key(second)].models == ["*"]
    assert len(added_lines(POLICY, policy.read_text())) == 2


def test_keys_section_created_when_missing(tmp_path):
    path = tmp_path / "p.yaml"
    text = POLICY[: POLICY.index("keys:\n")] + POLICY[POLICY.index("# teams after keys") :]
    path.write_text(text)
    secret = add_key(path, "bob", "platform", None)
    assert load_policy(path).keys_by_hash[hash_key(secret)].name == "bob"


@pytest.mark.parametrize(
    ("name", "team", "models", "message"),
    [
        ("alice", "platform", None, "already exists"),
        ("zed", "platform", ["mock"], "already exists"),
        ("bob", "payments", None, "unknown team 'payments'"),
        ("bad name!", "platform", None, "keys[2].name"),
    ],
)
def test_refusals_leave_the_file_untouched(policy, name, team, models, message):
    stat_before = policy.stat()
    with pytest.raises(PolicyError) as info:
        add_key(policy, name, team, models)
    assert message in str(info.value)
    assert str(policy) in str(info.value)
    assert policy.read_text() == POLICY
    assert policy.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert sorted(os.listdir(policy.parent)) == ["policy.yaml"]  # no temporary file left


def test_cli_prints_the_key_once(policy, capsys):
    assert main(["keys", "create", "--policy", str(policy), "--name", "bob", "--team", "platform"]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert out == secret + "\n"
    assert secret.startswith(KEY_PREFIX)
    assert secret not in err
    assert "bob" in err
    assert hash_key(secret) in policy.read_text()
    assert secret not in policy.read_text()


def test_cli_refusal_exit_code(policy, capsys):
    assert main(["keys", "create", "--policy", str(policy), "--name", "alice", "--team", "platform"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "already exists" in err
    assert policy.read_text() == POLICY


def test_add_key_to_example_policy_changes_only_the_keys_section(tmp_path):
    example = resources.files("codexgate.policies").joinpath("example.yaml").read_text(encoding="utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(example)
    add_key(path, "demo", "platform", ["mock-*"])
    after = path.read_text()
    before_lines = [line for line in example.splitlines() if not line.startswith("keys:")]
    after_lines = [line for line in after.splitlines() if not line.startswith("keys:") and "name: demo" not in line]
    assert after_lines == before_lines
