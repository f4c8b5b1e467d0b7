"""Responses over WebSocket: an in-process endpoint that serves each `response.create` as an
ordinary governed `POST /v1/responses` through the gateway itself.

Codex's first choice of transport is a WebSocket on `GET /v1/responses` (OpenAI's "WebSocket
mode"): one text message `{"type": "response.create", ...request body...}` per model request,
answered by the same JSON events an HTTP answer streams as SSE, one text message each, on one
socket kept across the turns of a session. mitmproxy can relay a WebSocket but cannot be one's
endpoint (a 101 it answers itself has no server side to relay to), so the `ResponsesWebSocket`
addon forwards a governed upgrade to this small aiohttp server on 127.0.0.1 (as the failover
relay in `codexgate.relay` is an in-process HTTP server). For each `response.create` it
makes a streaming `POST /v1/responses` to the gateway's own base-URL listener with the client's
virtual key, so every request is identified, admitted, limited, routed, translated, metered,
charged, accounted and audited by exactly the chain an HTTP request passes — for every provider
family. The `marker` header (a per-process secret plus the client's mode) tells the chain the
request came over a socket; no client can forge it.

What the protocol adds over HTTP, handled here (each measured against Codex 0.169):
- `previous_response_id` + only the new input items: Codex sends this on a reused socket once
  a response completed and the new request extends the last one. The relay keeps, per socket,
  the last request's full input and the output items of its answer, and expands the delta back
  into the whole conversation before posting it (providers are stateless here: `store: false`).
  An id it does not know is answered `previous_response_not_found`, on which Codex resends
  the full request.
- `generate: false`: Codex's warm-up at session start. It asks for no model output; the relay
  answers it itself (`response.created` + `response.completed`, no output) and remembers its
  input as the base of the next request. No provider is asked, so nothing is charged or
  accounted for it.
- `response.interrupt` (Codex stopping a response mid-stream): the relayed request is closed (the
  provider stops; the gateway charges it as any cut stream), the response ends with
  `response.completed`, and its continuation is forgotten, so Codex resends what it kept. The
  socket is therefore read while a request streams; requests are still served one at a time.
- Refusals and provider errors (any non-2xx answer) become the wrapped error event Codex turns
  back into an HTTP error: `{"type": "error", "status": 402, "error": {...}, "headers": {...}}`
  (`codex-api/src/endpoint/responses_websocket.rs`); it shows `error.message` and honours
  `retry-after`. A stream that ends without a final event gets one (status 502), so Codex
  retries instead of waiting for its idle timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from codexgate.errors import error_object
from codexgate.loopback import LoopbackServer, OnLoopback, TokenTable
from codexgate.sse import SSEParser

logger = logging.getLogger(__name__)

RELAY_MARKER_HEADER = "x-codexgate-ws-relay"  # "<process secret> <client mode>" on relayed POSTs
PATH_PREFIX = "/responses-ws/"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # as mitmproxy's body_size_limit in mitm_config.yaml
FINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
# Refusals retrying cannot cure: the session's next upgrade is answered 426 (see `take_refusal`).
FINAL_REFUSALS = frozenset({401, 402, 403})
REFUSAL_MEMORY = 120.0  # seconds a refused session's next upgrade is sent to HTTP
# Answer headers Codex reads from an error (retry-after for 429s) or a person reads in its log.
_ERROR_HEADERS = ("retry-after", "retry-after-ms", "x-codexgate-request-id", "x-codexgate-error")


@dataclasses.dataclass
class SocketSession:
    """What the upgrade request established, held until the socket arrives here (single use)."""

    key: str  # the client's virtual key: sent to the gateway listener only, never upstream
    headers: dict[str, str]  # the upgrade's headers worth carrying on each request (session-id, ...)
    mode: str  # "gateway" or "proxy": the listener the client came in on, for accounting
    label: str = ""  # for log lines

    @property
    def session_id(self) -> str | None:
        return self.headers.get("session-id")


@dataclasses.dataclass
class Conversation:
    """A socket's continuation state: what `previous_response_id` refers to."""

    response_id: str | None = None
    items: list[Any] = dataclasses.field(default_factory=list)  # last full input + its answer's output
    requests: int = 0  # relayed to the gateway (warm-ups not counted)
    # The response being streamed: its id once `response.created` passed, whether its final event
    # went out, and whether the client asked to interrupt it.
    streaming_id: str | None = None
    final_sent: bool = False
    interrupting: bool = False

    def remember(self, response_id: str, full_input: list[Any], output: list[Any]) -> None:
        self.response_id = response_id
        self.items = [*full_input, *output]

    def forget(self) -> None:
        self.response_id = None
        self.items = []

    def expand(self, previous_response_id: str, delta: list[Any]) -> list[Any] | None:
        if previous_response_id != self.response_id:
            return None
        return [*self.items, *delta]


def input_items(value: Any) -> list[Any] | None:
    """A request's `input` as a list of items (a bare string is one user message), else None."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    return None


def error_event(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    event: dict[str, Any] = {"type": "error", "status": status, "error": error}
    if headers:
        event["headers"] = headers
    return json.dumps(event, separators=(",", ":"))


def _local_response(response_id: str, model: Any, status: str) -> dict[str, Any]:
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
        "model": model, "output": [], "usage": None, "error": None, "incomplete_details": None,
    }  # fmt: skip


class WebSocketRelay(OnLoopback):
    """`start()` on the gateway's loop; `register(session)` per upgrade; `target` is the
    gateway listener's `/v1/responses` URL the requests go to."""

    def __init__(self, *, session_ttl: float = 30.0, shutdown_timeout: float = 5.0) -> None:
        self.marker_secret = secrets.token_hex(16)
        self.target: str | None = None
        self._session_ttl = session_ttl
        self._sessions: TokenTable[SocketSession] = TokenTable()
        self._sockets: set[web.WebSocketResponse] = set()
        self._refused: dict[tuple[str, str], tuple[float, str]] = {}  # (key, session) -> (until, message)
        self._client: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_get(PATH_PREFIX + "{token}", self._handle)
        self._server = LoopbackServer(app, shutdown_timeout=shutdown_timeout)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        if self._server.running:
            return self.port
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=True,
            trust_env=False,  # the gateway may be its own process's HTTPS_PROXY
            timeout=aiohttp.ClientTimeout(total=None),
        )
        await self._server.start(host, port)
        logger.info("Responses WebSocket relay listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        self._sessions.clear()
        # Codex reconnects (to another instance, or this one restarted) on "going away".
        going_away = aiohttp.WSCloseCode.GOING_AWAY
        closing = [socket.close(code=going_away, message=b"gateway stopping") for socket in self._sockets]
        await asyncio.gather(*closing, return_exceptions=True)
        await self._server.stop()
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- sessions --------------------------------------------------------------------------

    def register(self, session: SocketSession) -> str:
        """Hold `session` for the upgrade about to arrive; returns the path it must use."""
        if not self._server.running:
            raise RuntimeError("the WebSocket relay is not started")
        return PATH_PREFIX + self._sessions.register(session, self._session_ttl)

    def discard(self, path: str) -> None:
        self._sessions.discard(path.removeprefix(PATH_PREFIX))

    def take_refusal(self, key: str, session_id: str | None) -> str | None:
        """The message of a refusal retrying cannot cure (401/402/403) that this key's session got
        on a socket within `REFUSAL_MEMORY`, once; else None.

        Codex retries such a refusal five times over the socket, then falls back to HTTP and
        retries five times more (measured: 12 refusals, ~14 s before it gives up). Its next
        upgrade answered 426 instead sends it to HTTP at once, where it ends as it would have
        without the socket."""
        now = time.monotonic()
        for stale in [entry for entry, (until, _) in self._refused.items() if until < now]:
            del self._refused[stale]
        if session_id is None:
            return None
        found = self._refused.pop((key, session_id), None)
        return found[1] if found else None

    def _note_refusal(self, session: SocketSession, event: str) -> None:
        if session.session_id is not None:
            message = json.loads(event).get("error", {}).get("message", "")
            self._refused[(session.key, session.session_id)] = (time.monotonic() + REFUSAL_MEMORY, str(message))

    def marker(self, mode: str) -> str:
        return f"{self.marker_secret} {mode}"

    def mode_from_marker(self, value: str) -> str | None:
        """The client's mode if `value` is this process's marker, else None."""
        secret, _, mode = value.partition(" ")
        if secrets.compare_digest(secret.encode(), self.marker_secret.encode()) and mode in ("gateway", "proxy"):
            return mode
        return None

    # -- the socket ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        session = self._sessions.take(request.match_info["token"])
        if session is None:
            return web.json_response(
                {"error": error_object(403, "forbidden", "codexgate: unknown or expired WebSocket session")},
                status=403,
            )
        # No permessage-deflate: the gateway is CPU-bound, events are small, and continuations
        # (previous_response_id) keep requests small too.
        socket = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, compress=False, autoping=True, timeout=2.0)
        await socket.prepare(request)
        self._sockets.add(socket)
        conversation = Conversation()
        logger.info("Responses WebSocket %s open (%s mode)", session.label, session.mode)
        # Requests are served one at a time, in order, by a task, while this loop keeps reading:
        # an interrupt must reach the request it interrupts.
        serving: asyncio.Task[None] | None = None
        try:
            async for message in socket:
                if message.type == aiohttp.WSMsgType.BINARY:
                    await self._send_error(socket, 400, "unsupported_message", "send requests as text messages")
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                try:
                    payload = json.loads(message.data)
                except ValueError as exc:
                    payload = exc
                if isinstance(payload, dict) and payload.get("type") == "response.interrupt":
                    if serving is not None and not serving.done() and not conversation.final_sent:
                        conversation.interrupting = True
                        serving.cancel()
                    continue
                if serving is not None:
                    await self._finish(serving, session)
                serving = asyncio.create_task(self._serve(socket, session, conversation, payload))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client went away mid-answer
        finally:
            if serving is not None:
                if not serving.done():
                    serving.cancel()  # the client is gone: close the relayed request (charged as cut)
                await self._finish(serving, session)
            self._sockets.discard(socket)
            logger.info("Responses WebSocket %s closed after %d request(s)", session.label, conversation.requests)
        return socket

    @staticmethod
    async def _finish(serving: asyncio.Task[None], session: SocketSession) -> None:
        try:
            await serving
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this handler itself is being cancelled, not just the request it awaited
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client went away mid-answer
        except Exception:
            logger.exception("Responses WebSocket %s: serving a request failed", session.label)

    async def _send_error(
        self, socket: web.WebSocketResponse, status: int, code: str, message: str, param: str | None = None
    ) -> None:
        await socket.send_str(error_event(status, error_object(status, code, message, param)))

    async def _serve(
        self, socket: web.WebSocketResponse, session: SocketSession, conversation: Conversation, payload: Any
    ) -> None:
        if isinstance(payload, ValueError):
            await self._send_error(socket, 400, "invalid_json", f"message is not valid JSON: {payload}")
            return
        if not isinstance(payload, dict):
            await self._send_error(socket, 400, "invalid_json", "message must be a JSON object")
            return
        kind = payload.get("type")
        if kind == "response.processed":
            return  # an acknowledgement some Codex versions send; nothing to answer
        if kind != "response.create":
            await self._send_error(
                socket, 400, "unsupported_message", f"unsupported message type {kind!r}; send response.create", "type"
            )
            return
        body = {name: value for name, value in payload.items() if name != "type"}
        items = input_items(body.get("input", []))
        if items is None:
            await self._send_error(socket, 400, "invalid_input", "'input' must be a list of items or a string", "input")
            return
        previous = body.pop("previous_response_id", None)
        if previous is not None:
            expanded = conversation.expand(str(previous), items)
            if expanded is None:
                conversation.forget()
                await self._send_error(
                    socket, 400, "previous_response_not_found",
                    f"Previous response with id '{previous}' not found.", "previous_response_id",
                )  # fmt: skip
                return
            items = expanded
        body["input"] = items
        if body.pop("generate", True) is False:
            await self._warm_up(socket, conversation, body)
            return
        conversation.forget()
        conversation.requests += 1
        conversation.streaming_id, conversation.final_sent, conversation.interrupting = None, False, False
        body["stream"] = True
        try:
            await self._relay(socket, session, conversation, body)
        except asyncio.CancelledError:
            if not conversation.interrupting:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._interrupted(socket, conversation, body)

    async def _interrupted(
        self, socket: web.WebSocketResponse, conversation: Conversation, body: dict[str, Any]
    ) -> None:
        """Codex's `response.interrupt` (e.g. the developer stopped the turn): the relayed request was
        closed — the provider stops, the gateway charges it as a cut stream — and the response ends
        with `response.completed` as OpenAI acknowledges it. Its continuation is forgotten, so a
        `previous_response_id` naming it is answered `previous_response_not_found` and Codex resends
        the conversation as it kept it: what it discarded is never replayed to the model."""
        conversation.interrupting = False
        conversation.forget()
        if conversation.final_sent:
            return
        response_id = conversation.streaming_id or f"resp_interrupted_{uuid.uuid4().hex}"
        response = _local_response(response_id, body.get("model"), "cancelled")
        await socket.send_str(json.dumps({"type": "response.completed", "response": response}))
        conversation.final_sent = True

    async def _warm_up(self, socket: web.WebSocketResponse, conversation: Conversation, body: dict[str, Any]) -> None:
        response_id = f"resp_warmup_{uuid.uuid4().hex}"
        model = body.get("model")
        await socket.send_str(
            json.dumps({"type": "response.created", "response": _local_response(response_id, model, "in_progress")})
        )
        await socket.send_str(
            json.dumps({"type": "response.completed", "response": _local_response(response_id, model, "completed")})
        )
        conversation.remember(response_id, body["input"], [])

    def _request_headers(self, session: SocketSession, body: dict[str, Any]) -> dict[str, str]:
        headers = dict(session.headers)
        metadata = body.get("client_metadata")
        if isinstance(metadata, dict):
            # Per-request values Codex puts in the message where HTTP has headers.
            turn = metadata.get("x-codex-turn-metadata")
            if isinstance(turn, str):
                headers["x-codex-turn-metadata"] = turn
            for name in ("traceparent", "tracestate"):
                value = metadata.get(f"ws_request_header_{name}")
                if isinstance(value, str):
                    headers[name] = value
        headers.update(
            {
                "authorization": f"Bearer {session.key}",
                "content-type": "application/json",
                "accept": "text/event-stream",
                RELAY_MARKER_HEADER: self.marker(session.mode),
            }
        )
        return headers

    async def _relay(
        self, socket: web.WebSocketResponse, session: SocketSession, conversation: Conversation, body: dict[str, Any]
    ) -> None:
        assert self._client is not None
        if self.target is None:
            await self._send_error(socket, 503, "websocket_unavailable", "codexgate has no gateway listener for it")
            return
        data = json.dumps(body, separators=(",", ":")).encode()
        try:
            headers = self._request_headers(session, body)
            async with self._client.post(self.target, data=data, headers=headers) as answer:
                if answer.status >= 300 or "text/event-stream" not in answer.headers.get("content-type", ""):
                    event = await self._error_from_answer(answer)
                    if answer.status in FINAL_REFUSALS:
                        self._note_refusal(session, event)
                    await socket.send_str(event)
                    return
                output, completed_id, final = await self._stream(socket, answer, conversation)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            if socket.closed:
                raise ConnectionResetError from exc
            logger.warning("WebSocket session %s: relayed request failed: %s", session.label, exc)
            await self._send_error(socket, 502, "relay_error", f"codexgate could not complete the request: {exc}")
            return
        if completed_id is not None:
            conversation.remember(completed_id, body["input"], output)
        elif final is None:
            await self._send_error(
                socket, 502, "stream_incomplete", "the answer ended before the response completed; retry"
            )

    async def _stream(
        self, socket: web.WebSocketResponse, answer: aiohttp.ClientResponse, conversation: Conversation
    ) -> tuple[list[Any], str | None, str | None]:
        """Sends each event of the SSE answer as a text message; (output items, completed id, final type)."""
        parser = SSEParser()
        output: list[Any] = []
        completed_id: str | None = None
        final: str | None = None
        async for chunk in answer.content.iter_any():
            for _name, data in parser.feed(chunk):
                if not data or data == "[DONE]":
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                response = event.get("response")
                if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
                    output.append(event["item"])
                elif kind == "response.created" and isinstance(response, dict) and response.get("id"):
                    conversation.streaming_id = str(response["id"])
                elif kind in FINAL_EVENTS:
                    final = str(kind)
                    if kind == "response.completed" and isinstance(response, dict) and response.get("id"):
                        completed_id = str(response["id"])
                if socket.closed:
                    raise ConnectionResetError("client closed the socket")
                if final is not None:
                    conversation.final_sent = True  # set before the send: an interrupt now is too late
                await socket.send_str(data)
        return output, completed_id, final

    @staticmethod
    async def _error_from_answer(answer: aiohttp.ClientResponse) -> str:
        raw = await answer.read()
        status = answer.status if answer.status >= 400 else 502
        error: dict[str, Any] | None = None
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                error = parsed["error"]
        except ValueError:
            pass
        if error is None:
            text = raw[:500].decode("utf-8", "replace").strip()
            error = error_object(status, "upstream_error", f"unexpected answer (HTTP {answer.status}): {text}")
        headers = {name: answer.headers[name] for name in _ERROR_HEADERS if name in answer.headers}
        for name, value in answer.headers.items():
            if name.lower().startswith("x-ratelimit-"):
                headers[name.lower()] = value
        return error_event(status, error, headers)
