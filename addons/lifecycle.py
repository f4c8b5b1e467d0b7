"""Graceful stop: on SIGTERM the gateway stops taking new governed requests, lets the ones in
flight (long Codex streams included) finish for a grace period, then shuts mitmproxy down so
every addon settles and closes its files (`done`). Nothing is half-written: a request still
running at the deadline ends through the error hook and is settled there.

Once every addon ran its `running` hook (this one is the chain's last), the gateway is ready: it
logs so for humans and, as a worker of `codexgate up --workers N`, tells its supervisor on
`codexgate_status_fd` (codexgate/worker_status.py), which does not depend on the log's level."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

from mitmproxy import ctx, exceptions, http
from mitmproxy.addonmanager import Loader

from codexgate import worker_status
from codexgate.errors import error_response
from codexgate.flowstate import Decision, refuse, state_of

logger = logging.getLogger(__name__)


class GracefulShutdown:
    def __init__(self) -> None:
        self._in_flight: set[str] = set()
        self.draining = False  # /readyz answers 503 from here on
        self.refusing = False  # new requests are told to retry elsewhere (after codexgate_shutdown_delay)
        self._drain_task: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_shutdown_grace", float, 30.0,
            "Seconds in-flight requests get to finish after SIGTERM before the gateway stops.",
        )  # fmt: skip
        loader.add_option(
            "codexgate_shutdown_delay", int, 0,
            "Seconds after SIGTERM during which /readyz already answers 503 but new requests are still "
            "served, so a balancer or Kubernetes takes the instance out before it starts refusing.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        for name in ("codexgate_shutdown_grace", "codexgate_shutdown_delay"):
            if name in updated and getattr(ctx.options, name) < 0:
                raise exceptions.OptionsError(f"{name} must be >= 0")

    def running(self) -> None:
        # What start-up allocated (policy, SDK types, translators) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise stall the loop for ~0.1 s.
        gc.freeze()
        loop = asyncio.get_running_loop()
        # Replaces mitmproxy's own SIGTERM handler, which stops at once.
        loop.add_signal_handler(signal.SIGTERM, self.begin_drain)
        logger.info(
            "codexgate ready (SIGTERM drains in-flight requests for up to %.0f s)", ctx.options.codexgate_shutdown_grace
        )
        # Declared by addons/metrics_export.py, which announces the admin port on the same pipe.
        worker_status.send(getattr(ctx.options, worker_status.STATUS_FD_OPTION, 0), worker_status.Ready())

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        logger.info(
            "SIGTERM: draining %d in-flight request(s) for up to %.0f s",
            len(self._in_flight),
            ctx.options.codexgate_shutdown_grace,
        )
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        delay = ctx.options.codexgate_shutdown_delay
        if delay:
            logger.info("not ready; still serving new requests for %d s while balancers take us out", delay)
            await asyncio.sleep(delay)
        self.refusing = True
        deadline = time.monotonic() + ctx.options.codexgate_shutdown_grace
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._in_flight:
            logger.warning("grace period over: %d request(s) still running are cut and settled", len(self._in_flight))
        else:
            logger.info("all in-flight requests finished; stopping")
        ctx.master.shutdown()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is None:
            return
        if self.refusing and flow.response is None:
            refuse(
                flow,
                error_response(503, "gateway_shutting_down", "this codexgate instance is shutting down; retry",
                               headers={"retry-after": "1", "connection": "close"}),
                Decision.SHUTTING_DOWN,
            )  # fmt: skip
            return
        self._in_flight.add(flow.id)

    def response(self, flow: http.HTTPFlow) -> None:
        self._in_flight.discard(flow.id)

    def error(self, flow: http.HTTPFlow) -> None:
        self._in_flight.discard(flow.id)
