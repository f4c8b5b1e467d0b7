"""Puts a hard budget's output cap on a request that Route has already pointed upstream.

Route runs before Limits (the price depends on the route), so by the time a hard budget caps a
request its body may already be on its way in one of three shapes, and the cap must reach each:

- relayed (several candidates): every attempt is prepared from `state.body` right before it is
  sent, so capping `state.body` caps every attempt, translated or not;
- direct to one provider: its family prepares it anew from the capped `state.body` (a pass-through
  family sends that body; a translating one translates it again); each
  translator maps `max_output_tokens` to its own field (`max_tokens`, `maxOutputTokens`,
  `inferenceConfig.maxTokens`, a Chat host's `max_tokens`/`max_completion_tokens`) and keeps a
  client's limit as given (thinking budgets shrink below it).

A client's own smaller cap is kept: Limits computes the cap as the smaller of the two.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from codexgate.flowstate import GatewayRequest

logger = logging.getLogger(__name__)


def cap_body(body: dict[str, object], endpoint: str | None, tokens: int) -> None:
    """Sets the output cap in a Responses (or Chat Completions) request body."""
    if endpoint == "chat":
        # Chat has two names for it; reasoning models accept only the newer one.
        if "max_tokens" in body and "max_completion_tokens" not in body:
            body["max_tokens"] = tokens
        else:
            body["max_completion_tokens"] = tokens
            if "max_tokens" in body:
                body["max_tokens"] = tokens
    else:
        body["max_output_tokens"] = tokens


def cap_output(flow: http.HTTPFlow, state: GatewayRequest, tokens: int) -> None:
    if state.body is None:
        raise RuntimeError(f"request {state.request_id} has no body to cap")
    cap_body(state.body, state.endpoint, tokens)
    logger.info("request %s: output capped at %d tokens by a hard budget", state.request_id, tokens)
    if state.relayed is not None:
        return  # each attempt is prepared from state.body when it is sent
    from codexgate.addons.route import reprepare

    reprepare(flow, state)
