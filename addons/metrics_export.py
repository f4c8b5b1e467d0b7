"""Serves the admin port (`codexgate_metrics_port`, 0 = off): Prometheus `/metrics`, `/healthz`
(the gateway's event loop answers) and `/readyz` (policy loaded, CA loaded, counter store
reachable, not draining), for a balancer or Kubernetes to tell a ready instance from a starting
or draining one. See codexgate/admin_http.py.

Under `codexgate up --workers N` it also declares `codexgate_status_fd`, the pipe on which the
worker tells its supervisor the admin port it bound and (addons/lifecycle.py) that it is ready
(codexgate/worker_status.py): the supervisor does not read the log for either."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from codexgate import worker_status
from codexgate.admin_http import AdminServer
from codexgate.metrics import GatewayMetrics
from codexgate.stores.base import Counter

if TYPE_CHECKING:
    from codexgate.addons.lifecycle import GracefulShutdown
    from codexgate.addons.limits import Limits
    from codexgate.addons.policy_source import PolicySource

logger = logging.getLogger(__name__)

PROBE_COUNTER = "readiness-probe"  # never a policy counter (those are level:name/kind/period)


class Readiness:
    """What `/readyz` checks, each on the proxy's event loop."""

    def __init__(self, policy: PolicySource, limits: Limits, shutdown: GracefulShutdown) -> None:
        self.policy = policy
        self.limits = limits
        self.shutdown = shutdown

    async def __call__(self) -> tuple[bool, dict[str, str]]:
        checks = {
            "draining": "no" if not self.shutdown.draining else "yes: SIGTERM received",
            "policy": self._policy(),
            "ca": self._ca(),
            "store": await self._store(),
        }
        if checks["store"] != "ok" and self._fails_open():
            # The policy says to serve unmetered while the store is down: the instance is still useful.
            checks["store"] += " (serving unmetered: on_store_error open)"
            failing = [k for k, v in checks.items() if k not in ("draining", "store") and v != "ok"]
        else:
            failing = [k for k, v in checks.items() if k != "draining" and v != "ok"]
        return not self.shutdown.draining and not failing, checks

    def _policy(self) -> str:
        try:
            self.policy.current()
        except Exception as exc:
            return f"not loaded: {exc}"
        return "ok"

    def _fails_open(self) -> bool:
        try:
            return self.policy.current().policy.gateway.on_store_error == "open"
        except Exception:
            return False

    def _ca(self) -> str:
        tlsconfig = ctx.master.addons.get("tlsconfig")
        store = getattr(tlsconfig, "certstore", None)
        if store is None or getattr(store, "default_ca", None) is None:
            return "not loaded"
        return "ok"

    async def _store(self) -> str:
        store = self.limits.store
        if store is None:
            return "not configured"
        try:
            # Reading a counter no request uses: one round trip to the store, changing nothing.
            now = time.time()
            await store.snapshot([Counter(PROBE_COUNTER, "requests", 1.0, now, 1.0, 1.0, now + 1.0)], now)
        except Exception as exc:
            return f"unreachable: {exc}"
        return "ok"


class MetricsExport:
    def __init__(self, metrics: GatewayMetrics, readiness: Readiness | None = None) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self._server: AdminServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the proxy's, once running: probes run on it

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_metrics_port", int, 0,
            "Port of the admin server: Prometheus /metrics, /healthz and /readyz (0: not served; -1: a "
            "free port the system picks, named in the log line 'metrics at http://HOST:PORT/metrics' and on "
            "codexgate_status_fd, which is how `codexgate up --workers` runs each worker's).",
        )  # fmt: skip
        loader.add_option("codexgate_metrics_host", str, "127.0.0.1", "Address the metrics port listens on.")
        loader.add_option(
            worker_status.STATUS_FD_OPTION, int, 0,
            "Set by `codexgate up --workers N` for each worker, not by hand: the number of an inherited "
            "pipe on which the worker writes one JSON line when its admin server listens (with the port) "
            "and one when it is ready (codexgate/worker_status.py). 0: none.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        status_fd = worker_status.STATUS_FD_OPTION
        if status_fd in updated and (fd := getattr(ctx.options, status_fd)):
            if problem := worker_status.open_problem(fd):
                raise exceptions.OptionsError(f"{status_fd} {fd}: {problem}")
            worker_status.adopt(fd)
        if not {"codexgate_metrics_port", "codexgate_metrics_host"} & updated:
            if status_fd in updated and self._server is not None:
                self._announce()
            return
        self._stop()
        port = ctx.options.codexgate_metrics_port
        if not -1 <= port <= 65535:
            raise exceptions.OptionsError(f"codexgate_metrics_port {port}: not a port (0: not served, -1: any)")
        if port:
            try:
                # Port 0 to the kernel: bound in the same call that picks it, so no other program can
                # take it in between (a port picked first and bound later can be).
                self._server = AdminServer(
                    ctx.options.codexgate_metrics_host, max(port, 0), self.metrics.registry, self._readiness
                )
            except OSError as exc:
                raise exceptions.OptionsError(f"codexgate_metrics_port {port}: {exc.strerror}") from None
            self._server.loop = self._loop
            logger.info(
                "metrics at http://%s:%d/metrics (and /healthz, /readyz)",
                ctx.options.codexgate_metrics_host,
                self._server.port,
            )
            self._announce()

    def _announce(self) -> None:
        assert self._server is not None
        worker_status.send(ctx.options.codexgate_status_fd, worker_status.AdminBound(self._server.port))

    def running(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._server is not None:
            self._server.loop = self._loop

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.readiness is None:
            return True, {}
        return await self.readiness()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def done(self) -> None:
        self._stop()
