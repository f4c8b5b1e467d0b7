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
from mitmproxy import hooks, tls
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.dns import DnsRequestHook
from mitmproxy.proxy.layers.tls import TlsEstablishedClientHook
from mitmproxy.test import taddons, tflow

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
