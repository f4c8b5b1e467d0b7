"""Responses input items → the Chat Completions `messages` list, repaired for strict hosts."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from codexgate.providers.base import open_reasoning
from codexgate.providers.chat.presets import Preset
from codexgate.providers.responses.tools import ToolNameMap


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text", "refusal")
        )
    return ""


def _image_part(part: dict[str, Any]) -> dict[str, Any] | None:
    url = part.get("image_url")
    if isinstance(url, dict):  # chat-shaped already
        url = url.get("url")
    if not isinstance(url, str) or not url:
        return None  # file_id images live in OpenAI's file store: nothing to send elsewhere
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail in ("auto", "low", "high"):
        image["detail"] = detail
    elif detail == "original":
        image["detail"] = "high"
    return {"type": "image_url", "image_url": image}


def _user_content(content: Any) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """(chat content, image parts) of a Responses message content."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = str(part.get("text") or "")
            if not text.strip():
                continue
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            image = _image_part(part)
            if image is None:
                note = "[image omitted: not available to this provider]"
                texts.append(note)
                parts.append({"type": "text", "text": note})
            else:
                images.append(image)
                parts.append(image)
        elif kind == "input_file":
            note = f"[file {part.get('filename') or ''} omitted: files are not supported by this provider]"
            texts.append(note)
            parts.append({"type": "text", "text": note})
    if not images:
        # Plain strings are what every host accepts; some reject arrays of text parts.
        return "\n".join(texts), []
    return parts, images


def _output_text(output: Any) -> tuple[str, list[dict[str, Any]]]:
    """(text, image parts) of a function_call_output / custom_tool_call_output `output`."""
    if isinstance(output, str):
        return output, []
    if isinstance(output, list):
        texts: list[str] = []
        images: list[dict[str, Any]] = []
        for part in output:
            if not isinstance(part, dict):
                continue
            if part.get("type") in ("input_text", "output_text", "text"):
                texts.append(str(part.get("text") or ""))
            elif part.get("type") == "input_image":
                image = _image_part(part)
                if image is not None:
                    images.append(image)
                    texts.append("[image attached in the next message]")
        return "\n".join(texts), images
    return json.dumps(output), []


def _chat_call_id(call_id: str, alnum9: bool) -> str:
    if not alnum9 or re.fullmatch(r"[A-Za-z0-9]{9}", call_id):
        return call_id
    # Deterministic, so a call and its output still pair up.
    digest = base64.b32encode(hashlib.sha256(call_id.encode()).digest()).decode().lower()
    return digest[:9]


class ChatMessages:
    """Builds the chat `messages` list from Responses input items, in order."""

    def __init__(self, preset: Preset, tools: ToolNameMap, provider_name: str, model: str) -> None:
        self.preset = preset
        self.tools = tools
        self.provider_name = provider_name
        self.model = model
        self.system: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self._assistant: dict[str, Any] | None = None  # the assistant message being assembled
        self._pending_images: list[dict[str, Any]] = []  # images from tool outputs
        self._reasoning_text: list[str] = []
        self._reasoning_details: list[Any] = []
        self._call_names: dict[str, str] = {}

    def _close_assistant(self) -> None:
        self._assistant = None

    def _flush_images(self) -> None:
        if self._pending_images:
            images, self._pending_images = self._pending_images, []
            text = {"type": "text", "text": "Images returned by the tool calls above:"}
            self.messages.append({"role": "user", "content": [text, *images]})

    def _append(self, message: dict[str, Any]) -> None:
        if message.get("role") != "tool":
            self._flush_images()
        self.messages.append(message)

    def _assistant_message(self) -> dict[str, Any]:
        if self._assistant is None:
            self._flush_images()
            self._assistant = {"role": "assistant", "content": None}
            self.messages.append(self._assistant)
            self._attach_reasoning(self._assistant)
        return self._assistant

    def _attach_reasoning(self, message: dict[str, Any]) -> None:
        replay = self.preset.reasoning_replay
        if replay == "reasoning_details" and self._reasoning_details:
            message["reasoning_details"] = self._reasoning_details
        elif replay == "reasoning_content" and self._reasoning_text:
            # Only tool-calling turns need it back (DeepSeek ignores it elsewhere); it is moved to
            # the message once that message has tool calls, see `_finish_reasoning`.
            message["__reasoning_content"] = "".join(self._reasoning_text)
        self._reasoning_text = []
        self._reasoning_details = []

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        role = item.get("role")
        if kind in (None, "message") and role in ("system", "developer"):
            text = _text_of(item.get("content"))
            if text:
                self.system.append(text)
        elif kind in (None, "message") and role == "user":
            content, _ = _user_content(item.get("content"))
            if isinstance(content, str) and not content.strip():
                return  # blank text: hosts refuse it (or take it as a turn with nothing to say)
            self._close_assistant()
            self._append({"role": "user", "content": content})
        elif kind in (None, "message") and role == "assistant":
            text = _text_of(item.get("content"))
            if not text.strip():
                return  # e.g. the "\n\n" Claude sends before a tool call: nothing to replay
            message = self._assistant
            if message is not None and message.get("tool_calls"):
                self._close_assistant()  # text after calls is a new turn
            message = self._assistant_message()
            message["content"] = (message.get("content") or "") + text
        elif kind in ("function_call", "custom_tool_call"):
            self._tool_call(item)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._tool_output(item)
        elif kind == "reasoning":
            self._close_assistant()
            self._reasoning(item)
        # Everything else (additional_tools, web_search_call, compaction, ...) has no chat form.

    def _reasoning(self, item: dict[str, Any]) -> None:
        payload = open_reasoning(item.get("encrypted_content"), self.provider_name, self.model)
        if payload is None:
            return  # made for another provider/model, or an OpenAI blob: never forwarded
        text = payload.get("reasoning_content")
        if isinstance(text, str):
            self._reasoning_text.append(text)
        details = payload.get("reasoning_details")
        if isinstance(details, list):
            self._reasoning_details.extend(details)

    def _tool_call(self, item: dict[str, Any]) -> None:
        call_id = str(item.get("call_id") or item.get("id") or "")
        name = str(item.get("name") or "")
        namespace = item.get("namespace") if isinstance(item.get("namespace"), str) else None
        if item.get("type") == "custom_tool_call":
            arguments = json.dumps({"input": str(item.get("input") or "")})
        else:
            raw = item.get("arguments")
            arguments = raw if isinstance(raw, str) else json.dumps(raw or {})
        self._call_names[call_id] = name
        if not self.preset.tools:
            self._close_assistant()
            self._append({"role": "assistant", "content": f"[I called the tool {name} with: {arguments}]"})
            return
        message = self._assistant_message()
        message.setdefault("tool_calls", []).append(
            {
                "id": _chat_call_id(call_id, self.preset.alnum9_tool_call_ids),
                "type": "function",
                "function": {"name": self.tools.wire_name(name, namespace), "arguments": arguments},
            }
        )

    def _tool_output(self, item: dict[str, Any]) -> None:
        self._close_assistant()
        call_id = str(item.get("call_id") or "")
        text, images = _output_text(item.get("output"))
        if not self.preset.tools:
            name = self._call_names.get(call_id, "tool")
            self._append({"role": "user", "content": f"[Result of the tool {name}]\n{text}"})
            if images:
                self._append({"role": "user", "content": images})
            return
        self.messages.append(
            {"role": "tool", "tool_call_id": _chat_call_id(call_id, self.preset.alnum9_tool_call_ids), "content": text}
        )
        self._pending_images.extend(images)

    def result(self, developer_role: bool) -> list[dict[str, Any]]:
        self._flush_images()
        messages = _repair_tool_pairs(self.messages)
        for message in messages:
            reasoning = message.pop("__reasoning_content", None)
            if reasoning is not None and message.get("tool_calls"):
                message["reasoning_content"] = reasoning
        if self.preset.merge_consecutive_roles:
            messages = _merge_roles(messages)
        if self.system:
            messages.insert(
                0, {"role": "developer" if developer_role else "system", "content": "\n\n".join(self.system)}
            )
        return messages


def _repair_tool_pairs(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every assistant tool call answered by a tool message right after it, and no tool message
    without its call: hosts answer 400 otherwise (Codex history can hold interrupted turns)."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []

    def settle() -> None:
        for call_id in pending:
            out.append({"role": "tool", "tool_call_id": call_id, "content": "(no output was recorded for this call)"})
        pending.clear()

    for message in messages:
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if call_id in pending:
                pending.remove(call_id)
                out.append(message)
            else:
                out.append({"role": "user", "content": f"[Output of an earlier tool call]\n{message.get('content')}"})
            continue
        settle()
        out.append(message)
        if message.get("role") == "assistant":
            pending.extend(call["id"] for call in message.get("tool_calls") or [])
    settle()
    return out


def _merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        previous = out[-1] if out else None
        if (
            previous is not None
            and previous["role"] == message["role"]
            and message["role"] in ("user", "assistant")
            and not previous.get("tool_calls")
            and not message.get("tool_calls")
        ):
            merged = dict(previous)
            first, second = previous.get("content"), message.get("content")
            if isinstance(first, str) and isinstance(second, str):
                merged["content"] = f"{first}\n\n{second}"
            else:
                merged["content"] = _as_parts(first) + _as_parts(second)
            out[-1] = merged
        else:
            out.append(message)
    return out


def _as_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return list(content)
    return [{"type": "text", "text": str(content or "")}]
