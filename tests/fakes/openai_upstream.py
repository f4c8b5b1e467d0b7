"""A fake OpenAI API: validates what it receives against the openai SDK's request types,
records every request, and answers (streamed or not) in the real wire format."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
from typing import Any

from aiohttp import web
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import TypeAdapter, ValidationError

from codexgate.policies.schema import MockProvider
from codexgate.providers import mock
from codexgate.sse import encode_chat_stream, encode_event
from fakes.threaded import ThreadedApp

_RESPONSES_PARAMS = TypeAdapter(ResponseCreateParamsBase)
_CHAT_PARAMS = TypeAdapter(CompletionCreateParamsBase)
_SETTINGS = MockProvider(kind="mock", output_tokens=7, cached_tokens=3, reasoning_tokens=2)


@dataclasses.dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeOpenAI(ThreadedApp):
    """Runs on its own event loop thread; `url` is its base URL (…/v1)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.invalid: list[str] = []
        self.hold_stream = threading.Event()  # set → streams send their first event, then wait
        self.release_stream = threading.Event()
        self.cut_stream = threading.Event()  # set → streams break after their first event
        # Set → a stream sends each event after the first only once it took one item from here;
        # `stream_sent` lists the types of the events sent (or being sent) so far.
        self.step_stream: queue.Queue[None] | None = None
        self.stream_sent: list[str] = []
        self.failures: list[tuple[int, dict[str, str]]] = []  # answered, in order, before normal answers
        self.failure_message: str | None = None
        # Set → answers have this many output tokens, or the request's own cap if smaller (real
        # providers stop at max_output_tokens / max_completion_tokens / max_tokens).
        self.output_tokens: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _before_stop(self) -> None:
        self.release_stream.set()
        if self.step_stream is not None:
            for _ in range(100):  # let a stream that waits for its next step end
                self.step_stream.put(None)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(
            Received(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, raw)
        )
        if request.headers.get("authorization") != "Bearer sk-upstream-test":
            return web.json_response(
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status=401,
            )
        if self.failures:
            status, headers = self.failures.pop(0)
            message = self.failure_message or f"fake upstream says {status}"
            error = {"message": message, "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=status, headers=headers)
        body: dict[str, Any] = json.loads(raw)
        adapter = _RESPONSES_PARAMS if request.path == "/v1/responses" else _CHAT_PARAMS
        try:
            adapter.validate_python(body)
        except ValidationError as exc:
            self.invalid.append(str(exc))
            return web.json_response({"error": {"message": str(exc), "type": "invalid_request_error"}}, status=400)
        model = body["model"]
        stream = body.get("stream", False)
        settings = _SETTINGS
        if self.output_tokens is not None:
            caps = [
                body[name] for name in ("max_output_tokens", "max_completion_tokens", "max_tokens") if body.get(name)
            ]
            settings = _SETTINGS.model_copy(update={"output_tokens": min([self.output_tokens, *caps])})
        if request.path == "/v1/responses" and stream:
            events = mock.responses_events(body, model, 11, settings)
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            self.stream_sent.append(events[0]["type"])  # noted first: the client may see it at once
            await response.write(encode_event(events[0]))
            if self.cut_stream.is_set() and request.transport is not None:
                request.transport.abort()  # the connection drops mid-stream, before any usage
                return response
            if self.hold_stream.is_set():
                await asyncio.get_running_loop().run_in_executor(None, self.release_stream.wait, 30)
            for event in events[1:]:
                if self.step_stream is not None:
                    await asyncio.get_running_loop().run_in_executor(None, self.step_stream.get, True, 30)
                self.stream_sent.append(event["type"])
                await response.write(encode_event(event))
            await response.write_eof()
            return response
        if request.path == "/v1/responses":
            return web.json_response(mock.responses_body(body, model, 11, settings))
        if stream:
            return web.Response(
                body=encode_chat_stream(mock.chat_chunks(body, model, 11, settings)),
                headers={"content-type": "text/event-stream"},
            )
        return web.json_response(mock.chat_body(body, model, 11, settings))
