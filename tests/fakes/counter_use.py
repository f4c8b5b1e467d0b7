"""What the counter store holds for a policy's levels, read through the store's own API (the tests'
independent check that a request was counted once, at the right levels, and nothing left held)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from codexgate.addons.limits import counters_for
from codexgate.policies.loader import load_policy
from codexgate.policies.schema import Limited
from codexgate.stores.factory import open_store

# key alice and providers first/second: the failover tests' levels
FAILOVER_LEVELS = (("key", "alice"), ("provider", "first"), ("provider", "second"))


def counter_use(
    policy: Path, store_spec: str, data_dir: Path, levels: tuple[tuple[str, str], ...] = FAILOVER_LEVELS
) -> dict[str, float]:
    """Each counter's use (settled + reserved) by counter id, once the gateway stopped (it lands
    every settlement first): a reservation left held, or a request counted twice, shows here."""
    compiled = load_policy(policy).policy
    now = time.time()
    keys = {key.name: key for key in compiled.keys}
    limited: list[tuple[str, str, Limited]] = [
        (kind, name, keys[name] if kind == "key" else compiled.providers[name]) for kind, name in levels
    ]
    counters = counters_for(limited, now, compiled.gateway.hard_budgets.epsilon_usd)

    async def read() -> dict[str, float]:
        store = open_store(store_spec, str(data_dir))
        try:
            return {s.counter.counter_id: s.used for s in await store.snapshot(counters, now)}
        finally:
            await store.close()

    return asyncio.run(read())
