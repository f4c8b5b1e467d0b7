"""The last request-phase addon: a governed request leaves only if every policy step cleared it.

mitmproxy forwards a request whose addon raised; this is the backstop that stops it.
"""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from codexgate.addons.policy_source import PolicySource
from codexgate.addons.websocket import RELAYED_UPGRADE
from codexgate.failsafe import refuse_internal
from codexgate.flowstate import Decision, state_of

logger = logging.getLogger(__name__)


class Seal:
    def __init__(self, policy: PolicySource) -> None:
        self._policy = policy

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None and flow.metadata.get(RELAYED_UPGRADE):
            return  # a Responses WebSocket, checked and sent to the in-process relay (addons/websocket.py)
        try:
            governed_host = state is not None or self._policy.current().is_governed_host(
                flow.request.host, flow.request.port
            )
        except Exception:
            governed_host = True
        if state is not None and state.cleared:
            state.decision = Decision.FORWARDED
            state.forwarded_at = time.time()
            return
        if governed_host:
            logger.error(
                "request %s to %s was not cleared by the policy chain; refused", flow.id, flow.request.pretty_url
            )
            refuse_internal(flow)
