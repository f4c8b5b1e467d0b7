"""The gateway's steps run as ONE mitmproxy addon.

mitmproxy dispatches every event to every addon (measured here: ~4 µs per addon per event,
whether it implements the hook or not), so two dozen addons cost about 0.5 ms per request —
the largest part of the gateway's overhead over bare mitmdump (docs/benchmarks.md). The
`Pipeline` keeps each step an ordinary mitmproxy-shaped addon (options in `load`, validation in
`configure`, the usual hooks; each can still be loaded on its own, as the unit tests do), and
calls, per hook, just the steps that implement it, in chain order. The hooks are mitmproxy's own
(`mitmproxy.hooks.all_hooks`), so a step implementing any of them is called as it would be as an
addon of its own.

A step's exception in a traffic hook is logged and the next step still runs — as mitmproxy
itself would do between addons; request-phase steps fail closed on their own
(`codexgate.failsafe`), and `Seal` stops anything not cleared. Exceptions of `load`, `configure`
and lifecycle hooks propagate to mitmproxy (an `OptionsError` must reach it).
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Callable, Sequence
from typing import Any

# A hook class registers itself in `all_hooks` when the module defining it is imported; the master
# imports every layer and server hook it can call, so after this import the registry is complete.
import mitmproxy.master  # noqa: F401
from mitmproxy import hooks

from codexgate import failsafe
from codexgate.failsafe import FAIL_CLOSED_ATTRIBUTE

logger = logging.getLogger(__name__)

# Their exceptions reach mitmproxy (an `OptionsError` from `configure` must); every other hook's
# exceptions are logged per step.
LIFECYCLE_HOOKS = frozenset({"load", "configure", "running", "done"})


def mitmproxy_hooks() -> tuple[str, ...]:
    """Every event mitmproxy calls on addons, by name."""
    return tuple(hooks.all_hooks)


class _Step:
    """One step's function for one hook, resolved once at construction: whether it is a coroutine
    function (awaited without an `inspect.isawaitable` per call), and, for a hook wrapped by
    `failsafe.fail_closed`, the unwrapped function (the dispatcher refuses the flow itself, as the
    wrapper would: one Python frame less per step and request)."""

    __slots__ = ("call", "is_coroutine", "fail_closed", "name")

    def __init__(self, function: Callable[..., Any]) -> None:
        wrapped = getattr(getattr(function, "__func__", None), FAIL_CLOSED_ATTRIBUTE, None)
        self.fail_closed: Callable[..., Any] | None = wrapped
        self.call: Callable[..., Any] = function
        if wrapped is not None:
            self.call = types.MethodType(wrapped, function.__self__)  # type: ignore[attr-defined]
        self.is_coroutine = inspect.iscoroutinefunction(self.call)
        self.name = getattr(function, "__qualname__", function)


def _failed(hook: str, step: _Step, args: tuple[Any, ...]) -> None:
    """A step raised (called from inside its `except`): refuse the flow if the step fails closed
    (exactly as `fail_closed`'s wrapper does), else log and go on, as mitmproxy does between addons."""
    if step.fail_closed is None:
        logger.exception("%s failed in %s", hook, step.name)
        return
    try:
        failsafe.refuse_after_exception(args[0], step.fail_closed)
    except Exception:
        logger.exception("%s failed in %s", hook, step.name)


def _isolated_sync(hook: str, steps: list[_Step]) -> Callable[..., None]:
    entries = tuple((step.call, step) for step in steps)

    def dispatch(*args: Any) -> None:
        for call, step in entries:
            try:
                call(*args)
            except Exception:
                _failed(hook, step, args)

    return dispatch


def _isolated_async(hook: str, steps: list[_Step]) -> Callable[..., Any]:
    entries = tuple((step.call, step.is_coroutine, step) for step in steps)

    async def dispatch(*args: Any) -> None:
        for call, is_coroutine, step in entries:
            try:
                if is_coroutine:
                    await call(*args)
                else:
                    result = call(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except Exception:
                _failed(hook, step, args)

    return dispatch


def _propagating(functions: list[Callable[..., Any]], is_async: bool) -> Callable[..., Any]:
    if not is_async:

        def dispatch(*args: Any) -> None:
            for function in functions:
                function(*args)

        return dispatch

    async def dispatch_async(*args: Any) -> None:
        for function in functions:
            result = function(*args)
            if inspect.isawaitable(result):
                await result

    return dispatch_async


class Pipeline:
    def __init__(self, steps: Sequence[Any]) -> None:
        self.steps = list(steps)
        for hook in mitmproxy_hooks():
            functions = [getattr(step, hook) for step in self.steps if callable(getattr(step, hook, None))]
            if not functions:
                continue
            is_async = any(inspect.iscoroutinefunction(function) for function in functions)
            if hook in LIFECYCLE_HOOKS:
                dispatcher = _propagating(functions, is_async)
            elif is_async:
                dispatcher = _isolated_async(hook, [_Step(function) for function in functions])
            else:
                dispatcher = _isolated_sync(hook, [_Step(function) for function in functions])
            setattr(self, hook, dispatcher)

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(step).__name__ for step in self.steps)})"
