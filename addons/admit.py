"""Admits a request: the key is active and not expired, the model exists and the key may use it."""

from __future__ import annotations

import logging

from mitmproxy import http

from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Decision, refuse, state_of

logger = logging.getLogger(__name__)


class Admit:
    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None:
            return
        key = state.key
        if key is None:
            raise RuntimeError("admit reached without an identified key")
        unusable = key.unusable()
        if unusable is not None:
            code, message = unusable
            refuse(flow, error_response(401, code, message), Decision(code))
            return
        if state.endpoint == "models":
            return
        requested = state.model_requested or ""
        # What follows depends only on the loaded policy, the key (by name, as the policy's other
        # per-key lookups) and the model asked for: a pair admitted once is admitted without
        # asking again until a reload; a refusal is worked out anew each time.
        admitted = state.policy.admitted_models.get((key.name, requested))
        if admitted is not None:
            state.model = admitted
            return
        found = state.policy.lookup_model(requested)
        if found is None:
            refuse(
                flow,
                error_response(
                    404,
                    "model_not_found",
                    f"model {requested} does not exist on this gateway; GET /v1/models lists yours",
                    "model",
                ),
                Decision.UNKNOWN_MODEL,
            )
            return
        canonical, _entry = found
        if not (key.allows_model(canonical) or key.allows_model(requested)):
            refuse(
                flow,
                error_response(
                    403,
                    "model_not_allowed",
                    f"model {requested} is not allowed for key {key.name}; allowed: {', '.join(key.models)}",
                    "model",
                ),
                Decision.MODEL_NOT_ALLOWED,
            )
            return
        team = state.policy.policy.teams.get(key.team)
        if team is not None and not (team.allows_model(canonical) or team.allows_model(requested)):
            refuse(
                flow,
                error_response(
                    403,
                    "model_not_allowed",
                    f"model {requested} is not allowed for team {key.team} (key {key.name}); "
                    f"allowed: {', '.join(team.models or ())}",
                    "model",
                ),
                Decision.MODEL_NOT_ALLOWED,
            )
            return
        if not state.policy.reachable_providers(key, canonical):
            allowed = state.policy.allowed_providers(key) or frozenset()
            refuse(
                flow,
                error_response(
                    403,
                    "provider_not_allowed",
                    f"model {requested} is served only by providers key {key.name} may not use; "
                    f"allowed providers: {', '.join(sorted(allowed)) or 'none'}",
                    "model",
                ),
                Decision.PROVIDER_NOT_ALLOWED,
            )
            return
        state.policy.admitted_models[(key.name, requested)] = canonical
        state.model = canonical
