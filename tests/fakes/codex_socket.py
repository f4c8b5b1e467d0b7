"""A Responses WebSocket client that speaks as Codex 0.169 does (codex-rs `responses_websocket.rs`
and its client's incremental requests), for tests and benchmarks.

One socket per session: a warm-up `response.create` with `generate: false`, then one
`response.create` per model request. Once a response completed, a request whose input extends
the last request's input plus that response's output items is sent as `previous_response_id` +
only the new items, as Codex does on a reused socket; anything else is sent in full.
"""

from __future__ import annotations

import json
import ssl
from typing import Any, Self

import aiohttp

FINAL = ("response.completed", "response.failed", "response.incomplete", "error")


class CodexSocket:
    def __init__(
        self,
        url: str,
        key: str,
        *,
        session_id: str = "sess-ws-test",
        proxy: str | None = None,
        proxy_auth: aiohttp.BasicAuth | None = None,
        ca_file: str | None = None,
        timeout: float = 30,
    ) -> None:
        self.url = url  # ws://gateway/v1/responses or wss://api.openai.com/v1/responses (with proxy)
        self.key = key
        self.session_id = session_id
        self.proxy = proxy
        self.proxy_auth = proxy_auth
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.timeout = timeout
        self.http: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self.last_request: dict[str, Any] | None = None  # the last full request (input included)
        self.last_response_id: str | None = None
        self.items_added: list[Any] = []  # output items of the last completed response
        self.sent: list[dict[str, Any]] = []  # every message as sent

    def headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.key}",
            "openai-beta": "responses_websockets=2026-02-06",
            "originator": "codex_exec",
            "session-id": self.session_id,
            "thread-id": self.session_id,
            "x-client-request-id": self.session_id,
            "version": "0.169.0",
        }

    async def __aenter__(self) -> Self:
        self.http = aiohttp.ClientSession(trust_env=False)
        try:
            self.socket = await self.http.ws_connect(
                self.url, headers=self.headers(), proxy=self.proxy, proxy_auth=self.proxy_auth, ssl=self.ssl,
                max_msg_size=0, autoping=True,
            )  # fmt: skip
        except BaseException:
            await self.http.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.http is not None:
            await self.http.close()

    async def warm_up(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Codex's prewarm: the request's instructions and tools, no output asked for."""
        return await self._send({**request, "generate": False}, full_request=request)

    async def create(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """One model request (its full input, as HTTP would send it); the events of its answer."""
        message = dict(request)
        if self.last_request is not None and self.last_response_id is not None:
            baseline = [*self.last_request["input"], *self.items_added]
            same_fields = {k: v for k, v in self.last_request.items() if k != "input"} == {
                k: v for k, v in request.items() if k != "input"
            }
            if same_fields and request["input"][: len(baseline)] == baseline:
                message = {**request, "previous_response_id": self.last_response_id}
                message["input"] = request["input"][len(baseline) :]
        return await self._send(message, full_request=request)

    async def send_raw(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._send(message, full_request=None)

    async def _send(self, message: dict[str, Any], full_request: dict[str, Any] | None) -> list[dict[str, Any]]:
        assert self.socket is not None
        self.sent.append(message)
        await self.socket.send_str(json.dumps({"type": "response.create", **message}))
        events: list[dict[str, Any]] = []
        self.last_request, self.last_response_id, self.items_added = None, None, []
        while True:
            received = await self.socket.receive(timeout=self.timeout)
            if received.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket ended before a final event: {received.type} {received.data!r}")
            event = json.loads(received.data)
            events.append(event)
            if event.get("type") == "response.output_item.done":
                self.items_added.append(event["item"])
            if event.get("type") in FINAL:
                break
        if events[-1]["type"] == "response.completed" and full_request is not None:
            self.last_request = full_request
            self.last_response_id = events[-1]["response"]["id"]
        else:
            self.items_added = []
        return events


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def output_text(events: list[dict[str, Any]]) -> str:
    return "".join(event["delta"] for event in events if event.get("type") == "response.output_text.delta")
