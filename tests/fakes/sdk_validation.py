"""Validation against the official SDK types, including keys the SDK models would silently accept."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

_STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def assert_no_extras(model: Any, where: str = "$") -> None:
    """Fail on any key the SDK model did not know (pydantic keeps those in `model_extra`)."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{where} ({type(model).__name__}): unknown keys {sorted(model.model_extra)}"
        for name in type(model).model_fields:
            assert_no_extras(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, list | tuple):
        for index, item in enumerate(model):
            assert_no_extras(item, f"{where}[{index}]")
    elif isinstance(model, dict):
        for key, value in model.items():
            assert_no_extras(value, f"{where}.{key}")


def valid_response(data: dict[str, Any]) -> Response:
    """A Responses API response object, strictly: SDK-valid and without unknown keys."""
    parsed = Response.model_validate(data)
    assert_no_extras(parsed)
    return parsed


def valid_stream_event(data: dict[str, Any]) -> Any:
    """One Responses API stream event, strictly."""
    parsed = _STREAM_EVENT.validate_python(data)
    assert_no_extras(parsed)
    return parsed
