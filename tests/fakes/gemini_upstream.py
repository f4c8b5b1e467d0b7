"""A fake Gemini API (generateContent / streamGenerateContent?alt=sse).

Every request is validated against the google-genai SDK's pydantic models (`types.Content`,
`types.Tool`, `types.ToolConfig`, `types.GenerationConfig`, which forbid unknown keys), walked so
that only the REST wire names (camelCase aliases) pass, and checked against rules the real Gemini
API enforces that the SDK models do not (schema shape, function names, thought signatures on
Gemini 3 function calls, function responses paired with calls, Vertex-only fields). Invalid
requests are answered 400 INVALID_ARGUMENT, like Google does, and kept in `invalid`.

Answers are scripted per test (`script(Reply(...))`), validated against
`types.GenerateContentResponse` before they are sent, streamed as SSE or merged into one body.
Thought signatures the fake issues name the model, the kind of part and (for calls) the function,
so a replayed signature is checked to sit on the right part for the right model.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import itertools
import json
import re
import threading
import types as pytypes
import typing
from collections.abc import Mapping, Set
from typing import Any

import pydantic
from aiohttp import web
from google.genai import types

from fakes.threaded import ThreadedApp

API_KEY = "gm-upstream-test-key"
DUMMY_SIGNATURE = "skip_thought_signature_validator"

# Top-level fields of a Gemini API GenerateContentRequest and the SDK model of each.
REQUEST_FIELDS: dict[str, Any] = {
    "contents": list[types.Content],
    "systemInstruction": types.Content,
    "tools": list[types.Tool],
    "toolConfig": types.ToolConfig,
    "generationConfig": types.GenerationConfig,
    "safetySettings": list[types.SafetySetting],
    "cachedContent": str,
}

# Fields the SDK models have but the Gemini Developer API rejects: the SDK's own `_to_mldev`
# converters raise "only supported in ... Agent Platform mode" for these (google/genai/models.py),
# and the Gemini API `Schema` has no additionalProperties/$defs/$ref.
NOT_IN_GEMINI_API = {
    (types.Blob, "display_name"),
    (types.FileData, "display_name"),
    (types.FunctionCall, "partial_args"),
    (types.FunctionCall, "will_continue"),
    (types.FunctionCallingConfig, "stream_function_call_arguments"),
    (types.GenerationConfig, "routing_config"),
    (types.GenerationConfig, "model_selection_config"),
    (types.GenerationConfig, "audio_timestamp"),
    (types.GenerationConfig, "enable_affective_dialog"),
    (types.Tool, "retrieval"),
    (types.Tool, "enterprise_web_search"),
    (types.Tool, "parallel_ai_search"),
    (types.Schema, "additional_properties"),
    (types.Schema, "defs"),
    (types.Schema, "ref"),
}
# SDK conveniences that are not part of the REST response.
NOT_ON_THE_WIRE = {
    (types.GenerateContentResponse, "sdk_http_response"),
    (types.GenerateContentResponse, "automatic_function_calling_history"),
    (types.GenerateContentResponse, "parsed"),
}

_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
_FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "toolCall",
    "toolResponse",
)


class InvalidRequest(ValueError):
    """What the real API would answer 400 INVALID_ARGUMENT to."""


# --- wire-format walk ----------------------------------------------------------------------------


def walk_wire(value: Any, annotation: Any, where: str, denied: Set[tuple[Any, str]]) -> None:
    """Every key must be the camelCase wire name of a field of the SDK model at that place."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, pytypes.UnionType):
        candidates = [a for a in args if a is not type(None)]
        for candidate in candidates:
            shape = typing.get_origin(candidate) or candidate
            if (isinstance(value, dict) and (shape is dict or _is_model(candidate))) or (
                isinstance(value, list) and shape is list
            ):
                walk_wire(value, candidate, where, denied)
                return
        return
    if _is_model(annotation):
        if not isinstance(value, dict):
            raise InvalidRequest(f"{where}: expected an object for {annotation.__name__}")
        by_alias = {(field.alias or name): name for name, field in annotation.model_fields.items()}
        for key, sub in value.items():
            name = by_alias.get(key)
            if name is None:
                raise InvalidRequest(f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}'")
            if (annotation, name) in denied:
                raise InvalidRequest(
                    f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}' (not in Gemini API)"
                )
            walk_wire(sub, annotation.model_fields[name].annotation, f"{where}.{key}", denied)
    elif origin is list and isinstance(value, list):
        for index, item in enumerate(value):
            walk_wire(item, args[0], f"{where}[{index}]", denied)
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            walk_wire(item, args[1], f"{where}[{key}]", denied)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


# --- request validation --------------------------------------------------------------------------


def validate_request(raw: bytes | dict[str, Any], model: str) -> dict[str, Any]:
    """The request body as the real Gemini API would check it; returns it decoded."""
    body = json.loads(raw) if isinstance(raw, bytes) else json.loads(json.dumps(raw))
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be an object")
    for key, value in body.items():
        if key not in REQUEST_FIELDS:
            raise InvalidRequest(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
        adapter = pydantic.TypeAdapter(REQUEST_FIELDS[key])
        try:
            # JSON mode, like the wire: bytes fields (signatures, inline data) must be base64
            adapter.validate_json(json.dumps(value))
        except pydantic.ValidationError as exc:
            raise InvalidRequest(f"{key}: {exc}") from exc
        walk_wire(value, REQUEST_FIELDS[key], key, NOT_IN_GEMINI_API)
    _check_contents(body, model)
    declared = _check_tools(body)
    _check_tool_config(body, declared)
    _check_generation_config(body, model)
    return body


def _check_contents(body: Mapping[str, Any], model: str) -> None:
    contents = body.get("contents")
    if not contents:
        raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified")
    for index, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            raise InvalidRequest(f"contents[{index}].role must be user or model")
        if not content.get("parts"):
            raise InvalidRequest(f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.")
        for number, part in enumerate(content["parts"]):
            data = [key for key in _PART_DATA if key in part]
            if len(data) != 1:
                raise InvalidRequest(f"contents[{index}].parts[{number}]: exactly one data field, got {data}")
            if "text" in part and not str(part["text"]).strip() and "thoughtSignature" not in part:
                raise InvalidRequest(
                    f"* GenerateContentRequest.contents[{index}].parts[{number}].data: empty text parameter"
                )
            if part.get("thought") and "text" not in part:
                raise InvalidRequest(f"contents[{index}].parts[{number}]: thought without text")
            if "thoughtSignature" in part:
                _check_signature(part, model, f"contents[{index}].parts[{number}]")
            if content["role"] == "user" and "functionCall" in part:
                raise InvalidRequest("function calls must be in model turns")
            if content["role"] == "model" and "functionResponse" in part:
                raise InvalidRequest("function responses must be in user turns")
    if contents[0]["role"] != "user" or contents[-1]["role"] != "user":
        raise InvalidRequest(
            "Please ensure that multiturn requests alternate between user and model, "
            "starting and ending with a user turn."
        )
    # Each function-call turn is answered by as many function responses, same names, same order.
    for index, content in enumerate(contents):
        calls = [p["functionCall"]["name"] for p in content["parts"] if "functionCall" in p]
        if not calls:
            continue
        following = contents[index + 1] if index + 1 < len(contents) else None
        answers = (
            [p["functionResponse"]["name"] for p in following["parts"] if "functionResponse" in p] if following else []
        )
        if following is None or following["role"] != "user" or answers != calls:
            raise InvalidRequest(
                "Please ensure that the number of function response parts is equal to the number of "
                f"function call parts of the function call turn (calls {calls}, responses {answers})."
            )
    # Gemini 3: every function-call step of the current turn carries a signature on its first call.
    if re.match(r"(models/)?gemini-3", model):
        last_user = max(
            (i for i, c in enumerate(contents) if c["role"] == "user" and any("text" in p for p in c["parts"])),
            default=-1,
        )
        for content in contents[last_user + 1 :]:
            calls = [p for p in content["parts"] if "functionCall" in p]
            if calls and "thoughtSignature" not in calls[0]:
                raise InvalidRequest(
                    "Function call is missing a thought_signature in functionCall parts. This is required "
                    f"for tools to work correctly. Additional data, function call `{calls[0]['functionCall']['name']}`"
                )


def _check_signature(part: Mapping[str, Any], model: str, where: str) -> None:
    signature = part["thoughtSignature"]
    if signature == DUMMY_SIGNATURE:
        return
    issued = decode_signature(signature)
    if issued is None:
        raise InvalidRequest(f"{where}: Corrupted thought signature.")
    if issued["model"] != model.removeprefix("models/"):
        raise InvalidRequest(f"{where}: thought signature is not valid for model {model}")
    kind = "thought" if part.get("thought") else "fc" if "functionCall" in part else "text"
    if issued["kind"] != kind:
        raise InvalidRequest(
            f"{where}: thought signature issued for a {issued['kind']} part, replayed on a {kind} part"
        )
    if kind == "fc" and issued["detail"] != part["functionCall"]["name"]:
        raise InvalidRequest(f"{where}: thought signature issued for call {issued['detail']}")
    if kind in ("text", "thought") and issued["detail"] != part["text"]:
        raise InvalidRequest(f"{where}: thought signature issued for other text ({issued['detail']!r})")


def _check_tools(body: Mapping[str, Any]) -> set[str]:
    declared: set[str] = set()
    for tool in body.get("tools") or []:
        for number, declaration in enumerate(tool.get("functionDeclarations") or []):
            name = declaration.get("name", "")
            if not _FUNCTION_NAME.match(name):
                raise InvalidRequest(f"function_declarations[{number}].name: invalid function name {name!r}")
            if name in declared:
                raise InvalidRequest(f"Duplicate function declaration found: {name}")
            declared.add(name)
            parameters = declaration.get("parameters")
            if parameters is not None:
                if parameters.get("type") != "OBJECT":
                    raise InvalidRequest(f"{name}: parameters schema should be of type OBJECT")
                check_schema(parameters, f"function_declarations[{number}].parameters")
    return declared


def check_schema(schema: Mapping[str, Any], where: str) -> None:
    """Gemini API `Schema` rules beyond the SDK model (which would accept lowercase types etc.)."""
    schema_type = schema.get("type")
    if schema_type is None and "anyOf" not in schema:
        raise InvalidRequest(f"{where}.type: must be specified")
    if schema_type is not None and schema_type not in _SCHEMA_TYPES:
        raise InvalidRequest(f'{where}.type: Invalid value "{schema_type}"')
    if "properties" in schema:
        if schema_type != "OBJECT":
            raise InvalidRequest(f"{where}.properties: only allowed for OBJECT type")
        if not schema["properties"]:
            raise InvalidRequest(f"{where}.properties: should be non-empty for OBJECT type")
        for name, sub in schema["properties"].items():
            check_schema(sub, f"{where}.properties[{name}]")
    for name in schema.get("required") or []:
        if name not in (schema.get("properties") or {}):
            raise InvalidRequest(f"{where}.required[{name}]: property is not defined")
    if schema_type == "ARRAY" and "items" not in schema:
        raise InvalidRequest(f"{where}.items: missing field")
    if "items" in schema:
        if schema_type != "ARRAY":
            raise InvalidRequest(f"{where}.items: only allowed for ARRAY type")
        check_schema(schema["items"], f"{where}.items")
    if "enum" in schema and schema_type != "STRING":
        raise InvalidRequest(f"{where}.enum: only allowed for STRING type")
    if "format" in schema and schema["format"] not in _FORMATS.get(str(schema_type), set()):
        raise InvalidRequest(f"{where}.format: only {sorted(_FORMATS.get(str(schema_type), set()))} supported")
    for number, sub in enumerate(schema.get("anyOf") or []):
        check_schema(sub, f"{where}.anyOf[{number}]")


def _check_tool_config(body: Mapping[str, Any], declared: set[str]) -> None:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    names = config.get("allowedFunctionNames")
    if names is not None:
        if config.get("mode") != "ANY":
            raise InvalidRequest("allowed_function_names should only be set when the Mode is ANY")
        unknown = [name for name in names if name not in declared]
        if unknown:
            raise InvalidRequest(f"allowed_function_names {unknown} are not declared functions")


def _check_generation_config(body: Mapping[str, Any], model: str) -> None:
    generation = body.get("generationConfig") or {}
    thinking = generation.get("thinkingConfig") or {}
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        raise InvalidRequest("You cannot use both thinking_level and the legacy thinking_budget parameter")
    name = model.removeprefix("models/")
    if "thinkingLevel" in thinking and name.startswith("gemini-2"):
        raise InvalidRequest("Thinking level is not supported for this model.")
    if "thinkingLevel" in thinking and "-pro" in name and thinking["thinkingLevel"] not in ("LOW", "HIGH"):
        raise InvalidRequest(f"thinking level {thinking['thinkingLevel']} is not supported by {name}")
    budget = thinking.get("thinkingBudget")
    if budget is not None and name.startswith("gemini-2.5"):
        low, high = (128, 32768) if "-pro" in name else (0, 24576)
        if not low <= budget <= high:
            raise InvalidRequest(
                f"The thinking budget {budget} is invalid. Please choose a value between {low} and {high}."
            )
    if "responseSchema" in generation:
        check_schema(generation["responseSchema"], "generationConfig.responseSchema")
        if generation.get("responseMimeType") != "application/json":
            raise InvalidRequest("responseSchema requires responseMimeType application/json")


# --- responses -----------------------------------------------------------------------------------


def validate_response(body: Mapping[str, Any]) -> types.GenerateContentResponse:
    """A response or stream chunk, strictly in the REST wire format."""
    parsed = types.GenerateContentResponse.model_validate_json(json.dumps(body))
    walk_wire(dict(body), types.GenerateContentResponse, "response", NOT_ON_THE_WIRE)
    return parsed


def sign(model: str, kind: str, detail: str) -> str:
    """A thought signature as this fake issues them (base64, like Google's)."""
    payload = json.dumps({"fake": 1, "model": model, "kind": kind, "detail": detail})
    return base64.b64encode(payload.encode()).decode()


def decode_signature(signature: str) -> dict[str, str] | None:
    try:
        payload = json.loads(base64.b64decode(signature, validate=True))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and payload.get("fake") == 1 else None


def text_part(text: str, signature: str | None = None, thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def call_part(
    name: str, args: dict[str, Any], signature: str | None = None, call_id: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, "args": args}
    if call_id is not None:
        call["id"] = call_id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def usage_metadata(prompt: int, candidates: int, thoughts: int = 0, cached: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return usage


def chunk(
    parts: list[dict[str, Any]],
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One GenerateContentResponse as the stream sends them."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        body["usageMetadata"] = usage
    return body


def merge_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed answer the same generation gives: one candidate with all parts."""
    parts: list[dict[str, Any]] = []
    merged: dict[str, Any] = {}
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    for piece in chunks:
        for key in ("usageMetadata", "promptFeedback", "modelVersion", "responseId"):
            if key in piece:
                merged[key] = piece[key]
        for source in piece.get("candidates") or []:
            for part in (source.get("content") or {}).get("parts") or []:
                previous = parts[-1] if parts else None
                if (
                    previous is not None
                    and "text" in part
                    and "text" in previous
                    and bool(previous.get("thought")) == bool(part.get("thought"))
                    and "thoughtSignature" not in previous
                    and "thoughtSignature" not in part  # a signature belongs to its own part's text
                ):
                    previous["text"] += part["text"]
                else:
                    parts.append(dict(part))
            for key in ("finishReason", "finishMessage", "safetyRatings"):
                if key in source:
                    candidate[key] = source[key]
    if parts or "finishReason" in candidate:
        merged["candidates"] = [candidate]
    return merged


@dataclasses.dataclass
class Reply:
    """One scripted answer. `chunks` as the stream sends them (merged when not streamed)."""

    chunks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    status: int = 200
    error: dict[str, Any] | None = None  # the error body for a non-200 answer
    stream_error: dict[str, Any] | None = None  # an `{"error": ...}` event after the chunks
    cut_after: int | None = None  # drop the connection after this many chunks


class Mode(enum.Enum):
    STREAM = "streamGenerateContent"
    UNARY = "generateContent"


@dataclasses.dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    model: str
    mode: Mode


class FakeGemini(ThreadedApp):
    """Runs on its own event loop thread; `url` is the API root (…/v1beta is added by clients)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        self.invalid: list[str] = []
        self.replies: list[Reply] = []
        self.port = 0
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def reset(self) -> None:
        self.received.clear()
        self.invalid.clear()
        self.replies.clear()

    @staticmethod
    def _error(status: int, google_status: str, message: str, details: list[Any] | None = None) -> web.Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
        if details is not None:
            error["details"] = details
        return web.json_response({"error": error}, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        match = self.route(request.path)
        model = match.group("model") if match else ""
        mode = Mode(match.group("method")) if match else Mode.UNARY
        self.received.append(
            Received(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                raw,
                model,
                mode,
            )
        )
        if request.method != "POST" or match is None:
            return self._error(404, "NOT_FOUND", f"Method not found: {request.path}")
        if mode is Mode.STREAM and request.query.get("alt") != "sse":
            return self._error(400, "INVALID_ARGUMENT", "this fake only streams with alt=sse")
        refused = self.refuse_credentials(request)
        if refused is not None:
            return refused
        try:
            validate_request(raw, model)
        except InvalidRequest as exc:
            self.invalid.append(str(exc))
            return self._error(400, "INVALID_ARGUMENT", str(exc))
        return await self._answer(request, model, mode)

    def route(self, path: str) -> re.Match[str] | None:
        """The model and method of a Gemini API path (a Vertex AI fake has its own)."""
        return re.fullmatch(r"/v1beta/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)", path)

    def refuse_credentials(self, request: web.Request) -> web.Response | None:
        """The answer to a request without the right credentials (None: they are right)."""
        if request.headers.get("x-goog-api-key") != API_KEY:
            return self._error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return None

    async def _answer(self, request: web.Request, model: str, mode: Mode) -> web.StreamResponse:
        reply = (
            self.replies.pop(0)
            if self.replies
            else Reply([chunk([text_part("fake-gemini reply")], "STOP", usage_metadata(5, 3))])
        )
        if reply.status != 200:
            return web.json_response({"error": reply.error or {}}, status=reply.status)
        response_id = f"fake-{next(self._ids)}"
        chunks = [dict(piece, modelVersion=model, responseId=response_id) for piece in reply.chunks]
        for piece in chunks:
            validate_response(piece)  # a mis-scripted test fails loudly here, not in the translator
        if mode is Mode.UNARY:
            merged = merge_chunks(chunks)
            validate_response(merged)
            return web.json_response(merged)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for number, piece in enumerate(chunks):
            if reply.cut_after is not None and number >= reply.cut_after:
                break
            await response.write(f"data: {json.dumps(piece)}\r\n\r\n".encode())
        if reply.cut_after is not None:
            if request.transport is not None:
                request.transport.abort()  # the connection drops mid-stream
            return response
        if reply.stream_error is not None:
            await response.write(f"data: {json.dumps({'error': reply.stream_error})}\r\n\r\n".encode())
        await response.write_eof()
        return response
