"""mitmproxy fails open on an addon exception: these hooks fail closed instead."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import http

from codexgate.errors import error_response
from codexgate.flowstate import Decision, refuse
from codexgate.pipeline import UNWRAPPED_ATTRIBUTE

logger = logging.getLogger("codexgate.failsafe")


def refuse_internal(flow: http.HTTPFlow) -> None:
    """Answers 500 JSON (the details are in the gateway log, not in the answer)."""
    if flow.response is None and not flow.error:
        refuse(
            flow,
            error_response(
                500, "gateway_internal_error", f"codexgate internal error (request {flow.id}); see gateway log"
            ),
            Decision.INTERNAL_ERROR,
        )


def refuse_after_exception(flow: http.HTTPFlow, hook: Callable[..., Any]) -> None:
    """What a fail-closed hook does once `hook` raised (call it inside the `except`)."""
    logger.exception("internal error in %s; request %s refused", hook.__qualname__, flow.id)
    refuse_internal(flow)


def fail_closed(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a request-phase hook: any exception answers 500 JSON instead of forwarding."""
    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: Any, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception:
                refuse_after_exception(flow, hook)

        # The pipeline calls `hook` itself and refuses as this wrapper does (a step loaded on its own keeps it).
        setattr(async_wrapper, UNWRAPPED_ATTRIBUTE, (hook, refuse_after_exception))
        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: Any, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception:
            refuse_after_exception(flow, hook)

    setattr(wrapper, UNWRAPPED_ATTRIBUTE, (hook, refuse_after_exception))
    return wrapper
