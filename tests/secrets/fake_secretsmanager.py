"""A local stand-in for AWS Secrets Manager's JSON protocol, for driving real botocore.

Reproduced on the wire:

- ``POST /`` with ``X-Amz-Target: secretsmanager.GetSecretValue`` and ``Content-Type: application/x-amz-json-1.1``,
  body ``{"SecretId": NAME_OR_ARN}``;
- the request must be SigV4-signed (``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/secretsmanager/
  aws4_request, SignedHeaders=..., Signature=...``); the signature is recomputed from the signed headers and the
  body with the access key's secret, as AWS does. Missing: 400 ``MissingAuthenticationTokenException``; unknown
  access key: 400 ``UnrecognizedClientException``; wrong signature: 400 ``InvalidSignatureException``;
- 200 ``{"ARN", "Name", "VersionId", "SecretString" | "SecretBinary", "VersionStages": ["AWSCURRENT"],
  "CreatedDate"}``; errors are 400 ``{"__type": CODE, "message": ...}`` (``ResourceNotFoundException``,
  ``AccessDeniedException``), ``failing``: 500 ``InternalServiceError``; ``hang``: never answered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCOUNT = "123456789012"
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass
class _Secret:
    name: str
    arn: str
    versions: list[tuple[str, str | bytes, float]] = field(default_factory=list)  # (version id, value, created)


@dataclass
class Seen:
    target: str | None
    content_type: str | None
    authorization: str | None
    secret_id: str | None
    verdict: str  # "ok" or the error code answered


@dataclass
class FakeSecretsManager:
    region: str = "eu-west-1"
    credentials: dict[str, str] = field(default_factory=lambda: {"AKIDCODEXGATETEST": "test-secret-access-key"})
    denied: set[str] = field(default_factory=set)  # secret names the caller's identity may not read
    failing: bool = False
    hang: bool = False
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._secrets: dict[str, _Secret] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    # --- state -----------------------------------------------------------------------------

    def put_secret_value(self, name: str, value: str | bytes) -> str:
        """Creates the secret or adds a new AWSCURRENT version (a rotation); returns the version id."""
        with self._lock:
            secret = self._secrets.get(name)
            if secret is None:
                suffix = uuid.uuid4().hex[:6]
                arn = f"arn:aws:secretsmanager:{self.region}:{ACCOUNT}:secret:{name}-{suffix}"
                secret = self._secrets[name] = _Secret(name, arn)
            version = str(uuid.uuid4())
            secret.versions.append((version, value, time.time()))
            return version

    def arn(self, name: str) -> str:
        return self._secrets[name].arn

    def reads(self, secret_id: str) -> int:
        return sum(1 for r in self.requests if r.secret_id == secret_id and r.target == "secretsmanager.GetSecretValue")

    # --- server ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeSecretsManager:
        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-secretsmanager", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- protocol --------------------------------------------------------------------------

    def _check_signature(self, method: str, path: str, headers: Any, body: bytes) -> str | None:
        """None if the SigV4 signature is right, else the AWS error code."""
        authorization = headers.get("Authorization")
        if not authorization:
            return "MissingAuthenticationTokenException"
        match = _AUTH_RE.fullmatch(authorization.strip())
        if match is None or match["service"] != "secretsmanager" or match["region"] != self.region:
            return "InvalidSignatureException"
        secret_key = self.credentials.get(match["akid"])
        if secret_key is None:
            return "UnrecognizedClientException"
        amz_date = headers.get("X-Amz-Date", "")
        if not amz_date.startswith(match["date"]):
            return "InvalidSignatureException"
        signed = match["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return "InvalidSignatureException"
        canonical_headers = "".join(f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in signed)
        path_part, _, query = path.partition("?")
        canonical_request = "\n".join(
            [method, path_part or "/", query, canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest()]
        )
        scope = f"{match['date']}/{match['region']}/{match['service']}/aws4_request"
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
        )
        key = ("AWS4" + secret_key).encode()
        for part in (match["date"], match["region"], match["service"], "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(expected, match["signature"]) else "InvalidSignatureException"

    def _answer(self, target: str | None, content_type: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if content_type != "application/x-amz-json-1.1":
            return 400, _error("SerializationException", "Start of structure or map found where not expected.")
        if target != "secretsmanager.GetSecretValue":
            return 400, _error("UnknownOperationException", "")
        if self.failing:
            return 500, _error("InternalServiceError", "An error occurred on the server side.")
        try:
            secret_id = json.loads(body)["SecretId"]
        except (ValueError, KeyError, TypeError):
            return 400, _error("InvalidParameterException", "SecretId is required.")
        with self._lock:
            secret = self._secrets.get(secret_id) or next(
                (s for s in self._secrets.values() if s.arn == secret_id), None
            )
            if secret is not None and secret.name in self.denied:
                return 400, _error(
                    "AccessDeniedException",
                    f"User: arn:aws:iam::{ACCOUNT}:user/codexgate is not authorized to perform: "
                    f"secretsmanager:GetSecretValue on resource: {secret_id} because no identity-based policy "
                    "allows the secretsmanager:GetSecretValue action",
                )
            if secret is None or not secret.versions:
                return 400, _error("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
            version, value, created = secret.versions[-1]
        answer: dict[str, Any] = {
            "ARN": secret.arn,
            "Name": secret.name,
            "VersionId": version,
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": round(created, 3),
        }
        if isinstance(value, bytes):
            answer["SecretBinary"] = base64.b64encode(value).decode()
        else:
            answer["SecretString"] = value
        return 200, answer


def _error(code: str, message: str) -> dict[str, Any]:
    return {"__type": code, "message": message}


_MESSAGES = {
    "MissingAuthenticationTokenException": "Missing Authentication Token",
    "UnrecognizedClientException": "The security token included in the request is invalid.",
    "InvalidSignatureException": "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
}


def _handler(fake: FakeSecretsManager) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = self.headers.get("X-Amz-Target")
            content_type = self.headers.get("Content-Type")
            try:
                secret_id = json.loads(body).get("SecretId")
            except (ValueError, AttributeError):
                secret_id = None
            if fake.hang:
                fake.requests.append(Seen(target, content_type, self.headers.get("Authorization"), secret_id, "hang"))
                fake._release.wait(30)
                self.close_connection = True
                return
            problem = fake._check_signature(self.command, self.path, self.headers, body)
            if problem is not None:
                status, answer = 400, _error(problem, _MESSAGES[problem])
            elif self.path != "/":
                status, answer = 404, _error("UnknownOperationException", "")
            else:
                status, answer = fake._answer(target, content_type, body)
            fake.requests.append(
                Seen(target, content_type, self.headers.get("Authorization"), secret_id, answer.get("__type", "ok"))
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
