"""Google Gemini API (generateContent): translate Codex's Responses API traffic to and from it.

Pure functions and small state machines, no I/O. How the gateway drives this module:

    from codexgate.providers import gemini

    tools = gemini.tool_map(body)                        # Codex's tool names, for the way back
    payload = gemini.build_request(body, upstream_model, options)
    url, headers = gemini.request_target(base_url, upstream_model, stream=True)
    headers |= gemini.auth_headers(secret)               # {"x-goog-api-key": secret}
    # POST json.dumps(payload) to url with headers (content-type: application/json).

    # 200, streamed (`:streamGenerateContent?alt=sse`, SSE of GenerateContentResponse chunks):
    decoder = gemini.StreamDecoder()
    translator = gemini.StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    for chunk in response_bytes:                         # any chunk boundaries
        for event in decoder.feed(chunk):
            client_sse += encode_responses_stream(translator.feed(event))
    for event in decoder.close():                        # flush an unterminated last event
        client_sse += encode_responses_stream(translator.feed(event))
    client_sse += encode_responses_stream(translator.finish())
    translator.usage, translator.outcome                 # for accounting

    # 200, not streamed (`:generateContent`, one GenerateContentResponse JSON):
    response = gemini.translate_response(json.loads(body), ctx, tools=tools, upstream_model=upstream_model)

    # non-200 (both endpoints answer errors as plain JSON, not SSE):
    status, error_body = gemini.translate_error(upstream_status, upstream_body_bytes)
    retry = gemini.retry_after_seconds(upstream_body_bytes)   # → a Retry-After header on 429

`base_url` is the API root, e.g. `https://generativelanguage.googleapis.com` (a trailing
`/v1beta` or `/v1` is kept as given). `tools` and `upstream_model` are optional: without `tools`
only Codex's freeform `apply_patch` is recognised as a custom tool and namespaced tools come back
without their namespace; without `upstream_model` the reasoning envelopes are sealed for
`ctx.model`, which must then equal the `upstream_model` given to `build_request` or the thought
signatures will never be replayed (Gemini 3 then gets the documented dummy signature instead).

Reasoning state. Gemini returns opaque `thoughtSignature`s on parts (function calls, text, thoughts)
that must come back on the same parts in later requests (Gemini 3 rejects function calls in the
current turn without one). Each signature is recorded as an "anchor" naming the part it came with
(`call_id` of a function call, message item id + character span of a text part, or the thought
text) and handed to Codex in a `reasoning` item's `encrypted_content`, sealed with
`seal_reasoning(provider, upstream_model, {"anchors": [...]})`. Thought text (`thought: true`
parts, Gemini's thought summaries) becomes the reasoning item's summary. On replay, the anchors of
all reasoning items in one model turn are put back onto the rebuilt parts; envelopes for another
provider or model, and OpenAI's own blobs, are dropped.

Vertex AI would differ in: URL (`https://{location}-aiplatform.googleapis.com/v1/projects/{project}/
locations/{location}/publishers/google/models/{model}:generateContent`), auth (OAuth2 bearer token
of a service account, not an API key), schema (Vertex accepts `additionalProperties`, so less would
be stripped), and a few Vertex-only fields; the body and the responses are otherwise the same, so
`build_request`/`StreamTranslator` would serve it with a different `request_target`/`auth_headers`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import mimetypes
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from codexgate.providers.base import (
    ResponseContext,
    TranslateOptions,
    echoed_fields,
    open_reasoning,
    sampling_params,
    seal_reasoning,
    stop_sequences,
)
from codexgate.providers.base import input_items as _input_items
from codexgate.providers.jsonstring import without_lone_surrogates
from codexgate.sse import SSEParser
from codexgate.usage import Usage

log = logging.getLogger(__name__)

API_VERSION = "v1beta"

# The documented stand-in for a thought signature, for function calls Gemini did not produce
# (another provider earlier in the session, or an envelope that cannot be opened): Gemini 3
# answers 400 for a function call in the current turn without any signature.
DUMMY_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

# --- JSON Schema → Gemini's OpenAPI subset ------------------------------------------------------
# Gemini's `Schema` (Gemini API, not Vertex) knows exactly these keys; everything else is
# stripped. Keys we transform rather than strip: `$ref`/`$defs`/`definitions` (inlined), `const`
# (→ one-value `enum`), `oneOf` (→ `anyOf`), a `type` list (→ one `type` + `nullable`),
# `examples` (→ `example`), and non-string `enum` values (→ listed in `description`).
# fmt: off
SCHEMA_KEYS_KEPT = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
# fmt: on
# What Codex and MCP tool schemas carry that Gemini's API rejects ("Unknown name ... Cannot find
# field"), listed for readers; the rule above (keep only SCHEMA_KEYS_KEPT) is what applies.
# fmt: off
SCHEMA_KEYS_STRIPPED = frozenset({
    "additionalProperties", "$schema", "$id", "$comment", "$anchor", "strict", "allOf", "not", "if", "then",
    "else", "patternProperties", "propertyNames", "unevaluatedProperties", "unevaluatedItems",
    "dependentRequired", "dependentSchemas", "multipleOf", "exclusiveMinimum", "exclusiveMaximum",
    "uniqueItems", "contains", "minContains", "maxContains", "prefixItems", "additionalItems", "readOnly",
    "writeOnly", "deprecated", "contentMediaType", "contentEncoding",
})
# fmt: on
# `format` values the Gemini API accepts, per type; others are dropped.
_FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}
_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_MAX_SCHEMA_DEPTH = 24  # recursive `$ref`s are cut here rather than looping

# --- reasoning effort ↔ thinking ------------------------------------------------------------------
# Gemini 3+ takes a level; its Pro models know only LOW and HIGH (and cannot stop thinking), its
# Flash models MINIMAL..HIGH. Codex's default "medium" maps to HIGH on Pro, Gemini's own default.
_LEVEL_PRO = {"none": "LOW", "minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH", "xhigh": "HIGH"}
_LEVEL_FLASH = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
}
# Gemini 2.5 takes a token budget: Pro 128..32768 (cannot be 0), Flash 0..24576, Flash-Lite 0 or
# 512..24576. Unknown model names (aliases such as gemini-flash-latest) also get a budget: Gemini 3
# still accepts one, Gemini 2.5 does not accept a level.
_BUDGET = {"none": 0, "minimal": 512, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
# Under an output cap this small, Gemini 3 thinks at its lowest level (its levels have no token cap).
_SMALL_CAP = 2048
# A thinking budget below this (Gemini 2.5 Pro's own minimum) is not worth spending a capped output on.
_MIN_USEFUL_BUDGET = 128

# Responses tools the Gemini function-calling API cannot serve.
_SERVABLE_TOOL_TYPES = {"function", "custom", "namespace"}

_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
_URL_KEY = re.compile(r"([?&](?:key|access_token)=)[^&\s\"']+")
_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)
_CONTEXT_TOO_LONG = re.compile(
    r"exceeds the maximum number of tokens|input token count|context (?:window|length)|too many tokens|too long",
    re.IGNORECASE,
)


# ==================================================================================================
# Tools: Codex's names ↔ Gemini function names
# ==================================================================================================


@dataclasses.dataclass(frozen=True)
class ToolTarget:
    """What Codex calls a tool that Gemini knows under some function name."""

    kind: str  # "function" or "custom" (freeform: answered as custom_tool_call with `input`)
    name: str
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class ToolMap:
    """Gemini function name → Codex tool, and back. Built from a request by `tool_map(body)`."""

    targets: Mapping[str, ToolTarget]
    names: Mapping[tuple[str | None, str], str]  # (namespace, Codex name) → Gemini name

    @classmethod
    def codex_default(cls) -> ToolMap:
        """Without the request: Codex's only freeform tool is apply_patch."""
        target = ToolTarget("custom", "apply_patch")
        return cls({"apply_patch": target}, {(None, "apply_patch"): "apply_patch"})

    def resolve(self, gemini_name: str) -> ToolTarget:
        return self.targets.get(gemini_name) or ToolTarget("function", gemini_name)

    def gemini_name(self, name: str, namespace: str | None = None) -> str:
        known = self.names.get((namespace, name)) or self.names.get((None, name))
        return known or _sanitize_function_name(name, set())


def _sanitize_function_name(name: str, taken: set[str]) -> str:
    """A name Gemini accepts (letters, digits, `_.:-`, ≤ 64, not starting with a digit), unique."""
    cleaned = re.sub(r"[^A-Za-z0-9_.:\-]", "_", name) or "_"
    if not re.match(r"[A-Za-z_]", cleaned):
        cleaned = "_" + cleaned
    cleaned = cleaned[:64]
    candidate, counter = cleaned, 2
    while candidate in taken:
        suffix = f"_{counter}"
        candidate = cleaned[: 64 - len(suffix)] + suffix
        counter += 1
    return candidate


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _request_tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`tools` plus the tools of Codex's `additional_tools` input items, in order."""
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, dict)]
    for item in _input_items(body):
        if item.get("type") == "additional_tools":
            tools.extend(tool for tool in item.get("tools") or [] if isinstance(tool, dict))
    return tools


def _collect_tools(body: Mapping[str, Any]) -> tuple[ToolMap, list[dict[str, Any]], list[str]]:
    """(name map, Gemini function declarations, names of tools Gemini cannot serve)."""
    targets: dict[str, ToolTarget] = {}
    names: dict[tuple[str | None, str], str] = {}
    declarations: list[dict[str, Any]] = []
    dropped: list[str] = []

    def declare(tool: dict[str, Any], namespace: str | None) -> None:
        name = tool.get("name")
        kind = tool.get("type")
        if not isinstance(name, str) or not name or kind not in ("function", "custom"):
            dropped.append(str(name or kind))
            return
        if (namespace, name) in names:
            return  # the same tool offered twice (tools and additional_tools)
        preferred = name if name not in targets else f"{namespace}__{name}" if namespace else name
        gemini_name = _sanitize_function_name(preferred, set(targets))
        targets[gemini_name] = ToolTarget(kind, name, namespace)
        names[(namespace, name)] = gemini_name
        declarations.append(
            _custom_declaration(gemini_name, tool) if kind == "custom" else _function_declaration(gemini_name, tool)
        )

    for tool in _request_tools(body):
        kind = tool.get("type")
        if kind == "namespace":
            namespace = tool.get("name") if isinstance(tool.get("name"), str) else None
            for child in tool.get("tools") or []:
                if isinstance(child, dict):
                    declare(child, namespace)
        elif kind in _SERVABLE_TOOL_TYPES:
            declare(tool, None)
        else:
            dropped.append(str(tool.get("name") or kind))
    return ToolMap(targets, names), declarations, dropped


def tool_map(body: Mapping[str, Any]) -> ToolMap:
    """Which Gemini function names stand for which Codex tools in this request."""
    return _collect_tools(body)[0]


def _function_declaration(gemini_name: str, tool: Mapping[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": gemini_name}
    if isinstance(tool.get("description"), str) and tool["description"]:
        declaration["description"] = tool["description"]
    parameters = tool.get("parameters")
    schema = gemini_schema(parameters) if isinstance(parameters, dict) else {}
    if schema.get("type") != "OBJECT":
        # Gemini wants an object at the root; a parameterless tool gets a bare OBJECT (a
        # `properties: {}` is rejected, and no `parameters` at all fails with mode ANY).
        schema = {"type": "OBJECT"}
    declaration["parameters"] = schema
    return declaration


def _custom_declaration(gemini_name: str, tool: Mapping[str, Any]) -> dict[str, Any]:
    """A freeform tool (apply_patch) as a function with one string parameter, `input`."""
    description = _str(tool.get("description"))
    tool_format = _dict(tool.get("format"))
    if tool_format.get("type") == "grammar" and _str(tool_format.get("definition")):
        description += (
            "\n\nPass the tool's raw text (not JSON) as the `input` argument. It must match this "
            f"{tool_format.get('syntax', 'lark')} grammar:\n{tool_format['definition']}"
        )
    else:
        description += "\n\nPass the tool's raw text (not JSON) as the `input` argument."
    return {
        "name": gemini_name,
        "description": description.strip(),
        "parameters": {
            "type": "OBJECT",
            "properties": {"input": {"type": "STRING", "description": "The raw input text for this tool."}},
            "required": ["input"],
        },
    }


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON Schema → Gemini's OpenAPI-subset `Schema` (see SCHEMA_KEYS_KEPT/STRIPPED)."""
    definitions: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            definitions.update(schema[key])
    return _convert_schema(schema, definitions, 0)


# Gemini's Schema has no "any value": a schema without a type (`{}`, an array's missing `items`)
# offers every type instead, so the model is not told it must pass a string.
_ANY_SCALAR: list[dict[str, Any]] = [{"type": "STRING"}, {"type": "NUMBER"}, {"type": "BOOLEAN"}, {"type": "OBJECT"}]


def _any_value() -> dict[str, Any]:
    return {"anyOf": [*_ANY_SCALAR, {"type": "ARRAY", "items": {"anyOf": list(_ANY_SCALAR)}}], "nullable": True}


def _merge_all_of(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`allOf: [A, B]` → one schema with A's and B's properties and required names (the first
    branch naming a type, description, ... wins; Gemini has no intersection)."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[Any] = list(merged.get("required") or [])
    for branch in schema["allOf"]:
        if not isinstance(branch, dict):
            continue
        if isinstance(branch.get("allOf"), list):
            branch = _merge_all_of(branch)
        for key, value in branch.items():
            if key == "properties" and isinstance(value, dict):
                for name, sub in value.items():
                    properties.setdefault(name, sub)
            elif key == "required" and isinstance(value, list):
                required += [name for name in value if name not in required]
            else:
                merged.setdefault(key, value)
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


def _resolve_ref(schema: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """A `$ref` to `#/$defs/X` or `#/definitions/X`, inlined (siblings of `$ref` win)."""
    target = definitions.get(str(schema["$ref"]).rsplit("/", 1)[-1])
    return {**(target if isinstance(target, dict) else {}), **{k: v for k, v in schema.items() if k != "$ref"}}


def _convert_schema(schema: Any, definitions: Mapping[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return {"type": "STRING"}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):  # nested definitions (bundled schemas)
            definitions = {**definitions, **schema[key]}
    if isinstance(schema.get("$ref"), str):
        return _convert_schema(_resolve_ref(schema, definitions), definitions, depth + 1)
    if isinstance(schema.get("allOf"), list):
        branches = [_resolve_ref(b, definitions) if isinstance(b, dict) and "$ref" in b else b for b in schema["allOf"]]
        return _convert_schema(_merge_all_of({**schema, "allOf": branches}), definitions, depth + 1)

    out: dict[str, Any] = {}
    nullable = schema.get("nullable") is True
    raw_type = schema.get("type")
    types = [t for t in raw_type if isinstance(t, str)] if isinstance(raw_type, list) else [raw_type]
    if "null" in types:
        nullable = True
        types = [t for t in types if t != "null"]
    variants = schema.get("anyOf") if isinstance(schema.get("anyOf"), list) else schema.get("oneOf")
    if isinstance(variants, list):
        branches = [v for v in variants if isinstance(v, dict)]
        if any(branch.get("type") == "null" for branch in branches):
            nullable = True
            branches = [branch for branch in branches if branch.get("type") != "null"]
        if len(branches) == 1 and not any(t in _TYPES for t in types):
            # `anyOf: [X, null]` is how JSON Schema says "nullable X"
            inner = _convert_schema({**schema, **branches[0], "anyOf": None, "oneOf": None}, definitions, depth + 1)
            if nullable:
                inner["nullable"] = True
            return inner
        if branches:
            out["anyOf"] = [_convert_schema(branch, definitions, depth + 1) for branch in branches]
    gemini_type = _gemini_type(types, schema)
    if gemini_type == "ANY":
        out = _any_value()
        gemini_type = None
    if len([t for t in types if t in _TYPES]) > 1:
        # ["string", "number"]: Gemini has one type per schema, so offer the alternatives
        out["anyOf"] = [
            _convert_schema({**schema, "type": t, "anyOf": None, "oneOf": None}, definitions, depth + 1)
            for t in types
            if t in _TYPES
        ]
        gemini_type = None
    if gemini_type and "anyOf" not in out:
        out["type"] = gemini_type
    if nullable or out.get("nullable"):
        out["nullable"] = True

    for key in ("title", "description", "pattern"):
        if isinstance(schema.get(key), str):
            out[key] = schema[key]
    for key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if isinstance(schema.get(key), int) and not isinstance(schema.get(key), bool):
            out[key] = schema[key]
    for key in ("minimum", "maximum"):
        if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool):
            out[key] = schema[key]
    if "default" in schema:
        out["default"] = schema["default"]
    if "example" in schema:
        out["example"] = schema["example"]
    elif isinstance(schema.get("examples"), list) and schema["examples"]:
        out["example"] = schema["examples"][0]
    schema_format = schema.get("format")
    if isinstance(schema_format, str) and schema_format in _FORMATS.get(gemini_type or "", set()):
        out["format"] = schema_format

    values = schema.get("enum") if isinstance(schema.get("enum"), list) else None
    if values is None and "const" in schema:
        values = [schema["const"]]
    if values is not None:
        if gemini_type == "STRING" and all(isinstance(v, str) for v in values):
            out["enum"] = values
        else:
            # Gemini takes enums only on strings; keep the constraint where the model can read it
            allowed = "Allowed values: " + ", ".join(json.dumps(v) for v in values)
            out["description"] = f"{out['description']} ({allowed})" if out.get("description") else allowed

    if gemini_type == "OBJECT":
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not properties:
            # A map (`additionalProperties: {schema}`): Gemini's API has no field for it, so the
            # value type is told to the model in words rather than lost.
            note = "An object mapping any keys to values of this JSON schema: " + json.dumps(extra)
            out["description"] = f"{out['description']} ({note})" if out.get("description") else note
        if isinstance(properties, dict) and properties:
            out["properties"] = {
                str(name): _convert_schema(sub, definitions, depth + 1) for name, sub in properties.items()
            }
            required = [r for r in schema.get("required") or [] if isinstance(r, str) and r in properties]
            if required:
                out["required"] = required
            ordering = schema.get("propertyOrdering")
            if isinstance(ordering, list) and all(isinstance(n, str) and n in properties for n in ordering):
                out["propertyOrdering"] = ordering
    elif gemini_type == "ARRAY":
        items = schema.get("items")
        # Gemini rejects an ARRAY without `items`; unspecified items may be any value.
        out["items"] = _convert_schema(items, definitions, depth + 1) if isinstance(items, dict) else _any_value()
    return out


def _gemini_type(types: list[Any], schema: Mapping[str, Any]) -> str | None:
    known = [t for t in types if t in _TYPES]
    if known:
        return str(known[0]).upper()
    if "anyOf" in schema or "oneOf" in schema:
        return None
    # No type given: infer it from the shape, else STRING (Gemini wants one).
    if isinstance(schema.get("properties"), dict):
        return "OBJECT"
    if "items" in schema:
        return "ARRAY"
    values = schema.get("enum") if isinstance(schema.get("enum"), list) else None
    if values is None and "const" in schema:
        values = [schema["const"]]
    if values and all(isinstance(v, str) for v in values):
        return "STRING"
    if isinstance(schema.get("additionalProperties"), dict):
        return "OBJECT"
    return "ANY"  # `{}`, `{"not": ...}`: any JSON value


# ==================================================================================================
# Responses request → generateContent request
# ==================================================================================================


def _model_family(upstream_model: str) -> tuple[str, bool]:
    """("level" | "budget" | "none", is_pro) for a Gemini model name."""
    name = upstream_model.rsplit("/", 1)[-1].lower()
    is_pro = "-pro" in name
    match = re.match(r"gemini-(\d+)(?:\.(\d+))?", name)
    if match is None:
        return "budget", is_pro
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    if major >= 3:
        return "level", is_pro
    if major == 2 and minor >= 5:
        return "budget", is_pro
    return "none", is_pro  # 1.x and 2.0 do not think


def _thinking_config(body: Mapping[str, Any], upstream_model: str) -> dict[str, Any] | None:
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return None
    effort = reasoning.get("effort")
    family, is_pro = _model_family(upstream_model)
    if family == "none" or effort not in _BUDGET:
        return None
    # Summaries are on unless Codex asked for none: Codex shows them while the model thinks.
    include = reasoning.get("summary") != "none"
    config: dict[str, Any]
    # Thinking tokens count against maxOutputTokens: with a cap, thinking gets at most half of it
    # (the answer the other half), and a level model thinks at its lowest level under a small cap.
    cap = body.get("max_output_tokens")
    cap = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
    if family == "level":
        levels = _LEVEL_PRO if is_pro else _LEVEL_FLASH
        config = {"thinkingLevel": levels["minimal" if cap is not None and cap < _SMALL_CAP else effort]}
    else:
        budget = _BUDGET[effort]
        name = upstream_model.lower()
        if cap is not None:
            budget = min(budget, cap // 2)
            if budget < _MIN_USEFUL_BUDGET and not is_pro:
                budget = 0  # too little room to think usefully: the cap goes to the answer
        budget = min(max(budget, 128), 32768) if is_pro else min(budget, 24576)
        if budget and "lite" in name:
            # Flash-Lite takes 0 or 512..24576: under a cap too small for 512, it does not think.
            budget = 0 if cap is not None and cap // 2 < 512 else max(budget, 512)
        config = {"thinkingBudget": budget}
        include = include and budget > 0
    if include:
        config["includeThoughts"] = True
    return config


def _text_of(content: Any, kinds: Iterable[str] = ("input_text", "output_text", "text", "refusal")) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    wanted = set(kinds)
    pieces = []
    for part in content:
        if isinstance(part, dict) and part.get("type") in wanted:
            text = part.get("refusal") if part.get("type") == "refusal" else part.get("text")
            if isinstance(text, str):
                pieces.append(text)
    return "".join(pieces)


def _data_url_part(url: str) -> dict[str, Any] | None:
    match = _DATA_URL.match(url)
    if match is None:
        return None
    mime, params, payload = match.group(1) or "application/octet-stream", match.group(2), match.group(3)
    if ";base64" in params:
        # Gemini wants standard base64; accept the URL-safe alphabet and stray whitespace too
        data = re.sub(r"\s+", "", payload).replace("-", "+").replace("_", "/")
        data += "=" * (-len(data) % 4)
    else:
        data = base64.b64encode(urllib.parse.unquote_to_bytes(payload)).decode()
    return {"inlineData": {"mimeType": mime, "data": data}}


def _guess_mime(url: str, default: str) -> str:
    guessed, _ = mimetypes.guess_type(urllib.parse.urlsplit(url).path)
    return guessed or default


def _media_part(part: Mapping[str, Any]) -> dict[str, Any] | None:
    """An input_image / input_file content part → inlineData or fileData (None: cannot send)."""
    if part.get("type") == "input_image":
        url = part.get("image_url")
        if isinstance(url, str) and url.startswith("data:"):
            return _data_url_part(url)
        if isinstance(url, str) and url.startswith(("http://", "https://", "gs://")):
            return {"fileData": {"mimeType": _guess_mime(url, "image/jpeg"), "fileUri": url}}
        return None
    if part.get("type") == "input_file":
        data, url, filename = part.get("file_data"), part.get("file_url"), part.get("filename")
        if isinstance(data, str) and data.startswith("data:"):
            return _data_url_part(data)
        if isinstance(data, str) and data:
            mime = _guess_mime(filename, "application/pdf") if isinstance(filename, str) else "application/pdf"
            return {"inlineData": {"mimeType": mime, "data": re.sub(r"\s+", "", data)}}
        if isinstance(url, str) and url:
            return {"fileData": {"mimeType": _guess_mime(url, "application/pdf"), "fileUri": url}}
    return None


def _user_parts(content: Any) -> list[dict[str, Any]]:
    # Gemini refuses blank text ("empty text parameter"): whitespace-only text is left out.
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            if part["text"].strip():
                parts.append({"text": part["text"]})
        elif kind in ("input_image", "input_file"):
            media = _media_part(part)
            if media is not None:
                parts.append(media)
            else:
                what = "image" if kind == "input_image" else "file"
                parts.append({"text": f"[{what} omitted: only inline data and URLs can be sent to Gemini]"})
    return parts


def _call_args(arguments: Any) -> dict[str, Any]:
    """Responses `arguments` (a JSON string) → Gemini `args` (an object)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def _is_model_item(item: Mapping[str, Any]) -> bool:
    kind = item.get("type")
    if kind in ("function_call", "custom_tool_call", "reasoning"):
        return True
    return kind in ("message", None) and item.get("role") == "assistant"


class _History:
    """Builds `contents` (and collects the system text) from Codex's input items."""

    def __init__(self, tools: ToolMap, provider_name: str, upstream_model: str) -> None:
        self.tools = tools
        self.provider_name = provider_name
        self.upstream_model = upstream_model
        self.contents: list[dict[str, Any]] = []
        self.system: list[str] = []
        self._call_names: dict[str, str] = {}  # call_id → Gemini function name
        self._call_ids: set[str] = set()  # call_ids Gemini itself issued (replayed as `id`)

    def build(self, items: list[dict[str, Any]]) -> None:
        group: list[dict[str, Any]] = []
        for item in items:
            kind = item.get("type")
            role = item.get("role")
            if kind in ("message", None) and role in ("developer", "system"):
                # Gemini has one system instruction; Codex's developer messages all go there.
                text = _text_of(item.get("content"))
                if text:
                    self.system.append(text)
                continue
            if _is_model_item(item):
                group.append(item)
                continue
            if kind in ("message", None) and role == "user":
                self._flush(group)
                group = []
                self._add("user", _user_parts(item.get("content")))
            elif kind in ("function_call_output", "custom_tool_call_output"):
                self._flush(group)
                group = []
                self._add("user", self._tool_output_parts(item))
            else:
                # additional_tools (served as tools), item_reference, web_search_call, ...
                log.debug("gemini: input item of type %s not forwarded", kind)
        self._flush(group)

    def _add(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def _tool_output_parts(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        call_id = str(item.get("call_id") or "")
        output = item.get("output")
        text = output if isinstance(output, str) else _text_of(output)
        media = (
            [
                part
                for part in _user_parts(output)
                if "text" not in part  # the text went into the function response
            ]
            if isinstance(output, list)
            else []
        )
        name = self._call_names.get(call_id)
        if name is None:
            # An output without its call (history trimmed): Gemini needs the pairing, so say it.
            return [{"text": f"Output of tool call {call_id}:\n{text}"}, *media]
        response: dict[str, Any] = {"name": name, "response": {"output": text}}
        if call_id in self._call_ids:
            response["id"] = call_id
        return [{"functionResponse": response}, *media]

    def _flush(self, group: list[dict[str, Any]]) -> None:
        if not group:
            return
        anchors: list[dict[str, Any]] = []
        for item in group:
            if item.get("type") == "reasoning":
                payload = open_reasoning(item.get("encrypted_content"), self.provider_name, self.upstream_model)
                found = payload.get("anchors") if payload else None
                anchors.extend(a for a in found or [] if isinstance(a, dict))
        calls = {a.get("call_id"): a for a in anchors if a.get("k") == "call"}
        texts = [a for a in anchors if a.get("k") == "text" and isinstance(a.get("sig"), str)]
        parts: list[dict[str, Any]] = []
        for anchor in anchors:
            if anchor.get("k") == "thought" and isinstance(anchor.get("sig"), str):
                text = anchor.get("text") if isinstance(anchor.get("text"), str) else ""
                parts.append({"text": text, "thought": True, "thoughtSignature": anchor["sig"]})
        messages = [
            item for item in group if item.get("type") not in ("reasoning", "function_call", "custom_tool_call")
        ]
        message_ids = {item.get("id") for item in messages if item.get("id")}
        # Spans of a message whose id did not survive the replay still fit when it is the only one.
        orphans = [a for a in texts if a.get("item") is not None and a.get("item") not in message_ids]
        placed: list[dict[str, Any]] = []
        for item in group:
            kind = item.get("type")
            if kind == "reasoning":
                continue
            if kind in ("function_call", "custom_tool_call"):
                parts.append(self._call_part(item, calls))
                continue
            own = [a for a in texts if a.get("item") is not None and a.get("item") == item.get("id")]
            if len(messages) == 1:
                own += orphans
            text = _text_of(item.get("content"))
            text_parts, used = _signed_text_parts(text if text.strip() else "", own)
            parts.extend(text_parts)
            placed += used
        # Text signatures not placed yet (a signature on an empty part after a call, or spans
        # that no longer fit): keep them, on the last text or as the empty part they came on.
        for anchor in texts:
            if any(anchor is done for done in placed):
                continue
            last_text = next((p for p in reversed(parts) if "text" in p and not p.get("thought")), None)
            if anchor.get("len") == 0 or last_text is None:
                held = anchor.get("text") if isinstance(anchor.get("text"), str) else ""
                parts.append({"text": held, "thoughtSignature": anchor["sig"]})
            elif "thoughtSignature" not in last_text:
                last_text["thoughtSignature"] = anchor["sig"]
        self._add("model", parts)

    def _call_part(self, item: Mapping[str, Any], anchors: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
        call_id = str(item.get("call_id") or "")
        namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
        name = self.tools.gemini_name(str(item.get("name") or ""), namespace)
        self._call_names[call_id] = name
        if item.get("type") == "custom_tool_call":
            args: dict[str, Any] = {"input": item.get("input") if isinstance(item.get("input"), str) else ""}
        else:
            args = _call_args(item.get("arguments"))
        call: dict[str, Any] = {"name": name, "args": args}
        part: dict[str, Any] = {"functionCall": call}
        anchor = anchors.get(call_id)
        if anchor is not None:
            if anchor.get("id"):
                call["id"] = call_id
                self._call_ids.add(call_id)
            if isinstance(anchor.get("sig"), str):
                part["thoughtSignature"] = anchor["sig"]
        return part


def _signed_text_parts(text: str, anchors: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A message's text split back into the parts that carried signatures; (parts, anchors used)."""
    spans = sorted(
        (a for a in anchors if isinstance(a.get("at"), int) and isinstance(a.get("len"), int)),
        key=lambda a: (a["at"], a["len"]),
    )
    parts: list[dict[str, Any]] = []
    used: list[dict[str, Any]] = []
    cursor = 0
    for anchor in spans:
        start, end = anchor["at"], anchor["at"] + anchor["len"]
        if start < cursor or end > len(text):
            continue  # the text was edited since: the span no longer fits
        if start > cursor:
            parts.append({"text": text[cursor:start]})
        parts.append({"text": text[start:end], "thoughtSignature": anchor["sig"]})
        used.append(anchor)
        cursor = end
    if cursor < len(text):
        parts.append({"text": text[cursor:]})
    return parts, used


_NO_OUTPUT = "No output was recorded for this call."


def _answer_part(call: Mapping[str, Any], responses: list[dict[str, Any]]) -> dict[str, Any]:
    """The function response answering `call` (taken out of `responses`), or a stand-in."""
    for index, part in enumerate(responses):
        response = part["functionResponse"]
        same_id = "id" in call and response.get("id") == call["id"]
        if same_id or ("id" not in call or "id" not in response) and response.get("name") == call.get("name"):
            return responses.pop(index)
    stand_in: dict[str, Any] = {"name": call.get("name"), "response": {"output": _NO_OUTPUT}}
    if "id" in call:
        stand_in["id"] = call["id"]
    return {"functionResponse": stand_in}


def _repair_turns(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make the history acceptable to generateContent: it starts and ends with a user turn, and
    each function-call turn is followed by a user turn answering every call, in order (a call
    whose output is missing, interrupted turns, gets a stand-in output, as for Anthropic).
    Responses left over (their call is gone) become text."""
    repaired: list[dict[str, Any]] = []
    for index, content in enumerate(contents):
        if content["role"] == "model":
            repaired.append(content)
            calls = [part["functionCall"] for part in content["parts"] if "functionCall" in part]
            following = contents[index + 1] if index + 1 < len(contents) else None
            if calls and (following is None or following["role"] != "user"):
                repaired.append({"role": "user", "parts": [_answer_part(call, []) for call in calls]})
            continue
        previous = contents[index - 1] if index else None
        calls = [p["functionCall"] for p in previous["parts"] if "functionCall" in p] if previous else []
        responses = [part for part in content["parts"] if "functionResponse" in part]
        others = [part for part in content["parts"] if "functionResponse" not in part]
        answers = [_answer_part(call, responses) for call in calls]
        leftovers = [  # answers to calls not in the turn before
            {"text": f"Output of tool call {part['functionResponse'].get('name')}:\n"
                     f"{_dict(part['functionResponse'].get('response')).get('output')}"}
            for part in responses
        ]  # fmt: skip
        repaired.append({"role": "user", "parts": answers + leftovers + others})
    if not repaired or repaired[0]["role"] != "user":
        repaired.insert(0, {"role": "user", "parts": [{"text": "(The conversation so far follows.)"}]})
    if repaired[-1]["role"] != "user":
        # Gemini takes no final model turn to continue from; ask for the continuation instead.
        repaired.append({"role": "user", "parts": [{"text": "Continue."}]})
    return repaired


def _ensure_current_turn_signatures(contents: list[dict[str, Any]]) -> None:
    """Gemini 3 rejects a function-call step of the current turn without a signature on its first
    call. Steps we could not restore (another provider's calls) get the documented dummy."""
    last_user = -1
    for index, content in enumerate(contents):
        # A user turn is one with text; function responses (and images they carry) are steps.
        if content["role"] == "user" and any("text" in part for part in content["parts"]):
            last_user = index
    for content in contents[last_user + 1 :]:
        if content["role"] != "model":
            continue
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and not any("thoughtSignature" in part for part in calls):
            calls[0]["thoughtSignature"] = DUMMY_THOUGHT_SIGNATURE


def _tool_config(choice: Any, tools: ToolMap, declared: set[str]) -> dict[str, Any] | None:
    mode: str | None = None
    allowed: list[str] = []
    if choice == "none":
        mode = "NONE"
    elif choice == "required":
        mode = "ANY"
    elif isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            mode = "ANY"
            namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
            allowed = [tools.gemini_name(choice["name"], namespace)]
        elif kind == "allowed_tools" and choice.get("mode") == "required":
            # Gemini restricts names only in mode ANY; with "auto" the restriction is lost.
            mode = "ANY"
            allowed = [
                tools.gemini_name(t["name"], t.get("namespace") if isinstance(t.get("namespace"), str) else None)
                for t in choice.get("tools") or []
                if isinstance(t, dict) and isinstance(t.get("name"), str)
            ]
    if mode is None:
        return None  # AUTO is Gemini's default
    config: dict[str, Any] = {"mode": mode}
    allowed = [name for name in dict.fromkeys(allowed) if name in declared]
    if mode == "ANY" and allowed:
        config["allowedFunctionNames"] = allowed
    return {"functionCallingConfig": config}


def build_request(body: dict[str, Any], upstream_model: str, options: TranslateOptions) -> dict[str, Any]:
    """A Responses API request (as Codex sends it) → a generateContent request body."""
    tools, declarations, dropped = _collect_tools(body)
    options.dropped_tools.extend(dropped)

    history = _History(tools, options.provider_name, upstream_model)
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        history.system.append(body["instructions"])
    history.build(_input_items(body))
    history.contents = _repair_turns(history.contents)
    family, _ = _model_family(upstream_model)
    if not re.match(r"(?:.*/)?gemini-[12]\.", upstream_model.lower()):
        # Gemini 3 and names we cannot date (aliases) may insist; 1.x/2.x never do, so they
        # never see a stand-in signature.
        _ensure_current_turn_signatures(history.contents)

    request: dict[str, Any] = {"contents": history.contents}
    if history.system:
        request["systemInstruction"] = {"parts": [{"text": text} for text in history.system]}
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _tool_config(body.get("tool_choice"), tools, {d["name"] for d in declarations})
        if tool_config is not None:
            request["toolConfig"] = tool_config

    generation: dict[str, Any] = {}
    if isinstance(body.get("max_output_tokens"), int):
        generation["maxOutputTokens"] = body["max_output_tokens"]
    for source, target in (("temperature", "temperature"), ("top_p", "topP")):
        if isinstance(body.get(source), int | float) and not isinstance(body.get(source), bool):
            generation[target] = body[source]
    thinking = _thinking_config(body, upstream_model)
    if thinking is not None:
        generation["thinkingConfig"] = thinking
    # Chat clients' sampling parameters; Gemini's penalties are refused by several models, so
    # they are reported as dropped rather than sent.
    sampling = sampling_params(body, options, ("stop", "seed"))
    if stop_sequences(sampling.get("stop")):
        generation["stopSequences"] = stop_sequences(sampling["stop"])
    if isinstance(sampling.get("seed"), int) and not isinstance(sampling.get("seed"), bool):
        generation["seed"] = sampling["seed"]
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") in ("json_schema", "json_object"):
        if declarations and family != "level":
            # Gemini before 3 refuses JSON mode together with function calling; tools win.
            log.info("gemini: structured output dropped for %s because tools are present", upstream_model)
        else:
            generation["responseMimeType"] = "application/json"
            if text_format.get("type") == "json_schema" and isinstance(text_format.get("schema"), dict):
                generation["responseSchema"] = gemini_schema(text_format["schema"])
    if generation:
        request["generationConfig"] = generation
    return request


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """The URL to POST to (streaming: SSE via `alt=sse`) and the fixed headers."""
    root = base_url.rstrip("/")
    if not re.search(r"/v1(?:beta\d*|alpha\d*)?$", root):
        root += f"/{API_VERSION}"
    # A tuned model is addressed by its own resource name, a base model under models/.
    resource = upstream_model if upstream_model.startswith(("models/", "tunedModels/")) else f"models/{upstream_model}"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{root}/{resource}:{method}", {"content-type": "application/json"}


def auth_headers(secret: str) -> dict[str, str]:
    return {"x-goog-api-key": secret}


# ==================================================================================================
# generateContent answers → Responses
# ==================================================================================================

_NOTICES = {
    "SAFETY": "the answer was flagged by Gemini's safety filters",
    "RECITATION": "the answer was too close to material Gemini may not recite",
    "LANGUAGE": "the answer was in a language Gemini does not support",
    "BLOCKLIST": "the answer contained terms on Gemini's blocklist",
    "PROHIBITED_CONTENT": "the answer contained prohibited content",
    "SPII": "the answer contained sensitive personal information",
    "MALFORMED_FUNCTION_CALL": "the model produced a malformed tool call; ask it to try again",
    "UNEXPECTED_TOOL_CALL": "the model called a tool that was not offered; ask it to try again",
    "OTHER": "Gemini stopped for an unspecified reason",
}


def _usage(metadata: Any) -> Usage | None:
    if not isinstance(metadata, dict):
        return None

    def count(key: str) -> int:
        value = metadata.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    # promptTokenCount already includes the cached part; candidates exclude thoughts.
    thoughts = count("thoughtsTokenCount")
    return Usage(
        input_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        cached_tokens=count("cachedContentTokenCount"),
        output_tokens=count("candidatesTokenCount") + thoughts,
        reasoning_tokens=thoughts,
    )


def _usage_object(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _scrub(message: str) -> str:
    """No key ever goes back to the client, even if Google echoed one."""
    return _URL_KEY.sub(r"\1[redacted]", _GOOGLE_KEY.sub("[redacted]", message))


@dataclasses.dataclass(frozen=True)
class _Classified:
    status: int  # for the client
    type: str
    code: str  # OpenAI error code (for HTTP error bodies)
    stream_code: str  # code for a `response.failed` (only codes Codex acts on)
    message: str


def _classify(status: int, error: Mapping[str, Any]) -> _Classified:
    google_status = str(error.get("status") or "")
    raw_message = _str(error.get("message"))
    message = _scrub(raw_message) or f"HTTP {status}"
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    quota_ids = [str(v.get("quotaId") or "") for d in details for v in d.get("violations") or [] if isinstance(v, dict)]
    if (
        status in (401, 403)
        or google_status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        or reasons
        & {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED", "ACCESS_TOKEN_EXPIRED"}
        or "api key" in raw_message.lower()
    ):
        return _Classified(
            502,
            "server_error",
            "upstream_auth_error",
            "server_error",
            "The gateway's credentials for the Gemini provider were refused by Google "
            f"({google_status or status}); the gateway operator must fix the provider key.",
        )
    if status == 429 or google_status == "RESOURCE_EXHAUSTED":
        exhausted = (
            any("PerDay" in q for q in quota_ids) or "credits are depleted" in raw_message or "limit: 0" in raw_message
        )
        if exhausted:
            return _Classified(
                429,
                "insufficient_quota",
                "insufficient_quota",
                "insufficient_quota",
                f"Gemini quota exhausted: {message}",
            )
        return _Classified(
            429, "rate_limit_exceeded", "rate_limit_exceeded", "rate_limit_exceeded", f"Gemini rate limit: {message}"
        )
    if status == 400 and _CONTEXT_TOO_LONG.search(raw_message):
        return _Classified(
            400, "invalid_request_error", "context_length_exceeded", "context_length_exceeded", f"Gemini: {message}"
        )
    if status == 503 or google_status == "UNAVAILABLE" or "overloaded" in raw_message.lower():
        return _Classified(503, "server_error", "server_error", "server_error", f"Gemini is overloaded: {message}")
    if status == 404 or google_status == "NOT_FOUND":
        return _Classified(404, "invalid_request_error", "model_not_found", "server_error", f"Gemini: {message}")
    if 400 <= status < 500 and status != 408 and status != 499:
        return _Classified(
            status,
            "invalid_request_error",
            "invalid_request_error",
            "server_error",
            f"Gemini rejected the request: {message}",
        )
    if status == 504 or google_status == "DEADLINE_EXCEEDED":
        return _Classified(504, "server_error", "server_error", "server_error", f"Gemini timed out: {message}")
    if status == 500:
        return _Classified(500, "server_error", "server_error", "server_error", f"Gemini internal error: {message}")
    return _Classified(502, "server_error", "server_error", "server_error", f"Gemini error: {message}")


def _error_of(provider_body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(provider_body)
    except (ValueError, UnicodeDecodeError):
        return {"message": provider_body[:300].decode("utf-8", "replace")}
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # the non-SSE streaming endpoint wraps errors in an array
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def translate_error(status: int, provider_body: bytes) -> tuple[int, dict[str, Any]]:
    """A Gemini error answer → (status for the client, OpenAI-shaped error body)."""
    classified = _classify(status, _error_of(provider_body))
    return classified.status, {
        "error": {"message": classified.message, "type": classified.type, "code": classified.code, "param": None}
    }


def retry_after_seconds(provider_body: bytes) -> int | None:
    """The wait Gemini asks for (`RetryInfo.retryDelay`, e.g. "37s"), for a Retry-After header."""
    for detail in _error_of(provider_body).get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(1, math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


class StreamDecoder:
    """`streamGenerateContent?alt=sse` bytes → GenerateContentResponse chunks (or `{"error"}`)."""

    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events = []
        for _name, data in self._parser.feed(chunk):
            if not data.strip():
                continue
            try:
                event = json.loads(data)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                event = {"error": {"code": 502, "status": "INTERNAL", "message": "undecodable Gemini stream event"}}
            events.append(event)
        return events

    def close(self) -> list[dict[str, Any]]:
        """Events of a last block the server did not terminate with a blank line."""
        return self.feed(b"\n\n")


def decode_stream(decoder: StreamDecoder, chunk: bytes) -> list[dict[str, Any]]:
    return decoder.feed(chunk)


def _item_id(response_id: str, prefix: str, index: int) -> str:
    # Stable for the whole stream and unique across responses (response ids are unique).
    return f"{prefix}_{hashlib.sha256(f'{response_id}:{index}'.encode()).hexdigest()[:32]}"


class StreamTranslator:
    """Gemini stream chunks in, Responses stream events out (see the module docstring).

    A non-streamed answer is the same object as one big chunk, so `translate_response` runs it
    through here too.
    """

    def __init__(self, ctx: ResponseContext, tools: ToolMap | None = None, upstream_model: str | None = None) -> None:
        self.ctx = ctx
        self.tools = tools or ToolMap.codex_default()
        self.upstream_model = upstream_model or ctx.model
        self.usage: Usage | None = None
        self.outcome: str | None = None
        self._held = ""  # whitespace before a message opens: announced only with real text
        self._sequence = 0
        self._ids = 0
        self._started = False
        self._output: list[dict[str, Any]] = []  # finished items, by output_index
        self._open: dict[str, Any] | None = None  # the reasoning or message item being streamed
        self._anchors: list[dict[str, Any]] = []  # signatures not yet sealed into a reasoning item
        self._finish_reason: str | None = None
        self._finish_message: str | None = None
        self._blocked: str | None = None

    # -- plumbing ------------------------------------------------------------------------------
    def _event(self, event: dict[str, Any]) -> dict[str, Any]:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        return event

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return _item_id(self.ctx.response_id, prefix, self._ids)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": self.ctx.response_id,
            "object": "response",
            "created_at": self.ctx.created_at,
            "status": status,
            "model": self.ctx.model,
            "output": list(self._output),
            **echoed_fields(self.ctx),
            "usage": _usage_object(self.usage) if status != "in_progress" else None,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
        }
        response.update(extra)
        return response

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        started = self._response("in_progress")
        return [
            self._event({"type": "response.created", "response": started}),
            self._event({"type": "response.in_progress", "response": dict(started)}),
        ]

    @property
    def _index(self) -> int:
        return len(self._output)

    # -- items ---------------------------------------------------------------------------------
    def _open_reasoning(self) -> list[dict[str, Any]]:
        item_id = self._new_id("rs")
        self._open = {"kind": "reasoning", "id": item_id, "text": ""}
        return [
            self._event(
                {
                    "type": "response.output_item.added",
                    "output_index": self._index,
                    "item": {"type": "reasoning", "id": item_id, "summary": []},
                }
            ),
            self._event(
                {
                    "type": "response.reasoning_summary_part.added",
                    "item_id": item_id,
                    "output_index": self._index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }
            ),
        ]

    def _open_message(self) -> list[dict[str, Any]]:
        item_id = self._new_id("msg")
        self._open = {"kind": "message", "id": item_id, "text": ""}
        return [
            self._event(
                {
                    "type": "response.output_item.added",
                    "output_index": self._index,
                    "item": {
                        "type": "message",
                        "id": item_id,
                        "role": "assistant",
                        "status": "in_progress",
                        "content": [],
                    },
                }
            ),
            self._event(
                {
                    "type": "response.content_part.added",
                    "item_id": item_id,
                    "output_index": self._index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                }
            ),
        ]

    def _seal(self) -> str:
        sealed = seal_reasoning(self.ctx.provider_name, self.upstream_model, {"anchors": self._anchors})
        self._anchors = []
        return sealed

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        current, self._open, self._held = self._open, None, ""
        if current is None:
            return []
        item_id, text, index = current["id"], current["text"], self._index
        if current["kind"] == "reasoning":
            summary = {"type": "summary_text", "text": text}
            item = {"type": "reasoning", "id": item_id, "summary": [summary], "encrypted_content": self._seal()}
            events = [
                {
                    "type": "response.reasoning_summary_text.done",
                    "item_id": item_id,
                    "output_index": index,
                    "summary_index": 0,
                    "text": text,
                },
                {
                    "type": "response.reasoning_summary_part.done",
                    "item_id": item_id,
                    "output_index": index,
                    "summary_index": 0,
                    "part": summary,
                },
            ]
        else:
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": [part]}
            events = [
                {
                    "type": "response.output_text.done",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
                {
                    "type": "response.content_part.done",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
                },
            ]
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        self._output.append(item)
        return [self._event(event) for event in events]

    def _thought(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        text = part.get("text") if isinstance(part.get("text"), str) else ""
        events: list[dict[str, Any]] = []
        if text:
            if self._open is None or self._open["kind"] != "reasoning":
                events += self._close()
                events += self._open_reasoning()
            assert self._open is not None
            self._open["text"] += text
            events.append(
                self._event(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        "item_id": self._open["id"],
                        "output_index": self._index,
                        "summary_index": 0,
                        "delta": text,
                    }
                )
            )
        if isinstance(part.get("thoughtSignature"), str):
            self._anchors.append({"k": "thought", "text": text, "sig": part["thoughtSignature"]})
        return events

    def _text(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        text = part["text"] if isinstance(part.get("text"), str) else ""
        events: list[dict[str, Any]] = []
        prefix = ""
        if text and (self._open is None or self._open["kind"] != "message"):
            if not text.strip():
                # A whitespace-only message would be replayed by Codex and refused ("empty text
                # parameter"): hold it until real text comes; a signature on it is kept as is.
                self._held += text
                if isinstance(part.get("thoughtSignature"), str):
                    self._anchors.append(
                        {"k": "text", "item": None, "at": 0, "len": 0, "text": text, "sig": part["thoughtSignature"]}
                    )
                return events
            prefix = self._held
            events += self._close()
            events += self._open_message()
        message = self._open if self._open is not None and self._open["kind"] == "message" else None
        if isinstance(part.get("thoughtSignature"), str):
            self._anchors.append(
                {
                    "k": "text",
                    "item": message["id"] if message else None,
                    "at": len(message["text"]) + len(prefix) if message else 0,
                    "len": len(text),
                    "sig": part["thoughtSignature"],
                }
            )
        text = prefix + text
        if text and message is not None:
            message["text"] += text
            events.append(
                self._event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": message["id"],
                        "output_index": self._index,
                        "content_index": 0,
                        "delta": text,
                        "logprobs": [],
                    }
                )
            )
        return events

    def _function_call(self, part: Mapping[str, Any]) -> list[dict[str, Any]]:
        call = _dict(part.get("functionCall"))
        events = self._close()
        target = self.tools.resolve(str(call.get("name") or ""))
        args = _dict(call.get("args"))
        gemini_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
        call_id = gemini_id or self._new_id("call")
        if gemini_id is not None or isinstance(part.get("thoughtSignature"), str):
            anchor: dict[str, Any] = {"k": "call", "call_id": call_id, "sig": part.get("thoughtSignature")}
            if gemini_id is not None:
                anchor["id"] = True
            self._anchors.append(anchor)
        index = self._index
        item: dict[str, Any]
        if target.kind == "custom":
            value = args.get("input")
            if not isinstance(value, str):
                strings = [v for v in args.values() if isinstance(v, str)]
                value = strings[0] if len(args) == 1 and strings else json.dumps(args, ensure_ascii=False)
            value = without_lone_surrogates(value)  # as every family decodes custom input
            item = {"type": "custom_tool_call", "id": self._new_id("ctc"), "call_id": call_id, "name": target.name}
            if target.namespace:
                item["namespace"] = target.namespace
            events += [
                self._event(
                    {"type": "response.output_item.added", "output_index": index, "item": dict(item, input="")}
                ),
                self._event(
                    {
                        "type": "response.custom_tool_call_input.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "delta": value,
                    }
                ),
                self._event(
                    {
                        "type": "response.custom_tool_call_input.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "input": value,
                    }
                ),
            ]
            item["input"] = value
        else:
            arguments = json.dumps(args, ensure_ascii=False)
            item = {"type": "function_call", "id": self._new_id("fc"), "call_id": call_id, "name": target.name}
            if target.namespace:
                item["namespace"] = target.namespace
            events += [
                self._event(
                    {
                        "type": "response.output_item.added",
                        "output_index": index,
                        "item": dict(item, arguments="", status="in_progress"),
                    }
                ),
                self._event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": index,
                        "delta": arguments,
                    }
                ),
                self._event(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "arguments": arguments,
                    }
                ),
            ]
            item["arguments"] = arguments
            item["status"] = "completed"
        events.append(self._event({"type": "response.output_item.done", "output_index": index, "item": item}))
        self._output.append(item)
        return events

    def _notice(self, text: str) -> list[dict[str, Any]]:
        events = self._open_message()
        assert self._open is not None
        self._open["text"] = text
        events.append(
            self._event(
                {
                    "type": "response.output_text.delta",
                    "item_id": self._open["id"],
                    "output_index": self._index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            )
        )
        return events + self._close()

    def _signatures_item(self) -> list[dict[str, Any]]:
        """Signatures that arrived after the last reasoning item closed, in a reasoning item of
        their own (Codex replays it with the turn; the replay matches anchors, not positions)."""
        if not self._anchors:
            return []
        item = {"type": "reasoning", "id": self._new_id("rs"), "summary": [], "encrypted_content": self._seal()}
        index = self._index
        self._output.append(item)
        return [
            self._event({"type": "response.output_item.added", "output_index": index, "item": dict(item)}),
            self._event({"type": "response.output_item.done", "output_index": index, "item": item}),
        ]

    def _fail(self, code: str, message: str) -> list[dict[str, Any]]:
        # Items still open are not finished: Codex retries a failed turn from the start.
        self._open = None
        self.outcome = "failed"
        response = self._response("failed", error={"code": code, "message": message})
        return [self._event({"type": "response.failed", "response": response})]

    # -- interface -----------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._start()
        if self.outcome is not None:
            return events
        error = event.get("error")
        if isinstance(error, dict):
            code = error["code"] if isinstance(error.get("code"), int) else 500
            classified = _classify(code, error)
            return events + self._fail(classified.stream_code, classified.message)
        self.usage = _usage(event.get("usageMetadata")) or self.usage
        feedback = event.get("promptFeedback")
        if isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str):
            self._blocked = feedback["blockReason"]
        candidates = event.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            return events
        content = _dict(candidate.get("content"))
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if part.get("thought") is True:
                events += self._thought(part)
            elif isinstance(part.get("functionCall"), dict):
                events += self._function_call(part)
            elif "text" in part:
                events += self._text(part)
            else:
                # executableCode, inlineData output, ...: nothing Codex can use
                log.debug("gemini: response part %s not translated", sorted(part))
        if isinstance(candidate.get("finishReason"), str):
            self._finish_reason = candidate["finishReason"]
            if isinstance(candidate.get("finishMessage"), str):
                self._finish_message = _scrub(candidate["finishMessage"])
        return events

    def finish(self) -> list[dict[str, Any]]:
        events = self._start()
        if self.outcome is not None:
            return events
        reason = self._finish_reason
        if reason is None and self._blocked is None:
            return events + self._fail(
                "server_error",
                "The Gemini stream ended before its final chunk (no finishReason); the answer is cut off.",
            )
        incomplete = reason == "MAX_TOKENS"
        events += self._close("incomplete" if incomplete else "completed")
        if self._blocked is not None and reason is None:
            events += self._notice(f"[Gemini refused the prompt: block reason {self._blocked}.]")
        elif reason not in (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"):
            # A refusal-ish stop is a finished turn, not a failure: Codex would retry a failure
            # and get the same refusal, so it shows the reason and lets the user go on.
            explanation = _NOTICES.get(str(reason), "Gemini stopped early")
            detail = f" ({self._finish_message})" if self._finish_message else ""
            events += self._notice(f"[Gemini stopped this answer, finish reason {reason}: {explanation}{detail}.]")
        events += self._signatures_item()
        if incomplete:
            self.outcome = "incomplete"
            response = self._response("incomplete", incomplete_details={"reason": "max_output_tokens"})
            return events + [self._event({"type": "response.incomplete", "response": response})]
        self.outcome = "completed"
        return events + [self._event({"type": "response.completed", "response": self._response("completed")})]


def translate_response(
    provider_body: dict[str, Any],
    ctx: ResponseContext,
    tools: ToolMap | None = None,
    upstream_model: str | None = None,
) -> dict[str, Any]:
    """A non-streamed generateContent answer → a Responses API `response` object."""
    translator = StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    events = translator.feed(provider_body) + translator.finish()
    response: dict[str, Any] = events[-1]["response"]
    return response
