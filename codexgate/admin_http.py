"""The admin port: Prometheus `/metrics`, liveness `/healthz` and readiness `/readyz`.

It runs on its own thread (like prometheus-client's own server did), so a scrape never waits
for the proxy's event loop; the probes, though, ask that loop, because a gateway whose loop no
longer answers is not alive whatever its threads say. Any other path is a 404: a balancer that
probes the wrong path must not see a healthy instance.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0

# (ready, {check name: "ok" or why not}) — run on the event loop.
ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, str]]]]


class AdminServer:
    """Serves the three paths on `host:port` until `stop()`."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, readiness: ReadinessCheck) -> None:
        self.registry = registry
        self.readiness = readiness
        self.loop: asyncio.AbstractEventLoop | None = None  # set once the proxy runs
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = server.answer(self.path, self.headers.get("accept", ""))
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not logged
                pass

        self._httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="codexgate-admin", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def answer(self, target: str, accept: str) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(self.registry)
        if path == "/healthz":
            alive = self._on_loop(_noop)
            if alive is None:
                return _json(503, {"status": "not alive", "reason": "the event loop does not answer"})
            return _json(200, {"status": "alive"})
        if path == "/readyz":
            outcome = self._on_loop(self.readiness)
            if outcome is None:
                return _json(503, {"status": "not ready", "checks": {"event_loop": "does not answer"}})
            ready, checks = outcome
            return _json(200 if ready else 503, {"status": "ready" if ready else "not ready", "checks": checks})
        return _json(404, {"error": f"no such path {path}; try /metrics, /healthz or /readyz"})

    def _on_loop[R](self, check: Callable[[], Awaitable[R]]) -> R | None:
        """`check()` run on the proxy's loop, or None when the loop is not running or too slow."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(_within(check(), PROBE_TIMEOUT_SECONDS), loop)
            return future.result(PROBE_TIMEOUT_SECONDS + 0.5)
        except Exception as exc:  # timeout, loop stopped: the probe says no
            logger.warning("admin probe failed: %s", exc or type(exc).__name__)
            return None

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


async def _noop() -> bool:
    return True


async def _within[R](awaitable: Awaitable[R], seconds: float) -> R:
    async with asyncio.timeout(seconds):
        return await awaitable


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode() + b"\n"
