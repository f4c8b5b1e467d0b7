"""Loads the policy file and hot-reloads it: an edit applies to the next request.

A broken edit keeps the last good policy and says why in the log (and `codexgate check`).
"""

from __future__ import annotations

import logging
import os

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from codexgate.metrics import GatewayMetrics
from codexgate.policies.loader import CompiledPolicy, PolicyError, load_policy

logger = logging.getLogger(__name__)


class PolicySource:
    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self._metrics = metrics or GatewayMetrics()
        self._policy: CompiledPolicy | None = None
        self._failed_mtime_ns: int | None = None
        self.reloads = 0
        self.reload_failures = 0

    def load(self, loader: Loader) -> None:
        loader.add_option("codexgate_policy", str, "", "Path of the codexgate policy YAML file.")
        loader.add_option(
            "codexgate_data_dir", str, "", "Directory for codexgate state (accounting log); created owner-only."
        )

    def configure(self, updated: set[str]) -> None:
        if "codexgate_policy" in updated:
            path = ctx.options.codexgate_policy
            if not path:
                raise exceptions.OptionsError("codexgate_policy: a policy file is required")
            try:
                self._policy = load_policy(path)
            except PolicyError as exc:
                raise exceptions.OptionsError("invalid codexgate policy:\n" + str(exc)) from None
            logger.info(
                "policy loaded from %s: %d keys, %d models",
                path,
                len(self._policy.policy.keys),
                len(self._policy.policy.models),
            )
        if "codexgate_data_dir" in updated and ctx.options.codexgate_data_dir:
            os.makedirs(ctx.options.codexgate_data_dir, mode=0o700, exist_ok=True)

    def current(self) -> CompiledPolicy:
        """The policy in force now, reloaded first if its file changed since the last look."""
        policy = self._policy
        if policy is None:
            raise RuntimeError("no policy loaded")
        try:
            mtime_ns = os.stat(policy.path).st_mtime_ns
        except OSError:
            return policy  # file moved away mid-edit: keep serving the last good policy
        if mtime_ns == policy.mtime_ns or mtime_ns == self._failed_mtime_ns:
            return policy
        try:
            fresh = load_policy(policy.path)
        except PolicyError as exc:
            self._failed_mtime_ns = mtime_ns
            self.reload_failures += 1
            self._metrics.policy_reloads.labels("failed").inc()
            logger.error("policy reload failed; keeping the last good policy:\n%s", exc)
            return policy
        self._policy = fresh
        self._failed_mtime_ns = None
        self.reloads += 1
        self._metrics.policy_reloads.labels("ok").inc()
        logger.info(
            "policy reloaded from %s: %d keys, %d models", fresh.path, len(fresh.policy.keys), len(fresh.policy.models)
        )
        return fresh
