"""Responses message content as Anthropic content blocks (text, images, documents, tool results)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.anthropic.values import JSON, as_str

_TOOL_ID_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_DATA_URL = re.compile(r"^data:([^;,]+)?((?:;[^;,]+)*?)(;base64)?,(.*)$", re.DOTALL)
_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_EMPTY_TOOL_OUTPUT = "(no output)"


# --------------------------------------------------------------------------------------------
# Request: content


def text_block(text: str) -> JSON:
    return {"type": "text", "text": text}


def _parse_data_url(url: str) -> tuple[str, str, bool] | None:
    """(media type, payload, is_base64) of a data: URL."""
    match = _DATA_URL.match(url)
    if not match:
        return None
    return (match.group(1) or "text/plain").lower(), match.group(4), bool(match.group(3))


def _image_block(part: Mapping[str, Any]) -> JSON:
    url = part.get("image_url")
    if isinstance(url, str) and url.startswith("data:"):
        parsed = _parse_data_url(url)
        if parsed and parsed[2] and parsed[0] in _IMAGE_MEDIA_TYPES:
            return {"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}
        media = parsed[0] if parsed else "unknown"
        return text_block(f"[an image was attached here; its format ({media}) cannot be passed to this model]")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return text_block("[an image was attached here by file id; it cannot be passed to this model]")


def _file_block(part: Mapping[str, Any]) -> JSON:
    filename = as_str(part.get("filename")) or None
    data = part.get("file_data")
    if isinstance(data, str) and data:
        parsed = _parse_data_url(data) if data.startswith("data:") else ("application/pdf", data, True)
        if parsed and parsed[0] == "application/pdf" and parsed[2]:
            block: JSON = {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": parsed[1]},
            }
            if filename:
                block["title"] = filename
            return block
        if parsed and parsed[0].startswith("text/"):
            try:
                text = base64.b64decode(parsed[1]).decode("utf-8") if parsed[2] else parsed[1]
            except (binascii.Error, UnicodeDecodeError):
                text = ""
            if text:
                block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
                if filename:
                    block["title"] = filename
                return block
    url = part.get("file_url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return {"type": "document", "source": {"type": "url", "url": url}}
    return text_block(
        f"[a file{f' ({filename})' if filename else ''} was attached here; it cannot be passed to this model]"
    )


def content_blocks(content: Any) -> list[JSON]:
    """Responses message content (string or parts) → Anthropic user/assistant blocks, no empty text."""
    # Anthropic refuses a text block that is empty or only whitespace ("text content blocks must
    # contain non-whitespace text"), so such parts are left out.
    if isinstance(content, str):
        return [text_block(content)] if content.strip() else []
    blocks: list[JSON] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            if isinstance(part.get("text"), str) and part["text"].strip():
                blocks.append(text_block(part["text"]))
        elif kind == "refusal":
            if isinstance(part.get("refusal"), str) and part["refusal"].strip():
                blocks.append(text_block(part["refusal"]))
        elif kind == "input_image":
            blocks.append(_image_block(part))
        elif kind == "input_file":
            blocks.append(_file_block(part))
    return blocks


def tool_result_content(output: Any) -> str | list[JSON]:
    if isinstance(output, str):
        return output or _EMPTY_TOOL_OUTPUT
    blocks = [block for block in content_blocks(output) if block["type"] in ("text", "image")]
    if not blocks and output is not None and not isinstance(output, list):
        return json.dumps(output)
    return blocks or _EMPTY_TOOL_OUTPUT


def tool_use_id(call_id: Any) -> str:
    cleaned = _TOOL_ID_BAD_CHARS.sub("_", call_id) if isinstance(call_id, str) else ""
    return cleaned or "call_unknown"


def tool_use_input(arguments: Any) -> JSON:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        # Claude's tool input must be an object; keep what the model wrote so the history stays honest.
        return {"_unparsed_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def replay_blocks(payload: Mapping[str, Any] | None) -> list[JSON]:
    """The thinking blocks inside one of our envelopes, exactly as Claude returned them."""
    blocks: list[JSON] = []
    for block in (payload or {}).get("blocks") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str) and block.get("signature"):
            blocks.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return blocks
