"""Small readers of decoded JSON values shared by the Anthropic modules."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def as_dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def as_str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default
