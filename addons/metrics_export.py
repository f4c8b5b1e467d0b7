"""Serves the gateway's Prometheus metrics on their own port (`codexgate_metrics_port`, 0 = off)."""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader
from prometheus_client import start_http_server

from codexgate.metrics import GatewayMetrics

logger = logging.getLogger(__name__)


class MetricsExport:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self._server: Any = None

    def load(self, loader: Loader) -> None:
        loader.add_option("codexgate_metrics_port", int, 0, "Port for Prometheus /metrics (0: not served).")
        loader.add_option("codexgate_metrics_host", str, "127.0.0.1", "Address the metrics port listens on.")

    def configure(self, updated: set[str]) -> None:
        if not {"codexgate_metrics_port", "codexgate_metrics_host"} & updated:
            return
        self._stop()
        port = ctx.options.codexgate_metrics_port
        if port:
            try:
                self._server, _thread = start_http_server(
                    port, ctx.options.codexgate_metrics_host, self.metrics.registry
                )
            except OSError as exc:
                raise exceptions.OptionsError(f"codexgate_metrics_port {port}: {exc.strerror}") from None
            logger.info("metrics at http://%s:%d/metrics", ctx.options.codexgate_metrics_host, port)

    def _stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def done(self) -> None:
        self._stop()
