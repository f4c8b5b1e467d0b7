"""SecretResolver against real clients: `hvac` against a KV v2 fake of Vault's HTTP API, botocore (SigV4 and
all) against a fake of Secrets Manager's JSON protocol. Time is an injected clock; only the timeout tests wait."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from fake_secretsmanager import FakeSecretsManager
from fake_vault import FakeVault

from codexgate.secrets import (
    AwsSmRef,
    EnvRef,
    FileRef,
    SecretResolver,
    SecretUnavailable,
    VaultRef,
    parse_reference,
)

VAULT_REF = "vault:secret/providers/openai#api_key"
KEY_ONE = "sk-vault-key-number-one"
KEY_TWO = "sk-vault-key-number-two"
TTL = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vault() -> Iterator[FakeVault]:
    fake = FakeVault(tokens={"root-token": None, "other-team-token": ["secret/other/"]}).start()
    fake.put("secret", "providers/openai", {"api_key": KEY_ONE, "org": "org-123"})
    yield fake
    fake.stop()


def vault_resolver(vault: FakeVault, clock: Clock, **kwargs: Any) -> SecretResolver:
    options: dict[str, Any] = {"vault_addr": vault.url, "vault_token": "root-token", "environ": {}, "clock": clock}
    options.update(kwargs)
    return SecretResolver(ttl_seconds=TTL, **options)


def assert_clean(exc: BaseException, *forbidden: str) -> None:
    text = str(exc)
    for word in forbidden:
        assert word not in text, f"{word!r} leaked into {text!r}"


# --- reference syntax ------------------------------------------------------------------------------


def test_parse_reference_forms() -> None:
    assert parse_reference("env:OPENAI_API_KEY") == EnvRef("OPENAI_API_KEY")
    assert parse_reference("file:~/keys/openai") == FileRef("~/keys/openai")
    assert parse_reference("vault:secret/team/openai#api_key") == VaultRef("secret", "team/openai", "api_key")
    assert parse_reference("aws-sm:prod/openai") == AwsSmRef("prod/openai", None)
    assert parse_reference("aws-sm:prod/openai#api_key") == AwsSmRef("prod/openai", "api_key")
    arn = "arn:aws:secretsmanager:us-east-2:123456789012:secret:prod/openai-AbCdEf"
    assert parse_reference(f"aws-sm:{arn}#k") == AwsSmRef(arn, "k")


@pytest.mark.parametrize(
    "reference",
    [
        "sk-proj-literal-key-pasted",
        "env:",
        "file:",
        "vault:secret/openai",  # no field
        "vault:secret#api_key",  # no path
        "vault:/openai#api_key",  # no mount
        "vault:secret//openai#api_key",
        "vault:secret/openai#",
        "vault:secret/openai#a#b",
        "aws-sm:",
        "aws-sm:#field",
        "aws-sm:prod/openai#",
        "aws-sm:has space",
    ],
)
def test_parse_reference_rejects_without_echoing(reference: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_reference(reference)
    assert_clean(caught.value, "sk-proj-literal-key-pasted", "has space")
    resolver = SecretResolver(environ={})
    with pytest.raises(SecretUnavailable) as unavailable:
        resolver.resolve(reference)
    assert_clean(unavailable.value, "sk-proj-literal-key-pasted")


# --- env and file ----------------------------------------------------------------------------------


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = SecretResolver(environ={})
    monkeypatch.setenv("CG_SECRET_TEST_KEY", "sk-from-env")
    assert resolver.resolve("env:CG_SECRET_TEST_KEY") == "sk-from-env"
    monkeypatch.setenv("CG_SECRET_TEST_KEY", "sk-from-env-rotated")
    assert resolver.resolve("env:CG_SECRET_TEST_KEY") == "sk-from-env-rotated"
    monkeypatch.delenv("CG_SECRET_TEST_KEY")
    with pytest.raises(SecretUnavailable, match="CG_SECRET_TEST_KEY is not set"):
        resolver.resolve("env:CG_SECRET_TEST_KEY")


def test_file_reference_rotates_on_change(tmp_path: Path) -> None:
    key = tmp_path / "openai.key"
    key.write_text("sk-file-one\n")
    resolver = SecretResolver(environ={})
    assert resolver.resolve(f"file:{key}") == "sk-file-one"
    stat = key.stat()
    key.write_text("sk-file-two\n")
    os.utime(key, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert resolver.resolve(f"file:{key}") == "sk-file-two"
    # An atomic replace (rename over, as Kubernetes and editors do) is a new file.
    replacement = tmp_path / "openai.key.new"
    replacement.write_text("sk-file-three")
    os.replace(replacement, key)
    assert resolver.resolve(f"file:{key}") == "sk-file-three"
    key.write_text("   \n")
    with pytest.raises(SecretUnavailable, match="is empty"):
        resolver.resolve(f"file:{key}")
    key.unlink()
    with pytest.raises(SecretUnavailable, match="cannot read secret file"):
        resolver.resolve(f"file:{key}")


# --- Vault -----------------------------------------------------------------------------------------


def test_fake_vault_speaks_the_kv2_wire_format(vault: FakeVault) -> None:
    def get(path: str, token: str) -> tuple[int, Any]:
        request = urllib.request.Request(vault.url + path, headers={"X-Vault-Token": token})
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    status, body = get("/v1/secret/data/providers/openai", "root-token")
    assert status == 200
    assert body["data"]["data"] == {"api_key": KEY_ONE, "org": "org-123"}
    assert body["data"]["metadata"]["version"] == 1
    assert body["data"]["metadata"]["deletion_time"] == ""
    assert body["data"]["metadata"]["destroyed"] is False
    assert get("/v1/secret/data/providers/openai", "nope") == (403, {"errors": ["permission denied"]})
    assert get("/v1/secret/data/providers/missing", "root-token") == (404, {"errors": []})


def test_vault_reads_field_with_token_via_hvac(vault: FakeVault, clock: Clock) -> None:
    resolver = vault_resolver(vault, clock)
    assert resolver.resolve(VAULT_REF) == KEY_ONE
    assert resolver.resolve("vault:secret/providers/openai#org") == "org-123"
    seen = vault.requests[0]
    assert (seen.method, seen.path, seen.token) == ("GET", "/v1/secret/data/providers/openai", "root-token")


def test_vault_address_and_token_from_environment(vault: FakeVault, clock: Clock) -> None:
    resolver = SecretResolver(
        environ={"VAULT_ADDR": vault.url, "VAULT_TOKEN": "root-token", "VAULT_NAMESPACE": "team-a"}, clock=clock
    )
    vault.namespace = "team-a"
    assert resolver.resolve(VAULT_REF) == KEY_ONE
    assert vault.requests[-1].namespace == "team-a"
    with pytest.raises(SecretUnavailable, match="VAULT_ADDR is not set"):
        SecretResolver(environ={}).resolve(VAULT_REF)
    with pytest.raises(SecretUnavailable, match="VAULT_TOKEN is not set"):
        SecretResolver(environ={"VAULT_ADDR": vault.url}).resolve(VAULT_REF)


def test_vault_ttl_cache_and_rotation_through_the_api(vault: FakeVault, clock: Clock) -> None:
    resolver = vault_resolver(vault, clock)
    for _ in range(5):
        assert resolver.resolve(VAULT_REF) == KEY_ONE
    assert vault.reads("secret", "providers/openai") == 1
    # Rotate with the real client, as an operator would (`vault kv put`): version 2.
    writer = hvac.Client(url=vault.url, token="root-token")
    written = writer.secrets.kv.v2.create_or_update_secret(
        path="providers/openai", mount_point="secret", secret={"api_key": KEY_TWO}
    )
    assert written["data"]["version"] == 2
    clock.advance(TTL - 1)
    assert resolver.resolve(VAULT_REF) == KEY_ONE  # still within the TTL: no request
    assert vault.reads("secret", "providers/openai") == 1
    clock.advance(1)
    assert resolver.resolve(VAULT_REF) == KEY_TWO  # one TTL after the read: picked up
    assert resolver.resolve(VAULT_REF) == KEY_TWO
    assert vault.reads("secret", "providers/openai") == 2


def test_vault_down_serves_last_good_value_until_hard_expiry(
    vault: FakeVault, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = vault_resolver(vault, clock)
    assert resolver.resolve(VAULT_REF) == KEY_ONE
    vault.sealed = True
    caplog.set_level(logging.WARNING, logger="codexgate.secrets")
    for _ in range(9):  # refreshes at 1..9 TTL fail; the value read at 0 is still good
        clock.advance(TTL)
        for _ in range(3):
            assert resolver.resolve(VAULT_REF) == KEY_ONE
    assert vault.reads("secret", "providers/openai") == 1 + 9  # once per TTL, not once per call
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 9  # one per failed refresh, i.e. one per TTL
    assert "sealed" in warnings[0].getMessage()
    assert KEY_ONE not in caplog.text
    clock.advance(TTL)  # 10 TTL after the last good read: hard expiry
    with pytest.raises(SecretUnavailable) as caught:
        resolver.resolve(VAULT_REF)
    assert "vault:secret/providers/openai#api_key" in str(caught.value)
    assert "sealed" in str(caught.value)
    assert_clean(caught.value, KEY_ONE, "root-token")
    # The store comes back: read again at the next attempt.
    vault.sealed = False
    clock.advance(30)
    assert resolver.resolve(VAULT_REF) == KEY_ONE


def test_vault_unreachable_before_any_read_fails_fast_afterwards(vault: FakeVault, clock: Clock) -> None:
    resolver = vault_resolver(vault, clock)
    vault.stop()
    with pytest.raises(SecretUnavailable, match="cannot reach Vault"):
        resolver.resolve(VAULT_REF)
    vault.start()
    with pytest.raises(SecretUnavailable, match="cannot reach Vault"):
        resolver.resolve(VAULT_REF)  # negative cache: no new attempt, although Vault is back
    assert vault.reads("secret", "providers/openai") == 0
    clock.advance(30)
    assert resolver.resolve(VAULT_REF) == KEY_ONE
    assert vault.reads("secret", "providers/openai") == 1


@pytest.mark.parametrize("token", ["wrong-token-abc123", "other-team-token"])
def test_vault_permission_denied_names_no_secret_and_no_token(vault: FakeVault, clock: Clock, token: str) -> None:
    resolver = vault_resolver(vault, clock, vault_token=token)
    with pytest.raises(SecretUnavailable) as caught:
        resolver.resolve(VAULT_REF)
    assert "permission denied" in str(caught.value)
    assert VAULT_REF in str(caught.value)
    assert_clean(caught.value, token, KEY_ONE)
    assert vault.requests[-1].token == token


def test_vault_missing_path_field_mount_and_deleted_version(vault: FakeVault, clock: Clock) -> None:
    resolver = vault_resolver(vault, clock)
    with pytest.raises(SecretUnavailable, match="no such secret in Vault"):
        resolver.resolve("vault:secret/providers/missing#api_key")
    with pytest.raises(SecretUnavailable, match="no such secret in Vault"):
        resolver.resolve("vault:nomount/providers/openai#api_key")
    with pytest.raises(SecretUnavailable, match="has no field nope") as caught:
        resolver.resolve("vault:secret/providers/openai#nope")
    assert_clean(caught.value, KEY_ONE, "org-123")
    vault.put("secret", "providers/deleted", {"api_key": "sk-old"})
    vault.delete_latest("secret", "providers/deleted")
    with pytest.raises(SecretUnavailable, match="latest version of this Vault secret is deleted"):
        resolver.resolve("vault:secret/providers/deleted#api_key")
    vault.put("secret", "providers/number", {"api_key": 12345})
    with pytest.raises(SecretUnavailable, match="not a string"):
        resolver.resolve("vault:secret/providers/number#api_key")


def test_vault_hang_is_bounded(vault: FakeVault, clock: Clock) -> None:
    resolver = vault_resolver(vault, clock)  # default timeout: 2 s
    vault.hang = True
    with pytest.raises(SecretUnavailable, match="did not answer within 2 s"):
        resolver.resolve(VAULT_REF)
    assert vault.reads("secret", "providers/openai") == 1


# --- AWS Secrets Manager ---------------------------------------------------------------------------


@pytest.fixture
def aws_sm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeSecretsManager]:
    fake = FakeSecretsManager(region="eu-west-1").start()
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCODEXGATETEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-access-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("CODEXGATE_AWS_SM_ENDPOINT", fake.url)
    fake.put_secret_value("prod/openai", "sk-aws-plain-key")
    fake.put_secret_value("prod/providers", json.dumps({"openai": "sk-aws-json-key", "port": 8080}))
    yield fake
    fake.stop()


def test_aws_sm_plain_json_field_and_arn(aws_sm: FakeSecretsManager, clock: Clock) -> None:
    resolver = SecretResolver(clock=clock)
    assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-plain-key"
    assert resolver.resolve("aws-sm:prod/providers#openai") == "sk-aws-json-key"
    assert resolver.resolve(f"aws-sm:{aws_sm.arn('prod/openai')}") == "sk-aws-plain-key"
    seen = aws_sm.requests[0]
    assert seen.target == "secretsmanager.GetSecretValue"
    assert seen.content_type == "application/x-amz-json-1.1"
    assert seen.authorization is not None and seen.authorization.startswith("AWS4-HMAC-SHA256 Credential=AKID")
    assert "/eu-west-1/secretsmanager/aws4_request" in seen.authorization
    assert [r.verdict for r in aws_sm.requests] == ["ok", "ok", "ok"]  # signatures verified by the fake


def test_aws_sm_ttl_cache_and_rotation(aws_sm: FakeSecretsManager, clock: Clock) -> None:
    resolver = SecretResolver(ttl_seconds=TTL, clock=clock)
    for _ in range(4):
        assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-plain-key"
    assert aws_sm.reads("prod/openai") == 1
    aws_sm.put_secret_value("prod/openai", "sk-aws-rotated-key")
    clock.advance(TTL - 0.5)
    assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-plain-key"
    clock.advance(0.5)
    assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-rotated-key"
    assert aws_sm.reads("prod/openai") == 2


def test_aws_sm_failing_serves_last_good_value_until_hard_expiry(aws_sm: FakeSecretsManager, clock: Clock) -> None:
    resolver = SecretResolver(ttl_seconds=60, hard_expiry_seconds=180, clock=clock)
    assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-plain-key"
    aws_sm.failing = True
    clock.advance(60)
    assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-plain-key"
    clock.advance(60)
    assert resolver.resolve("aws-sm:prod/openai") == "sk-aws-plain-key"
    clock.advance(60)
    with pytest.raises(SecretUnavailable, match="InternalServiceError") as caught:
        resolver.resolve("aws-sm:prod/openai")
    assert_clean(caught.value, "sk-aws-plain-key")
    assert aws_sm.reads("prod/openai") == 4


def test_aws_sm_errors_name_no_secret_and_no_credentials(
    aws_sm: FakeSecretsManager, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver = SecretResolver(clock=clock)
    with pytest.raises(SecretUnavailable, match="ResourceNotFoundException") as caught:
        resolver.resolve("aws-sm:prod/missing")
    assert "aws-sm:prod/missing" in str(caught.value)
    aws_sm.denied.add("prod/openai")
    with pytest.raises(SecretUnavailable, match="AccessDeniedException") as caught:
        resolver.resolve("aws-sm:prod/openai")
    assert_clean(caught.value, "sk-aws-plain-key")
    aws_sm.denied.clear()
    with pytest.raises(SecretUnavailable, match="has no field nope") as caught:
        resolver.resolve("aws-sm:prod/providers#nope")
    assert_clean(caught.value, "sk-aws-json-key")
    with pytest.raises(SecretUnavailable, match="not a string"):
        resolver.resolve("aws-sm:prod/providers#port")
    with pytest.raises(SecretUnavailable, match="not JSON"):
        resolver.resolve("aws-sm:prod/openai#x")
    aws_sm.put_secret_value("prod/binary", b"\x00\x01")
    with pytest.raises(SecretUnavailable, match="no SecretString"):
        resolver.resolve("aws-sm:prod/binary")
    # Wrong secret access key: the fake recomputes the signature and refuses it.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-access-key-xyz")
    with pytest.raises(SecretUnavailable, match="InvalidSignatureException") as caught:
        SecretResolver(clock=clock).resolve("aws-sm:prod/providers#openai")
    assert_clean(caught.value, "wrong-secret-access-key-xyz", "sk-aws-json-key")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUNKNOWN")
    with pytest.raises(SecretUnavailable, match="UnrecognizedClientException") as caught:
        SecretResolver(clock=clock).resolve("aws-sm:prod/providers#openai")
    assert_clean(caught.value, "AKIDUNKNOWN", "wrong-secret-access-key-xyz")


def test_aws_sm_needs_a_region(aws_sm: FakeSecretsManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(SecretUnavailable, match="no AWS region"):
        SecretResolver().resolve("aws-sm:prod/openai")
    # An ARN carries its region.
    assert SecretResolver().resolve(f"aws-sm:{aws_sm.arn('prod/openai')}") == "sk-aws-plain-key"


def test_aws_sm_hang_is_bounded(aws_sm: FakeSecretsManager, clock: Clock) -> None:
    resolver = SecretResolver(clock=clock)
    aws_sm.hang = True
    with pytest.raises(SecretUnavailable, match="did not answer within 2 s"):
        resolver.resolve("aws-sm:prod/openai")
    assert aws_sm.reads("prod/openai") == 1  # no retries
