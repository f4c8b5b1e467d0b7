"""mitmproxy's addon manager with each event sent straight to the functions that take it.

mitmproxy's own `AddonManager.handle_lifecycle` walks every addon of the chain (and its children)
for every event of every flow, each inside a context manager and a coroutine of its own, most of
them to find the addon has no such hook, and then sends an `update` event the same way. For the
gateway master's eight mitmproxy addons that is ~100 µs per request (four flow events and four
updates; 3.5 µs here; docs/benchmarks.md), about a tenth of the proxy core's whole cost per
request on this project's machine. `HookDispatch`
looks the hook's functions up once per hook name and calls just those.

What is kept, as mitmproxy does it: chain order, an addon's children right after it; an
exception logged as mitmproxy logs it (`safecall`), the rest of that addon and its children
skipped and the next addon of the chain called; `AddonHalt` ends the event; `OptionsError`
propagates; an awaitable result is awaited; `update` goes out after each flow event (when some
addon takes it). The table is rebuilt when an addon is added, registered or removed: an addon
that swaps its children (`addons`) without registering them is not seen until then (the gateway
master has no such addon; mitmproxy's script loader is one, and runs only under stock
mitmdump/mitmweb).
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager, exceptions, flow, hooks

logger = logging.getLogger(__name__)


def _not_callable(message: str) -> Callable[..., None]:
    def refuse(*args: Any) -> None:
        raise exceptions.AddonManagerError(message)

    return refuse


class HookDispatch(addonmanager.AddonManager):
    def __init__(self, master: Any) -> None:
        super().__init__(master)
        self._functions: dict[str, tuple[tuple[Callable[..., Any], ...], ...]] = {}

    def _implementers(self, name: str) -> tuple[tuple[Callable[..., Any], ...], ...]:
        """The functions for the hook `name`, one group per addon of the chain (the addon's own,
        then its children's) with at least one, in the order mitmproxy calls them. An exception
        ends its group, as it ends mitmproxy's walk of that addon's children."""
        groups = self._functions.get(name)
        if groups is None:
            found = []
            for top in self.chain:
                group = []
                for addon in addonmanager.traverse([top]):
                    function = getattr(addon, name, None)
                    if function is None or isinstance(function, types.ModuleType):
                        continue  # mitmproxy skips a module imported under a hook's name, too
                    if not callable(function):
                        # raised when called, so that it is logged and ends its group as mitmproxy does
                        function = _not_callable(f"Addon handler {name} ({addon}) not callable")
                    group.append(function)
                if group:
                    found.append(tuple(group))
            groups = self._functions[name] = tuple(found)
        return groups

    # Whatever changes the chain or its children drops the table.
    def register(self, addon: Any) -> Any:
        self._functions = {}
        return super().register(addon)

    def add(self, *addons: Any) -> None:
        super().add(*addons)
        self._functions = {}

    def remove(self, addon: Any) -> None:
        super().remove(addon)
        self._functions = {}

    def clear(self) -> None:
        super().clear()
        self._functions = {}

    async def trigger_event(self, event: hooks.Hook) -> None:
        groups = self._implementers(event.name)
        if not groups:
            return
        args = event.args()
        for group in groups:
            # `addonmanager.safecall`, inline (a generator-based context manager per addon is most
            # of what this saves): the same exceptions pass, the same line is logged.
            try:
                for function in group:
                    result = function(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as exc:
                logger.error(f"Addon error: {exc}", exc_info=True)

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        if self._implementers("update"):
            message = event.args()[0]
            if isinstance(message, flow.Flow):
                await self.trigger_event(hooks.UpdateHook([message]))
