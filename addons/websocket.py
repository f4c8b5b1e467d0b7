"""Responses over WebSocket (`GET /v1/responses`, `Upgrade: websocket`), governed.

`codexgate_websocket=serve` (default): a governed upgrade whose virtual key is known and usable
is forwarded by mitmproxy to the in-process WebSocket relay (`codexgate.ws_relay`), which serves
each `response.create` as a `POST /v1/responses` through the gateway's own base-URL listener —
the whole chain, once per response, accounted with `transport: ws`. The upgrade itself carries
no model request: it is checked for a usable key (401 otherwise, accounted as a refusal), then
leaves the chain without a request state, its key kept in the relay's session rather than in the
forwarded headers. `refuse`: answered `426`, and Codex falls back to HTTP at once.

On the gateway listener this addon also recognises the relay's own requests (the marker header
with the process secret) and marks them `transport: ws` with the client's real mode.
"""

from __future__ import annotations

import logging
import weakref

from mitmproxy import connection, ctx, exceptions, http, tcp
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ReverseMode

from codexgate.addons.identify import CLIENT_CREDENTIALS_KEY, flow_key_candidates, key_from_proxy_authorization
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest, refuse, state_of
from codexgate.headers import header_value, strip_client_credentials
from codexgate.policies.keys import hash_key
from codexgate.providers.registry import CLIENT_CREDENTIAL_FIELDS
from codexgate.ws_relay import RELAY_MARKER_HEADER, SocketSession, WebSocketRelay

logger = logging.getLogger(__name__)

RELAY_MARKER_FIELD = RELAY_MARKER_HEADER.encode()  # lower case already

WEBSOCKET_ENDPOINT = "responses_websocket"  # Intake's endpoint for a Responses WebSocket upgrade
RELAYED_UPGRADE = "codexgate.websocket_relayed"  # flow metadata: Seal lets this upgrade pass
# Upgrade headers carried on each relayed request: Codex's session attribution and client identity.
_CARRIED = ("session-id", "thread-id", "x-client-request-id", "originator", "user-agent", "version", "traceparent")
_CARRIED_PREFIXES = ("x-codex-", "x-openai-")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def carried_headers(headers: http.Headers) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower() in _CARRIED or name.lower().startswith(_CARRIED_PREFIXES)
    }


class ResponsesWebSocket:
    def __init__(self) -> None:
        self.relay: WebSocketRelay | None = None
        self._connect_keys: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()
        self._warned_no_listener = False

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_websocket", str, "serve",
            "Responses over WebSocket (Codex's first choice): 'serve' governs each response.create like an "
            "HTTP request; 'refuse' answers 426 so clients fall back to HTTP.",
            choices=["serve", "refuse"],
        )  # fmt: skip

    def configure(self, updated: set[str]) -> None:
        if "codexgate_websocket" in updated and ctx.options.codexgate_websocket not in ("serve", "refuse"):
            raise exceptions.OptionsError("codexgate_websocket must be 'serve' or 'refuse'")

    async def running(self) -> None:
        self.relay = WebSocketRelay()
        await self.relay.start()

    async def done(self) -> None:
        if self.relay is not None:
            await self.relay.stop()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Proxy credentials on CONNECT identify the client of every request on that connection.
        value = flow.request.headers.get("proxy-authorization")
        key = key_from_proxy_authorization(value) if value else None
        if key:
            self._connect_keys[flow.client_conn] = key

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        relay = self.relay
        state = state_of(flow)
        if state is None:
            # The relay serves the gateway alone: a client cannot reach it through the proxy listener.
            if relay is not None and flow.request.port == relay.port and flow.request.host in _LOOPBACK:
                flow.response = error_response(
                    403, "forbidden_destination", "the gateway's internal WebSocket relay is not reachable"
                )
            return
        headers = flow.request.headers
        by_name = state.head_values(headers.fields)  # what Intake read: most often no pass at all
        if by_name is None:
            marker = header_value(headers, RELAY_MARKER_FIELD)
        else:
            found = by_name.get(RELAY_MARKER_FIELD)
            marker = found.decode("utf-8", "surrogateescape") if found is not None else None
        if marker is not None:
            del flow.request.headers[RELAY_MARKER_HEADER]
            self._mark_relayed(flow, state, marker)
        if state.endpoint == WEBSOCKET_ENDPOINT:
            self._upgrade(flow, state)

    def _mark_relayed(self, flow: http.HTTPFlow, state: GatewayRequest, marker: str) -> None:
        mode = self.relay.mode_from_marker(marker) if self.relay is not None else None
        if mode is None or not isinstance(flow.client_conn.proxy_mode, ReverseMode):
            logger.warning("request %s carried a WebSocket relay marker that is not this gateway's; ignored", flow.id)
            return
        state.transport = "ws"
        state.mode = mode

    def _upgrade(self, flow: http.HTTPFlow, state: GatewayRequest) -> None:
        relay = self.relay
        state.transport = "ws"
        if ctx.options.codexgate_websocket == "refuse" or flow.request.method != "GET":
            self._refuse_426(flow, "codexgate serves /v1/responses over HTTP here; use SSE")
            return
        target = self._target()
        if relay is None or target is None:
            self._refuse_426(flow, "codexgate cannot serve Responses over WebSocket right now; use SSE")
            return
        relay.target = target
        key = self._identify(flow, state)
        if key is None:
            return
        refused = relay.take_refusal(key, flow.request.headers.get("session-id"))
        if refused is not None:
            self._refuse_426(flow, f"{refused} (continuing over HTTP)")
            return
        session = SocketSession(key=key, headers=carried_headers(flow.request.headers), mode=state.mode,
                                label=f"{flow.id[:8]} key={state.key.name if state.key else '?'}")  # fmt: skip
        path = relay.register(session)
        # The upgrade leaves the chain here: no request state (each response.create is its own
        # request), no credentials (the key stays in the relay's session), and only the relay
        # as its destination.
        del flow.metadata[METADATA_KEY]
        flow.metadata.pop(CLIENT_CREDENTIALS_KEY, None)
        flow.metadata[RELAYED_UPGRADE] = True
        strip_client_credentials(flow.request.headers, CLIENT_CREDENTIAL_FIELDS)
        flow.request.scheme = "http"
        flow.request.host = relay.host
        flow.request.port = relay.port
        flow.request.path = path
        flow.comment = f"codexgate: Responses WebSocket for key {state.key.name if state.key else '?'}"

    def _identify(self, flow: http.HTTPFlow, state: GatewayRequest) -> str | None:
        """The upgrade's virtual key if it is known and usable now; otherwise refuses (401)."""
        candidates = flow_key_candidates(flow, self._connect_keys)
        if not candidates:
            message = "no virtual key: send it as 'Authorization: Bearer <key>' (CODEX_API_KEY for Codex)"
            refuse(flow, error_response(401, "missing_api_key", message), Decision.MISSING_KEY)
            return None
        for candidate in candidates:
            record = state.policy.keys_by_hash.get(hash_key(candidate))
            if record is None:
                continue
            state.key, state.team = record, record.team
            team = state.policy.policy.teams.get(record.team)
            state.org = team.org if team else None
            unusable = record.unusable()
            if unusable is not None:
                code, message = unusable
                refuse(flow, error_response(401, code, message), Decision(code))
                return None
            # Model rules, limits and budgets (and the key again) are checked on every response.create.
            return candidate
        refuse(
            flow, error_response(401, "invalid_api_key", "unknown virtual key; ask your platform team for one"),
            Decision.UNKNOWN_KEY,
        )  # fmt: skip
        return None

    @staticmethod
    def _refuse_426(flow: http.HTTPFlow, message: str) -> None:
        refuse(flow, error_response(426, "websocket_not_supported", message), Decision.WEBSOCKET_REFUSED)

    def _target(self) -> str | None:
        """The gateway (base-URL) listener's /v1/responses, which relayed requests go through."""
        proxyserver = ctx.master.addons.get("proxyserver")
        for server in getattr(proxyserver, "servers", ()):
            if not isinstance(server.mode, ReverseMode) or not server.listen_addrs:
                continue
            host, port = server.listen_addrs[0][:2]
            if host in ("", "0.0.0.0"):
                host = "127.0.0.1"
            elif host == "::":
                host = "::1"
            return f"http://[{host}]:{port}/v1/responses" if ":" in host else f"http://{host}:{port}/v1/responses"
        if not self._warned_no_listener:
            self._warned_no_listener = True
            logger.warning("no base-URL (reverse) listener: Responses WebSocket upgrades are answered 426")
        return None

    def response(self, flow: http.HTTPFlow) -> None:
        """The relayed socket passes through mitmproxy as bytes, not as WebSocket messages.

        mitmproxy's WebSocket layer parses and re-frames every message in Python and dispatches
        a hook per message to every addon — for a Codex answer, one per streamed event. Nothing
        on this socket is for mitmproxy to look at (the relay governs each request through the
        chain), so once the relay has answered 101 the connection is relayed as raw TCP instead:
        measured, a turn over the socket costs ~1 ms more than over HTTP instead of ~4 ms more
        (docs/benchmarks.md). mitmproxy decides after this hook, from `flow.websocket`."""
        if (
            flow.metadata.get(RELAYED_UPGRADE)
            and flow.response is not None
            and flow.response.status_code == 101
            and ctx.options.rawtcp
        ):
            flow.websocket = None

    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        # mitmproxy keeps every chunk of a TCP flow for its lifetime, and a Codex socket lives for
        # a whole session: keep only the latest (the relay has the conversation).
        relay = self.relay
        if relay is not None and len(flow.messages) > 1 and flow.server_conn.address == (relay.host, relay.port):
            del flow.messages[:-1]

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # The same for the WebSocket layer, which relays the socket when `rawtcp` is off.
        if flow.metadata.get(RELAYED_UPGRADE) and flow.websocket is not None and len(flow.websocket.messages) > 1:
            del flow.websocket.messages[:-1]
