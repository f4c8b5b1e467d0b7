"""A fake Amazon Bedrock runtime (Converse / ConverseStream).

It checks what it receives the way Bedrock would: the SigV4 signature (or a Bedrock API key), and
the JSON body against botocore's `bedrock-runtime` service model — walked member by member, so an
unknown key, a wrong type, a broken union or a missing required member is refused (and recorded
in `invalid`). It answers in the real wire formats: JSON for Converse, AWS event-stream frames
(`application/vnd.amazon.eventstream`) for ConverseStream, with Bedrock's "p" padding, scripted
per test (text, reasoning, tool use, usage, error events, a cut connection, HTTP errors). Every
scripted answer is itself checked against the service model's output shapes first.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime
import hmac
import json
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import botocore.session
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import Shape, StructureShape
from botocore.validate import ParamValidator

from fakes.threaded import ThreadedApp

ACCESS_KEY = "AKIDFAKEBEDROCK00001"
SECRET_KEY = "fake-bedrock-secret-key-for-tests"
REGION = "us-east-1"
API_KEY = "bedrock-api-key-for-tests"

SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")
CONVERSE_INPUT = SERVICE.operation_model("Converse").input_shape
STREAM_INPUT = SERVICE.operation_model("ConverseStream").input_shape
CONVERSE_OUTPUT = SERVICE.operation_model("Converse").output_shape
STREAM_EVENTS = SERVICE.operation_model("ConverseStream").output_shape.members["stream"]
EXCEPTION_EVENTS = {name for name, shape in STREAM_EVENTS.members.items() if shape.metadata.get("exception")}

_ERROR_TYPES = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


# --------------------------------------------------------------------------------------------
# Validation against the botocore service model
# --------------------------------------------------------------------------------------------


def shape_errors(shape: Shape, value: Any, path: str = "$") -> list[str]:
    """Everything in `value` (JSON as it travels) that `shape` does not allow."""
    kind = shape.type_name
    if shape.metadata.get("document"):
        return _document_errors(value, path)
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({shape.name}), got {type(value).__name__}"]
        errors: list[str] = []
        members = shape.members
        for key in value:
            if key not in members:
                errors.append(f"{path}: unknown key {key!r} for {shape.name}")
            elif members[key].serialization.get("location"):
                errors.append(f"{path}.{key}: travels in the {members[key].serialization['location']}, not the body")
        for key in shape.required_members:
            if key not in value and not members[key].serialization.get("location"):
                errors.append(f"{path}: missing required {key!r} of {shape.name}")
        if shape.metadata.get("union") and len([key for key in value if key in members]) != 1:
            errors.append(f"{path}: {shape.name} is a union and needs exactly one member, got {sorted(value)}")
        for key, item in value.items():
            if key in members and not members[key].serialization.get("location"):
                errors.extend(shape_errors(members[key], item, f"{path}.{key}"))
        return errors
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list ({shape.name})"]
        errors = _length_errors(shape, len(value), path)
        for index, item in enumerate(value):
            errors.extend(shape_errors(shape.member, item, f"{path}[{index}]"))  # type: ignore[attr-defined]
        return errors
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map ({shape.name})"]
        errors = []
        for key, item in value.items():
            errors.extend(shape_errors(shape.key, key, f"{path}<key>"))  # type: ignore[attr-defined]
            errors.extend(shape_errors(shape.value, item, f"{path}.{key}"))  # type: ignore[attr-defined]
        return errors
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string ({shape.name}), got {type(value).__name__}"]
        errors = _length_errors(shape, len(value), path)
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} is not one of {shape.enum}")
        pattern = shape.metadata.get("pattern")
        if pattern and len(pattern) < 200:
            try:
                if re.fullmatch(pattern, value) is None:
                    errors.append(f"{path}: {value!r} does not match {pattern}")
            except re.error:
                pass
        return errors
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: expected an integer ({shape.name})"]
        minimum = shape.metadata.get("min")
        return [f"{path}: {value} < minimum {minimum}"] if minimum is not None and value < minimum else []
    if kind in ("float", "double"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number ({shape.name})"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean ({shape.name})"]
    if kind == "blob":
        if not isinstance(value, str):
            return [f"{path}: a blob travels as base64 text"]
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return [f"{path}: not valid base64"]
        return []
    if kind == "timestamp":
        return [] if isinstance(value, int | float | str) else [f"{path}: expected a timestamp"]
    return [f"{path}: unhandled shape type {kind}"]


def _length_errors(shape: Shape, length: int, path: str) -> list[str]:
    errors = []
    if "min" in shape.metadata and length < shape.metadata["min"]:
        errors.append(f"{path}: length {length} < min {shape.metadata['min']} ({shape.name})")
    if "max" in shape.metadata and length > shape.metadata["max"]:
        errors.append(f"{path}: length {length} > max {shape.metadata['max']} ({shape.name})")
    return errors


def _document_errors(value: Any, path: str) -> list[str]:
    if value is None or isinstance(value, bool | int | float | str):
        return []
    if isinstance(value, list):
        return [error for index, item in enumerate(value) for error in _document_errors(item, f"{path}[{index}]")]
    if isinstance(value, dict):
        errors = [f"{path}: document keys must be strings" for key in value if not isinstance(key, str)]
        return errors + [error for key, item in value.items() for error in _document_errors(item, f"{path}.{key}")]
    return [f"{path}: {type(value).__name__} is not JSON"]


def request_errors(body: Any, model_id: str, stream: bool) -> list[str]:
    """A Converse / ConverseStream request body, checked twice: by the strict walk above and by
    botocore's own parameter validator (with the URI member filled in, as a client would)."""
    shape = STREAM_INPUT if stream else CONVERSE_INPUT
    errors = shape_errors(shape, body)
    if isinstance(body, dict):
        report = ParamValidator().validate(dict(body, modelId=model_id), shape)
        if report.has_errors():
            errors.append(report.generate_report())
        if not body.get("messages"):
            errors.append("$: Bedrock needs at least one message")
        elif body["messages"][0].get("role") != "user":
            errors.append("$.messages[0]: a conversation starts with a user message")
        errors.extend(_conversation_errors(body))
    return errors


def _conversation_errors(body: dict[str, Any]) -> list[str]:
    """Rules Bedrock enforces beyond the shapes: alternating roles, tool pairs, toolConfig."""
    errors: list[str] = []
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for index in range(1, len(messages)):
        if messages[index].get("role") == messages[index - 1].get("role"):
            errors.append(f"$.messages[{index}]: roles must alternate")
    uses_tools = any(
        isinstance(block, dict) and ("toolUse" in block or "toolResult" in block)
        for message in messages
        for block in message.get("content") or []
    )
    if uses_tools and "toolConfig" not in body:
        errors.append("$: toolConfig must be defined when using toolUse and toolResult content blocks")
    for index, message in enumerate(messages):
        content = [block for block in message.get("content") or [] if isinstance(block, dict)]
        for block in content:
            if "text" in block and isinstance(block["text"], str) and not block["text"].strip():
                errors.append(f"$.messages[{index}]: blank text block")
        if message.get("role") != "assistant":
            continue
        calls = {block["toolUse"]["toolUseId"] for block in content if "toolUse" in block}
        if not calls:
            continue
        following = messages[index + 1].get("content") if index + 1 < len(messages) else []
        answered = {
            block["toolResult"]["toolUseId"]
            for block in following or []
            if isinstance(block, dict) and "toolResult" in block
        }
        if calls - answered:
            errors.append(f"$.messages[{index}]: toolUse ids {sorted(calls - answered)} lack a toolResult next turn")
    last = [block for block in (messages[-1].get("content") or []) if isinstance(block, dict)] if messages else []
    final_text = last[-1]["text"] if last and isinstance(last[-1].get("text"), str) else ""
    if messages and messages[-1].get("role") == "assistant" and final_text != final_text.rstrip():
        errors.append("$.messages: final assistant content cannot end with trailing whitespace")
    thinking = (body.get("additionalModelRequestFields") or {}).get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        max_tokens = (body.get("inferenceConfig") or {}).get("maxTokens")
        if not isinstance(budget, int) or budget < 1024:
            errors.append("thinking.budget_tokens must be >= 1024")
        elif not isinstance(max_tokens, int) or max_tokens <= budget:
            errors.append("inferenceConfig.maxTokens must be greater than thinking.budget_tokens")
        choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
        if "any" in choice or "tool" in choice:
            errors.append("thinking may not be enabled when tool_choice forces tool use")
    return errors


def event_errors(event: dict[str, Any]) -> list[str]:
    """One ConverseStream event ({name: payload}) against the service model's event shapes."""
    if len(event) != 1:
        return [f"an event has exactly one name, got {sorted(event)}"]
    name, payload = next(iter(event.items()))
    if name not in STREAM_EVENTS.members:
        return [f"unknown ConverseStream event {name!r}"]
    return shape_errors(STREAM_EVENTS.members[name], payload, name)


# --------------------------------------------------------------------------------------------
# AWS event-stream encoding (the fake's side only; the translator decodes with botocore)
# --------------------------------------------------------------------------------------------


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC), string headers,
    payload, message CRC over everything before it."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("!B", len(raw_name)) + raw_name + b"\x07" + struct.pack("!H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message) & 0xFFFFFFFF)


def encode_event(event: dict[str, Any], padding: str = "abcdefghijklmnopqrstuvwxyzABCDEFGH") -> bytes:
    """A ConverseStream event as Bedrock frames it (events padded with "p", exceptions not)."""
    name, payload = next(iter(event.items()))
    if name in EXCEPTION_EVENTS:
        headers = {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}
        return encode_message(headers, json.dumps(payload).encode())
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    padded = dict(payload, p=padding[: 1 + len(json.dumps(payload)) % len(padding)])
    return encode_message(headers, json.dumps(padded, separators=(",", ":")).encode())


def encode_stream(events: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(encode_event(event) for event in events)


# --------------------------------------------------------------------------------------------
# Scripted answers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Text:
    text: str


@dataclasses.dataclass(frozen=True)
class Reasoning:
    text: str
    signature: str


@dataclasses.dataclass(frozen=True)
class Redacted:
    data: bytes


@dataclasses.dataclass(frozen=True)
class ToolUse:
    tool_use_id: str
    name: str
    input: dict[str, Any]


Block = Text | Reasoning | Redacted | ToolUse


def usage(
    input_tokens: int = 120, output_tokens: int = 40, cache_read: int = 0, cache_write: int = 0
) -> dict[str, int]:
    result = {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens + cache_read + cache_write,
    }
    if cache_read or cache_write:
        result.update(cacheReadInputTokens=cache_read, cacheWriteInputTokens=cache_write)
    return result


def _pieces(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def stream_events(
    blocks: Sequence[Block], stop_reason: str = "end_turn", token_usage: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """The ConverseStream events Bedrock sends for an answer made of `blocks`."""
    events: list[dict[str, Any]] = [{"messageStart": {"role": "assistant"}}]
    for index, block in enumerate(blocks):
        if isinstance(block, Text):
            for piece in re.findall(r"\S+\s*|\s+", block.text) or [""]:
                events.append({"contentBlockDelta": {"contentBlockIndex": index, "delta": {"text": piece}}})
        elif isinstance(block, Reasoning):
            for piece in _pieces(block.text, 9):
                events.append(
                    {"contentBlockDelta": {"contentBlockIndex": index, "delta": {"reasoningContent": {"text": piece}}}}
                )
            events.append(
                {
                    "contentBlockDelta": {
                        "contentBlockIndex": index,
                        "delta": {"reasoningContent": {"signature": block.signature}},
                    }
                }
            )
        elif isinstance(block, Redacted):
            encoded = base64.b64encode(block.data).decode()
            events.append(
                {
                    "contentBlockDelta": {
                        "contentBlockIndex": index,
                        "delta": {"reasoningContent": {"redactedContent": encoded}},
                    }
                }
            )
        else:
            start = {"toolUse": {"toolUseId": block.tool_use_id, "name": block.name}}
            events.append({"contentBlockStart": {"contentBlockIndex": index, "start": start}})
            for piece in _pieces(json.dumps(block.input), 7) if block.input else []:
                events.append(
                    {"contentBlockDelta": {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}}
                )
        events.append({"contentBlockStop": {"contentBlockIndex": index}})
    events.append({"messageStop": {"stopReason": stop_reason}})
    events.append({"metadata": {"usage": token_usage or usage(), "metrics": {"latencyMs": 321}}})
    for event in events:
        errors = event_errors(event)
        assert not errors, errors
    return events


def converse_body(
    blocks: Sequence[Block], stop_reason: str = "end_turn", token_usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """The Converse (non-streamed) answer for `blocks`."""
    content: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, Text):
            content.append({"text": block.text})
        elif isinstance(block, Reasoning):
            content.append({"reasoningContent": {"reasoningText": {"text": block.text, "signature": block.signature}}})
        elif isinstance(block, Redacted):
            content.append({"reasoningContent": {"redactedContent": base64.b64encode(block.data).decode()}})
        else:
            content.append({"toolUse": {"toolUseId": block.tool_use_id, "name": block.name, "input": block.input}})
    body = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": token_usage or usage(),
        "metrics": {"latencyMs": 321},
    }
    errors = shape_errors(CONVERSE_OUTPUT, body)
    assert not errors, errors
    return body


@dataclasses.dataclass
class Reply:
    """What the fake answers to the next request. For ConverseStream: `events`, optionally cut
    (connection aborted) after `cut_after` events. For Converse: `body`. Or an HTTP error."""

    events: list[dict[str, Any]] | None = None
    body: dict[str, Any] | None = None
    cut_after: int | None = None
    status: int = 200
    message: str = ""


@dataclasses.dataclass
class Received:
    method: str
    raw_path: str
    model_id: str
    stream: bool
    headers: dict[str, str]
    body: bytes


class FakeBedrock(ThreadedApp):
    """Runs on its own event loop thread; `url` is its base URL (stands in for
    https://bedrock-runtime.{region}.amazonaws.com)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.invalid: list[str] = []
        self.replies: collections.deque[Reply] = collections.deque()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    # -- checks ---------------------------------------------------------------------------

    def _auth_error(self, request: web.Request, raw: bytes) -> tuple[int, str, str] | None:
        authorization = request.headers.get("authorization", "")
        if authorization == f"Bearer {API_KEY}":
            return None
        if authorization.startswith("Bearer "):
            return 403, "UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix"
        match = re.fullmatch(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
            r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            authorization,
        )
        if match is None:
            return 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        access_key, day, region, service, signed, signature = match.groups()
        if access_key != ACCESS_KEY:
            return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
        if service != "bedrock" or region != REGION:
            return 403, "InvalidSignatureException", f"Credential should be scoped to {REGION}/bedrock."
        stamp = request.headers.get("x-amz-date", "")
        try:
            moment = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        except ValueError:
            return 403, "IncompleteSignatureException", "x-amz-date is missing or malformed"
        if stamp[:8] != day or abs((datetime.datetime.now(datetime.UTC) - moment).total_seconds()) > 300:
            return 403, "InvalidSignatureException", "Signature expired or dated wrongly"
        names = signed.split(";")
        if "host" not in names or "x-amz-date" not in names:
            return 403, "InvalidSignatureException", "host and x-amz-date must be signed"
        # Rebuild the request from what came over the wire (raw path, body bytes, the signed
        # headers' values) and sign it again with the known secret.
        headers = {name: request.headers.get(name, "") for name in names}
        rebuilt = AWSRequest(
            method=request.method, url=f"http://{request.host}{request.raw_path}", data=raw, headers=headers
        )
        rebuilt.context["timestamp"] = stamp
        token = request.headers.get("x-amz-security-token")
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "bedrock", REGION)
        expected = signer.signature(signer.string_to_sign(rebuilt, signer.canonical_request(rebuilt)), rebuilt)
        if not hmac.compare_digest(expected, signature):
            return (
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        return None

    # -- handler --------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        match = re.fullmatch(r"/model/([^/]+)/(converse|converse-stream)", request.raw_path)
        model_id = ""
        if match:
            from urllib.parse import unquote

            model_id = unquote(match.group(1))
        stream = bool(match and match.group(2) == "converse-stream")
        self.received.append(
            Received(
                request.method,
                request.raw_path,
                model_id,
                stream,
                {k.lower(): v for k, v in request.headers.items()},
                raw,
            )
        )
        if request.method != "POST" or match is None:
            return _error(404, "UnknownOperationException", "unknown operation")
        refused = self._auth_error(request, raw)
        if refused is not None:
            return _error(*refused)
        try:
            body = json.loads(raw)
        except ValueError:
            self.invalid.append("body is not JSON")
            return _error(400, "SerializationException", "body is not JSON")
        errors = request_errors(body, model_id, stream)
        if errors:
            self.invalid.extend(errors)
            return _error(400, "ValidationException", "; ".join(errors)[:2000])

        reply = self.replies.popleft() if self.replies else Reply()
        if reply.status != 200:
            return _error(reply.status, _ERROR_TYPES.get(reply.status, "InternalServerException"), reply.message)
        if not stream:
            answer = reply.body or converse_body([Text("fake-bedrock reply")])
            return web.json_response(answer, headers={"x-amzn-requestid": "fake-request-id"})
        events = reply.events or stream_events([Text("fake-bedrock reply")])
        response = web.StreamResponse(
            headers={"content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "fake-request-id"}
        )
        await response.prepare(request)
        for number, event in enumerate(events):
            if reply.cut_after is not None and number >= reply.cut_after:
                if request.transport is not None:
                    request.transport.abort()  # the connection drops mid-stream
                return response
            frame = encode_event(event)
            # Write frames in two pieces so clients see frame boundaries fall mid-chunk.
            await response.write(frame[: len(frame) // 3])
            await response.write(frame[len(frame) // 3 :])
        await response.write_eof()
        return response


def _error(status: int, error_type: str, message: str) -> web.Response:
    """Bedrock's error answer: the exception name in a header, only the message in the body."""
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
    )
