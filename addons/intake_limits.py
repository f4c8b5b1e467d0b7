"""Limits before work: what a client may make the gateway read, and for how long.

- Header count and size (the HTTP/1 head is also capped while it is read, `codexgate.mitm_seams`),
  and a declared body larger than the cap: refused at `requestheaders`, before any body is read
  into memory (mitmproxy discards a refused request's body as it arrives).
- Slow clients: per client connection one timer, for the phase the connection is in — the
  request head must be complete within `codexgate_header_timeout` of connecting, the body within
  `codexgate_body_timeout` of its head, and the next head within `codexgate_client_idle_timeout`
  of the last answer. mitmproxy's own `tcp_timeout` only ends connections that send nothing at
  all, so a client dribbling a byte a second would otherwise hold a connection for ever.
- The decoded-size cap, JSON nesting and `model` length are checked by `Intake` while it reads
  the body, with the numbers kept here (`caps`).

`codexgate_intake_limits=false` switches all of it off (for the benchmark's same-run comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import human

from codexgate import mitm_seams
from codexgate.addons.policy_source import PolicySource
from codexgate.errors import error_response
from codexgate.flowstate import Decision, refuse, state_of
from codexgate.headers import single_values
from codexgate.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

OPTIONS = {
    "codexgate_intake_limits", "codexgate_max_body", "codexgate_max_json_depth", "codexgate_max_header_bytes",
    "codexgate_max_headers", "codexgate_max_model_chars", "codexgate_header_timeout", "codexgate_body_timeout",
    "codexgate_client_idle_timeout",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class IntakeCaps:
    """The limits `Intake` applies while it reads a request body."""

    enabled: bool = True
    max_body: int = 32 * 1024 * 1024  # decoded bytes
    max_json_depth: int = 100
    max_model_chars: int = 256


@dataclasses.dataclass(eq=False)
class _ClientClock:
    """One client connection's phase and its deadline. Phases change several times per request,
    so they only move `deadline`; the one timer of the connection, when it fires, ends the
    connection if the deadline has passed and otherwise sleeps until the new one (no timer is
    cancelled and re-created per request)."""

    timer: asyncio.TimerHandle | None = None
    phase: str = "headers"
    deadline: float | None = None  # loop time; None while the connection waits on an answer
    in_flight: int = 0
    receiving: int = 0


class RequestLimits:
    def __init__(self, policy: PolicySource, metrics: GatewayMetrics | None = None) -> None:
        self._policy = policy
        self._metrics = metrics or GatewayMetrics()
        self.caps = IntakeCaps()
        self._max_header_bytes = 64 * 1024
        self._max_headers = 100
        self._timeouts = {"headers": 30.0, "body": 120.0, "idle": 300.0}
        self._clocks: dict[str, _ClientClock] = {}
        self._receiving_flows: set[str] = set()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_intake_limits", bool, True,
            "Enforce the request limits below (header size/count, decoded body size, JSON nesting, model length, "
            "slow-client timeouts). Off only to measure what they cost.",
        )  # fmt: skip
        loader.add_option(
            "codexgate_max_body", str, "32m",
            "Largest request body, decoded (checked while decompressing): larger answers 413 request_too_large.",
        )  # fmt: skip
        loader.add_option("codexgate_max_json_depth", int, 100, "Deepest JSON nesting of a request body (400).")
        loader.add_option("codexgate_max_model_chars", int, 256, "Longest 'model' a request may name (400).")
        loader.add_option(
            "codexgate_max_header_bytes", int, 64 * 1024,
            "Largest request head (request line and headers, bytes): larger answers 431 and closes.",
        )  # fmt: skip
        loader.add_option("codexgate_max_headers", int, 100, "Most header fields a request may carry (431).")
        loader.add_option(
            "codexgate_header_timeout", int, 30,
            "Seconds a new client connection (or a tunnel to a governed host) has to send a complete request head.",
        )  # fmt: skip
        loader.add_option(
            "codexgate_body_timeout", int, 120, "Seconds a client has to send a request body once its head arrived."
        )
        loader.add_option(
            "codexgate_client_idle_timeout", int, 300,
            "Seconds a kept-alive client connection may wait, after an answer, before its next complete request head.",
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if OPTIONS & updated:
            self._apply()

    def running(self) -> None:
        # mitmproxy calls `configure` only for options that were set; the defaults apply from here.
        self._apply()

    def _apply(self) -> None:
        options = ctx.options
        try:
            max_body = human.parse_size(options.codexgate_max_body)
        except ValueError as exc:
            raise exceptions.OptionsError(f"codexgate_max_body: {exc}") from None
        if not max_body or max_body <= 0:
            raise exceptions.OptionsError("codexgate_max_body must be a positive size, e.g. 32m")
        for name in ("codexgate_max_json_depth", "codexgate_max_model_chars", "codexgate_max_header_bytes",
                     "codexgate_max_headers"):  # fmt: skip
            if getattr(options, name) < 1:
                raise exceptions.OptionsError(f"{name} must be at least 1")
        for name in ("codexgate_header_timeout", "codexgate_body_timeout", "codexgate_client_idle_timeout"):
            if getattr(options, name) <= 0:
                raise exceptions.OptionsError(f"{name} must be more than 0 seconds")
        enabled = options.codexgate_intake_limits
        self.caps = IntakeCaps(enabled, max_body, options.codexgate_max_json_depth, options.codexgate_max_model_chars)
        self._max_header_bytes = options.codexgate_max_header_bytes
        self._max_headers = options.codexgate_max_headers
        self._timeouts = {
            "headers": float(options.codexgate_header_timeout),
            "body": float(options.codexgate_body_timeout),
            "idle": float(options.codexgate_client_idle_timeout),
        }
        if enabled:
            mitm_seams.install()

    # -- slow clients ------------------------------------------------------------------------------

    def _arm(self, client: connection.Client, phase: str) -> None:
        clock = self._clocks.get(client.id)
        if clock is None:
            return
        loop = asyncio.get_running_loop()
        clock.phase = phase
        clock.deadline = loop.time() + self._timeouts[phase]
        if clock.timer is not None and clock.timer.when() > clock.deadline:
            clock.timer.cancel()  # would fire too late for this phase's shorter deadline
            clock.timer = None
        if clock.timer is None:
            clock.timer = loop.call_at(clock.deadline, self._check, client)

    def _disarm(self, client: connection.Client) -> _ClientClock | None:
        clock = self._clocks.get(client.id)
        if clock is not None:
            clock.deadline = None
        return clock

    def _check(self, client: connection.Client) -> None:
        clock = self._clocks.get(client.id)
        if clock is None:
            return
        clock.timer = None
        if clock.deadline is None:
            return  # waiting on an answer: the next phase change starts a timer again
        loop = asyncio.get_running_loop()
        if loop.time() < clock.deadline:
            clock.timer = loop.call_at(clock.deadline, self._check, client)
            return
        self._expire(client)

    def _expire(self, client: connection.Client) -> None:
        clock = self._clocks.pop(client.id, None)
        if clock is None:
            return
        logger.warning(
            "client %s took longer than %g s for its request %s; connection closed",
            client.peername[0] if client.peername else "?", self._timeouts[clock.phase],
            {"headers": "head", "body": "body", "idle": "head after the last answer"}[clock.phase],
        )  # fmt: skip
        self._metrics.refusals.labels(f"client_{clock.phase}_timeout", "").inc()
        close_client(client, clock.phase != "idle", self._timeouts[clock.phase])

    def client_connected(self, client: connection.Client) -> None:
        if not self.caps.enabled:
            return
        self._clocks[client.id] = _ClientClock()
        self._arm(client, "headers")

    def client_disconnected(self, client: connection.Client) -> None:
        clock = self._clocks.pop(client.id, None)
        if clock is not None and clock.timer is not None:
            clock.timer.cancel()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if not self.caps.enabled or flow.client_conn.id not in self._clocks:
            return
        try:
            governed = self._policy.current().is_governed_host(flow.request.host, flow.request.port)
        except Exception:
            governed = True
        if governed:
            self._arm(flow.client_conn, "headers")  # TLS handshake and the first request inside
        else:
            # An ungoverned tunnel carries anything (git, package registries): mitmproxy's
            # tcp_timeout is its bound, not a request-head deadline.
            self.client_disconnected(flow.client_conn)

    # -- request heads ------------------------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if not self.caps.enabled:
            return
        # Size, count and the body's framing in a fixed few C calls, not calls per field (each field
        # counts its name, value, ": " and CRLF; of a repeated field the last one counts).
        fields = flow.request.headers.fields
        count = len(fields)
        size = len(b"".join([part for field in fields for part in field])) + 4 * count
        length = b""
        chunked = False
        state = state_of(flow)  # Intake's reading of the head, where it governs the request
        by_name = state.head_values(fields) if state is not None else single_values(fields)
        if by_name is not None:
            length = by_name.get(b"content-length", b"").strip()
            encoding = by_name.get(b"transfer-encoding")
            chunked = encoding is not None and b"chunked" in encoding.lower()
        else:
            for name, value in fields:
                lowered = name.lower()
                if lowered == b"content-length":
                    length = value.strip()
                elif lowered == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
        clock = self._clocks.get(flow.client_conn.id)  # `_disarm`, inline
        if clock is not None:
            clock.deadline = None
            clock.in_flight += 1
            if (
                chunked
                or (length not in (b"", b"0"))
                or (not length and flow.request.is_http2 and flow.request.method in ("POST", "PUT", "PATCH"))
            ):
                clock.receiving += 1
                self._receiving_flows.add(flow.id)
                self._arm(flow.client_conn, "body")
        if flow.response or flow.error:
            return
        if count > self._max_headers or size > self._max_header_bytes:
            self._refuse(
                flow,
                error_response(
                    431, "request_header_fields_too_large",
                    f"the request carries {count} header fields ({size} bytes); the gateway accepts at most "
                    f"{self._max_headers} fields and {self._max_header_bytes} bytes",
                ),
                Decision.HEADERS_TOO_LARGE,
            )  # fmt: skip
            return
        if length.isdigit() and int(length) > self.caps.max_body and state_of(flow) is not None:
            self._refuse(
                flow,
                error_response(
                    413, "request_too_large",
                    f"the request body is {int(length)} bytes; the gateway accepts at most {self.caps.max_body}",
                ),
                Decision.REQUEST_TOO_LARGE,
            )  # fmt: skip

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.id in self._receiving_flows:
            self._receiving_flows.discard(flow.id)
            clock = self._clocks.get(flow.client_conn.id)
            if clock is not None:
                clock.receiving -= 1
                if clock.receiving <= 0:
                    self._disarm(flow.client_conn)  # waiting on the answer: the upstream's bounds apply

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        """The request is done (answered, or failed: `error`)."""
        clock = self._clocks.get(flow.client_conn.id)
        if clock is None:
            return
        if flow.response is not None and flow.response.status_code == 101:
            # The connection now carries another protocol (WebSocket): no more request heads.
            self.client_disconnected(flow.client_conn)
            self._receiving_flows.discard(flow.id)
            return
        if flow.id in self._receiving_flows:
            self._receiving_flows.discard(flow.id)
            clock.receiving -= 1
        clock.in_flight = max(0, clock.in_flight - 1)
        if clock.in_flight == 0:
            self._arm(flow.client_conn, "idle")

    def _refuse(self, flow: http.HTTPFlow, response: http.Response, reason: Decision) -> None:
        logger.warning("request %s refused: %s", flow.id, reason)
        if state_of(flow) is None:
            self._metrics.refusals.labels(reason, "").inc()
            flow.response = response
        else:
            refuse(flow, response, reason)


def close_client(client: connection.Client, answer: bool, seconds: float) -> None:
    """End a client connection from outside mitmproxy's event flow, as its own inactivity
    watchdog does (cancelling the connection's handler task); a client still sending a request
    first gets a 408 it can read."""
    proxyserver: Any = ctx.master.addons.get("proxyserver")
    handler = getattr(proxyserver, "connections", {}).get(client.id) if proxyserver else None
    transport = getattr(handler, "transports", {}).get(client) if handler is not None else None
    if transport is None or transport.handler is None:
        return
    if answer and transport.writer is not None and not client.tls_established and client.alpn != b"h2":
        with contextlib.suppress(Exception):  # the connection is going away regardless
            transport.writer.write(
                mitm_seams.make_error_response(
                    408,
                    mitm_seams.marked(408, "request_timeout", f"the request did not arrive within {seconds:g} s"),
                )
            )
    transport.handler.cancel("codexgate: client too slow")
