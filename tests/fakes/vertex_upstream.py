"""A fake Vertex AI (Gemini models under `publishers/google`) and a fake Google OAuth2 token endpoint.

`FakeVertex` speaks exactly the fake Gemini API's wire format (same request validation, same
scripted answers, tests/fakes/gemini_upstream.py) under Vertex's paths
(`/v1/projects/P/locations/L/publishers/google/models/M:streamGenerateContent?alt=sse`), and
authorizes `Authorization: Bearer` with tokens its `FakeTokenEndpoint` issued and that have not
expired or been revoked, answering 401 UNAUTHENTICATED with Google's body otherwise (ErrorInfo
reason ACCESS_TOKEN_EXPIRED for a token it issued, ACCESS_TOKEN_TYPE_UNSUPPORTED for anything else).

`FakeTokenEndpoint` is Google's `token_uri` for service accounts (one or several, each with its own
key): it takes the JWT-bearer grant (RFC 7523) and verifies the assertion as Google does — RS256
over `header.claims` with the public key of the account's key (made per test by
`service_account_key`), `iss` the account's email, `aud` Google's token endpoint, a `scope`,
`iat`/`exp` at most an hour apart around now — before it issues `{"access_token", "expires_in",
"token_type": "Bearer"}`; anything else is a 400 `invalid_grant`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import re
import threading
import time
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fakes.gemini_upstream import FakeGemini
from fakes.threaded import ThreadedApp

PROJECT = "codexgate-test-1"
LOCATION = "us-central1"
CLIENT_EMAIL = "gateway@codexgate-test-1.iam.gserviceaccount.com"
# google-auth signs its assertions for Google's token endpoint whatever the key's token_uri (as
# Google's own service-account flow documents the `aud` claim); Google accepts that or its URI.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclasses.dataclass(frozen=True)
class ServiceAccountKey:
    json: str  # the key file as Google hands it out
    public_key: rsa.RSAPublicKey
    private_key_pem: str


def service_account_key(token_uri: str, client_email: str = CLIENT_EMAIL) -> ServiceAccountKey:
    """A fresh service-account JSON key (a new RSA key pair) whose token_uri is the fake's."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": client_email,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return ServiceAccountKey(json.dumps(info), private.public_key(), pem)


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeTokenEndpoint(ThreadedApp):
    """Google's OAuth2 token endpoint for service accounts (see the module docstring)."""

    def __init__(self, expires_in: int = 3600) -> None:
        super().__init__()
        self.accounts: dict[str, rsa.RSAPublicKey] = {}  # client email → its key's public key
        self.client_email = CLIENT_EMAIL  # the account `key()` makes a key for by default
        self.expires_in = expires_in
        self.fail_status: int | None = None  # answer every grant with this error status
        self.hold: threading.Event | None = None  # grants wait for it (10 s at most, then fail)
        self.arrived = threading.Event()  # set when a grant request came in
        self.grants: list[dict[str, Any]] = []  # the verified claims of each grant served
        self.refused: list[str] = []
        self.issued: dict[str, float] = {}  # token → when it expires (epoch seconds)
        self.owners: dict[str, str] = {}  # token → the account it was issued to
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def key(self, client_email: str | None = None) -> ServiceAccountKey:
        """A new key of service account `client_email` (default `self.client_email`) for this
        endpoint; that account's grants are verified against it from now on (an older key of the
        account no longer works)."""
        email = client_email or self.client_email
        made = service_account_key(self.url, email)
        self.accounts[email] = made.public_key
        return made

    def valid(self, token: str) -> bool:
        return self.issued.get(token, 0.0) > time.time()

    def revoke(self, token: str) -> None:
        """The token stops working before its expiry (as after a revocation or a key disabled)."""
        self.issued[token] = 0.0

    def grants_of(self, client_email: str) -> list[dict[str, Any]]:
        return [grant for grant in self.grants if grant.get("iss") == client_email]

    def _refuse(self, status: int, error: str, description: str) -> web.Response:
        self.refused.append(f"{error}: {description}")
        return web.json_response({"error": error, "error_description": description}, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST" or request.path != "/token":
            return web.json_response({"error": "not_found"}, status=404)
        self.arrived.set()
        if self.hold is not None and not await asyncio.to_thread(self.hold.wait, 10):
            return self._refuse(503, "internal_failure", "held grant was never released")
        if self.fail_status is not None:
            return self._refuse(self.fail_status, "internal_failure", "the token service is unavailable")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._refuse(400, "invalid_request", f"content type {request.content_type}")
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._refuse(400, "unsupported_grant_type", str(form.get("grant_type")))
        problem, claims = self._verify(str(form.get("assertion") or ""))
        if problem:
            return self._refuse(400, "invalid_grant", problem)
        self.grants.append(claims)
        token = f"ya29.fake-{next(self._ids)}-{int(time.time())}"
        self.issued[token] = time.time() + self.expires_in
        self.owners[token] = str(claims["iss"])
        return web.json_response({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    def _verify(self, assertion: str) -> tuple[str, dict[str, Any]]:
        parts = assertion.split(".")
        if len(parts) != 3:
            return "the assertion is not a JWS compact serialization", {}
        try:
            header = json.loads(_b64decode(parts[0]))
            claims = json.loads(_b64decode(parts[1]))
            signature = _b64decode(parts[2])
        except ValueError:
            return "undecodable assertion", {}
        if header.get("alg") != "RS256":
            return f"alg {header.get('alg')!r}, not RS256", {}
        public_key = self.accounts.get(str(claims.get("iss")))
        if public_key is None:
            return f"iss {claims.get('iss')!r}: no such account", {}
        try:
            signing_input = f"{parts[0]}.{parts[1]}".encode()
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature.", {}
        now = time.time()
        if claims.get("aud") not in (GOOGLE_TOKEN_AUDIENCE, self.url):
            return f"aud {claims.get('aud')!r} is not the token URI", {}
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            return f"scope {claims.get('scope')!r}", {}
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or not 0 < exp - iat <= 3600:
            return "iat/exp missing or more than an hour apart", {}
        if iat > now + 60 or exp < now - 60:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe", {}
        return "", claims


class FakeVertex(FakeGemini):
    """The fake Gemini API under Vertex AI's paths, authorized by the token endpoint's tokens."""

    def __init__(self, tokens: FakeTokenEndpoint, project: str = PROJECT, location: str = LOCATION) -> None:
        super().__init__()
        self.tokens = tokens
        self.project = project
        self.location = location

    def route(self, path: str) -> re.Match[str] | None:
        return re.fullmatch(
            rf"/v1/projects/{re.escape(self.project)}/locations/{re.escape(self.location)}"
            r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)",
            path,
        )

    def refuse_credentials(self, request: web.Request) -> web.Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if request.headers.get("x-goog-api-key"):
            return self._error(401, "UNAUTHENTICATED", "API keys are not supported by this API.")
        if scheme.lower() != "bearer" or not self.tokens.valid(token):
            # Google's answer, word for word: one it issued that no longer works has expired
            reason = "ACCESS_TOKEN_EXPIRED" if token in self.tokens.issued else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
            return self._error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie"
                " or other valid authentication credential. See"
                " https://developers.google.com/identity/sign-in/web/devconsole-project.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": reason,
                        "domain": "googleapis.com",
                        "metadata": {
                            "service": "aiplatform.googleapis.com",
                            "method": "google.cloud.aiplatform.v1.PredictionService.GenerateContent",
                        },
                    }
                ],
            )
        return None
