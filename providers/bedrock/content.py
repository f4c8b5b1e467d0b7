"""Responses message content → Converse content blocks (text, images, documents, tool results)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
_DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_DATA_URL = re.compile(r"data:([^;,]+)?(?:;[^,]*)?;base64,(.*)", re.DOTALL)


def _image_block(url: str) -> dict[str, Any]:
    """An image content block, or a text block saying why the image could not be passed.

    Converse takes images only as inline bytes or from S3; fetching an http(s) URL would be I/O,
    which a translator must not do.
    """
    match = _DATA_URL.fullmatch(url.strip())
    if match:
        mime = (match.group(1) or "").lower()
        fmt = _IMAGE_FORMATS.get(mime.removeprefix("image/")) if mime.startswith("image/") else None
        data = re.sub(r"\s+", "", match.group(2))
        if fmt:
            return {"image": {"format": fmt, "source": {"bytes": data}}}
        return {"text": f"[image omitted: Bedrock does not accept the image type {mime or 'unknown'}]"}
    if url.startswith("s3://"):
        extension = url.rsplit(".", 1)[-1].lower() if "." in url.rsplit("/", 1)[-1] else ""
        fmt = _IMAGE_FORMATS.get(extension)
        if fmt:
            return {"image": {"format": fmt, "source": {"s3Location": {"uri": url}}}}
    shown = url if len(url) <= 200 else url[:200] + "..."
    return {"text": f"[image at {shown} omitted: Bedrock accepts only inline (data URL) or S3 images]"}


def _file_block(part: Mapping[str, Any]) -> dict[str, Any]:
    filename = str(part.get("filename") or "document")
    data = part.get("file_data")
    match = _DATA_URL.fullmatch(data.strip()) if isinstance(data, str) else None
    if match:
        mime = (match.group(1) or "").lower()
        fmt = _DOCUMENT_FORMATS.get(mime)
        if fmt is None and "." in filename:
            extension = filename.rsplit(".", 1)[-1].lower()
            fmt = extension if extension in _DOCUMENT_FORMATS.values() else None
        if fmt:
            # Bedrock's document name allows letters, digits, single spaces, - ( ) [ ] only.
            stem = filename.rsplit(".", 1)[0] if "." in filename else filename
            name = re.sub(r"\s+", " ", re.sub(r"[^A-Za-z0-9\-()\[\] ]", "-", stem)).strip() or "document"
            return {
                "document": {"format": fmt, "name": name[:200], "source": {"bytes": re.sub(r"\s+", "", match.group(2))}}
            }
    return {"text": f"[file {filename} omitted: Bedrock accepts only inline documents of supported types]"}


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """Responses message content → Converse content blocks (text, image, document). Blank text is
    left out: Bedrock refuses it ("text content blocks must contain non-whitespace text")."""
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            if part["text"].strip():
                blocks.append({"text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str) and part["refusal"].strip():
            blocks.append({"text": part["refusal"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                blocks.append(_image_block(url))
            else:
                blocks.append({"text": "[image omitted: uploaded files are not available to Bedrock]"})
        elif kind == "input_file":
            blocks.append(_file_block(part))
    return blocks


def tool_result_content(output: Any) -> list[dict[str, Any]]:
    if isinstance(output, list):
        blocks = [block for block in content_blocks(output) if "text" in block or "image" in block]
    else:
        text = output if isinstance(output, str) else json.dumps(output)
        blocks = [{"text": text}] if text else []
    # Bedrock rejects blank text blocks; an empty result still has to answer its toolUse.
    return blocks or [{"text": "(no output)"}]
