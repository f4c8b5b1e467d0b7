"""A fault-injecting fake upstream for the relay tests: aiohttp on its own event loop thread.

Each scripted endpoint `/f/{name}` answers its requests with the next `Fault` of its script (the
last one repeats). Every request is recorded (body, headers, peer port, time) and every body write
is timestamped, so tests can tell when the upstream sent what.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import socket
import struct
import threading
import time
from typing import Any

from aiohttp import web


@dataclasses.dataclass
class Fault:
    kind: str  # sse | json | status | hang_headers | hang_mid | reset_before | reset_after | trickle | gzip_json
    code: int = 200  # the status of json / status answers
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    events: int = 3  # sse / hang_mid / reset_after: events sent (before the fault)
    interval: float = 0.0  # seconds between events / trickled bytes
    body: bytes = b""
    chunks: int = 0  # trickle: how many pieces
    content_type: str = "text/event-stream"

    # -- the scripted behaviours ---------------------------------------------------------
    @staticmethod
    def sse(events: int = 3, interval: float = 0.0) -> Fault:
        return Fault("sse", events=events, interval=interval)

    @staticmethod
    def json(payload: dict[str, Any] | None = None, status: int = 200) -> Fault:
        return Fault("json", code=status, body=json.dumps(payload or {"ok": True}).encode())

    @staticmethod
    def status(
        code: int, retry_after: str | None = None, retry_after_ms: str | None = None, message: str = "upstream says no"
    ) -> Fault:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        body = json.dumps({"error": {"message": message, "type": "upstream", "code": str(code)}}).encode()
        return Fault("status", code=code, headers=headers, body=body)

    @staticmethod
    def hang_headers() -> Fault:
        return Fault("hang_headers")

    @staticmethod
    def hang_mid(events: int = 2, content_type: str = "text/event-stream") -> Fault:
        return Fault("hang_mid", events=events, content_type=content_type)

    @staticmethod
    def reset_before() -> Fault:
        return Fault("reset_before")

    @staticmethod
    def reset_after(events: int = 1, content_type: str = "text/event-stream") -> Fault:
        return Fault("reset_after", events=events, content_type=content_type)

    @staticmethod
    def trickle(chunks: int, interval: float) -> Fault:
        return Fault("trickle", chunks=chunks, interval=interval)

    @staticmethod
    def gzip_json(payload: dict[str, Any]) -> Fault:
        return Fault("gzip_json", body=gzip.compress(json.dumps(payload).encode()))


def sse_event(n: int) -> bytes:
    return f'event: response.output_text.delta\ndata: {{"type":"response.output_text.delta","n":{n}}}\n\n'.encode()


@dataclasses.dataclass
class Hit:
    name: str
    headers: dict[str, str]
    body: bytes
    peer_port: int
    at: float  # time.monotonic() when the request arrived


class FaultUpstream:
    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.sent: dict[str, list[tuple[float, bytes]]] = {}  # name -> (monotonic time, bytes) per write
        self.port = 0
        self._scripts: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    def start(self) -> FaultUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._stopping is not None and self._runner is not None
            self._stopping.set()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def script(self, name: str, *faults: Fault) -> str:
        """Script endpoint `name`; returns its URL."""
        with self._lock:
            self._scripts[name] = list(faults)
        return f"http://127.0.0.1:{self.port}/f/{name}"

    def hits_of(self, name: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.name == name]

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/f/{name}", self._handle)
        # As a provider's base URL (…/f/NAME): the gateway appends the endpoint path.
        app.router.add_route("*", "/f/{name}/{endpoint:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def _next(self, name: str) -> Fault:
        with self._lock:
            script = self._scripts[name]
            return script.pop(0) if len(script) > 1 else script[0]

    async def _hang(self, seconds: float = 30.0) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _write(self, name: str, response: web.StreamResponse, data: bytes) -> None:
        with self._lock:
            self.sent.setdefault(name, []).append((time.monotonic(), data))
        await response.write(data)

    @staticmethod
    def _reset(request: web.Request) -> None:
        """A real TCP RST: linger 0, then close."""
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        with self._lock:
            self.hits.append(
                Hit(name, {k.lower(): v for k, v in request.headers.items()}, body, peer[1] if peer else 0,
                    time.monotonic())
            )  # fmt: skip
        fault = self._next(name)
        if fault.kind == "json":
            return web.Response(body=fault.body, status=fault.code, content_type="application/json")
        if fault.kind == "gzip_json":
            return web.Response(
                body=fault.body, headers={"content-type": "application/json", "content-encoding": "gzip"}
            )
        if fault.kind == "status":
            return web.Response(
                body=fault.body, status=fault.code, headers={"content-type": "application/json", **fault.headers}
            )
        if fault.kind == "hang_headers":
            await self._hang()
            return web.Response(status=200, text="too late")
        if fault.kind == "reset_before":
            self._reset(request)
            return web.Response()
        response = web.StreamResponse(headers={"content-type": fault.content_type, "x-upstream": "fault"})
        await response.prepare(request)
        if fault.kind == "trickle":
            for i in range(fault.chunks):
                await self._write(name, response, sse_event(i))
                await asyncio.sleep(fault.interval)
            await response.write_eof()
            return response
        for i in range(fault.events):
            if i and fault.interval:
                await asyncio.sleep(fault.interval)
            await self._write(name, response, sse_event(i))
        if fault.kind == "hang_mid":
            await self._write(name, response, b"event: partial\ndata: {")  # an event cut in half
            await self._hang()
            return response  # the client is gone by now; no end to write
        elif fault.kind == "reset_after":
            await self._write(name, response, b"event: partial\ndata: {")
            await asyncio.sleep(0.05)  # let the bytes leave before the reset
            self._reset(request)
            return response
        await response.write_eof()
        return response


def refused_url() -> str:
    """A URL on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing"


class Blackhole:
    """A listening socket whose accept queue is full: further connects hang (SYNs are dropped)."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(0)
        self.port = self.server.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", self.port))
            self.fillers.append(c)
        time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/blackhole"

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.server.close()
