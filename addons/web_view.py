"""What mitmweb shows: no secrets, and not every flow forever.

mitmweb's View addon publishes a flow to the browser at `requestheaders` and again at
`response`/`error`, and it is one of mitmproxy's default addons, so it runs before any
script addon. `SecretMask` therefore moves itself to the front of the addon chain: it keeps
the client's credentials of a governed request in flow metadata (where `Identify` reads them)
and replaces them in the headers before View publishes the flow, and it masks the provider
credential `Credentials` put in once the request has been sent.
"""

from __future__ import annotations

import collections
import logging

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ReverseMode

from codexgate.addons.identify import CLIENT_CREDENTIALS_KEY
from codexgate.addons.key_guard import VIRTUAL_KEY_REMOVED, carries_virtual_key, scrub_request_head
from codexgate.addons.policy_source import PolicySource
from codexgate.flowstate import state_of
from codexgate.policies.loader import CompiledPolicy
from codexgate.providers.registry import CLIENT_CREDENTIAL_HEADERS, SECRET_HEADERS

logger = logging.getLogger(__name__)

MASKED = "***codexgate-masked***"
# Where a credential can travel: the client's, and each provider family's.


def mask_value(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    return f"{scheme} {MASKED}" if rest and scheme.lower() in ("bearer", "basic") else MASKED


class CredentialsKeptAside(list[tuple[str, str]]):
    """The client's credential headers SecretMask took out of the flow, for `Identify`. A deep copy
    (what mitmproxy's flow files and mitmweb's dump store) holds them masked."""

    def __deepcopy__(self, memo: dict[int, object]) -> list[tuple[str, str]]:
        return [(name, mask_value(value)) for name, value in self]


class SecretMask:
    """Keeps virtual keys from leaving on ungoverned flows (removed before anything else sees the
    request) and, where someone can look at flows (`shown`), keeps every credential of a governed
    request out of sight. Without a view — the gateway master — masking governed flows would be
    wasted work, and this runs as the Pipeline's first step (`codexgate.addons.chain`); under
    mitmweb it is an addon of its own ahead of mitmproxy's View (see `load`)."""

    def __init__(self, policy: PolicySource, shown: bool = True) -> None:
        self._policy = policy
        self._shown = shown

    def load(self, loader: Loader) -> None:
        # Run before mitmproxy's View (a default addon), which publishes flows to mitmweb.
        addons = ctx.master.addons
        if self in addons.chain and addons.chain[0] is not self:
            addons.chain.remove(self)
            addons.chain.insert(0, self)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        policy: CompiledPolicy | None = None
        # Everything on the gateway listener is governed: no policy lookup needed to know that.
        governed = isinstance(flow.client_conn.proxy_mode, ReverseMode)
        if not governed:
            try:
                policy = self._policy.current()
            except Exception:
                policy = None  # unsure what is governed: keep every credential out of sight
            governed = policy is None or policy.is_governed_host(flow.request.host, flow.request.port)
        if governed:
            if not self._shown:
                return
            headers = flow.request.headers
            saved = [(name, value) for name in SECRET_HEADERS for value in headers.get_all(name)]
            if saved:
                flow.metadata[CLIENT_CREDENTIALS_KEY] = CredentialsKeptAside(saved)
                for name in {name for name, _ in saved}:
                    headers.set_all(name, [mask_value(v) for v in headers.get_all(name)])
            return
        assert policy is not None
        headers = flow.request.headers
        # Not governed: a virtual key must not leave, nor be shown. Removed here, before View
        # publishes the flow; KeyGuard logs it and answers guard hosts.
        if policy.is_guard_host(flow.request.pretty_host.lower()):
            # For CodexBackend, which answers Codex's catalog fetch to chatgpt.com for the key (and
            # drops this again): the client's credentials as sent, before they are scrubbed.
            carried = [
                (name, value) for name in CLIENT_CREDENTIAL_HEADERS for value in headers.get_all(name)
                if carries_virtual_key(value, policy.keys_by_hash)
            ]  # fmt: skip
            if carried:
                flow.metadata[CLIENT_CREDENTIALS_KEY] = carried
        removed = scrub_request_head(flow.request, policy.keys_by_hash)  # headers, query, path
        if removed:
            flow.metadata[VIRTUAL_KEY_REMOVED] = removed


class ShownSecretMask(SecretMask):
    """`SecretMask` where flows can be looked at (mitmweb, a flow dump): also masks the provider
    credential `Credentials` put in, once the request has been sent. A class of its own so that
    where nothing is shown these hooks are not there to be dispatched at all."""

    def __init__(self, policy: PolicySource) -> None:
        super().__init__(policy, shown=True)

    def response(self, flow: http.HTTPFlow) -> None:
        self._mask_sent(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._mask_sent(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._mask_sent(flow)

    def _mask_sent(self, flow: http.HTTPFlow) -> None:
        """The provider's credential has left with the request: the flow need not keep it."""
        if state_of(flow) is None:
            return
        headers = flow.request.headers
        for name in SECRET_HEADERS:
            values = headers.get_all(name)
            if values and any(MASKED not in value for value in values):
                headers.set_all(name, [mask_value(v) for v in values])


class FlowRetention:
    """Keeps at most `codexgate_web_max_flows` finished flows in mitmweb's view."""

    def __init__(self) -> None:
        self._finished: collections.deque[str] = collections.deque()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_web_max_flows", int, 2000,
            "Finished flows mitmweb keeps in memory; older ones are dropped (0: keep all).",
        )  # fmt: skip

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        limit = ctx.options.codexgate_web_max_flows
        view = getattr(ctx.master, "view", None)
        if view is None or limit <= 0:
            return
        self._finished.append(flow.id)
        excess = len(self._finished) - limit
        if excess <= 0:
            return
        old_ids = [self._finished.popleft() for _ in range(excess)]
        old = [found for found in (view.get_by_id(flow_id) for flow_id in old_ids) if found is not None]
        if old:
            view.remove(old)
