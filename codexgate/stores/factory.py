"""Open the counter store a deployment configures: `embedded` or a Redis URL."""

from __future__ import annotations

import logging
import os

from codexgate.stores.base import CounterStore, StoreUnavailable
from codexgate.stores.embedded import EmbeddedStore
from codexgate.stores.redis_link import RedisLink
from codexgate.stores.redis_store import RedisStore, redact

logger = logging.getLogger(__name__)

EMBEDDED_FILE = "counters.sqlite3"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_TOPOLOGY_SCHEMES = ("redis+sentinel://", "rediss+sentinel://", "redis+cluster://", "rediss+cluster://")
_CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
# In a Redis Cluster every key of the store carries this hash tag, so all keys one script touches
# (counters of key, team and org, the reservation, the open-reservation index and the settlements
# riding along) hash to one slot: one node runs each script atomically, in one round trip. The
# store then lives on one shard (with its replicas); a cluster gives it failover, not more room.
CLUSTER_PREFIX = "codexgate:{counters}:"


def resolve_store_reference(spec: str) -> str:
    """The store spec itself, or what an `env:NAME` / `file:PATH` reference holds: a Redis URL with
    a password then stays out of the command line and mitmweb's options (`codexgate up` writes it
    to an owner-only file)."""
    spec = spec.strip()
    if not spec.startswith(("env:", "file:")):
        return spec
    from codexgate.secrets import SecretResolver, SecretUnavailable

    try:
        return SecretResolver().resolve(spec).strip()
    except SecretUnavailable as exc:
        raise ValueError(f"counter store reference {spec}: {exc}") from None


def check_store_spec(spec: str) -> None:
    """Raises ValueError for what `open_store` would refuse, without opening anything."""
    spec = resolve_store_reference(spec)
    if spec == "embedded":
        return
    if spec.lower().startswith(_REDIS_SCHEMES + _TOPOLOGY_SCHEMES):
        RedisLink(spec, 1.0, 1.0)  # parses the URL and its options; connects only when first used
        return
    raise ValueError(
        f"counter store {redact(spec)!r}: expected 'embedded' or a redis://, rediss://, unix://, "
        "redis+sentinel:// or redis+cluster:// URL"
    )


def open_store(spec: str, data_dir: str, stale_after_seconds: float = 900) -> CounterStore:
    """`embedded` keeps counters in `<data_dir>/counters.sqlite3` (one host); a redis:// URL
    shares them between gateway instances.

    Raises ValueError for an unknown spec, StoreUnavailable when the embedded file cannot be
    opened. A Redis store connects lazily: an unreachable Redis shows on the first operation.
    """
    spec = resolve_store_reference(spec)
    check_store_spec(spec)
    if spec != "embedded":
        logger.info("counter store: Redis at %s", redact(spec))
        if spec.lower().startswith(_CLUSTER_SCHEMES):
            return RedisStore(spec, stale_after_seconds=stale_after_seconds, prefix=CLUSTER_PREFIX)
        return RedisStore(spec, stale_after_seconds=stale_after_seconds)
    # The file records spend per key: the directory is the owner's alone, like the file.
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"counter store data directory {data_dir}: {exc}") from exc
    path = os.path.join(data_dir, EMBEDDED_FILE)
    logger.info("counter store: embedded SQLite at %s", path)
    return EmbeddedStore(path, stale_after_seconds=stale_after_seconds)
