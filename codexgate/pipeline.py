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

logger = logging.getLogger(__name__)

# Their exceptions reach mitmproxy (an `OptionsError` from `configure` must); every other hook's
# exceptions are logged per step.
LIFECYCLE_HOOKS = frozenset({"load", "configure", "running", "done"})

# A hook wrapper that handles its function's exceptions itself (`codexgate.failsafe.fail_closed`)
# carries, under this attribute, (the function it wraps, what it does when that raises: called with
# the flow and that function inside the `except`). The pipeline then calls the function and handles
# its exception the same way itself: one Python frame less per step and request.
UNWRAPPED_ATTRIBUTE = "__codexgate_unwrapped__"


def mitmproxy_hooks() -> tuple[str, ...]:
    """Every event mitmproxy calls on addons, by name."""
    return tuple(hooks.all_hooks)


class _Step:
    """One step's function for one hook, resolved once at construction: whether it is a coroutine
    function (awaited without an `inspect.isawaitable` per call), and, for a wrapper carrying
    UNWRAPPED_ATTRIBUTE, the function it wraps and its exception handler."""

    __slots__ = ("call", "is_coroutine", "on_exception", "unwrapped", "name")

    def __init__(self, function: Callable[..., Any]) -> None:
        self.call: Callable[..., Any] = function
        self.unwrapped: Callable[..., Any] | None = None
        self.on_exception: Callable[[Any, Callable[..., Any]], None] | None = None
        carried = getattr(getattr(function, "__func__", None), UNWRAPPED_ATTRIBUTE, None)
        if carried is not None:
            self.unwrapped, self.on_exception = carried
            self.call = types.MethodType(self.unwrapped, function.__self__)  # type: ignore[attr-defined]
        self.is_coroutine = inspect.iscoroutinefunction(self.call)
        self.name = getattr(function, "__qualname__", function)


def _failed(hook: str, step: _Step, args: tuple[Any, ...]) -> None:
    """A step raised (called inside its `except`): its wrapper's handler runs, as the wrapper would
    have run it; else the exception is logged and the next step runs, as mitmproxy does between addons."""
    if step.on_exception is None or step.unwrapped is None:
        logger.exception("%s failed in %s", hook, step.name)
        return
    try:
        step.on_exception(args[0], step.unwrapped)
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
