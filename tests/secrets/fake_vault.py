"""A local stand-in for HashiCorp Vault's HTTP API, KV version 2 only, for driving the real `hvac` client.

No Vault server is installable here (not in apt, not on PyPI; OpenBao's Go module has replace directives, so
`go install` refuses it). What is reproduced is what a KV v2 read and write look like on the wire:

- ``GET /v1/{mount}/data/{path}[?version=N]`` with ``X-Vault-Token`` (and ``X-Vault-Namespace`` when the fake
  is given a namespace), answered with the real envelope
  ``{"request_id", "lease_id": "", "renewable": false, "lease_duration": 0,
     "data": {"data": {...}, "metadata": {"created_time", "custom_metadata": null, "deletion_time": "",
                                          "destroyed": false, "version": N}},
     "wrap_info": null, "warnings": null, "auth": null, "mount_type": "kv"}``;
- ``POST``/``PUT /v1/{mount}/data/{path}`` with ``{"data": {...}}`` writes a new version and answers its metadata;
- a missing or unknown token, or a token whose paths do not cover the secret: 403 ``{"errors": ["permission denied"]}``;
- a missing secret: 404 ``{"errors": []}``; an unknown mount: 404 ``{"errors": ["no handler for route ..."]}``;
- a deleted latest version: 404 whose body still carries ``data.metadata`` with ``deletion_time`` set (``data.data``
  null), which is what hvac's ``raise_on_deleted_version`` looks at;
- ``sealed``: 503 ``{"errors": ["Vault is sealed"]}``; ``hang``: the request is read and never answered.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Version:
    data: dict[str, Any] | None
    created_time: str
    deletion_time: str = ""
    destroyed: bool = False

    def metadata(self, number: int) -> dict[str, Any]:
        return {
            "created_time": self.created_time,
            "custom_metadata": None,
            "deletion_time": self.deletion_time,
            "destroyed": self.destroyed,
            "version": number,
        }


@dataclass
class Seen:
    method: str
    path: str
    token: str | None
    namespace: str | None


@dataclass
class FakeVault:
    mounts: set[str] = field(default_factory=lambda: {"secret"})
    # token -> path prefixes ("mount/path") it may read and write; None: everything (a root token)
    tokens: dict[str, list[str] | None] = field(default_factory=lambda: {"root-token": None})
    namespace: str | None = None
    sealed: bool = False
    hang: bool = False
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._secrets: dict[tuple[str, str], list[_Version]] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0

    # --- state -----------------------------------------------------------------------------

    def put(self, mount: str, path: str, data: dict[str, Any]) -> int:
        with self._lock:
            versions = self._secrets.setdefault((mount, path), [])
            versions.append(_Version(dict(data), _now()))
            return len(versions)

    def delete_latest(self, mount: str, path: str) -> None:
        with self._lock:
            self._secrets[(mount, path)][-1].deletion_time = _now()

    def reads(self, mount: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == "GET" and r.path == f"/v1/{mount}/data/{path}")

    # --- server ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FakeVault:
        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-vault", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stops listening (connections are then refused); `start()` again serves on the same port."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- protocol --------------------------------------------------------------------------

    def _allowed(self, token: str | None, mount: str, path: str) -> bool:
        if token is None or token not in self.tokens:
            return False
        prefixes = self.tokens[token]
        return prefixes is None or any(f"{mount}/{path}".startswith(p) for p in prefixes)

    def _answer(self, method: str, url: str, token: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        if self.sealed:
            return 503, {"errors": ["Vault is sealed"]}
        parts = urlsplit(url)
        segments = parts.path.split("/")
        # ["", "v1", mount, "data", *path]
        if len(segments) < 5 or segments[1] != "v1" or segments[3] != "data" or not all(segments[4:]):
            return 404, {"errors": [f'no handler for route "{parts.path[4:]}". route entry not found.']}
        mount, path = segments[2], "/".join(segments[4:])
        if not self._allowed(token, mount, path):
            return 403, {"errors": ["permission denied"]}
        if mount not in self.mounts:
            return 404, {"errors": [f'no handler for route "{parts.path[4:]}". route entry not found.']}
        with self._lock:
            versions = self._secrets.get((mount, path), [])
            if method in ("POST", "PUT"):
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    return 400, {"errors": ["error parsing JSON"]}
                if not isinstance(payload.get("data"), dict):
                    return 400, {"errors": ["no data provided"]}
                versions = self._secrets.setdefault((mount, path), [])
                versions.append(_Version(dict(payload["data"]), _now()))
                return 200, self._envelope(versions[-1].metadata(len(versions)))
            wanted = parse_qs(parts.query).get("version", ["0"])[0]
            number = int(wanted) if wanted.isdigit() and int(wanted) > 0 else len(versions)
            if not versions or number > len(versions):
                return 404, {"errors": []}
            version = versions[number - 1]
            metadata = version.metadata(number)
            if version.deletion_time or version.destroyed:
                return 404, self._envelope({"data": None, "metadata": metadata})
            return 200, self._envelope({"data": dict(version.data or {}), "metadata": metadata})

    @staticmethod
    def _envelope(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": None,
            "mount_type": "kv",
        }


def _handler(vault: FakeVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            token = self.headers.get("X-Vault-Token")
            namespace = self.headers.get("X-Vault-Namespace")
            vault.requests.append(Seen(self.command, urlsplit(self.path).path, token, namespace))
            if vault.hang:
                vault._release.wait(30)
                self.close_connection = True
                return
            status: int
            answer: dict[str, Any]
            if vault.namespace is not None and namespace != vault.namespace:
                # A token is bound to its namespace: from the root namespace the secret's token is unknown.
                status, answer = 403, {"errors": ["permission denied"]}
            else:
                status, answer = vault._answer(self.command, self.path, token, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve
        do_PUT = _serve

    return Handler
