"""Codex's message content → Gemini parts: text, images and files (inline data or URIs)."""

from __future__ import annotations

import base64
import mimetypes
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)


def text_of(content: Any, kinds: Iterable[str] = ("input_text", "output_text", "text", "refusal")) -> str:
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


def user_parts(content: Any) -> list[dict[str, Any]]:
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
