"""Where the counter store's Redis is: one server, the master a Sentinel group names, or the
node of a Redis Cluster that owns the store's slot.

URLs (options in the query as for redis:// and rediss://, TLS with the `rediss+` schemes, which
then apply to Sentinels and servers alike):

  redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db][?sentinel_password=...]
      Sentinels are asked in order for the master of `service_name` each time the link connects
      (at start, and after the connection drops, e.g. when the master died); the server found
      must say it is a master (ROLE), else the next connection asks again. user/password are
      the data servers'; sentinel_username/sentinel_password the Sentinels' own, if they have any.

  redis+cluster://[user:password@]host:port[,host:port...][/0]
      Any node answers; a MOVED reply names the node owning the slot, and the link connects there
      and sends the call again (every store script is safe to run twice). The store's keys share
      one hash tag, so each script's keys live in one slot: admission stays one atomic round trip.
      While that slot is being migrated to another node, an ASK reply sends one call to the target
      (after ASKING), and TRYAGAIN (the call's keys are split between the two nodes: nothing ran)
      is the store's to wait out and send again (redis_store.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import urllib.parse
from typing import Any

import hiredis

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SENTINEL_OPTIONS = {"sentinel_username", "sentinel_password"}


class TopologyError(Exception):
    """No server to connect to was found (the message says what was asked)."""


@dataclasses.dataclass
class Topology:
    kind: str  # "sentinel" or "cluster"
    seeds: list[tuple[str, int]]  # Sentinels, or cluster nodes to start from
    options: dict[str, Any]  # what RedisLink reads from a redis:// URL (username, password, db, ssl_*)
    tls: bool
    service: str = ""  # the Sentinel master's name
    sentinel_auth: tuple[str | None, str | None] = (None, None)
    moved_to: tuple[str, int] | None = None  # the node a MOVED reply named last

    async def candidates(self, connect_timeout: float, ssl_context: ssl.SSLContext | None) -> list[tuple[str, int]]:
        """Addresses to try, in order."""
        if self.kind == "cluster":
            return ([self.moved_to] if self.moved_to else []) + [s for s in self.seeds if s != self.moved_to]
        return [await self._sentinel_master(connect_timeout, ssl_context)]

    async def _sentinel_master(self, connect_timeout: float, ssl_context: ssl.SSLContext | None) -> tuple[str, int]:
        problems = []
        for host, port in self.seeds:
            try:
                async with asyncio.timeout(connect_timeout):
                    reply = await _ask(host, port, ssl_context, self._sentinel_handshake(), (
                        "SENTINEL", "get-master-addr-by-name", self.service))  # fmt: skip
            except (OSError, TimeoutError, TopologyError) as exc:
                problems.append(f"{host}:{port}: {_why(exc)}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            problems.append(f"{host}:{port}: knows no master {self.service!r}")
        raise TopologyError(f"no Sentinel named the master of {self.service!r} ({'; '.join(problems)})")

    def _sentinel_handshake(self) -> list[tuple[str, ...]]:
        user, password = self.sentinel_auth
        if password is None:
            return []
        return [("AUTH", user, password) if user else ("AUTH", password)]

    def redirected(self, reply_error: str) -> bool:
        """True when an error reply means "ask elsewhere": MOVED (remembering where) or READONLY."""
        if reply_error.startswith("MOVED ") and self.kind == "cluster":
            self.moved_to = self._address(reply_error)
            return True
        return reply_error.startswith("READONLY")  # a master demoted under us: find the new one

    def asked(self, reply_error: str) -> tuple[str, int] | None:
        """Where an ASK reply sends this one call: the slot is being migrated and its keys are no
        longer all on this node. Only the call goes there (after ASKING), the slot stays here."""
        if reply_error.startswith("ASK ") and self.kind == "cluster":
            return self._address(reply_error)
        return None

    def _address(self, reply_error: str) -> tuple[str, int]:
        # "MOVED|ASK <slot> <host>:<port>"; a node that does not know its own address sends ":port".
        host, _, port = reply_error.split()[-1].rpartition(":")
        return host or self.seeds[0][0], int(port)


def is_topology_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES + CLUSTER_SCHEMES


def parse_topology_url(url: str) -> Topology:
    """Raises ValueError for a malformed URL (the password never in the message)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    kind = "sentinel" if scheme in SENTINEL_SCHEMES else "cluster"
    hosts = parts.netloc.rsplit("@", 1)[-1]
    seeds = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not port.isdigit() or not host:
            raise ValueError(f"{scheme} URL: expected host:port[,host:port...], got {item.strip()!r}")
        seeds.append((host.strip("[]"), int(port)))
    options: dict[str, Any] = {}
    if parts.username:
        options["username"] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        options["password"] = urllib.parse.unquote(parts.password)
    path = [p for p in parts.path.split("/") if p]
    service = ""
    if kind == "sentinel":
        if not path:
            raise ValueError(f"{scheme} URL: the Sentinel service name is missing (…/service_name[/db])")
        service = urllib.parse.unquote(path.pop(0))
    if len(path) > 1 or (path and not path[0].isdigit()):
        raise ValueError(f"{scheme} URL: after the hosts expected {'/service_name' if kind == 'sentinel' else ''}[/db]")
    db = int(path[0]) if path else 0
    if kind == "cluster" and db:
        raise ValueError("redis+cluster URL: Redis Cluster has only database 0")
    options["db"] = db
    query = dict(urllib.parse.parse_qsl(parts.query))
    sentinel_auth = (query.pop("sentinel_username", None), query.pop("sentinel_password", None))
    if kind == "cluster" and sentinel_auth != (None, None):
        raise ValueError("redis+cluster URL: sentinel_username/sentinel_password are for redis+sentinel")
    options.update(query)
    return Topology(kind, seeds, options, scheme.startswith("rediss"), service, sentinel_auth)


async def _ask(
    host: str, port: int, ssl_context: ssl.SSLContext | None, handshake: list[tuple[str, ...]], command: tuple[str, ...]
) -> Any:
    """One short-lived connection: the handshake, then `command`'s reply."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
    )
    try:
        parser = hiredis.Reader()
        for cmd in [*handshake, command]:
            writer.write(hiredis.pack_command(cmd))  # type: ignore[arg-type]
            while (reply := parser.gets()) is False:
                data = await reader.read(65536)
                if not data:
                    raise TopologyError("connection closed")
                parser.feed(data)
            if isinstance(reply, hiredis.ReplyError):
                raise TopologyError(f"{cmd[0]} refused: {reply}")
        return reply
    finally:
        writer.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
