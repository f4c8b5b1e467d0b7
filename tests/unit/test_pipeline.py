"""Pipeline: the gateway's steps as one mitmproxy addon, each hook dispatched to the steps that
implement it — every hook mitmproxy has, not a hand-kept list of them."""

from __future__ import annotations

import asyncio
from typing import Any

# The modules defining mitmproxy's hooks, imported here so the registry this test reads is
# complete whatever the pipeline module itself imports.
import mitmproxy.addonmanager
import mitmproxy.log
import mitmproxy.proxy.layer
import mitmproxy.proxy.layers
import mitmproxy.proxy.server_hooks  # noqa: F401
import pytest
from mitmproxy import hooks, tls
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.dns import DnsRequestHook
from mitmproxy.proxy.layers.tls import TlsEstablishedClientHook
from mitmproxy.test import taddons, tflow

from codexgate.failsafe import fail_closed
from codexgate.pipeline import Pipeline


class Recorder:
    """A step that implements hooks the gateway's own steps do not (yet)."""

    def __init__(self, calls: list[tuple[str, Any]], fail: bool = False) -> None:
        self.calls = calls
        self.fail = fail

    def tls_established_client(self, data: tls.TlsData) -> None:
        self.calls.append(("tls_established_client", data))
        if self.fail:
            raise RuntimeError("step failed")

    async def dns_request(self, flow: Any) -> None:
        await asyncio.sleep(0)
        self.calls.append(("dns_request", flow))


def test_a_step_gets_hooks_outside_the_old_hand_kept_list() -> None:
    calls: list[tuple[str, Any]] = []
    # The first step raises: the next one is still called (as mitmproxy does between addons).
    pipeline = Pipeline([Recorder(calls, fail=True), Recorder(calls)])

    async def run() -> None:
        with taddons.context(pipeline) as tctx:
            client = tflow.tclient_conn()
            data = tls.TlsData(client, Context(client, tctx.options))
            await tctx.master.addons.trigger_event(TlsEstablishedClientHook(data))
            flow = tflow.tdnsflow()
            await tctx.master.addons.trigger_event(DnsRequestHook(flow))
            assert calls == [
                ("tls_established_client", data), ("tls_established_client", data),
                ("dns_request", flow), ("dns_request", flow),
            ]  # fmt: skip

    asyncio.run(run())


def test_every_mitmproxy_hook_is_dispatched() -> None:
    names = sorted(hooks.all_hooks)
    assert {"request", "tls_established_client", "dns_request", "udp_message", "server_disconnected"} <= set(names)
    calls: list[str] = []
    step = type("EveryHook", (), {name: (lambda self, *args, _name=name: calls.append(_name)) for name in names})()
    pipeline = Pipeline([step])
    for name in names:
        getattr(pipeline, name)(*[None] * len(hooks.all_hooks[name].__dataclass_fields__))
    assert calls == names


def test_a_hook_no_step_implements_is_not_an_attribute() -> None:
    pipeline = Pipeline([Recorder([])])
    assert not hasattr(pipeline, "request")
    assert repr(pipeline) == "Pipeline(Recorder)"


class FailsClosed:
    """A request step wrapped by `fail_closed`: the pipeline calls what it wraps and refuses itself."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @fail_closed
    def requestheaders(self, flow: Any) -> None:
        self.calls.append("sync")
        raise RuntimeError("sync step failed")

    @fail_closed
    async def request(self, flow: Any) -> None:
        await asyncio.sleep(0)
        self.calls.append("async")
        raise RuntimeError("async step failed")


class After:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def requestheaders(self, flow: Any) -> None:
        self.calls.append("after sync")

    def request(self, flow: Any) -> Any:
        self.calls.append("after async")
        return asyncio.sleep(0)  # a plain function returning an awaitable is awaited, as mitmproxy does


@pytest.mark.parametrize("hook", ["requestheaders", "request"])
def test_a_fail_closed_step_refuses_in_the_pipeline_as_on_its_own(hook: str) -> None:
    calls: list[str] = []
    pipeline = Pipeline([FailsClosed(calls), After(calls)])
    alone = FailsClosed([])

    async def call(target: Any, flow: Any) -> None:
        result = getattr(target, hook)(flow)
        if asyncio.iscoroutine(result):
            await result

    async def run() -> tuple[Any, Any]:
        with taddons.context(pipeline, alone):
            in_pipeline, on_its_own = tflow.tflow(), tflow.tflow()
            await call(pipeline, in_pipeline)
            await call(alone, on_its_own)
            return in_pipeline, on_its_own

    in_pipeline, on_its_own = asyncio.run(run())
    assert in_pipeline.response is not None and in_pipeline.response.status_code == 500
    assert on_its_own.response is not None and on_its_own.response.status_code == 500
    assert in_pipeline.response.json()["error"]["code"] == on_its_own.response.json()["error"]["code"]
    assert in_pipeline.metadata.keys() == on_its_own.metadata.keys()
    assert calls == (["sync", "after sync"] if hook == "requestheaders" else ["async", "after async"])
