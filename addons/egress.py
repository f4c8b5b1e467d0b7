"""Egress policy of the proxy listener: it is not an open proxy.

The proxy listener forwards governed and guard hosts (intercepted) and, besides them, only the
destinations `gateway.egress` allows. Decided once per connection (CONNECT) or per plain-HTTP
proxy request, never per request inside a tunnel:

- `http_connect`: proxy credentials (`gateway.proxy_auth: required`), then the CONNECT target:
  governed/guarded → intercepted; otherwise the egress policy, then the name is resolved and
  every address checked (internal addresses only when the policy names them as addresses), and
  the tunnel is pinned to the checked address so that no second lookup can rebind it.
- `requestheaders`/`request`: a request inside a CONNECT tunnel must go where the CONNECT said;
  a plain-HTTP proxy request is checked like a CONNECT (its lookup waits in `request`, so that
  `requestheaders` stays synchronous for every governed request).
- `server_connect`: the backstop every upstream connection passes — any destination not named
  by the policy is resolved, checked and pinned here again.

Refusals are a proxy-level `403` (or `407`) with an OpenAI-shaped JSON reason, a log line and
`codexgate_egress_refusals_total{reason}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import weakref
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.proxy import mode_specs, server_hooks
from mitmproxy.proxy.mode_specs import ReverseMode

from codexgate.addons.identify import key_from_proxy_authorization
from codexgate.addons.policy_source import PolicySource
from codexgate.errors import error_response
from codexgate.metrics import GatewayMetrics
from codexgate.policies.egress import EgressRules, Verdict, parse_address
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import CompiledPolicy

logger = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 5.0
PENDING_LOOKUP = "codexgate.egress_lookup"  # (host, port) a plain-HTTP request waits to have resolved


@dataclasses.dataclass(frozen=True)
class ConnectTarget:
    """Where a client's CONNECT went: the name it asked for, and what the gateway made of it."""

    host: str  # lower case, no trailing dot
    port: int
    intercepted: bool  # governed or guard host: TLS is intercepted
    pinned: str | None = None  # the checked address a tunnel connects to


def normal_host(host: str) -> str:
    return host.lower().rstrip(".")


class EgressGuard:
    def __init__(self, policy: PolicySource, metrics: GatewayMetrics, internal_ports: Any = None) -> None:
        self._policy = policy
        self._metrics = metrics
        # A callable giving the gateway's own loopback ports its flows may connect to (the relay).
        self._internal_ports = internal_ports or (lambda: ())
        self._own_ports: frozenset[int] = frozenset()  # the gateway's listeners (proxy, base URL, metrics)
        self._targets: weakref.WeakKeyDictionary[connection.Client, ConnectTarget] = weakref.WeakKeyDictionary()
        # Plain-HTTP proxy requests: addresses checked per client connection, (host, port) -> address.
        self._checked: weakref.WeakKeyDictionary[connection.Client, dict[tuple[str, int], str]] = (
            weakref.WeakKeyDictionary()
        )

    def configure(self, updated: set[str]) -> None:
        if not {"mode", "codexgate_metrics_port", "listen_port"} & updated:
            return
        ports: set[int] = set()
        for spec in getattr(ctx.options, "mode", ()):
            try:
                port = mode_specs.ProxyMode.parse(spec).listen_port(getattr(ctx.options, "listen_port", None))
            except ValueError:
                continue
            if port:
                ports.add(port)
        metrics_port = getattr(ctx.options, "codexgate_metrics_port", 0)
        if metrics_port:
            ports.add(metrics_port)
        self._own_ports = frozenset(ports)

    def target_of(self, client: connection.Client) -> ConnectTarget | None:
        return self._targets.get(client)

    def count_refusal(self, reason: str) -> None:
        self._metrics.egress_refusals.labels(reason).inc()

    # -- CONNECT ---------------------------------------------------------------------------------------

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        try:
            policy = self._policy.current()
            if not self._authorized(flow, policy):
                return
            host, port = normal_host(flow.request.host), flow.request.port
            if policy.should_intercept(host, port):
                self._targets[flow.client_conn] = ConnectTarget(host, port, intercepted=True)
                return
            verdict, address = await self._check(policy, host, port)
        except Exception:
            logger.exception("cannot decide egress for CONNECT %s; refused", flow.request.pretty_url)
            verdict, address = Verdict(False, "unresolvable", "the gateway could not decide this destination"), None
        if not verdict.allowed or address is None:
            self._refuse(flow, verdict, f"CONNECT {flow.request.host}:{flow.request.port}")
            return
        self._targets[flow.client_conn] = ConnectTarget(host, port, intercepted=False, pinned=address)
        if address != host:
            flow.request.host = address  # mitmproxy connects the tunnel to the checked address

    # -- requests on the proxy listener ----------------------------------------------------------------

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Synchronous, so that governed requests pay no coroutine: only a plain-HTTP proxy request
        to a name not yet checked on this connection waits for a lookup (in `request`)."""
        if flow.response or flow.error or isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return
        try:
            target = self._targets.get(flow.client_conn)
            host, port = normal_host(flow.request.host), flow.request.port
            if target is not None:
                # Inside a CONNECT tunnel the CONNECT target decides (mitmproxy reads the tunnel's
                # requests in transparent mode, so their destination is the tunnel's); anything else
                # here means that no longer holds, and is refused rather than sent elsewhere.
                if port != target.port or host not in (target.host, target.pinned):
                    self._refuse(
                        flow,
                        Verdict(False, "destination_mismatch",
                                f"this connection was opened (CONNECT) to {target.host}:{target.port}; "
                                f"it cannot carry a request for {host}:{port}"),
                        f"{flow.request.method} {host}:{port} in a tunnel to {target.host}:{target.port}",
                    )  # fmt: skip
                elif target.pinned and target.pinned != host:
                    flow.request.data.host = target.pinned  # keeps the Host header
                return
            policy = self._policy.current()
            if not self._authorized(flow, policy) or policy.should_intercept(host, port):
                return
            address = self._checked.get(flow.client_conn, {}).get((host, port))
            if address is not None:
                self._pin(flow, address)
                return
            verdict = policy.egress.check_destination(host, port) if policy.egress else None
            if verdict is None or not verdict.allowed:
                self._refuse(flow, verdict or Verdict(False, "not_allowed", "no egress policy"),
                             f"{flow.request.method} http://{host}:{port}")  # fmt: skip
                return
            flow.metadata[PENDING_LOOKUP] = (host, port)
        except Exception:
            logger.exception("cannot decide egress for %s; refused", flow.request.pretty_url)
            self._refuse(flow, Verdict(False, "unresolvable", "the gateway could not decide this destination"), "")

    async def request(self, flow: http.HTTPFlow) -> None:
        pending = flow.metadata.pop(PENDING_LOOKUP, None)
        if pending is None or flow.response or flow.error:
            return
        host, port = pending
        try:
            verdict, address = await self._check(self._policy.current(), host, port)
        except Exception:
            logger.exception("cannot decide egress for %s; refused", flow.request.pretty_url)
            verdict, address = Verdict(False, "unresolvable", "the gateway could not decide this destination"), None
        if not verdict.allowed or address is None:
            self._refuse(flow, verdict, f"{flow.request.method} http://{host}:{port}")
            return
        self._checked.setdefault(flow.client_conn, {})[(host, port)] = address
        self._pin(flow, address)

    @staticmethod
    def _pin(flow: http.HTTPFlow, address: str) -> None:
        """Plain HTTP connects to the checked address (the Host header keeps the name). An
        absolute-form https:// request is not pinned here — mitmproxy would take the address for
        the TLS server name — but in `server_connect`, which looks the name up and checks it again."""
        if flow.request.scheme == "http" and address != flow.request.host:
            flow.request.data.host = address

    # -- every upstream connection ---------------------------------------------------------------------

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.error or server.address is None:
            return
        host, port = normal_host(str(server.address[0])), int(server.address[1])
        try:
            policy = self._policy.current()
            if self._named_by_policy(policy, host, port) or self._checked_before(data.client, host, port):
                return
            verdict, address = await self._check(policy, host, port)
        except Exception:
            logger.exception("cannot decide egress for a connection to %s:%s; refused", host, port)
            verdict, address = Verdict(False, "unresolvable", "the gateway could not decide this destination"), None
        if not verdict.allowed or address is None:
            self._metrics.egress_refusals.labels(verdict.reason).inc()
            logger.warning("egress refused: connection to %s:%s: %s", host, port, verdict.detail)
            server.error = f"codexgate egress policy: {verdict.detail}"
            return
        if address != host:
            server.address = (address, port)

    def _named_by_policy(self, policy: CompiledPolicy, host: str, port: int) -> bool:
        """Destinations the policy itself names (providers, governed and guard hosts) and the
        gateway's own internal listeners: trusted without a lookup."""
        if policy.should_intercept(host, port):
            return True
        return host in ("127.0.0.1", "::1", "localhost") and port in self._internal_ports()

    def _checked_before(self, client: connection.Client, host: str, port: int) -> bool:
        """An address this client's CONNECT or plain-HTTP request was checked and pinned to."""
        target = self._targets.get(client)
        if target is not None and not target.intercepted:
            return (target.pinned, target.port) == (host, port)
        checked = self._checked.get(client) or {}
        return any((address, wanted_port) == (host, port) for (_, wanted_port), address in checked.items())

    # -- shared ----------------------------------------------------------------------------------------

    async def _check(self, policy: CompiledPolicy, host: str, port: int) -> tuple[Verdict, str | None]:
        """The egress verdict for host:port and, when allowed, the address to connect to."""
        rules: EgressRules | None = policy.egress
        if rules is None:
            return Verdict(False, "not_allowed", "no egress policy"), None
        verdict = rules.check_destination(host, port)
        if not verdict.allowed:
            return verdict, None
        if parse_address(host) is not None:
            if self._is_gateway_itself(host, port):
                return self._itself(host, port), None
            return verdict, host
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
            )
        except (OSError, TimeoutError, UnicodeError):
            return Verdict(False, "unresolvable", f"{host} cannot be resolved"), None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            return Verdict(False, "unresolvable", f"{host} cannot be resolved"), None
        # Every address must pass: a name that also resolves to an internal address is refused.
        for text in addresses:
            address = parse_address(text)
            if address is None:
                return Verdict(False, "unresolvable", f"{host} resolved to something that is not an address"), None
            found = rules.check_address(address, port, host)
            if not found.allowed:
                return found, None
            if self._is_gateway_itself(text, port):
                return self._itself(host, port), None
        return verdict, addresses[0]

    def _is_gateway_itself(self, address: str, port: int) -> bool:
        """One of the gateway's own listeners, reached by an address of this machine (however
        the policy names it: `--listen-host 0.0.0.0` answers on every address the host has)."""
        if port not in self._own_ports and port not in self._internal_ports():
            return False
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, 0))  # succeeds only for an address of this machine
            except OSError:
                return False
        return True

    @staticmethod
    def _itself(host: str, port: int) -> Verdict:
        return Verdict(False, "gateway_itself", f"{host}:{port} is one of the gateway's own listeners")

    def _authorized(self, flow: http.HTTPFlow, policy: CompiledPolicy) -> bool:
        """`gateway.proxy_auth: required`: a valid virtual key as proxy credentials, or 407."""
        if policy.policy.gateway.proxy_auth != "required":
            return True
        value = flow.request.headers.get("proxy-authorization")
        if not value:
            self._refuse(
                flow,
                Verdict(False, "proxy_auth_required",
                        "this proxy needs a virtual key as proxy credentials: HTTPS_PROXY=http://codex:<key>@HOST:PORT"),
                f"{flow.request.method} {flow.request.pretty_host} without proxy credentials",
                status=407,
            )  # fmt: skip
            return False
        key_text = key_from_proxy_authorization(value)
        key = policy.keys_by_hash.get(hash_key(key_text)) if key_text else None
        if key is None or key.unusable() is not None:
            self._refuse(
                flow,
                Verdict(False, "proxy_auth_invalid", "the proxy credentials are not a valid, active virtual key"),
                f"{flow.request.method} {flow.request.pretty_host} with invalid proxy credentials",
                status=407,
            )
            return False
        return True

    def _refuse(self, flow: http.HTTPFlow, verdict: Verdict, what: str, status: int = 403) -> None:
        self._metrics.egress_refusals.labels(verdict.reason).inc()
        logger.warning("egress refused (%s): %s: %s", verdict.reason, what, verdict.detail)
        code = "proxy_auth_required" if status == 407 else "egress_not_allowed"
        response = error_response(status, code, f"codexgate: {verdict.detail}")
        response.headers["x-codexgate-refusal"] = verdict.reason
        if status == 407:
            response.headers["proxy-authenticate"] = 'Basic realm="codexgate"'
        flow.response = response
        flow.comment = f"codexgate: egress refused ({verdict.reason})"
