"""The gateway's mitmproxy addons, one responsibility each; `chain()` lists them in order."""

from __future__ import annotations

from typing import Any


def chain(shown: bool = True) -> list[Any]:
    """What mitmproxy loads: one `Pipeline` running every step in order (see `steps`), and where
    flows are shown, `ShownSecretMask` ahead of it (it must run before mitmproxy's View).
    `shown=False` where no one can look at flows (the gateway master, without mitmweb): nothing to
    mask for, no view to trim, and a single addon for mitmproxy to dispatch each event to (it
    costs a few µs per addon per event, whether the addon implements the hook or not)."""
    import logging

    from codexgate.addons.web_view import ShownSecretMask
    from codexgate.pipeline import Pipeline

    # mitmproxy leaves the root logger at DEBUG and turns every record into an event for every
    # addon; codexgate's debug lines would cost ~0.2 ms a request even when nothing prints them.
    logging.getLogger("codexgate").setLevel(logging.INFO)
    all_steps = steps(shown)
    if not shown:
        return [Pipeline(all_steps)]
    mask = next(step for step in all_steps if isinstance(step, ShownSecretMask))
    return [mask, Pipeline([step for step in all_steps if step is not mask])]


def steps(shown: bool = True) -> list[Any]:
    """The addons in the order a request passes them."""
    from codexgate.addons.accounting import Accounting
    from codexgate.addons.admit import Admit
    from codexgate.addons.audit_log import AuditLog
    from codexgate.addons.client_trust import ClientTrustHint
    from codexgate.addons.codex_backend import CodexBackend
    from codexgate.addons.credentials import Credentials
    from codexgate.addons.data_dir import DataDirLock
    from codexgate.addons.egress import EgressGuard
    from codexgate.addons.failover import Failover
    from codexgate.addons.guardrails import Guardrails
    from codexgate.addons.identify import Identify
    from codexgate.addons.intake import Intake
    from codexgate.addons.intake_limits import RequestLimits
    from codexgate.addons.key_guard import KeyGuard
    from codexgate.addons.lifecycle import GracefulShutdown
    from codexgate.addons.limits import Charge, Limits
    from codexgate.addons.meter import Meter
    from codexgate.addons.metrics_export import MetricsExport, Readiness
    from codexgate.addons.mock_upstream import MockUpstream
    from codexgate.addons.models_endpoint import ModelsEndpoint
    from codexgate.addons.options_lock import OptionsLock
    from codexgate.addons.policy_source import PolicySource
    from codexgate.addons.route import Route
    from codexgate.addons.seal import Seal
    from codexgate.addons.tls_scope import TlsScope
    from codexgate.addons.tracing import TraceEnd, Tracing
    from codexgate.addons.translate import Translate
    from codexgate.addons.upstream_bounds import StreamWatch, UpstreamBounds
    from codexgate.addons.web_view import FlowRetention, SecretMask, ShownSecretMask
    from codexgate.addons.websocket import ResponsesWebSocket
    from codexgate.addons.write_ahead import WriteAhead
    from codexgate.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    policy = PolicySource(metrics)
    limits = Limits(policy, metrics)
    tracing = Tracing()
    failover = Failover(metrics)
    websocket = ResponsesWebSocket()
    egress = EgressGuard(
        policy, metrics, lambda: tuple(relay.port for relay in (failover.relay, websocket.relay) if relay is not None)
    )  # the gateway's own in-process relays are the only loopback ports its flows may reach
    request_limits = RequestLimits(policy, metrics)
    upstream_bounds = UpstreamBounds(metrics)
    accounting = Accounting(metrics)
    audit = AuditLog(metrics)
    shutdown = GracefulShutdown()
    chosen = [
        # shown: moves itself ahead of mitmproxy's own addons; else the Pipeline's first step
        ShownSecretMask(policy) if shown else SecretMask(policy, shown=False),
        OptionsLock(audit),  # first to see a runtime option change: refuses it before any step applies it
        MetricsExport(metrics, Readiness(policy, limits, shutdown)),  # /metrics, /healthz, /readyz
        policy,
        DataDirLock(),  # before anything opens a file in the data dir
        egress,  # before TlsScope, which reads the CONNECT target it recorded
        TlsScope(policy, egress),
        ClientTrustHint(),
        CodexBackend(policy),  # Codex's catalog and startup fetches, before Intake/KeyGuard refuse them
        Intake(policy, request_limits),
        request_limits,  # header limits and slow-client timers; Intake reads its body caps
        websocket,  # right after Intake: takes Responses WebSocket upgrades out of the chain
        tracing,  # right after Intake: starts the request's span at state.started
        KeyGuard(policy, metrics),
        Identify(),
        Admit(),
        Guardrails(policy),  # after the team is known, before any budget is reserved
        ModelsEndpoint(),
        Route(failover),
        limits,
        Credentials(),
        MockUpstream(),
        Seal(policy),
        WriteAhead(limits, accounting, audit, metrics),  # right after Seal: on record before it leaves
        upstream_bounds,  # request: deadlines from send time; response/error: before Translate, Meter, Charge
        failover,  # responseheaders: which relayed attempt answered, before its answer is translated
        Translate(),
        Meter(metrics),
        StreamWatch(),  # after Meter/Translate set the stream up
        Charge(limits, metrics),
        accounting,
        audit,
        TraceEnd(tracing),  # its request hook runs right after Seal: the upstream attempt starts at send time
        FlowRetention(),
        shutdown,  # last: a request counts as finished only once everything above settled it
    ]
    return chosen if shown else [step for step in chosen if not isinstance(step, FlowRetention)]
