"""JSON Schema → the Gemini API's OpenAPI-subset `Schema` (tool parameters, structured output)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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
