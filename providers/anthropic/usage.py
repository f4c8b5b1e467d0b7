"""Claude's token counts (`message_start` and the cumulative `message_delta` usage) as the
gateway's normalised `Usage`."""

from __future__ import annotations

import dataclasses
from typing import Any

from codexgate.usage import Usage


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclasses.dataclass
class UsageCounter:
    input_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    seen: bool = False

    def update(self, usage: Any) -> None:
        """Take every count the event carries (message_delta counts are cumulative)."""
        if not isinstance(usage, dict):
            return
        self.seen = True
        for key, attribute in (
            ("input_tokens", "input_tokens"),
            ("cache_read_input_tokens", "cache_read"),
            ("cache_creation_input_tokens", "cache_creation"),
            ("output_tokens", "output_tokens"),
        ):
            if isinstance(usage.get(key), int):
                setattr(self, attribute, _count(usage[key]))
        details = usage.get("output_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int):
            self.thinking_tokens = _count(details["thinking_tokens"])

    def normalised(self) -> Usage:
        # Anthropic's input_tokens leaves out cache reads and writes; Codex's count includes them.
        return Usage(
            input_tokens=self.input_tokens + self.cache_read + self.cache_creation,
            cached_tokens=self.cache_read,
            output_tokens=self.output_tokens,
            reasoning_tokens=min(self.thinking_tokens, self.output_tokens),
        )
