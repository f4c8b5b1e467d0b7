"""Provider credentials from references, resolved at request time.

Reference forms (see :func:`parse_reference`; the policy schema accepts the same):

- ``env:NAME``                         an environment variable, read on every call;
- ``file:PATH``                        a file's stripped text, re-read as soon as the file changes;
- ``vault:MOUNT/PATH#FIELD``           a field of a HashiCorp Vault KV v2 secret (``hvac``), address and
                                       token from ``VAULT_ADDR``/``VAULT_TOKEN`` (``VAULT_NAMESPACE``,
                                       ``VAULT_CACERT``, ``VAULT_SKIP_VERIFY``) or constructor arguments;
- ``aws-sm:SECRET_ID[#JSON_FIELD]``    an AWS Secrets Manager SecretString (botocore), optionally one field
                                       of it as JSON; SECRET_ID is a name or an ARN (whose region wins).

``resolve`` is synchronous because it runs on mitmproxy's event loop, so remote look-ups are bounded
(``timeout_seconds``, default 2 s, no retries) and cached: the store is asked at most once per
``ttl_seconds`` per reference, so a rotated secret is picked up within one TTL. While refreshes fail the
last good value is served until ``hard_expiry_seconds`` (default 10 x TTL) after it was read, with one
warning per failed refresh (one per TTL). A reference never read successfully fails fast for
``failure_retry_seconds`` after a failed attempt, so a dead store does not stall every request.

Error messages name the reference and the reason, never a secret value or a store token.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 300.0
DEFAULT_TIMEOUT_SECONDS = 2.0
HARD_EXPIRY_FACTOR = 10
DEFAULT_FAILURE_RETRY_SECONDS = 30.0

# The exact syntax of each reference form; the policy schema may import these.
ENV_PATTERN = r"env:.+"
FILE_PATTERN = r"file:.+"
VAULT_PATTERN = r"vault:(?P<mount>[^/#\s]+)/(?P<path>[^/#\s]+(?:/[^/#\s]+)*)#(?P<field>[^#\s]+)"
AWS_SM_PATTERN = r"aws-sm:(?P<secret_id>[A-Za-z0-9/_+=.@:-]{1,2048})(?:#(?P<field>[^#\s]+))?"

_VAULT_RE = re.compile(VAULT_PATTERN)
_AWS_SM_RE = re.compile(AWS_SM_PATTERN)
_ARN_REGION_RE = re.compile(r"arn:[^:]+:secretsmanager:(?P<region>[a-z0-9-]+):")

REFERENCE_HELP = "env:NAME, file:PATH, vault:MOUNT/PATH#FIELD or aws-sm:SECRET_ID[#JSON_FIELD]"


class SecretUnavailable(Exception):
    """The message names the reference, never a value."""


@dataclass(frozen=True)
class EnvRef:
    name: str


@dataclass(frozen=True)
class FileRef:
    path: str


@dataclass(frozen=True)
class VaultRef:
    mount: str
    path: str
    field: str


@dataclass(frozen=True)
class AwsSmRef:
    secret_id: str
    field: str | None


Reference = EnvRef | FileRef | VaultRef | AwsSmRef


@functools.lru_cache(maxsize=1024)  # the policy's few references, resolved on every request (immutable results)
def parse_reference(reference: str) -> Reference:
    """Parse a secret reference; ValueError (which never repeats the text: it may be a pasted key) if invalid."""
    if reference.startswith("env:") and len(reference) > 4:
        return EnvRef(reference[4:])
    if reference.startswith("file:") and len(reference) > 5:
        return FileRef(reference[5:])
    if reference.startswith("vault:"):
        match = _VAULT_RE.fullmatch(reference)
        if match is None:
            raise ValueError("a Vault reference must look like vault:MOUNT/PATH#FIELD")
        return VaultRef(match["mount"], match["path"], match["field"])
    if reference.startswith("aws-sm:"):
        match = _AWS_SM_RE.fullmatch(reference)
        if match is None:
            raise ValueError("an AWS Secrets Manager reference must look like aws-sm:SECRET_ID[#JSON_FIELD]")
        return AwsSmRef(match["secret_id"], match["field"])
    raise ValueError(f"must reference a secret as {REFERENCE_HELP}; literal keys are not allowed")


@dataclass
class _Entry:
    value: str | None  # the last good value, None once it has hard-expired or was never read
    good_until: float  # hard expiry of `value`
    next_attempt: float  # the store is not asked again before this
    reason: str  # why the last attempt failed ("" after a success)


class SecretResolver:
    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        hard_expiry_seconds: float | None = None,
        failure_retry_seconds: float = DEFAULT_FAILURE_RETRY_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        vault_addr: str | None = None,
        vault_token: str | None = None,
        vault_namespace: str | None = None,
        aws_region: str | None = None,
        aws_endpoint_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`environ` (default os.environ, read here once) configures the stores; `env:` references always
        read the live process environment. `clock` is monotonic seconds, injectable for tests."""
        env = os.environ if environ is None else environ
        self._ttl = float(ttl_seconds)
        hard = HARD_EXPIRY_FACTOR * self._ttl if hard_expiry_seconds is None else float(hard_expiry_seconds)
        self._hard_expiry = max(hard, self._ttl)
        self._failure_retry = min(float(failure_retry_seconds), self._ttl)
        self._timeout = float(timeout_seconds)
        self._clock = clock
        self._vault_addr = (vault_addr or env.get("VAULT_ADDR", "")).rstrip("/")
        self._vault_token = vault_token or env.get("VAULT_TOKEN", "")
        self._vault_namespace = vault_namespace or env.get("VAULT_NAMESPACE") or None
        skip_verify = env.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "true", "yes")
        self._vault_verify: bool | str = env.get("VAULT_CACERT") or env.get("VAULT_CAPATH") or not skip_verify
        self._aws_region = aws_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        self._aws_endpoint = aws_endpoint_url or env.get("CODEXGATE_AWS_SM_ENDPOINT") or None
        self._files: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._cache: dict[str, _Entry] = {}
        self._vault_client: Any = None
        self._aws_clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def resolve(self, reference: str) -> str:
        try:
            ref = parse_reference(reference)
        except ValueError:
            raise SecretUnavailable(f"unsupported secret reference (use {REFERENCE_HELP})") from None
        if isinstance(ref, EnvRef):
            return self._read_env(ref)
        if isinstance(ref, FileRef):
            return self._read_file(ref)
        with self._lock:
            return self._resolve_remote(reference, ref)

    # --- local -------------------------------------------------------------------------------

    @staticmethod
    def _read_env(ref: EnvRef) -> str:
        value = os.environ.get(ref.name, "")
        if not value:
            raise SecretUnavailable(f"environment variable {ref.name} is not set")
        return value

    def _read_file(self, ref: FileRef) -> str:
        path = Path(ref.path).expanduser()
        try:
            st = path.stat()  # follows symlinks: a Kubernetes ..data swap shows up as a new inode
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._files.get(str(path))
            if cached and cached[0] == stamp:
                return cached[1]
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
        if not value:
            raise SecretUnavailable(f"secret file {path} is empty")
        self._files[str(path)] = (stamp, value)
        return value

    # --- remote, cached ----------------------------------------------------------------------

    def _resolve_remote(self, reference: str, ref: VaultRef | AwsSmRef) -> str:
        now = self._clock()
        entry = self._cache.get(reference)
        if entry is not None and now < entry.next_attempt:
            if entry.value is not None and now < entry.good_until:
                return entry.value
            if entry.value is not None:
                entry.value = None
                logger.error("secret %s: the last good value expired and the store is still failing", reference)
            raise SecretUnavailable(f"{reference}: {entry.reason or 'the last good value expired'}")
        try:
            value = self._read_vault(ref) if isinstance(ref, VaultRef) else self._read_aws_sm(ref)
        except SecretUnavailable as exc:
            reason = str(exc)
            if entry is not None and entry.value is not None and now < entry.good_until:
                entry.next_attempt = now + self._ttl
                entry.reason = reason
                logger.warning(
                    "secret %s: refresh failed (%s); serving the last good value for up to %.0f s more",
                    reference,
                    reason,
                    entry.good_until - now,
                )
                return entry.value
            if entry is not None and entry.value is not None:
                logger.error("secret %s: refresh failed (%s) and the last good value expired", reference, reason)
            self._cache[reference] = _Entry(None, now, now + self._failure_retry, reason)
            raise SecretUnavailable(f"{reference}: {reason}") from None
        if entry is not None and entry.reason:
            logger.info("secret %s: read again after failures", reference)
        self._cache[reference] = _Entry(value, now + self._hard_expiry, now + self._ttl, "")
        return value

    # The readers below raise SecretUnavailable with a reason only; the caller prefixes the reference.
    # Reasons are built here from status codes and error codes, never from a store's free text.

    def _read_vault(self, ref: VaultRef) -> str:
        import hvac.exceptions
        import requests

        client = self._vault()
        try:
            answer = client.secrets.kv.v2.read_secret_version(
                path=ref.path, mount_point=ref.mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as exc:
            metadata = _dig(exc.json, "data", "metadata")
            if isinstance(metadata, dict) and (metadata.get("deletion_time") or metadata.get("destroyed")):
                raise SecretUnavailable("the latest version of this Vault secret is deleted") from None
            raise SecretUnavailable("no such secret in Vault (HTTP 404: check the mount and path)") from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise SecretUnavailable(
                "Vault denied access (permission denied: check VAULT_TOKEN and its policy)"
            ) from None
        except hvac.exceptions.VaultDown:
            raise SecretUnavailable("Vault is sealed or unavailable (HTTP 503)") from None
        except hvac.exceptions.VaultError as exc:
            raise SecretUnavailable(f"Vault refused the read ({type(exc).__name__})") from None
        except requests.Timeout:
            raise SecretUnavailable(f"Vault at {self._vault_addr} did not answer within {self._timeout:g} s") from None
        except requests.RequestException as exc:
            raise SecretUnavailable(f"cannot reach Vault at {self._vault_addr} ({type(exc).__name__})") from None
        secret = _dig(answer, "data", "data")
        if not isinstance(secret, dict):
            raise SecretUnavailable("unexpected answer from Vault (is the mount KV version 2?)")
        return _field(secret, ref.field, "Vault secret")

    def _vault(self) -> Any:
        if self._vault_client is None:
            if not self._vault_addr:
                raise SecretUnavailable("VAULT_ADDR is not set")
            if not self._vault_token:
                raise SecretUnavailable("VAULT_TOKEN is not set")
            import hvac

            self._vault_client = hvac.Client(
                url=self._vault_addr,
                token=self._vault_token,
                namespace=self._vault_namespace,
                verify=self._vault_verify,
                timeout=self._timeout,
            )
        return self._vault_client

    def _read_aws_sm(self, ref: AwsSmRef) -> str:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        arn = _ARN_REGION_RE.match(ref.secret_id)
        region = arn["region"] if arn else self._aws_region
        if not region:
            raise SecretUnavailable("no AWS region: set AWS_REGION or use the secret's ARN")
        try:
            answer = self._aws(region).get_secret_value(SecretId=ref.secret_id)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
            code = str(error.get("Code", "error"))
            hint = _AWS_HINTS.get(code, "")
            raise SecretUnavailable(f"Secrets Manager answered {code} (HTTP {status}){hint}") from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise SecretUnavailable(f"Secrets Manager did not answer within {self._timeout:g} s") from None
        except EndpointConnectionError:
            raise SecretUnavailable(f"cannot reach Secrets Manager in {region}") from None
        except NoCredentialsError:
            raise SecretUnavailable("no AWS credentials found") from None
        except BotoCoreError as exc:
            raise SecretUnavailable(f"Secrets Manager read failed ({type(exc).__name__})") from None
        text = answer.get("SecretString")
        if not isinstance(text, str):
            raise SecretUnavailable("the secret has no SecretString (binary secrets are not supported)")
        if ref.field is None:
            value = text.strip()
            if not value:
                raise SecretUnavailable("the secret is empty")
            return value
        try:
            document = json.loads(text)
        except ValueError:
            raise SecretUnavailable(f"the secret is not JSON, so it has no field {ref.field}") from None
        if not isinstance(document, dict):
            raise SecretUnavailable(f"the secret is not a JSON object, so it has no field {ref.field}")
        return _field(document, ref.field, "secret")

    def _aws(self, region: str) -> Any:
        client = self._aws_clients.get(region)
        if client is None:
            import botocore.session
            from botocore.config import Config

            config = Config(
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                retries={"total_max_attempts": 1},
            )
            client = botocore.session.get_session().create_client(
                "secretsmanager", region_name=region, endpoint_url=self._aws_endpoint, config=config
            )
            self._aws_clients[region] = client
        return client


_AWS_HINTS = {
    "ResourceNotFoundException": ": no such secret",
    "AccessDeniedException": ": check the IAM policy",
    "UnrecognizedClientException": ": check the AWS credentials",
    "InvalidSignatureException": ": check the AWS credentials",
    "ExpiredTokenException": ": the AWS session token expired",
    "DecryptionFailure": ": check the KMS key policy",
}


def _dig(document: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _field(secret: dict[str, Any], field: str, what: str) -> str:
    if field not in secret:
        raise SecretUnavailable(f"the {what} has no field {field}")
    value = secret[field]
    if not isinstance(value, str):
        raise SecretUnavailable(f"field {field} of the {what} is not a string")
    value = value.strip()
    if not value:
        raise SecretUnavailable(f"field {field} of the {what} is empty")
    return value
