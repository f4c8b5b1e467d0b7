"""Small readers of decoded JSON values shared by the Anthropic modules."""

from __future__ import annotations

import uuid
from typing import Any

JSON = dict[str, Any]


def _dict(value: Any) -> JSON:
    return value if isinstance(value, dict) else {}


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
