"""Failover relay: tries a request's upstream deployments in order and streams the first good answer.

mitmproxy streams only what it forwards itself and cannot re-send a request elsewhere after a
429/5xx, so a request with several candidate deployments goes through this relay: a small aiohttp
server in the gateway process (same event loop as mitmproxy) on 127.0.0.1. The gateway registers
a `Plan` (the fully prepared upstream requests, in order) and points mitmproxy's request at
`http://127.0.0.1:{port}/relay/{token}`. The relay ignores the incoming request's headers and
body (the plan carries what is sent), tries the attempts and streams the first final answer back
chunk by chunk, so mitmproxy streams it on to Codex.

Per attempt:
- next attempt: connection refused/reset, TLS failure, connect timeout, no response headers within
  `first_byte`, status 429 or 5xx. A 429/503 whose `Retry-After` (or `retry-after-ms`) is at most
  `retry_after_max` seconds is waited out and the same attempt is tried once more.
- final, passed through as it is: 2xx, and any other status (400, 401, 403, 404, ...); 401/403
  are reported to `on_auth_failure(deployment)` — unless the attempt's `on_auth_error` says the
  refused credentials were cached and are now dropped (an OAuth token revoked early): then the
  attempt is built and made once more, with fresh ones (outcome `auth_refreshed`), once a request.
- skipped: the plan's factory may return a `Skip` instead of an attempt (the gateway's own limits
  do not admit the request at that deployment, see `addons/limits.py`): nothing is sent, the
  record's outcome is `skipped_<reason>` (reported to `on_attempt` too), and the next one is tried.
- Once an answer's headers have been sent, nothing can be retried. A stream that stalls longer
  than `idle`, exceeds `total`, or breaks ends with an in-band event
  `event: codexgate.upstream_error` (SSE answers: a clean end after complete events only); any
  other body is cut (connection closed without the final chunk), so it is never mistaken for a
  complete one.

Response headers added: `x-codexgate-attempt` (index in the plan of the attempt that answered)
and `x-codexgate-attempts` (JSON list of `{deployment, outcome, status?, ms, retry_after?}`). When
every attempt fails the relay answers 429 (all rate limited, with `Retry-After`), 503 (capacity:
overloaded and rate limited only) or 502, with an OpenAI-shaped error body listing the attempts —
unless one was skipped: then the first skip's own answer (e.g. the 402 or 429 the gateway gives
a request that deployment's budget or rate limit cannot admit), as if it had been the first choice.

All methods run on the event loop the relay was started on (mitmproxy's); `register` is
synchronous so a mitmproxy `request` hook can call it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import inspect
import json
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from codexgate.errors import error_object
from codexgate.loopback import LoopbackServer, OnLoopback, TokenTable

logger = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-codexgate-attempt"
ATTEMPTS_HEADER = "x-codexgate-attempts"
UPSTREAM_ERROR_EVENT = "codexgate.upstream_error"
# Reading on after the client left (for the provider's usage): bounded in time and bytes.
DRAIN_MAX_SECONDS = 600.0  # whatever the plan asks for
DRAIN_MAX_BYTES = 32 * 1024 * 1024

# Outcomes of an attempt (the `outcome` of a record and of `on_attempt`).
OK = "ok"  # 2xx, answered (and, reported to on_attempt, streamed to the end)
RATE_LIMITED = "rate_limited"  # 429
OVERLOADED = "overloaded"  # 503 / 529
SERVER_ERROR = "server_error"  # other 5xx
AUTH_ERROR = "auth_error"  # 401 / 403, answered as it is
# 401 / 403 refusing credentials the deployment's family had cached (an OAuth token it has now
# dropped, see Attempt.on_auth_error): the same attempt is made once more, with fresh ones.
AUTH_REFRESHED = "auth_refreshed"
CLIENT_ERROR = "client_error"  # other 4xx (and 1xx/3xx), answered as it is
CONNECT_ERROR = "connect_error"  # refused, unreachable, DNS
CONNECTION_RESET = "connection_reset"  # closed or reset before response headers
TLS_ERROR = "tls_error"
CONNECT_TIMEOUT = "connect_timeout"
FIRST_BYTE_TIMEOUT = "first_byte_timeout"
TOTAL_TIMEOUT = "total_timeout"
BUILD_FAILED = "build_failed"  # the plan's factory raised (e.g. a secret could not be resolved)
# After the answer started (reported to on_attempt only; the headers were already sent):
IDLE_TIMEOUT = "idle_timeout"
STREAM_BROKEN = "stream_broken"
CLIENT_CLOSED = "client_closed"
# Not tried: the gateway's own limits refused that deployment (outcome "skipped_<reason>", see Skip).
SKIPPED = "skipped"

_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade",
    }
)  # fmt: skip
# Never copied from the plan's headers: aiohttp sets them from the URL and the body.
_REQUEST_DROPPED = _HOP_BY_HOP | {"host", "content-length"}
_RESPONSE_DROPPED = _HOP_BY_HOP | {"content-length"}  # the relay re-chunks every answer
# A refusal of credentials is read whole before it is answered (its family decides from the body
# whether fresh credentials may pass): this much of it, at most.
MAX_REFUSAL_BODY = 64 * 1024


@dataclasses.dataclass
class Attempt:
    """One fully prepared upstream request (translated, credentials in `headers`, signed)."""

    deployment: str  # a label such as "anthropic-prod/claude-sonnet-4-5#0"; appears in headers and logs
    url: str
    headers: dict[str, str]
    body: bytes
    # Called with a 401/403 answer's status and body: True when the credentials in `headers` will
    # not be given again (its family had cached them and has dropped them). The relay then makes
    # this attempt once more, with fresh ones, instead of answering the refusal and cooling the
    # deployment down.
    on_auth_error: Callable[[int, bytes], bool] | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class Skip:
    """An attempt the gateway will not make (its limits refuse that deployment): nothing is sent.
    `status`, `headers` and `body` are the answer the client gets if no later attempt answers."""

    deployment: str
    reason: str  # a short code, e.g. "budget_exceeded": the record's outcome is "skipped_<reason>"
    detail: str  # for the log line (no secret)
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def outcome(self) -> str:
        return f"{SKIPPED}_{self.reason}"


# build(i) -> the i-th attempt (prepared right before it is sent, e.g. for SigV4), a Skip (move on
# to i+1 without sending anything), or None: no more. Called again for the same i when that
# attempt is retried after a short Retry-After.
AttemptFactory = Callable[[int], Attempt | Skip | None | Awaitable[Attempt | Skip | None]]


@dataclasses.dataclass
class Timeouts:
    connect: float = 5  # TCP connect + TLS handshake, per attempt
    first_byte: float = 60  # request sent -> response headers, per attempt (includes connect)
    idle: float = 60  # longest silence between two body chunks once the answer started
    total: float = 900  # the whole relayed request; also how long a registered plan waits to be used


@dataclasses.dataclass
class Plan:
    attempts: Sequence[Attempt] | AttemptFactory
    timeouts: Timeouts = dataclasses.field(default_factory=Timeouts)
    retry_after_max: float = 2.0  # a 429/503 asking to wait at most this long is retried in place once
    exhausted_retry_after: float = 1.0  # Retry-After of an all-rate-limited 429 when no upstream gave one
    label: str = ""  # for log lines (the gateway's request id)
    max_attempts: int = 16  # a bound for factories that never return None
    # When the client leaves mid-answer: a sink for the rest of attempt i's SSE answer (None: close
    # it at once). The relay keeps reading (at most drain_seconds / DRAIN_MAX_BYTES) and hands
    # each chunk to the sink until it returns True (it has what it wanted, e.g. the usage); then b"".
    drain: Callable[[int], Callable[[bytes], bool] | None] | None = None
    drain_seconds: float = 120.0  # at most this long (and DRAIN_MAX_BYTES)
    ended: Callable[[], None] | None = None  # called once the relay is done with the request, drain included
    draining: bool = dataclasses.field(default=False, init=False)

    async def attempt(self, index: int) -> Attempt | Skip | None:
        if index >= self.max_attempts:
            return None
        if callable(self.attempts):
            built = self.attempts(index)
            if inspect.isawaitable(built):
                built = await built
            return built
        return self.attempts[index] if index < len(self.attempts) else None


@dataclasses.dataclass
class AttemptRecord:
    deployment: str
    outcome: str
    status: int | None
    seconds: float
    retry_after: float | None = None

    def public(self) -> dict[str, Any]:
        """What clients may see: names, outcomes, statuses, times; never a header or a key."""
        out: dict[str, Any] = {"deployment": self.deployment, "outcome": self.outcome}
        if self.status is not None:
            out["status"] = self.status
        out["ms"] = round(self.seconds * 1000)
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


OnAttempt = Callable[[str, str, int | None, float], None]  # (deployment, outcome, status, seconds)
OnAuthFailure = Callable[[str], None]  # (deployment)


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date), else None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _ReadBody:
    """An answer's body read already (a refusal of credentials), as `StreamReader.readany` gives it."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def readany(self) -> bytes:
        body, self._body = self._body, b""
        return body


async def _refusal_body(upstream: aiohttp.ClientResponse, timeouts: Timeouts) -> bytes:
    """A 401/403 answer's body, read whole (at most MAX_REFUSAL_BODY, within the idle timeout): what
    arrived, when it breaks off."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeouts.idle):
            while size < MAX_REFUSAL_BODY:
                part = await upstream.content.readany()
                if not part:
                    break
                parts.append(part)
                size += len(part)
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    return b"".join(parts)


def _credentials_dropped(attempt: Attempt, status: int, body: bytes) -> bool:
    assert attempt.on_auth_error is not None
    try:
        return bool(attempt.on_auth_error(status, body))
    except Exception:  # the family's own bug: the refusal is answered as it came
        logger.exception("on_auth_error of %s failed", attempt.deployment)
        return False


def _classify(status: int) -> str:
    if 200 <= status < 300:
        return OK
    if status == 429:
        return RATE_LIMITED
    if status in (503, 529):
        return OVERLOADED
    if status >= 500:
        return SERVER_ERROR
    if status in (401, 403):
        return AUTH_ERROR
    return CLIENT_ERROR


_MOVE_ON = frozenset({RATE_LIMITED, OVERLOADED, SERVER_ERROR})
_DESCRIBED = {
    RATE_LIMITED: "rate limited",
    OVERLOADED: "overloaded",
    SERVER_ERROR: "server error",
    CONNECT_ERROR: "connection failed",
    CONNECTION_RESET: "connection closed before an answer",
    TLS_ERROR: "TLS handshake failed",
    CONNECT_TIMEOUT: "connect timed out",
    FIRST_BYTE_TIMEOUT: "no answer in time",
    TOTAL_TIMEOUT: "request time limit reached",
    BUILD_FAILED: "request could not be prepared",
}


def _event_end(buffer: bytes, start: int) -> int:
    """Index just after the last SSE event boundary in buffer[start:] (0 if none)."""
    lf = buffer.rfind(b"\n\n", start)
    crlf = buffer.rfind(b"\r\n\r\n", start)
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def upstream_error_event(message: str, deployment: str) -> bytes:
    data = json.dumps({"message": message, "deployment": deployment})
    return f"event: {UPSTREAM_ERROR_EVENT}\ndata: {data}\n\n".encode()


class _Failure(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


class Relay(OnLoopback):
    """The failover relay server. `start()` on the gateway's loop, `register(plan)` per request."""

    def __init__(
        self,
        *,
        on_attempt: OnAttempt | None = None,
        on_auth_failure: OnAuthFailure | None = None,
        ssl_context: ssl.SSLContext | bool = True,
        shutdown_timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
    ) -> None:
        self.on_attempt = on_attempt
        self.on_auth_failure = on_auth_failure
        self._ssl = ssl_context
        self._keepalive_timeout = keepalive_timeout
        self._plans: TokenTable[Plan] = TokenTable(on_expired=self._expired)
        app = web.Application()
        app.router.add_post("/relay/{token}", self._handle)
        self._server = LoopbackServer(app, shutdown_timeout=shutdown_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._drains: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        if self._server.running:
            return self.port
        connector = aiohttp.TCPConnector(
            limit=0, ssl=self._ssl, keepalive_timeout=self._keepalive_timeout, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trust_env=False,  # the gateway may be its own process's HTTPS_PROXY
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        await self._server.start(host, port)
        logger.info("failover relay listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop accepting; in-flight relayed requests get `shutdown_timeout` seconds to finish."""
        self._plans.clear()
        for task in list(self._drains):
            task.cancel()
        if self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)
        await self._server.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- plans -----------------------------------------------------------------------------

    def register(self, plan: Plan) -> str:
        """Hold `plan` for one relayed request; returns its token (single use, expires after total)."""
        if not self._server.running:
            raise RuntimeError("the relay is not started")
        return self._plans.register(plan, plan.timeouts.total)

    def url(self, token: str) -> str:
        return f"http://{self.host}:{self.port}/relay/{token}"

    def discard(self, token: str) -> None:
        """Drop a registered plan that will not be used (e.g. the request was refused after all)."""
        plan = self._plans.discard(token)
        if plan is not None:
            _ended(plan)

    @property
    def pending(self) -> int:
        return len(self._plans)

    @staticmethod
    def _expired(plan: Plan) -> None:
        logger.info("relay plan %s ended unused", plan.label)
        _ended(plan)

    # -- callbacks -------------------------------------------------------------------------

    def _report(self, record: AttemptRecord) -> None:
        if self.on_attempt is None:
            return
        try:
            self.on_attempt(record.deployment, record.outcome, record.status, record.seconds)
        except Exception:
            logger.exception("on_attempt callback failed")

    def _auth_failed(self, deployment: str) -> None:
        if self.on_auth_failure is None:
            return
        try:
            self.on_auth_failure(deployment)
        except Exception:
            logger.exception("on_auth_failure callback failed")

    # -- the handler -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        plan = self._plans.take(request.match_info["token"])
        if plan is None:
            return _error_response(
                404, "relay_plan_unknown", "codexgate relay: unknown or expired request token", None, []
            )
        try:
            return await self._run(request, plan)
        except Exception:  # a bug here must still answer (before the answer started; see _relay_answer)
            logger.exception("relay %s failed", plan.label)
            return _error_response(502, "relay_error", "codexgate relay failed; see the gateway log", None, [])
        finally:
            if not plan.draining:
                _ended(plan)

    async def _run(self, request: web.Request, plan: Plan) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeouts.total
        records: list[AttemptRecord] = []
        skipped: Skip | None = None  # the first attempt the gateway's limits refused
        index = 0
        retried = False
        auth_refreshed = False  # once per request: fresh credentials refused too are a real refusal
        while True:
            started = loop.time()
            try:
                attempt = await plan.attempt(index)
            except Exception:
                logger.exception("relay %s: building attempt %d failed", plan.label, index)
                record = AttemptRecord(f"#{index}", BUILD_FAILED, None, loop.time() - started)
                records.append(record)
                self._report(record)
                index += 1
                retried = False
                continue
            if attempt is None:
                break
            if isinstance(attempt, Skip):
                record = AttemptRecord(attempt.deployment, attempt.outcome, None, loop.time() - started)
                records.append(record)
                self._report(record)
                logger.info(
                    "relay %s: attempt %d (%s) not tried: %s", plan.label, index, attempt.deployment, attempt.detail
                )
                skipped = skipped or attempt
                index += 1
                retried = False
                continue
            try:
                upstream = await self._send(attempt, plan.timeouts, deadline)
            except _Failure as failure:
                record = AttemptRecord(attempt.deployment, failure.outcome, None, loop.time() - started)
                records.append(record)
                self._report(record)
                logger.info(
                    "relay %s: attempt %d (%s) failed: %s (%s)",
                    plan.label, index, attempt.deployment, failure.outcome, failure,
                )  # fmt: skip
                if failure.outcome == TOTAL_TIMEOUT:
                    break
                index += 1
                retried = False
                continue
            outcome = _classify(upstream.status)
            if outcome not in _MOVE_ON:
                headers_seconds = loop.time() - started
                body: bytes | None = None
                if outcome == AUTH_ERROR and attempt.on_auth_error is not None:
                    body = await _refusal_body(upstream, plan.timeouts)
                    if _credentials_dropped(attempt, upstream.status, body) and not auth_refreshed:
                        upstream.release()
                        record = AttemptRecord(attempt.deployment, AUTH_REFRESHED, upstream.status, headers_seconds)
                        records.append(record)
                        self._report(record)
                        logger.info(
                            "relay %s: attempt %d (%s) answered %d to credentials that are now dropped; "
                            "making it again with fresh ones", plan.label, index, attempt.deployment, upstream.status,
                        )  # fmt: skip
                        auth_refreshed = True
                        continue
                record = AttemptRecord(attempt.deployment, outcome, upstream.status, headers_seconds)
                records.append(record)
                if outcome == AUTH_ERROR:
                    self._auth_failed(attempt.deployment)
                return await self._relay_answer(
                    request, upstream, plan, index, attempt, records, started, deadline, body
                )  # fmt: skip
            retry_after = parse_retry_after(upstream.headers) if upstream.status in (429, 503) else None
            upstream.release()
            record = AttemptRecord(attempt.deployment, outcome, upstream.status, loop.time() - started, retry_after)
            records.append(record)
            self._report(record)
            if (
                not retried
                and retry_after is not None
                and retry_after <= plan.retry_after_max
                and loop.time() + retry_after < deadline
            ):
                logger.info(
                    "relay %s: attempt %d (%s) answered %d, retrying it in %.2f s",
                    plan.label, index, attempt.deployment, upstream.status, retry_after,
                )  # fmt: skip
                retried = True
                await asyncio.sleep(retry_after)
                continue
            logger.info(
                "relay %s: attempt %d (%s) answered %d (%s)",
                plan.label, index, attempt.deployment, upstream.status, outcome,
            )  # fmt: skip
            index += 1
            retried = False
        if skipped is not None:
            return self._refused(plan, skipped, records)
        return self._exhausted(plan, records)

    async def _send(self, attempt: Attempt, timeouts: Timeouts, deadline: float) -> aiohttp.ClientResponse:
        """The upstream response, headers received; or _Failure."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _Failure(TOTAL_TIMEOUT, "the request's total time limit was reached")
        by_total = remaining < timeouts.first_byte
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in attempt.headers.items() if k.lower() not in _REQUEST_DROPPED
        )
        headers.setdefault("accept-encoding", "identity")
        scope = asyncio.timeout(min(remaining, timeouts.first_byte))
        try:
            async with scope:
                return await self._session.post(
                    # Sent exactly as built: a signed URL (SigV4 covers Bedrock's `%3A` in the
                    # model id) must not be re-normalised by yarl.
                    yarl.URL(attempt.url, encoded=True),
                    data=attempt.body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeouts.connect),
                )
        except TimeoutError as exc:
            if scope.expired():
                if by_total:
                    raise _Failure(TOTAL_TIMEOUT, "the request's total time limit was reached") from None
                raise _Failure(FIRST_BYTE_TIMEOUT, f"no response headers within {timeouts.first_byte:g} s") from None
            raise _Failure(CONNECT_TIMEOUT, f"connect took longer than {timeouts.connect:g} s") from exc
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise _Failure(TLS_ERROR, str(exc) or type(exc).__name__) from exc
        except aiohttp.ClientConnectorError as exc:
            raise _Failure(CONNECT_ERROR, str(exc) or type(exc).__name__) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # ServerDisconnectedError, ClientOSError (reset), a malformed answer
            raise _Failure(CONNECTION_RESET, str(exc) or type(exc).__name__) from exc

    async def _relay_answer(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        plan: Plan,
        index: int,
        attempt: Attempt,
        records: list[AttemptRecord],
        started: float,
        deadline: float,
        body: bytes | None = None,
    ) -> web.StreamResponse:
        """Stream a final upstream answer to the client as it arrives (`body`: what of it was read
        already, all there is of it)."""
        loop = asyncio.get_running_loop()
        answered = records[-1]
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _RESPONSE_DROPPED:
                out.headers.add(name, value)
        out.headers[ATTEMPT_HEADER] = str(index)
        out.headers[ATTEMPTS_HEADER] = json.dumps([r.public() for r in records], separators=(",", ":"))
        sse = upstream.headers.get("content-type", "").lower().startswith("text/event-stream")
        final = answered.outcome
        broken: str | None = None
        detail = ""
        pending = b""  # SSE only: the incomplete event at the end of what arrived
        chunk = b""  # the last events read (perhaps never delivered when the client left)
        try:
            await out.prepare(request)
            content: aiohttp.StreamReader | _ReadBody = upstream.content if body is None else _ReadBody(body)
            while True:
                remaining = deadline - loop.time()
                scope = asyncio.timeout(min(plan.timeouts.idle, remaining))
                try:
                    async with scope:
                        chunk = await content.readany()
                except TimeoutError:
                    if not scope.expired():
                        raise
                    if remaining <= plan.timeouts.idle:
                        broken, detail = TOTAL_TIMEOUT, f"the answer took longer than {plan.timeouts.total:g} s"
                    else:
                        broken, detail = IDLE_TIMEOUT, f"the answer stalled for {plan.timeouts.idle:g} s"
                    break
                except (aiohttp.ClientError, OSError) as exc:
                    broken, detail = STREAM_BROKEN, f"the answer broke off: {type(exc).__name__}"
                    break
                if not chunk:
                    break
                if sse:
                    data = pending + chunk if pending else chunk
                    end = _event_end(data, max(0, len(pending) - 3))
                    if end == 0:
                        pending = data
                        continue
                    pending = data[end:]
                    chunk = data[:end]
                await out.write(chunk)
            if broken is None:
                if pending:
                    await out.write(pending)
                await out.write_eof()
                upstream.release()
            else:
                upstream.close()
                final = broken
                logger.warning(
                    "relay %s: attempt %d (%s): %s after the answer started",
                    plan.label, index, attempt.deployment, detail,
                )  # fmt: skip
                if sse:
                    message = f"upstream {attempt.deployment}: {detail}"
                    await out.write(upstream_error_event(message, attempt.deployment))
                    await out.write_eof()
                elif request.transport is not None:
                    # Cut it: a cleanly ended body would pass for a complete one.
                    request.transport.close()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            final = CLIENT_CLOSED
            self._drain_or_close(plan, index, upstream, sse and broken is None, chunk + pending)
        except asyncio.CancelledError:
            final = CLIENT_CLOSED
            self._drain_or_close(plan, index, upstream, sse and broken is None, chunk + pending)
            self._report(dataclasses.replace(answered, outcome=final, seconds=loop.time() - started))
            raise
        except Exception:
            logger.exception("relay %s: relaying the answer of %s failed", plan.label, attempt.deployment)
            final = STREAM_BROKEN
            upstream.close()
            if request.transport is not None:
                request.transport.close()
        self._report(dataclasses.replace(answered, outcome=final, seconds=loop.time() - started))
        return out

    def _drain_or_close(
        self, plan: Plan, index: int, upstream: aiohttp.ClientResponse, readable: bool, pending: bytes
    ) -> None:
        """The client left mid-answer: close the upstream answer, or (when the plan asks for it)
        read it on in a task of its own — the handler itself is being cancelled. `pending` is what was
        read last: the client may never have got it (a reader of whole events sees it again)."""
        sink = None
        if readable and plan.drain is not None and plan.drain_seconds > 0 and not upstream.content.at_eof():
            try:
                sink = plan.drain(index)
            except Exception:
                logger.exception("relay %s: drain callback failed", plan.label)
        if sink is None:
            upstream.close()
            return
        plan.draining = True
        logger.info("relay %s: the client left mid-answer; reading the answer on for its usage", plan.label)
        task = asyncio.get_running_loop().create_task(self._drain(plan, upstream, sink, pending))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _drain(
        self, plan: Plan, upstream: aiohttp.ClientResponse, sink: Callable[[bytes], bool], pending: bytes
    ) -> None:
        read = 0
        try:
            async with asyncio.timeout(min(plan.drain_seconds, DRAIN_MAX_SECONDS)):
                done = bool(pending) and sink(pending)
                while not done and read < DRAIN_MAX_BYTES:
                    async with asyncio.timeout(plan.timeouts.idle):
                        chunk = await upstream.content.readany()
                    if not chunk:
                        break
                    read += len(chunk)
                    done = sink(chunk)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            logger.info("relay %s: reading on after the client left stopped: %s", plan.label, type(exc).__name__)
        except Exception:
            logger.exception("relay %s: reading on after the client left failed", plan.label)
        finally:
            upstream.close()
            try:
                sink(b"")
            except Exception:
                logger.exception("relay %s: drain callback failed", plan.label)
            _ended(plan)

    @staticmethod
    def _refused(plan: Plan, skipped: Skip, records: list[AttemptRecord]) -> web.Response:
        """No attempt answered and the gateway refused one: its refusal is the answer (what the
        client would get had that deployment been the first choice), with the attempts' header."""
        logger.warning(
            "relay %s: no deployment answered; answering %d as the gateway refused %s: %s",
            plan.label, skipped.status, skipped.deployment, skipped.detail,
        )  # fmt: skip
        headers = {k: v for k, v in skipped.headers.items() if k.lower() not in _RESPONSE_DROPPED}
        headers[ATTEMPTS_HEADER] = json.dumps([r.public() for r in records], separators=(",", ":"))
        return web.Response(status=skipped.status, body=skipped.body, headers=headers)

    def _exhausted(self, plan: Plan, records: list[AttemptRecord]) -> web.Response:
        outcomes = {r.outcome for r in records}
        waits = [r.retry_after for r in records if r.retry_after is not None]
        headers: dict[str, str] = {}
        if records and outcomes == {RATE_LIMITED}:
            status, code = 429, "rate_limit_exceeded"
            wait = min(waits) if waits else plan.exhausted_retry_after
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            summary = "every upstream deployment for this model is rate limited"
            advice = f"retry after {headers['retry-after']} s"
        elif OVERLOADED in outcomes and outcomes <= {OVERLOADED, RATE_LIMITED}:
            status, code = 503, "upstream_exhausted"
            if waits:
                headers["retry-after"] = str(max(1, math.ceil(min(waits))))
            summary = "every upstream deployment for this model is overloaded or rate limited"
            advice = "try again shortly"
        else:
            status, code = 502, "upstream_exhausted"
            summary = (
                "every upstream deployment for this model failed"
                if records
                else "no upstream deployment was available for this request"
            )
            advice = "try again; if it persists, the gateway operator should check the providers"
        tried = "; ".join(_describe(r) for r in records)
        message = f"{summary} ({tried}); {advice}" if tried else f"{summary}; {advice}"
        logger.warning("relay %s: upstream exhausted, answering %d: %s", plan.label, status, tried or "-")
        response = _error_response(status, code, message, headers, records)
        response.headers[ATTEMPTS_HEADER] = json.dumps([r.public() for r in records], separators=(",", ":"))
        return response


def _ended(plan: Plan) -> None:
    if plan.ended is not None:
        try:
            plan.ended()
        except Exception:
            logger.exception("relay %s: ended callback failed", plan.label)


def _describe(record: AttemptRecord) -> str:
    text = f"{record.deployment}: {_DESCRIBED.get(record.outcome, record.outcome)}"
    if record.status is not None:
        text += f" ({record.status})"
    if record.retry_after is not None:
        text += f", retry after {record.retry_after:g} s"
    return text


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None, records: list[AttemptRecord]
) -> web.Response:
    error = error_object(status, code, message)
    if records:
        error["attempts"] = [r.public() for r in records]
    all_headers = {"x-codexgate-error": code, **(headers or {})}
    return web.json_response({"error": error}, status=status, headers=all_headers)
