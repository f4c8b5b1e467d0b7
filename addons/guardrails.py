"""Guardrails: scans what a client sends to the model before it leaves the gateway.

Runs in `request` after Identify (the team is known) and before Route. The detectors and the
action come from the policy's `guardrails:` section (`codexgate.detectors.GuardrailSettings`);
without that section the addon does nothing. Per request, by the action of the team (or of a
custom rule that fixes its own):

- `block`: 400 `guardrail_blocked` naming the rules and locations (never the content); the
  request is not forwarded. Codex replays the whole conversation, so a secret that reached it
  (say in a tool output) blocks every later turn of that session.
- `redact`: `state.body` and the forwarded content get `[REDACTED:<rule>]` in place of each
  finding; the response carries `x-codexgate-guardrail: redacted=<rules>`.
- `log`: a warning naming rule and location only; the request passes unchanged.

Every action lists the rule names in `state.guardrail_findings` (and the action taken in
`state.guardrail_action`) for accounting and audit.

Extra detectors (external DLP services, ...): any object with a `name` and
`scan(text) -> list[(start, end)]` (`codexgate.detectors.Detector`), registered with
`Guardrails.register(detector)` or passed as `Guardrails(policy, detectors=[...])`. `scan` may be
`async def`: such detectors run concurrently over all texts of the request, awaited before it
is forwarded. Their findings take the team's action. A detector that raises refuses the request
(500, fail closed), so a service that should fail open must catch its own errors. Results of
the policy's detectors and of sync extras are cached per text (Codex re-sends the whole
conversation every turn); async detectors are called for every text of every request, so an
external service should batch or cache on its side.

For tests (and embedding), `Guardrails(settings_override=GuardrailSettings(...))` uses those
settings instead of the policy's.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Iterable
from typing import Any

from mitmproxy import http

from codexgate.addons.policy_source import PolicySource
from codexgate.detectors import (
    Detector,
    Finding,
    GuardrailSettings,
    ScanCache,
    decide,
    redact,
    rule_names,
    scan,
    texts,
)
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import Decision, refuse, state_of

logger = logging.getLogger(__name__)

HEADER = "x-codexgate-guardrail"
MAX_LISTED = 5  # locations named in a block message


class Guardrails:
    def __init__(
        self,
        policy: PolicySource | None = None,
        *,
        settings_override: GuardrailSettings | None = None,
        detectors: Iterable[Detector] = (),
    ) -> None:
        self._policy = policy
        self._override = settings_override
        self._extra: list[Detector] = []
        # Codex re-sends the whole conversation every turn: results per text, for one detector set.
        self._cache = ScanCache()
        self._cache_settings: GuardrailSettings | None = None
        for detector in detectors:
            self.register(detector)

    def register(self, detector: Detector) -> None:
        """Adds a detector that runs besides the policy's (sync or `async def scan`)."""
        if not isinstance(getattr(detector, "name", None), str) or not callable(getattr(detector, "scan", None)):
            raise TypeError("a detector needs a str `name` and a `scan(text)` method")
        self._extra.append(detector)
        self._cache_settings = None

    def settings(self, compiled: Any = None) -> GuardrailSettings | None:
        """The guardrails of `compiled` (the policy a request was admitted under, so one request
        sees one policy throughout), else of the current policy."""
        if self._override is not None:
            return self._override
        if self._policy is None:
            return None
        settings = getattr((compiled or self._policy.current()).policy, "guardrails", None)
        if settings is None or type(settings) is GuardrailSettings:
            return settings  # (no `isinstance`: pydantic's metaclass answers it in a Python frame)
        return settings if isinstance(settings, GuardrailSettings) else None

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error:
            return
        state = state_of(flow)
        if state is None or state.body is None or state.endpoint not in ("responses", "chat"):
            return
        settings = self.settings(state.policy)
        if settings is None:
            return
        if settings is not self._cache_settings:  # new policy or new detectors: forget old results
            self._cache, self._cache_settings = ScanCache(), settings
        sync = [d for d in self._extra if not inspect.iscoroutinefunction(d.scan)]
        findings = scan(state.body, [*settings.detectors_compiled(), *sync], self._cache)
        findings += await self._scan_async(state.body)
        if not findings:
            return
        grouped = decide(findings, settings, state.team)
        names = rule_names(findings)
        state.guardrail_findings = names
        who = f"request {flow.id} key {state.key.name if state.key else '-'} team {state.team or '-'}"
        blocked = grouped.get("block")
        if blocked:
            state.guardrail_action = "block"
            listed = "; ".join(finding.describe() for finding in blocked[:MAX_LISTED])
            more = f" (and {len(blocked) - MAX_LISTED} more)" if len(blocked) > MAX_LISTED else ""
            logger.warning("guardrail blocked %s: %s%s", who, listed, more)
            refuse(
                flow,
                error_response(
                    400,
                    "guardrail_blocked",
                    f"codexgate guardrails blocked this request: {listed}{more}. Remove it from the prompt or tool "
                    "output; the conversation is re-sent every turn, so start a new session if it is in the history.",
                    headers={HEADER: "blocked=" + ",".join(rule_names(blocked))},
                ),
                Decision.GUARDRAIL_BLOCKED,
            )
            return
        redacted = grouped.get("redact", [])
        for finding in grouped.get("log", []):
            logger.warning("guardrail finding %s: %s (logged, not changed)", who, finding.describe())
        if redacted:
            for finding in redacted:
                logger.warning("guardrail finding %s: %s (redacted)", who, finding.describe())
            state.body = redact(state.body, redacted)
            flow.request.content = json.dumps(state.body).encode()
            state.guardrail_header = "redacted=" + ",".join(rule_names(redacted))
            state.guardrail_action = "redact"
        else:
            state.guardrail_action = "log"

    async def _scan_async(self, body: dict[str, Any]) -> list[Finding]:
        detectors = [d for d in self._extra if inspect.iscoroutinefunction(d.scan)]
        if not detectors:
            return []
        jobs = [(detector, path, text) for path, text in texts(body) for detector in detectors]
        scans: list[Any] = [detector.scan(text) for detector, _, text in jobs]  # coroutines
        results = await asyncio.gather(*scans)
        findings = []
        for (detector, path, text), spans in zip(jobs, results, strict=True):
            for start, end in spans:
                if 0 <= start < end <= len(text):
                    findings.append(Finding(detector.name, path, start, end))
        return findings

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        value = state.guardrail_header if state is not None else None
        if value and flow.response is not None:
            flow.response.headers[HEADER] = value

    def response(self, flow: http.HTTPFlow) -> None:
        # Answers made inside the gateway (mock provider) skip `responseheaders`.
        state = state_of(flow)
        value = state.guardrail_header if state is not None else None
        if value and flow.response is not None and HEADER not in flow.response.headers:
            flow.response.headers[HEADER] = value
