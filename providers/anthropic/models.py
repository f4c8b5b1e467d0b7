"""Claude model versions: which thinking mode, effort and beta header a model takes."""

from __future__ import annotations

import re

ANTHROPIC_VERSION = "2023-06-01"
# Lets Claude 4 (before 4.6) think again after each tool result; 4.6+ does so with adaptive thinking.
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"

# reasoning.effort -> thinking budget for models that take `thinking.type=enabled`.
BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 28672}
# reasoning.effort -> output_config.effort for models that take adaptive thinking.
_ADAPTIVE_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
# Output room for thinking, added to the default max_tokens under adaptive thinking.
ADAPTIVE_ALLOWANCE = {"low": 4096, "medium": 8192, "high": 24576, "xhigh": 24576}
# The lowest output ceiling among budget-thinking models (Opus 4 / 4.1): a computed default never
# goes above it, so a request is not refused for max_tokens alone.
BUDGET_MODEL_MAX_TOKENS = 32000
MIN_BUDGET = 1024

# --------------------------------------------------------------------------------------------
# Models


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude model id, wherever the numbers sit.

    "claude-sonnet-4-6" → (4, 6), "claude-3-7-sonnet-20250219" → (3, 7),
    "claude-opus-4-20250514" → (4, 0), "anthropic.claude-haiku-4-5-20251001-v1:0" → (4, 5).
    """
    lowered = model.lower()
    start = lowered.find("claude")
    tokens = re.split(r"[-_.@:/]", lowered[start:] if start >= 0 else lowered)
    numbers: list[int] = []
    for token in tokens:
        if token.isdigit() and len(token) <= 2:
            numbers.append(int(token))
            if len(numbers) == 2:
                break
        elif numbers:
            break  # a date, a family name or a version suffix ends the version
    if not numbers:
        return None
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def uses_adaptive_thinking(model: str) -> bool:
    version = claude_version(model)
    if version is None:
        return any(family in model.lower() for family in ("fable", "mythos"))
    return version >= (4, 6)


def adaptive_effort(effort: str, model: str) -> str:
    mapped = _ADAPTIVE_EFFORT.get(effort, "high")
    version = claude_version(model)
    if mapped == "xhigh" and (version is None or version < (4, 7)):
        return "high"  # xhigh arrived with Opus 4.7; earlier adaptive models refuse it
    return mapped


def wants_interleaved_beta(model: str) -> bool:
    version = claude_version(model)
    return version is not None and version[0] == 4 and version < (4, 6)
