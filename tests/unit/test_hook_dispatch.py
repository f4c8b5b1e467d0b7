"""`HookDispatch` against mitmproxy's own `AddonManager`: the same functions called, in the same
order, with the same arguments and the same handling of errors, halts and option errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from mitmproxy import addonmanager, exceptions, hooks, master, options
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import tflow

from codexgate.hook_dispatch import HookDispatch
from codexgate.master import GatewayMaster, ProxyCoreMaster


class Recorder:
    """An addon that writes down each call it gets, sync or async, and may raise on one hook."""

    def __init__(self, name: str, calls: list[tuple[str, str, Any]], raises: type[BaseException] | None = None,
                 children: list[Any] | None = None) -> None:  # fmt: skip
        self.name = name
        self.calls = calls
        self.raises = raises
        if children is not None:
            self.addons = children

    def request(self, flow: Any) -> None:
        self.calls.append((self.name, "request", flow))
        if self.raises is not None:
            raise self.raises("from " + self.name)

    async def response(self, flow: Any) -> None:
        await asyncio.sleep(0)
        self.calls.append((self.name, "response", flow))


class Updates:
    name = "updates"

    def __init__(self, calls: list[tuple[str, str, Any]]) -> None:
        self.calls = calls

    def update(self, flows: list[Any]) -> None:
        self.calls.append((self.name, "update", tuple(flows)))


class Silent:  # implements nothing a flow event calls
    name = "silent"


def _chain(calls: list[tuple[str, str, Any]], raises: type[BaseException] | None = None) -> list[Any]:
    child = Recorder("child", calls)
    return [
        Silent(),
        Recorder("first", calls, raises=raises, children=[child]),
        Recorder("second", calls),
    ]


def _master(manager_class: type[addonmanager.AddonManager], master_class: type[master.Master] = master.Master) -> Any:
    """A master (inside a running loop) with this addon manager. The log handler every master
    installs is taken out again: bound to this test's loop, it would outlive it."""
    owner = master_class(options.Options())
    owner._legacy_log_events.uninstall()
    if not isinstance(owner.addons, manager_class):
        owner.addons = manager_class(owner)
    return owner


async def _run(manager_class: type[addonmanager.AddonManager], events: list[Any], *,
               raises: type[BaseException] | None = None,
               extra: Callable[[list[tuple[str, str, Any]]], list[Any]] | None = None) -> list[Any]:  # fmt: skip
    calls: list[tuple[str, str, Any]] = []
    owner = _master(manager_class)
    owner.addons.add(*_chain(calls, raises), *(extra(calls) if extra else []))
    for event in events:
        await owner.addons.handle_lifecycle(event)
    return calls


def _events() -> list[Any]:
    flow = tflow.tflow(resp=True)
    return [HttpRequestHook(flow), HttpResponseHook(flow), HttpRequestHook(flow)]


@pytest.mark.parametrize("extra", [None, lambda calls: [Updates(calls)]], ids=["no update hook", "update hook"])
def test_the_same_calls_in_the_same_order_as_mitmproxys_manager(extra) -> None:
    events = _events()
    stock = asyncio.run(_run(addonmanager.AddonManager, events, extra=extra))
    ours = asyncio.run(_run(HookDispatch, events, extra=extra))
    assert ours == stock
    names = [(name, hook) for name, hook, _ in ours]
    assert names[:3] == [("first", "request"), ("child", "request"), ("second", "request")]
    assert ("updates", "update") in names if extra else all(hook != "update" for _, hook in names)


def _side_by_side(caplog, **kwargs: Any) -> tuple[list[Any], list[Any], list[str], list[str]]:
    """The calls and the error lines of mitmproxy's manager, then of HookDispatch, on the same chain
    and one request event."""
    caplog.set_level(logging.ERROR)
    caplog.clear()
    events = _events()[:1]
    stock = asyncio.run(_run(addonmanager.AddonManager, events, **kwargs))
    stock_lines = [r.getMessage() for r in caplog.records]
    caplog.clear()
    ours = asyncio.run(_run(HookDispatch, events, **kwargs))
    return stock, ours, stock_lines, [r.getMessage() for r in caplog.records]


def test_an_addon_error_is_logged_and_the_next_addon_of_the_chain_still_runs(caplog) -> None:
    stock, ours, stock_lines, our_lines = _side_by_side(caplog, raises=ValueError)
    # as mitmproxy: the failing addon's children are skipped, the chain's next addon is called
    assert ours == stock and [name for name, _, _ in ours] == ["first", "second"]
    assert our_lines == stock_lines == ["Addon error: from first"]
    assert caplog.records[0].exc_info is not None


def test_addon_halt_ends_the_event(caplog) -> None:
    stock, ours, _, _ = _side_by_side(caplog, raises=exceptions.AddonHalt)
    assert ours == stock and [name for name, _, _ in ours] == ["first"]


def test_an_options_error_reaches_the_caller() -> None:
    with pytest.raises(exceptions.OptionsError):
        asyncio.run(_run(HookDispatch, _events()[:1], raises=exceptions.OptionsError))


def test_an_addon_added_later_is_called() -> None:
    async def go() -> list[str]:
        calls: list[tuple[str, str, Any]] = []
        owner = _master(HookDispatch)
        owner.addons.add(Recorder("early", calls))
        flow = tflow.tflow()
        await owner.addons.handle_lifecycle(HttpRequestHook(flow))
        late = Recorder("late", calls)
        owner.addons.add(late)
        await owner.addons.handle_lifecycle(HttpRequestHook(flow))
        owner.addons.remove(late)
        await owner.addons.handle_lifecycle(HttpRequestHook(flow))
        return [name for name, _, _ in calls]

    assert asyncio.run(go()) == ["early", "early", "late", "early"]


@pytest.mark.parametrize("master_class", [GatewayMaster, ProxyCoreMaster])
def test_the_gateway_master_dispatches_this_way_and_configures_once(master_class) -> None:
    class Configured:
        name = "configured"

        def __init__(self) -> None:
            self.updates: list[set[str]] = []

        def configure(self, updated: set[str]) -> None:
            self.updates.append(set(updated))

    async def go() -> tuple[Any, Configured]:
        owner = _master(HookDispatch, master_class)
        probe = Configured()
        owner.addons.add(probe)
        owner.options.update(termlog_verbosity="warn")
        return owner, probe

    owner, probe = asyncio.run(go())
    assert isinstance(owner.addons, HookDispatch)
    assert owner.addons.get("termlog") is owner._termlog_addon is not None
    # one configure per change: the manager `Master` made first no longer listens
    assert probe.updates.count({"termlog_verbosity"}) == 1


def test_a_hook_event_with_no_flow_argument_goes_out_too() -> None:
    async def go() -> list[str]:
        seen: list[str] = []

        class Running:
            name = "running-probe"

            def running(self) -> None:
                seen.append("running")

        owner = _master(HookDispatch)
        owner.addons.add(Running())
        await owner.addons.trigger_event(hooks.RunningHook())
        return seen

    assert asyncio.run(go()) == ["running"]


def test_a_hook_that_is_not_callable_is_logged_as_mitmproxy_logs_it(caplog) -> None:
    class Broken:
        name = "broken"
        request = 3  # not a function

        def __repr__(self) -> str:
            return "Broken"

    def extra(calls: list[tuple[str, str, Any]]) -> list[Any]:
        return [Broken(), Recorder("after", calls)]

    stock, ours, stock_lines, our_lines = _side_by_side(caplog, extra=extra)
    assert ours == stock and [name for name, _, _ in ours] == ["first", "child", "second", "after"]
    assert our_lines == stock_lines
    assert len(stock_lines) == 1 and "Addon handler request" in stock_lines[0] and "not callable" in stock_lines[0]
