"""Gemini on Vertex AI: where to send the request, and the OAuth2 bearer token that authorizes it.

The request and its answers are Gemini's (`request.py`, `stream.py`); Vertex differs in the URL
(`{endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:…`) and in
auth: `Authorization: Bearer` with an OAuth2 access token of a service account, which google-auth
mints from the account's JSON key (an RS256-signed JWT assertion exchanged at the key's
`token_uri`). Tokens live an hour; `ServiceAccountTokens` keeps one per key and fetches the next
ahead of expiry, in a worker thread (google-auth's transport blocks), so the event loop never waits
on the token endpoint and requests wait only when no usable token is left.

`VertexAuth` is one provider's: its `VertexFamily` keeps it, one per configured provider per loaded
policy (`registry.family_of`), so providers never share tokens and a reload starts afresh. A token
Vertex refuses (401 UNAUTHENTICATED: revoked, or expired early) is dropped, so the next request
fetches a new one instead of failing until the old one's expiry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from codexgate.secrets import SecretResolver, SecretUnavailable

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# A token is replaced this long before it expires (in the background while it is still used);
# one closer to its expiry than MIN_LIFETIME is not sent at all (it could lapse on the way).
REFRESH_AHEAD_SECONDS = 300.0
MIN_LIFETIME_SECONDS = 30.0
TOKEN_TIMEOUT_SECONDS = 10.0
# After a failed fetch, requests are answered at once with that failure for this long rather than
# each one waiting on a token endpoint that just failed.
FAILURE_HOLD_SECONDS = 5.0


def request_target(endpoint: str, project: str, location: str, upstream_model: str, stream: bool) -> str:
    """The URL to POST to (streaming: SSE via `alt=sse`). A full resource name (`projects/…`, a
    tuned model's endpoint) is used as it is; a bare name is a Google publisher model."""
    root = endpoint.rstrip("/")
    if not root.endswith("/v1") and not root.endswith("/v1beta1"):
        root += "/v1"
    if upstream_model.startswith("projects/"):
        resource = upstream_model
    else:
        resource = f"projects/{project}/locations/{location}/publishers/google/models/{upstream_model}"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{root}/{resource}:{method}"


class TokenUnavailable(SecretUnavailable):
    """No access token could be had (the token endpoint failed, refused the key, or timed out)."""


class _Transport(google.auth.transport.requests.Request):
    """google-auth's requests transport with a bounded wait on the token endpoint."""

    def __call__(
        self, url: Any, method: Any = "GET", body: Any = None, headers: Any = None, timeout: Any = None, **kwargs: Any
    ) -> Any:
        return super().__call__(url, method, body, headers, timeout=TOKEN_TIMEOUT_SECONDS, **kwargs)


class ServiceAccountTokens:
    """Access tokens of one service account, minted by google-auth from its JSON key and cached.

    `token()` answers from the cache while the token has more than REFRESH_AHEAD_SECONDS to live;
    closer to expiry it still answers with it and fetches the next in the background; without a
    usable token it waits for one fetch (concurrent callers share it). Fetches run in a thread."""

    def __init__(self, key_json: str, clock: Callable[[], float] = time.time) -> None:
        try:
            info = json.loads(key_json)
            self._credentials = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, KeyError, TypeError) as exc:
            # Never the key's content in the message: it holds the private key.
            raise SecretUnavailable(f"not a service-account JSON key ({type(exc).__name__})") from None
        self.account = str(info.get("client_email", "?"))
        self._clock = clock
        self._session = requests.Session()
        self._token: str | None = None
        self._expires_at = 0.0
        self.serial = 0  # counts the tokens fetched: names the one a request was sent with
        self._fetch: asyncio.Future[None] | None = None
        self._failed: tuple[float, str] | None = None

    def _lifetime(self) -> float:
        return self._expires_at - self._clock()

    async def token(self) -> str:
        lifetime = self._lifetime()
        if self._token is not None and lifetime > MIN_LIFETIME_SECONDS:
            if lifetime <= REFRESH_AHEAD_SECONDS and not self._holding_failure():
                self._start_fetch()  # the next one, in the background; this one still serves
            return self._token
        if self._failed is not None and self._holding_failure():
            raise TokenUnavailable(self._failed[1])
        await asyncio.shield(self._start_fetch())
        if self._token is None or self._lifetime() <= MIN_LIFETIME_SECONDS:
            raise TokenUnavailable(self._failed[1] if self._failed else "the token endpoint gave no usable token")
        return self._token

    def drop(self, serial: int) -> bool:
        """Forget the token numbered `serial` (Vertex refused it), so the next `token()` fetches a
        new one; a newer token is kept (a late refusal of an old one says nothing about it)."""
        if serial != self.serial or self._token is None:
            return False
        self._token, self._expires_at = None, 0.0
        return True

    def _holding_failure(self) -> bool:
        return self._failed is not None and self._clock() - self._failed[0] < FAILURE_HOLD_SECONDS

    def _start_fetch(self) -> asyncio.Future[None]:
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.ensure_future(self._refresh())
        return self._fetch

    async def _refresh(self) -> None:
        try:
            token, expiry = await asyncio.to_thread(self._fetch_blocking)
        except (google.auth.exceptions.GoogleAuthError, requests.RequestException, OSError) as exc:
            reason = _reason(exc)
            self._failed = (self._clock(), f"token endpoint for {self.account}: {reason}")
            log.error("vertex: no access token for %s: %s", self.account, reason)
            return
        self._token, self._expires_at, self._failed = token, expiry, None
        self.serial += 1
        log.info("vertex: access token for %s, valid %.0f s", self.account, self._lifetime())

    def _fetch_blocking(self) -> tuple[str, float]:
        self._credentials.refresh(_Transport(self._session))
        token, expiry = self._credentials.token, self._credentials.expiry
        if not isinstance(token, str) or not token:
            raise google.auth.exceptions.RefreshError("the token endpoint answered without an access_token")
        # google-auth keeps expiry as a naive UTC datetime on the wall clock; kept here as a lifetime
        # on this source's clock
        lifetime = expiry.replace(tzinfo=dt.UTC).timestamp() - time.time() if isinstance(expiry, dt.datetime) else 0.0
        return token, self._clock() + lifetime


def _reason(exc: BaseException) -> str:
    """What went wrong, short; google-auth's RefreshError carries the endpoint's error body (never
    a token: a failed exchange has none), its first line is enough for the log."""
    text = str(exc.args[0] if exc.args else exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def token_refused(status: int, raw: bytes) -> bool:
    """Whether Vertex's error says the bearer token itself is no good (a new one may pass): 401
    UNAUTHENTICATED, whose ErrorInfo reason is ACCESS_TOKEN_EXPIRED for an expired or revoked token.
    A 403 is a missing permission or scope (IAM_PERMISSION_DENIED, ACCESS_TOKEN_SCOPE_INSUFFICIENT)
    that the account's next token has too — unless it names the token as expired."""
    if status == 401:
        return True
    if status != 403:
        return False
    try:
        error = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    if isinstance(error, list) and error:
        error = error[0]  # the non-SSE streaming endpoint wraps errors in an array
    error = error.get("error") if isinstance(error, dict) else None
    if not isinstance(error, dict):
        return False
    details = error.get("details")
    reasons = {str(d.get("reason")) for d in details if isinstance(d, dict)} if isinstance(details, list) else set()
    return error.get("status") == "UNAUTHENTICATED" or "ACCESS_TOKEN_EXPIRED" in reasons


@dataclasses.dataclass(frozen=True)
class Issued:
    """Which cached token a request went out with (its `Prepared.issued`)."""

    source: ServiceAccountTokens
    serial: int


class VertexAuth:
    """One Vertex provider's bearer token: its explicit `access_token` reference as it is, or a
    token of its service account (`credentials`), cached in a `ServiceAccountTokens` for the key.

    Its `VertexFamily` keeps it for as long as the loaded policy, so it is this provider's alone.
    A rotated key (new content under the same reference) gets a source of its own, replacing the
    old key's."""

    def __init__(self) -> None:
        self._source: tuple[str, ServiceAccountTokens] | None = None  # (key fingerprint, its tokens)

    async def headers(self, settings: Any, secrets: SecretResolver) -> tuple[dict[str, str], Issued | None]:
        """The authorization header, and which cached token it carries (None: an explicit one)."""
        if settings.access_token is not None:
            return {"authorization": f"Bearer {secrets.resolve(settings.access_token.value)}"}, None
        key_json = secrets.resolve(settings.credentials.value)
        fingerprint = hashlib.sha256(key_json.encode()).hexdigest()
        if self._source is None or self._source[0] != fingerprint:
            self._source = (fingerprint, ServiceAccountTokens(key_json))
        source = self._source[1]
        token = await source.token()
        # No await between the token and its serial: they name the same fetch.
        return {"authorization": f"Bearer {token}"}, Issued(source, source.serial)

    @staticmethod
    def refused(issued: Issued, status: int) -> None:
        """Vertex refused the token `issued` names: the next request fetches a new one."""
        if issued.source.drop(issued.serial):
            log.warning(
                "vertex: the access token for %s was refused (HTTP %s); the next request fetches a new one",
                issued.source.account, status,
            )  # fmt: skip
