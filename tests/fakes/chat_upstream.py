"""A fake OpenAI-compatible Chat Completions host (Groq, Mistral, DeepSeek, ..., Azure deployments).

It validates every request against the openai SDK's request types — strictly: the SDK's TypedDicts
are walked key by key, because a pydantic `TypeAdapter` over a TypedDict silently accepts unknown
keys — records it, and answers with what the test scripted (`Reply`), streamed or not. Scripted
answers are themselves validated against `ChatCompletion` / `ChatCompletionChunk` (no unknown keys
either), so a test cannot feed the translator a shape no host sends.

Host extensions outside the SDK types are allowed only where named: `reasoning_content` /
`reasoning` / `reasoning_details` (DeepSeek, vLLM, OpenRouter, Ollama) in answers, DeepSeek's cache
counters in usage, and on requests only what the test passes as `request_extensions`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import types
import typing
from typing import Any

import typing_extensions
from aiohttp import web
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from pydantic import BaseModel, TypeAdapter, ValidationError

from fakes.threaded import ThreadedApp

# (TypedDict or model class name, key) pairs that hosts use beyond the SDK's types.
REASONING_REPLAY_KEYS = frozenset(
    {
        ("ChatCompletionAssistantMessageParam", "reasoning_content"),  # DeepSeek thinking + tools
        ("ChatCompletionAssistantMessageParam", "reasoning_details"),  # OpenRouter
    }
)
ANSWER_EXTENSION_KEYS = frozenset(
    {
        ("ChoiceDelta", "reasoning_content"),
        ("ChoiceDelta", "reasoning"),
        ("ChoiceDelta", "reasoning_details"),
        ("ChatCompletionMessage", "reasoning_content"),
        ("ChatCompletionMessage", "reasoning"),
        ("ChatCompletionMessage", "reasoning_details"),
        ("CompletionUsage", "prompt_cache_hit_tokens"),  # DeepSeek
        ("CompletionUsage", "prompt_cache_miss_tokens"),
    }
)

_STREAMING = TypeAdapter(CompletionCreateParamsStreaming)
_NON_STREAMING = TypeAdapter(CompletionCreateParamsNonStreaming)
_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}
_SEQUENCES = {list, tuple, collections.abc.Iterable, collections.abc.Sequence}
_MAPPINGS = {dict, collections.abc.Mapping}


def _walk(value: Any, tp: Any, path: str, extensions: frozenset[tuple[str, str]]) -> list[str]:
    """Problems of `value` against the SDK param type `tp` (unknown keys included)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return []
    if origin is typing.Annotated or origin in _REQUIRED or origin in _NOT_REQUIRED:
        return _walk(value, args[0], path, extensions)
    if origin is typing.Union or origin is types.UnionType:
        attempts = [_walk(value, member, path, extensions) for member in args]
        if any(not problems for problems in attempts):
            return []
        return min(attempts, key=len)
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [problem for i, item in enumerate(value) for problem in _walk(item, args[0], f"{path}[{i}]", extensions)]
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        return [problem for k, v in value.items() for problem in _walk(v, args[1], f"{path}.{k}", extensions)]
    if typing_extensions.is_typeddict(tp):
        return _walk_typeddict(value, tp, path, extensions)
    if tp is type(None):
        return [] if value is None else [f"{path}: expected null"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number"]
    if tp is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string"]
    if isinstance(tp, type):
        return [] if isinstance(value, tp) else [f"{path}: expected {tp.__name__}"]
    return [f"{path}: cannot check against {tp!r}"]


def _walk_typeddict(value: Any, tp: Any, path: str, extensions: frozenset[tuple[str, str]]) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({tp.__name__})"]
    hints = typing.get_type_hints(tp, include_extras=True)
    problems: list[str] = []
    for key, hint in hints.items():
        # The SDK's modules use string annotations, so `Required[...]` only shows in the evaluated
        # hints; `__required_keys__` covers keys of total subclasses.
        origin = typing.get_origin(hint)
        required = origin in _REQUIRED or (key in tp.__required_keys__ and origin not in _NOT_REQUIRED)
        if required and key not in value:
            problems.append(f"{path}: {tp.__name__} misses required key {key!r}")
    for key, item in value.items():
        if key not in hints:
            if (tp.__name__, key) not in extensions:
                problems.append(f"{path}: unknown key {key!r} for {tp.__name__}")
            continue
        problems += _walk(item, hints[key], f"{path}.{key}", extensions)
    return problems


def request_problems(body: Any, extensions: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """Everything wrong with a chat completions request body, per the openai SDK."""
    streaming = isinstance(body, dict) and body.get("stream") is True
    adapter, tp = (
        (_STREAMING, CompletionCreateParamsStreaming)
        if streaming
        else (_NON_STREAMING, CompletionCreateParamsNonStreaming)
    )
    problems = _walk(body, tp, "$", extensions)
    try:
        adapter.validate_python(body)
    except ValidationError as exc:
        problems.append(str(exc))
    if isinstance(body, dict) and "stream_options" in body and not streaming:
        problems.append("$: stream_options is only allowed with stream: true")
    return problems


def _extras(model: Any, where: str, allowed: frozenset[tuple[str, str]]) -> list[str]:
    problems: list[str] = []
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            if (type(model).__name__, key) not in allowed:
                problems.append(f"{where} ({type(model).__name__}): unknown key {key!r}")
        for name in type(model).model_fields:
            problems += _extras(getattr(model, name), f"{where}.{name}", allowed)
    elif isinstance(model, list | tuple):
        for index, item in enumerate(model):
            problems += _extras(item, f"{where}[{index}]", allowed)
    return problems


def answer_problems(
    data: dict[str, Any], streamed: bool, allowed: frozenset[tuple[str, str]] = ANSWER_EXTENSION_KEYS
) -> list[str]:
    """Everything wrong with a chat completion (or one stream chunk), per the openai SDK."""
    model_type = ChatCompletionChunk if streamed else ChatCompletion
    try:
        parsed = model_type.model_validate(data)
    except ValidationError as exc:
        return [str(exc)]
    return _extras(parsed, "$", allowed)


@dataclasses.dataclass
class Reply:
    """One scripted answer. `chunks` → an SSE stream; otherwise `body` as JSON with `status`."""

    status: int = 200
    body: Any = None
    chunks: list[dict[str, Any]] | None = None
    raw_after: list[bytes] = dataclasses.field(default_factory=list)  # SSE blobs after the chunks
    done: bool = True  # end with `data: [DONE]`
    cut_after: int | None = None  # drop the connection after this many chunks
    validate: bool = True  # scripted answers are checked against the SDK models


@dataclasses.dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


class FakeChatHost(ThreadedApp):
    """Runs on its own event loop thread; `url` is its base URL (…/v1)."""

    def __init__(self, expect_headers: dict[str, str] | None = None) -> None:
        super().__init__()
        self.expect_headers = {k.lower(): v for k, v in (expect_headers or {"authorization": "Bearer sk-test"}).items()}
        self.request_extensions: frozenset[tuple[str, str]] = frozenset()
        self.received: list[Received] = []
        self.invalid: list[str] = []
        self.replies: list[Reply] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        for reply in replies:
            self._check_reply(reply)
        self.replies.extend(replies)

    def _check_reply(self, reply: Reply) -> None:
        if not reply.validate:
            return
        if reply.chunks is not None:
            for index, chunk in enumerate(reply.chunks):
                problems = answer_problems(chunk, streamed=True)
                assert not problems, f"scripted chunk {index} is not a real chunk: {problems}"
        elif reply.status == 200:
            problems = answer_problems(reply.body, streamed=False)
            assert not problems, f"scripted body is not a real chat completion: {problems}"

    def _refuse(self, status: int, message: str, code: str | None = None) -> web.Response:
        self.invalid.append(message)
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        return web.json_response({"error": error}, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            return self._refuse(400, "body is not JSON")
        self.received.append(Received(request.method, request.path, dict(request.query), headers, body))
        for name, value in self.expect_headers.items():
            if headers.get(name) != value:
                return self._refuse(401, "Incorrect API key provided: sk-te*********", "invalid_api_key")
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            return self._refuse(404, f"unknown route {request.method} {request.path}")
        problems = request_problems(body, self.request_extensions)
        if problems:
            return self._refuse(400, "; ".join(problems))
        if not self.replies:
            return self._refuse(500, "no reply scripted")
        reply = self.replies.pop(0)
        if reply.chunks is None:
            return web.json_response(reply.body, status=reply.status)
        if body.get("stream") is not True:
            return self._refuse(400, "a stream was scripted for a request that did not ask for one")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for index, chunk in enumerate(reply.chunks):
            if reply.cut_after is not None and index >= reply.cut_after:
                if request.transport is not None:
                    request.transport.abort()  # the connection drops mid-stream
                return response
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        for blob in reply.raw_after:
            await response.write(blob)
        if reply.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


# ------------------------------------------------------------------ realistic answers to script


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    usage: dict[str, Any] | None = None,
    model: str = "upstream-model",
    empty_choices: bool = False,
) -> dict[str, Any]:
    """One `chat.completion.chunk` as OpenAI-compatible hosts send it."""
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": []
        if empty_choices
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        data["usage"] = usage
    return data


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def completion(
    message: dict[str, Any], finish: str = "stop", *, usage_: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A non-streamed `chat.completion`."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": usage_ or usage(10, 5),
    }


def text_chunks(text: str, pieces: int = 3, *, final_usage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A plain text answer: role chunk, content pieces, finish chunk, usage chunk."""
    size = max(1, len(text) // pieces)
    parts = [text[i : i + size] for i in range(0, len(text), size)]
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": part}) for part in parts]
    chunks.append(chunk({}, "stop"))
    chunks.append(chunk(empty_choices=True, usage=final_usage or usage(12, 7, cached=4)))
    return chunks


def tool_call_chunks(call_id: str, name: str, arguments: str, pieces: int = 4, index: int = 0) -> list[dict[str, Any]]:
    """One streamed tool call: id and name first, then argument fragments."""
    size = max(1, len(arguments) // pieces)
    parts = [arguments[i : i + size] for i in range(0, len(arguments), size)]
    first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    chunks = [chunk({"tool_calls": [first]})]
    chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}) for part in parts]
    return chunks
