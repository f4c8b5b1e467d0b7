"""One pipelined connection to Redis for the counter store's scripts.

Admission waits for exactly one Redis round trip, so what the client costs around that round
trip is on every request's path. redis-py spends ~100 µs of CPU a call there (connection pool
checkout, command packing in Python, a StreamReader wake-up, layers of wrappers; py-spy of the
gateway at 200 req/s, docs/benchmarks.md). This link is the least that can carry a script call:
hiredis (the Redis project's C library) packs the command and parses the reply, the reply is
parsed in the event loop's `data_received` callback and handed to the caller's future — no task,
no stream — and concurrent callers share one connection, their replies matched in order (RESP
answers in the order commands arrive).

Every store script is safe to run twice (a held reservation is admitted again without adding;
finishing is idempotent; snapshots only read), so a call whose connection drops is sent once
more on a fresh connection, as redis-py's one retry did. A call that times out is not: the server
may be stuck, and waiting twice is what "never hang" rules out. Either way the connection is
closed, because replies on it could no longer be matched to their calls.

URLs are read with redis-py's `parse_url` (the same rules as every other Redis client of the
gateway): redis://, rediss:// (TLS; ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs,
ssl_check_hostname) and unix://, with username, password and db. redis+sentinel:// and
redis+cluster:// (and their rediss+ forms) name a Sentinel group or a Redis Cluster instead of one
server: each new connection asks them where to go, and a MOVED or READONLY reply (the slot's owner
is elsewhere, or the master was demoted) closes the connection and sends the call once more to the
right server. See redis_topology.py.

While a cluster slot migrates, the source node answers ASK for a call none of whose keys it still
has: that one call goes to the target on a connection of its own, after ASKING (the shared
connection stays with the slot's owner). A call whose keys are split between the two nodes gets
TRYAGAIN from either: nothing ran, and `SlotMigrating` tells the caller to send it again shortly.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

from codexgate.stores.redis_topology import Topology, TopologyError, is_topology_url, parse_topology_url

# URL options the link understands; anything else is refused when the store is opened rather
# than silently ignored.
_SSL_OPTIONS = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
_OPTIONS = {"host", "port", "db", "username", "password", "path", "connection_class"} | _SSL_OPTIONS


class LinkError(Exception):
    """The call did not complete: connection refused, lost or timed out, or a protocol error."""


class ReplyError(Exception):
    """Redis answered the call with an error (e.g. NOSCRIPT, or a script error)."""


class SlotMigrating(LinkError):
    """TRYAGAIN: the call's keys are being moved between cluster nodes and are not all on one of
    them. The node refused the call before running it, so it may be sent again as it is."""


# A call follows at most this many ASK replies (source -> target normally takes one).
MAX_ASK_HOPS = 3


class _Replies(asyncio.Protocol):
    """Feeds received bytes to hiredis and resolves the waiting calls in order."""

    def __init__(self, read_timeout_seconds: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()  # loop time, one per waiting call
        self.closed = False
        self._reader = hiredis.Reader()
        self._read_timeout = read_timeout_seconds
        # One timer for all calls, armed for the oldest waiting call (not one timer per call: under
        # load that is a heap push and a cancelled handle per request).
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, command: tuple[str | bytes | int | float, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._read_timeout
        self.waiting.append(future)
        self.deadlines.append(deadline)
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
        assert self.transport is not None
        self.transport.write(hiredis.pack_command(command))  # type: ignore[arg-type]  # stub: 1-tuple
        return future

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self.deadlines:
            return
        loop = asyncio.get_running_loop()
        if self.deadlines[0] <= loop.time():
            # The server is silent (or stuck): replies that come later could not be matched.
            self.fail(_Timeout(f"no reply within {self._read_timeout} s"))
        else:
            self._watchdog = loop.call_at(self.deadlines[0], self._check_deadline)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(LinkError(f"protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:
                self.fail(LinkError("reply without a call"))
                return
            future = self.waiting.popleft()
            self.deadlines.popleft()
            if not future.done():  # its caller may have been cancelled
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_waiting(LinkError(f"connection lost: {exc}" if exc else "connection closed by the server"))

    def fail(self, error: LinkError) -> None:
        """Closes the connection: after a timeout or a protocol error its replies are unmatched."""
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.transport is not None:
            self.transport.abort()
        self._fail_waiting(error)

    def _fail_waiting(self, error: LinkError) -> None:
        self.deadlines.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if str(options.get("ssl_check_hostname", "true")).lower() in ("false", "0", "no"):
        context.check_hostname = False
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RedisLink:
    def __init__(self, url: str, connect_timeout_seconds: float, read_timeout_seconds: float) -> None:
        self._topology: Topology | None = None
        if is_topology_url(url):
            self._topology = parse_topology_url(url)
            options: dict[str, Any] = self._topology.options
            tls = self._topology.tls
        else:
            options = dict(parse_url(url))
            tls = options.get("connection_class") is SSLConnection
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unsupported Redis URL option(s): {', '.join(sorted(unknown))}")
        self._options = options
        self._ssl = _ssl_context(options) if tls else None
        self._connect_timeout = connect_timeout_seconds
        self._read_timeout = read_timeout_seconds
        self._replies: _Replies | None = None
        self._connecting: asyncio.Future[_Replies] | None = None

    async def call(self, *args: str | bytes | int | float) -> Any:
        """Sends one command and returns its reply (hiredis types: bytes, int, list).

        Raises ReplyError for an error reply, SlotMigrating for TRYAGAIN, and LinkError when the
        call did not complete."""
        dropped = False
        asked: tuple[str, int] | None = None
        hops = 0
        while True:
            try:
                if asked is None:
                    return await self._call_once(args)
                return await self._call_asking(asked, args)
            except _Asked as redirect:
                hops += 1
                if hops > MAX_ASK_HOPS:
                    raise LinkError(f"more than {MAX_ASK_HOPS} ASK redirections (a stuck slot migration?)") from None
                asked = redirect.address
            except _Dropped:
                if dropped:
                    raise
                dropped, asked = True, None  # once more on a fresh connection, see the docstring

    async def _call_once(self, args: tuple[str | bytes | int | float, ...]) -> Any:
        replies = self._replies
        if replies is None or replies.closed:
            replies = await self._connected()
        try:
            reply = await replies.send(args)
        except _Timeout:
            raise
        except LinkError as exc:
            raise _Dropped(str(exc)) from exc
        return self._checked(reply, replies)

    def _checked(self, reply: Any, replies: _Replies) -> Any:
        """The reply, or the exception its error means (a redirection, TRYAGAIN, or a plain error)."""
        if not isinstance(reply, hiredis.ReplyError):
            return reply
        text = str(reply)
        if self._topology is not None:
            if self._topology.redirected(text):
                # The replies after this one on the connection came from the wrong server too.
                replies.fail(LinkError(f"redirected: {reply}"))
                raise _Dropped(f"redirected: {reply}")
            address = self._topology.asked(text)
            if address is not None:
                raise _Asked(address)  # this call only: the connection stays with the slot's owner
            if text.startswith("TRYAGAIN"):
                raise SlotMigrating(text)
        raise ReplyError(text)

    async def _call_asking(self, address: tuple[str, int], args: tuple[str | bytes | int | float, ...]) -> Any:
        """One call on a connection of its own to the node an ASK reply named, after ASKING (which
        lets that node serve the slot it is importing for the next command only)."""
        host, port = address
        loop = asyncio.get_running_loop()
        replies: _Replies | None = None
        try:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, replies = await loop.create_connection(
                        lambda: _Replies(self._read_timeout), host, port, ssl=self._ssl,
                        server_hostname=host if self._ssl is not None else None,
                    )  # fmt: skip
            except (OSError, TimeoutError) as exc:
                raise _Dropped(f"cannot connect to {host}:{port} (ASK): {_why(exc)}") from None
            assert replies is not None
            commands: list[tuple[str | bytes | int | float, ...]] = [*self._handshake(), ("ASKING",), args]
            results = await asyncio.gather(*(replies.send(command) for command in commands), return_exceptions=True)
            for result in results:
                if isinstance(result, _Timeout):
                    raise result
                # An error reply (NOSCRIPT, say) is a reply like any other, not a lost call; gather
                # hands replies and raised exceptions back in one list, so tell them apart here.
                if isinstance(result, BaseException) and not isinstance(result, hiredis.ReplyError):
                    raise _Dropped(str(result)) from result  # may have run: once more, as any drop
            for command, reply in zip(commands[:-1], results, strict=False):
                if isinstance(reply, hiredis.ReplyError):
                    raise LinkError(f"{command[0]!s} refused by {host}:{port}: {reply}")
            return self._checked(results[-1], replies)
        finally:
            if replies is not None and not replies.closed:
                replies.closed = True
                if replies.transport is not None:
                    replies.transport.close()

    def _handshake(self) -> list[tuple[str | int, ...]]:
        """AUTH and SELECT, as each new connection needs them."""
        options = self._options
        handshake: list[tuple[str | int, ...]] = []
        if options.get("password") is not None:
            user = options.get("username")
            handshake.append(("AUTH", user, options["password"]) if user else ("AUTH", options["password"]))
        if options.get("db"):
            handshake.append(("SELECT", int(options["db"])))
        return handshake

    async def _connected(self) -> _Replies:
        # Concurrent callers share one connection attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _connect(self) -> _Replies:
        loop = asyncio.get_running_loop()
        options = self._options
        replies: _Replies | None = None

        def protocol() -> _Replies:
            return _Replies(self._read_timeout)

        try:
            async with asyncio.timeout(self._connect_timeout):
                if options.get("path"):
                    _, replies = await loop.create_unix_connection(protocol, options["path"])
                elif self._topology is not None:
                    replies = await self._connect_topology(self._topology, protocol)
                else:
                    host = options.get("host", "localhost")
                    _, replies = await loop.create_connection(
                        protocol, host, int(options.get("port", 6379)), ssl=self._ssl,
                        server_hostname=host if self._ssl is not None else None,
                    )  # fmt: skip
                handshake = self._handshake()
                if self._topology is not None and self._topology.kind == "sentinel":
                    # Sentinel may not have noticed a failover yet: only a master will do.
                    handshake.append(("ROLE",))
                futures = [replies.send(command) for command in handshake]
                for command, future in zip(handshake, futures, strict=True):
                    reply = await future
                    if isinstance(reply, hiredis.ReplyError):
                        # Redis's message (e.g. WRONGPASS) never contains the password.
                        replies.fail(LinkError(f"{command[0]} refused: {reply}"))
                        raise LinkError(f"{command[0]} refused: {reply}")
                    if command[0] == "ROLE" and not (isinstance(reply, list) and reply and reply[0] == b"master"):
                        role = reply[0].decode() if isinstance(reply, list) and reply else reply
                        replies.fail(LinkError("not a master"))
                        raise LinkError(f"the server Sentinel named is a {role}, not a master (failover under way)")
        except BaseException as exc:
            if replies is not None and not replies.closed:
                replies.fail(LinkError("connection setup failed"))
            if isinstance(exc, TimeoutError):
                raise LinkError(f"no connection within {self._connect_timeout} s") from None
            if isinstance(exc, OSError):
                raise LinkError(f"cannot connect: {exc.strerror or exc}") from None
            if isinstance(exc, TopologyError):
                raise LinkError(str(exc)) from None
            raise
        self._replies = replies
        return replies

    async def _connect_topology(self, topology: Topology, protocol: Any) -> _Replies:
        """A connection to the first address the Sentinels or cluster nodes lead to."""
        loop = asyncio.get_running_loop()
        problems = []
        for host, port in await topology.candidates(self._connect_timeout, self._ssl):
            try:
                _, replies = await loop.create_connection(
                    protocol, host, port, ssl=self._ssl, server_hostname=host if self._ssl is not None else None
                )
            except OSError as exc:
                problems.append(f"{host}:{port}: {exc.strerror or exc}")
                if topology.moved_to == (host, port):
                    topology.moved_to = None  # that node is gone: start from the seeds again
                continue
            return replies  # type: ignore[no-any-return]
        raise TopologyError(f"cannot connect to any {topology.kind} node ({'; '.join(problems)})")

    async def close(self) -> None:
        replies, self._replies = self._replies, None
        if replies is not None and replies.transport is not None and not replies.closed:
            replies.closed = True
            replies.transport.close()


class _Dropped(LinkError):
    """The connection went away under the call (may be retried)."""


class _Timeout(LinkError):
    """No reply within the read timeout (not retried)."""


class _Asked(LinkError):
    """An ASK reply: send this call to `address`, after ASKING."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(f"ASK {address[0]}:{address[1]}")
        self.address = address


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no connection in time"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
