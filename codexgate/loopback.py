"""What the gateway's two in-process relays share: an aiohttp server on a loopback port, and a table
of single-use tokens naming the work each incoming request is for.

The failover relay (`codexgate/relay.py`) and the Responses WebSocket relay (`codexgate/ws_relay.py`)
are both reached by mitmproxy rewriting a cleared request to `http://127.0.0.1:{port}/…/{token}`.
The token is the only authority: it is unguessable (`secrets.token_urlsafe(24)`), taken once, and
expires if unused, so nothing else that reaches the port (the egress guard refuses the gateway's own
ports to clients anyway) can ride on a plan it was not given.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from aiohttp import web

__all__ = ["LoopbackServer", "OnLoopback", "TokenTable"]


class LoopbackServer:
    """One aiohttp application served on `host:port` (port 0: any free one) until `stop()`.

    `handler_cancellation`: when mitmproxy drops the connection (Codex cancelled the turn), the
    handler is cancelled, so whatever it was waiting on upstream is closed too."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float) -> None:
        self._app = app
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, host: str, port: int) -> int:
        if self._runner is not None:
            return self.port
        runner = web.AppRunner(
            self._app, access_log=None, handler_cancellation=True, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stops accepting; requests in flight get `shutdown_timeout` seconds to finish."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class OnLoopback:
    """A relay served by a `LoopbackServer` (`self._server`): where mitmproxy sends what it hands over."""

    _server: LoopbackServer

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port


class TokenTable[T]:
    """Work registered for one incoming request, under a single-use token that expires.

    `on_expired(item)` runs for an item nobody took in time and for every item left at `clear()`
    (e.g. to release what it holds); an item taken or discarded is the taker's business."""

    def __init__(self, on_expired: Callable[[T], None] | None = None) -> None:
        self._items: dict[str, tuple[T, asyncio.TimerHandle]] = {}
        self._on_expired = on_expired

    def __len__(self) -> int:
        return len(self._items)

    def register(self, item: T, ttl: float) -> str:
        """Holds `item` for `ttl` seconds (must be called on the event loop); returns its token."""
        token = secrets.token_urlsafe(24)
        timer = asyncio.get_running_loop().call_later(ttl, self._expire, token)
        self._items[token] = (item, timer)
        return token

    def take(self, token: str) -> T | None:
        """The item registered under `token`, once; None if unknown, taken or expired."""
        entry = self._items.pop(token, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def discard(self, token: str) -> T | None:
        """Drops a registered item that will not be used; returns it (None if it was not there)."""
        return self.take(token)

    def clear(self) -> None:
        for token in list(self._items):
            self._expire(token)

    def _expire(self, token: str) -> None:
        entry = self._items.pop(token, None)
        if entry is None:
            return
        entry[1].cancel()
        if self._on_expired is not None:
            self._on_expired(entry[0])
