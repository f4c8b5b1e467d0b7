"""What differs between the models Bedrock serves: thinking / reasoning settings and prompt caching."""

from __future__ import annotations

import re
from typing import Any

# Claude on Bedrock: extended thinking exists from Claude 3.7 on; prompt caching (cachePoint) from
# 3.5 Haiku / 3.7 Sonnet on. Older Claude models reject both, so the model id decides.
_CLAUDE_THINKING = re.compile(r"claude-(?:3-7-|(?:opus|sonnet|haiku)-[4-9])")
_CLAUDE_CACHING = re.compile(r"claude-(?:3-7-|3-5-haiku|(?:opus|sonnet|haiku)-[4-9])")
# reasoning.effort → Claude thinking budget. maxTokens is raised to budget + 8000 so the answer
# keeps room after thinking; xhigh stays at 32000 in total, the smallest ceiling of any thinking
# Claude model (Opus 4 / 4.1).
_CLAUDE_BUDGETS = {"minimal": 1024, "low": 4000, "medium": 8000, "high": 16000, "xhigh": 24000}
_ANSWER_ROOM = 8000
_MIN_BUDGET = 1024  # Anthropic's minimum budget_tokens
_NOVA_EFFORT = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def reasoning_fields(model: str, effort: Any, max_tokens: int, explicit_max: bool) -> tuple[dict[str, Any], int | None]:
    """(additionalModelRequestFields for reasoning, maxTokens to send) for `reasoning.effort`."""
    lowered = model.lower()
    if not isinstance(effort, str) or effort == "none":
        return {}, max_tokens
    if _CLAUDE_THINKING.search(lowered) and effort in _CLAUDE_BUDGETS:
        budget = _CLAUDE_BUDGETS[effort]
        if explicit_max:
            # The client's limit is respected: thinking leaves the answer at least the smallest
            # budget's room, but when the cap is too small for that, the smallest budget still fits
            # under it (Claude needs budget < maxTokens); only below that does thinking stay off.
            budget = min(budget, max_tokens - _MIN_BUDGET)
            if budget < _MIN_BUDGET < max_tokens:
                budget = _MIN_BUDGET
            if budget < _MIN_BUDGET:
                return {}, max_tokens
            return {"thinking": {"type": "enabled", "budget_tokens": budget}}, max_tokens
        return {"thinking": {"type": "enabled", "budget_tokens": budget}}, max(max_tokens, budget + _ANSWER_ROOM)
    if "nova-2" in lowered and effort in _NOVA_EFFORT:
        level = _NOVA_EFFORT[effort]
        if level == "high" and explicit_max:
            level = "medium"  # high takes no maxTokens, and a client's (or a hard budget's) cap must hold
        fields = {"reasoningConfig": {"type": "enabled", "maxReasoningEffort": level}}
        # Nova 2 at high effort takes no maxTokens (nor temperature / topP); it sets them itself.
        return fields, (None if level == "high" else max_tokens)
    return {}, max_tokens


def caches_prompts(model: str) -> bool:
    """Whether the model takes cachePoint blocks."""
    return _CLAUDE_CACHING.search(model.lower()) is not None
