"""The string inside streamed tool-call JSON, decoded as it arrives (shared by every family).

A custom tool (Codex's apply_patch) is offered to non-OpenAI models as a function taking one
string, `{"input": "..."}`. The model writes that JSON a few characters at a time; Codex shows the
decoded input while it is written (`response.custom_tool_call_input.delta`) and then gets the
whole value (`...done`). Both must agree, for any split of the JSON text into pieces.

Lone UTF-16 surrogates (`"\\ud83d"` without its pair, a model cut off mid-emoji) become U+FFFD,
streamed and whole alike: Python would keep them as unpaired code points, which the gateway's
JSON encoder writes back as `\\ud83d` escapes that strict clients (Codex's serde_json) refuse.
"""

from __future__ import annotations

import json
import re

__all__ = ["InputStringStream", "custom_input", "decode_input", "without_lone_surrogates"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_OPENING = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_OPENING_TEXT = '{"input":"'
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_LOW_ESCAPE = re.compile(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def without_lone_surrogates(text: str) -> str:
    """`text` with every unpaired surrogate code point replaced by U+FFFD (paired ones are already
    single characters once decoded by `json.loads`)."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def decode_input(arguments: str) -> str | None:
    """The `input` string of whole tool-call JSON `{"input": "..."}`, None for another shape."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else None
    except ValueError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return without_lone_surrogates(parsed["input"])
    return None


def custom_input(arguments: str) -> str:
    """What a custom tool receives, from the whole JSON a model wrote for its one-string function:
    `input`, else the only string value (models sometimes rename the parameter), else a bare JSON
    string, else the text as it came (truncated or not JSON at all: hand over what there is)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        if isinstance(parsed.get("input"), str):
            return without_lone_surrogates(parsed["input"])
        strings = [value for value in parsed.values() if isinstance(value, str)]
        if len(strings) == 1:
            return without_lone_surrogates(strings[0])
    return without_lone_surrogates(parsed) if isinstance(parsed, str) else arguments


class InputStringStream:
    """Feed the JSON text in pieces; each `feed` returns the newly decoded part of `input`.

    States: "prefix" (before `{"input":"`), "string", "end" (closing quote seen), "off" (the JSON
    has another shape, or an invalid escape: nothing more is streamed, the whole value decides).
    """

    __slots__ = ("_pos", "_raw", "emitted", "state")

    def __init__(self) -> None:
        self._raw = ""
        self._pos = 0
        self.state = "prefix"
        self.emitted = ""  # everything returned so far

    def feed(self, piece: str) -> str:
        if self.state in ("end", "off"):
            return ""
        self._raw += piece
        if self.state == "prefix":
            match = _OPENING.match(self._raw)
            if match is None:
                if not _OPENING_TEXT.startswith(re.sub(r"\s+", "", self._raw)):
                    self.state = "off"
                return ""
            self.state, self._pos = "string", match.end()
        out: list[str] = []
        raw, pos = self._raw, self._pos
        while pos < len(raw):
            char = raw[pos]
            if char == '"':
                self.state = "end"
                pos += 1
                break
            if char != "\\":
                # Plain characters up to the next quote or backslash in one step.
                stop = pos + 1
                while stop < len(raw) and raw[stop] not in '"\\':
                    stop += 1
                out.append(raw[pos:stop])
                pos = stop
                continue
            decoded, used = self._escape(raw, pos)
            if used == 0:
                break  # the escape continues in the next piece
            if used < 0:
                self.state = "off"
                break
            out.append(decoded)
            pos += used
        self._pos = pos
        text = without_lone_surrogates("".join(out))
        self.emitted += text
        return text

    @staticmethod
    def _escape(raw: str, at: int) -> tuple[str, int]:
        """(decoded text, characters used) of the escape at `at`; used 0: incomplete, -1: invalid."""
        if at + 1 >= len(raw):
            return "", 0
        letter = raw[at + 1]
        if letter != "u":
            return (_ESCAPES[letter], 2) if letter in _ESCAPES else ("", -1)
        if at + 6 > len(raw):
            return "", 0
        if not _HEX4.fullmatch(raw, at + 2, at + 6):
            return "", -1
        code = int(raw[at + 2 : at + 6], 16)
        if 0xD800 <= code <= 0xDBFF:
            if at + 12 > len(raw):
                # Wait for what follows unless it already cannot be the low half's escape.
                rest = raw[at + 6 :]
                if rest and not "\\u".startswith(rest[:2]):
                    return "\ufffd", 6
                if len(rest) > 2 and rest[2] not in "dD":
                    return "\ufffd", 6
                return "", 0
            if _LOW_ESCAPE.fullmatch(raw, at + 6, at + 12):
                low = int(raw[at + 8 : at + 12], 16)
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
            return "\ufffd", 6
        if 0xDC00 <= code <= 0xDFFF:
            return "\ufffd", 6
        return chr(code), 6
