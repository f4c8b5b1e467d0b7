"""The failover relay against a fault-injecting upstream, driven over HTTP as mitmproxy drives it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from fault_upstream import Blackhole, Fault, FaultUpstream, refused_url, sse_event

from codexgate.relay import (
    ATTEMPT_HEADER,
    ATTEMPTS_HEADER,
    UPSTREAM_ERROR_EVENT,
    Attempt,
    Plan,
    Relay,
    Timeouts,
    parse_retry_after,
)
from codexgate.sse import SSEParser

pytestmark = pytest.mark.timeout(30)

SECRET = "sk-upstream-secret-0123456789"
FAST = Timeouts(connect=0.5, first_byte=1.0, idle=0.5, total=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    fake = FaultUpstream().start()
    yield fake
    fake.stop()


def name() -> str:
    return uuid.uuid4().hex[:10]


def attempt(deployment: str, url: str, body: bytes = b'{"model":"m"}') -> Attempt:
    return Attempt(deployment, url, {"authorization": f"Bearer {SECRET}", "content-type": "application/json"}, body)


@dataclasses.dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes
    chunks: list[tuple[float, bytes]]  # (monotonic time received, bytes)
    elapsed: float
    client_error: BaseException | None
    attempts_seen: list[tuple[str, str, int | None, float]]
    auth_failures: list[str]

    @property
    def attempts(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = json.loads(self.headers[ATTEMPTS_HEADER])
        return parsed

    @property
    def outcomes(self) -> list[tuple[str, str]]:
        return [(a["deployment"], a["outcome"]) for a in self.attempts]

    def events(self) -> list[tuple[str, str]]:
        return SSEParser().feed(self.body)


async def relay_once(plan: Plan, relay: Relay | None = None, incoming_headers: dict[str, str] | None = None) -> Result:
    seen: list[tuple[str, str, int | None, float]] = []
    auth: list[str] = []
    own = relay is None
    if relay is None:
        relay = Relay(on_attempt=lambda *a: seen.append(a), on_auth_failure=auth.append)
        await relay.start()
    try:
        token = relay.register(plan)
        chunks: list[tuple[float, bytes]] = []
        error: BaseException | None = None
        started = time.monotonic()
        async with (
            aiohttp.ClientSession(auto_decompress=False) as client,
            client.post(relay.url(token), data=b'{"ignored": true}', headers=incoming_headers or {}) as response,
        ):
            try:
                async for chunk in response.content.iter_any():
                    chunks.append((time.monotonic(), chunk))
            except aiohttp.ClientPayloadError as exc:
                error = exc
            result = Result(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                b"".join(c for _, c in chunks),
                chunks,
                time.monotonic() - started,
                error,
                seen,
                auth,
            )
        await asyncio.sleep(0.05)  # the handler reports the answering attempt after its last write
        return result
    finally:
        if own:
            await relay.stop()


def run(plan: Plan, **kwargs: Any) -> Result:
    return asyncio.run(relay_once(plan, **kwargs))


def full_stream(events: int) -> bytes:
    return b"".join(sse_event(i) for i in range(events))


# -- answers that pass through -----------------------------------------------------------------


def test_first_attempt_streams_with_plan_body_and_headers(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("prov-a/m#0", upstream.script(a, Fault.sse(4)), b'{"model":"upstream-a"}'),
         attempt("prov-b/m#1", upstream.script(b, Fault.sse()))],
        FAST,
    )  # fmt: skip
    result = run(plan, incoming_headers={"authorization": "Bearer vk-virtual-key", "x-incoming": "1"})
    assert result.status == 200
    assert result.body == full_stream(4)
    assert result.headers["content-type"] == "text/event-stream"
    assert result.headers["x-upstream"] == "fault"
    assert result.headers[ATTEMPT_HEADER] == "0"
    assert result.outcomes == [("prov-a/m#0", "ok")]
    assert result.attempts[0]["status"] == 200 and isinstance(result.attempts[0]["ms"], int)
    hits = upstream.hits_of(a)
    assert len(hits) == 1 and not upstream.hits_of(b)
    # The plan's body and headers went upstream; the incoming request's did not.
    assert hits[0].body == b'{"model":"upstream-a"}'
    assert hits[0].headers["authorization"] == f"Bearer {SECRET}"
    assert "x-incoming" not in hits[0].headers
    assert hits[0].headers["accept-encoding"] == "identity"
    assert [(d, o, s) for d, o, s, _ in result.attempts_seen] == [("prov-a/m#0", "ok", 200)]


def test_failover_through_every_kind_of_failure_before_headers(upstream: FaultUpstream) -> None:
    names = [name() for _ in range(6)]
    blackhole = Blackhole()
    try:
        plan = Plan(
            [
                attempt("refused", refused_url()),
                attempt("blackhole", blackhole.url),
                attempt("tls", upstream.script(names[0], Fault.sse()).replace("http://", "https://")),
                attempt("reset", upstream.script(names[1], Fault.reset_before())),
                attempt("five-hundred", upstream.script(names[2], Fault.status(500))),
                attempt("overloaded", upstream.script(names[3], Fault.status(503))),
                attempt("limited", upstream.script(names[4], Fault.status(429))),
                attempt("good", upstream.script(names[5], Fault.json({"answer": 42}))),
            ],
            Timeouts(connect=0.3, first_byte=2, idle=1, total=10),
        )
        result = run(plan)
    finally:
        blackhole.close()
    assert result.status == 200
    assert json.loads(result.body) == {"answer": 42}
    assert result.headers[ATTEMPT_HEADER] == "7"
    assert result.outcomes == [
        ("refused", "connect_error"),
        ("blackhole", "connect_timeout"),
        ("tls", "tls_error"),
        ("reset", "connection_reset"),
        ("five-hundred", "server_error"),
        ("overloaded", "overloaded"),
        ("limited", "rate_limited"),
        ("good", "ok"),
    ]
    statuses = [a.get("status") for a in result.attempts]
    assert statuses == [None, None, None, None, 500, 503, 429, 200]
    assert 0.3 <= result.attempts[1]["ms"] / 1000 < 1.0  # the connect timeout was honoured
    assert [d for d, *_ in result.attempts_seen] == [d for d, _ in result.outcomes]
    assert SECRET not in json.dumps(result.headers)


def test_no_headers_within_first_byte_moves_on(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("slow", upstream.script(a, Fault.hang_headers())), attempt("fast", upstream.script(b, Fault.sse()))],
        Timeouts(connect=0.5, first_byte=0.4, idle=1, total=10),
    )
    result = run(plan)
    assert result.status == 200 and result.headers[ATTEMPT_HEADER] == "1"
    assert result.outcomes == [("slow", "first_byte_timeout"), ("fast", "ok")]
    assert result.elapsed >= 0.4  # the first attempt was given its whole first-byte timeout


def test_total_timeout_caps_the_attempts(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("slow", upstream.script(a, Fault.hang_headers())), attempt("never", upstream.script(b, Fault.sse()))],
        Timeouts(connect=0.5, first_byte=5, idle=5, total=0.5),
    )
    result = run(plan)
    assert result.status == 502
    assert result.elapsed >= 0.5
    assert result.outcomes == [("slow", "total_timeout")]
    assert not upstream.hits_of(b)


# -- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [(Fault.status(429, retry_after="0.3"), "rate_limited"), (Fault.status(503, retry_after_ms="300"), "overloaded")],
    ids=["429-retry-after", "503-retry-after-ms"],
)
def test_short_retry_after_retries_the_same_attempt(upstream: FaultUpstream, fault: Fault, outcome: str) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("a", upstream.script(a, fault, Fault.sse())), attempt("b", upstream.script(b, Fault.sse()))], FAST
    )
    result = run(plan)
    assert result.status == 200
    assert result.headers[ATTEMPT_HEADER] == "0"
    assert result.outcomes == [("a", outcome), ("a", "ok")]
    assert result.attempts[0]["retry_after"] == pytest.approx(0.3)
    hits = upstream.hits_of(a)
    assert len(hits) == 2 and not upstream.hits_of(b)
    assert hits[1].at - hits[0].at >= 0.29  # it waited as asked


def test_short_retry_after_is_retried_only_once(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    limited = Fault.status(429, retry_after="0.1")
    plan = Plan([attempt("a", upstream.script(a, limited)), attempt("b", upstream.script(b, Fault.sse()))], FAST)
    result = run(plan)
    assert result.outcomes == [("a", "rate_limited"), ("a", "rate_limited"), ("b", "ok")]
    assert result.headers[ATTEMPT_HEADER] == "1"
    assert len(upstream.hits_of(a)) == 2


def test_long_retry_after_moves_on_at_once(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("a", upstream.script(a, Fault.status(429, retry_after="30"))),
         attempt("b", upstream.script(b, Fault.sse()))],
        FAST,
    )  # fmt: skip
    result = run(plan)
    assert result.status == 200 and result.headers[ATTEMPT_HEADER] == "1"
    assert result.outcomes == [("a", "rate_limited"), ("b", "ok")]
    assert len(upstream.hits_of(a)) == 1  # not waited out and retried in place


def test_lazy_factory_builds_each_attempt_right_before_it_is_sent(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    urls = [
        upstream.script(a, Fault.status(429, retry_after="0.2"), Fault.status(500)),
        upstream.script(b, Fault.sse()),
    ]
    built: list[tuple[int, float]] = []

    def build(i: int) -> Attempt | None:
        built.append((i, time.monotonic()))
        if i >= len(urls):
            raise AssertionError("built past the answering attempt")
        return attempt(f"d{i}", urls[i], body=json.dumps({"signed_at": len(built)}).encode())

    result = run(Plan(build, FAST))
    assert result.status == 200 and result.headers[ATTEMPT_HEADER] == "1"
    assert [i for i, _ in built] == [0, 0, 1]  # rebuilt (re-signed) for the retry; nothing built ahead
    assert [h.body for h in upstream.hits_of(a)] == [b'{"signed_at": 1}', b'{"signed_at": 2}']
    assert upstream.hits_of(b)[0].body == b'{"signed_at": 3}'
    assert built[1][1] - built[0][1] >= 0.19


def test_async_factory_and_a_factory_that_fails(upstream: FaultUpstream) -> None:
    b = name()

    async def build(i: int) -> Attempt | None:
        if i == 0:
            raise RuntimeError("secret store down")
        return attempt("second", upstream.script(b, Fault.sse())) if i == 1 else None

    result = run(Plan(build, FAST))
    assert result.status == 200
    assert result.outcomes == [("#0", "build_failed"), ("second", "ok")]


# -- final answers that are not retried ------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_returned_and_reported(upstream: FaultUpstream, status: int) -> None:
    a, b = name(), name()
    fault = Fault.status(status, message="invalid x-api-key")
    plan = Plan([attempt("bad-key", upstream.script(a, fault)), attempt("b", upstream.script(b, Fault.sse()))], FAST)
    result = run(plan)
    assert result.status == status
    assert json.loads(result.body)["error"]["message"] == "invalid x-api-key"
    assert result.outcomes == [("bad-key", "auth_error")]
    assert result.auth_failures == ["bad-key"]
    assert not upstream.hits_of(b)


def refreshing(deployment: str, url: str, dropped: list[bool], seen: list[tuple[int, bytes]]) -> Attempt:
    """An attempt whose credentials its family had cached: `on_auth_error` says whether it dropped them."""
    made = attempt(deployment, url)

    def on_auth_error(status: int, body: bytes) -> bool:
        seen.append((status, body))
        return dropped.pop(0)

    made.on_auth_error = on_auth_error
    return made


def test_cached_credentials_refused_are_replaced_and_the_attempt_made_again(upstream: FaultUpstream) -> None:
    """A 401 to a token the family has now dropped: the same deployment is tried once more (the plan
    builds the attempt anew, with fresh credentials), not answered with the refusal, not cooled down."""
    a, b = name(), name()
    url = upstream.script(a, Fault.status(401, message="token expired"), Fault.sse(3))
    seen: list[tuple[int, bytes]] = []
    built: list[int] = []

    def build(i: int) -> Attempt | None:
        built.append(i)
        return [refreshing("vertex/m#0", url, [True], seen), attempt("b", upstream.script(b, Fault.sse()))][i]

    result = run(Plan(build, FAST))
    assert result.status == 200 and result.body == full_stream(3)
    assert result.outcomes == [("vertex/m#0", "auth_refreshed"), ("vertex/m#0", "ok")]
    assert built == [0, 0]  # built anew: the fresh credentials are the factory's
    assert [(status, json.loads(body)["error"]["message"]) for status, body in seen] == [(401, "token expired")]
    assert result.auth_failures == [] and not upstream.hits_of(b)


@pytest.mark.parametrize("dropped", [[False], [True, True]], ids=["not-cached", "fresh-ones-refused-too"])
def test_a_refusal_fresh_credentials_cannot_cure_is_answered_whole_and_cools_down(
    upstream: FaultUpstream, dropped: list[bool]
) -> None:
    a, b = name(), name()
    url = upstream.script(a, Fault.status(401, message="invalid x-api-key"))
    seen: list[tuple[int, bytes]] = []
    attempts = [refreshing("bad-key", url, list(dropped), seen), attempt("b", upstream.script(b, Fault.sse()))]
    result = run(Plan(lambda i: attempts[i] if i < 2 else None, FAST))
    assert result.status == 401  # the provider's refusal, read before it was answered, passes whole
    assert json.loads(result.body)["error"]["message"] == "invalid x-api-key"
    expected = [("bad-key", "auth_refreshed")] * (len(dropped) - 1) + [("bad-key", "auth_error")]
    assert result.outcomes == expected
    assert len(seen) == len(dropped)
    assert result.auth_failures == ["bad-key"]
    assert not upstream.hits_of(b)


@pytest.mark.parametrize("status", [400, 404])
def test_client_errors_are_returned_without_failover(upstream: FaultUpstream, status: int) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("a", upstream.script(a, Fault.status(status))), attempt("b", upstream.script(b, Fault.sse()))], FAST
    )
    result = run(plan)
    assert result.status == status
    assert json.loads(result.body)["error"]["code"] == str(status)
    assert result.outcomes == [("a", "client_error")]
    assert result.auth_failures == []
    assert not upstream.hits_of(b)


def test_compressed_answer_passes_through_untouched(upstream: FaultUpstream) -> None:
    a = name()
    fault = Fault.gzip_json({"big": "x" * 1000})
    result = run(Plan([attempt("a", upstream.script(a, fault))], FAST))
    assert result.headers["content-encoding"] == "gzip"
    assert result.body == fault.body  # not decompressed on the way (auto_decompress=False)
    assert "content-length" not in result.headers  # re-chunked


# -- exhausted -------------------------------------------------------------------------------


def test_all_rate_limited_answers_429_with_the_smallest_retry_after(upstream: FaultUpstream) -> None:
    a, b, c = name(), name(), name()
    plan = Plan(
        [
            attempt("a", upstream.script(a, Fault.status(429, retry_after="30"))),
            attempt("b", upstream.script(b, Fault.status(429, retry_after="12.5"))),
            attempt("c", upstream.script(c, Fault.status(429))),
        ],
        FAST,
    )
    result = run(plan)
    assert result.status == 429
    assert result.headers["retry-after"] == "13"
    error = json.loads(result.body)["error"]
    assert error["code"] == "rate_limit_exceeded" and error["param"] is None
    assert error["type"] == "rate_limit_exceeded"
    assert [(x["deployment"], x["outcome"], x["status"]) for x in error["attempts"]] == [
        ("a", "rate_limited", 429), ("b", "rate_limited", 429), ("c", "rate_limited", 429),
    ]  # fmt: skip
    assert "retry after 13 s" in error["message"]
    for text in (result.body.decode(), json.dumps(result.headers)):
        assert SECRET not in text and "authorization" not in text.lower()


def test_rate_limited_without_any_retry_after_uses_the_default(upstream: FaultUpstream) -> None:
    a = name()
    result = run(Plan([attempt("a", upstream.script(a, Fault.status(429)))], FAST, exhausted_retry_after=7))
    assert result.status == 429 and result.headers["retry-after"] == "7"


def test_overloaded_and_rate_limited_answers_503(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("a", upstream.script(a, Fault.status(503))), attempt("b", upstream.script(b, Fault.status(429)))],
        FAST,
    )
    result = run(plan)
    assert result.status == 503
    error = json.loads(result.body)["error"]
    assert error["code"] == "upstream_exhausted" and error["type"] == "server_error"
    assert [x["outcome"] for x in error["attempts"]] == ["overloaded", "rate_limited"]


def test_other_failures_answer_502(upstream: FaultUpstream) -> None:
    a = name()
    plan = Plan([attempt("a", upstream.script(a, Fault.status(503))), attempt("gone", refused_url())], FAST)
    result = run(plan)
    assert result.status == 502
    error = json.loads(result.body)["error"]
    assert error["code"] == "upstream_exhausted"
    assert [(x["deployment"], x["outcome"]) for x in error["attempts"]] == [
        ("a", "overloaded"), ("gone", "connect_error"),
    ]  # fmt: skip
    assert "gone: connection failed" in error["message"]
    assert result.outcomes == [("a", "overloaded"), ("gone", "connect_error")]


def test_empty_plan_answers_502() -> None:
    result = run(Plan([], FAST))
    assert result.status == 502
    assert json.loads(result.body)["error"]["code"] == "upstream_exhausted"


# -- after the answer started -------------------------------------------------------------------


def test_streams_as_it_arrives(upstream: FaultUpstream) -> None:
    a = name()
    result = run(Plan([attempt("a", upstream.script(a, Fault.sse(events=5, interval=0.2)))], FAST))
    assert result.body == full_stream(5)
    sent = upstream.sent[a]
    first_received = result.chunks[0][0]
    assert result.chunks[0][1].startswith(sse_event(0))
    assert first_received < sent[-1][0] - 0.5  # the first event came ~0.8 s before the upstream sent the last
    assert len(result.chunks) >= 4


def test_slow_trickle_within_idle_completes(upstream: FaultUpstream) -> None:
    a = name()
    plan = Plan([attempt("a", upstream.script(a, Fault.trickle(8, 0.1)))], Timeouts(1, 1, idle=0.4, total=10))
    result = run(plan)
    assert result.body == full_stream(8)  # 0.8 s in all, never 0.4 s silent
    assert result.client_error is None
    assert [(d, o) for d, o, _, _ in result.attempts_seen] == [("a", "ok")]
    assert result.attempts_seen[0][3] >= 0.7  # reported when the stream ended


def test_idle_stall_mid_stream_ends_with_the_in_band_marker(upstream: FaultUpstream) -> None:
    a, b = name(), name()
    plan = Plan(
        [attempt("a", upstream.script(a, Fault.hang_mid(events=2))), attempt("b", upstream.script(b, Fault.sse()))],
        Timeouts(connect=1, first_byte=1, idle=0.4, total=10),
    )
    result = run(plan)
    assert result.status == 200 and result.client_error is None  # ended cleanly
    # The complete events, then the marker; the half event the upstream left is not passed on.
    assert result.body.startswith(full_stream(2) + b"event: " + UPSTREAM_ERROR_EVENT.encode())
    events = result.events()
    assert [e for e, _ in events] == ["response.output_text.delta"] * 2 + [UPSTREAM_ERROR_EVENT]
    marker = json.loads(events[-1][1])
    assert marker["deployment"] == "a" and "stalled" in marker["message"]
    assert not upstream.hits_of(b)  # no retry once bytes were sent
    assert result.elapsed >= 0.4  # the idle timeout, not an earlier give-up
    assert [(d, o) for d, o, _, _ in result.attempts_seen] == [("a", "idle_timeout")]


def test_reset_after_first_bytes_ends_with_the_in_band_marker(upstream: FaultUpstream) -> None:
    a = name()
    result = run(Plan([attempt("a", upstream.script(a, Fault.reset_after(events=1)))], FAST))
    assert result.status == 200 and result.client_error is None
    events = result.events()
    assert [e for e, _ in events] == ["response.output_text.delta", UPSTREAM_ERROR_EVENT]
    assert "broke off" in json.loads(events[-1][1])["message"]
    assert [(d, o) for d, o, _, _ in result.attempts_seen] == [("a", "stream_broken")]


def test_total_timeout_mid_stream_ends_with_the_marker(upstream: FaultUpstream) -> None:
    a = name()
    plan = Plan([attempt("a", upstream.script(a, Fault.trickle(20, 0.1)))], Timeouts(1, 1, idle=1, total=0.5))
    result = run(plan)
    events = result.events()
    assert events[-1][0] == UPSTREAM_ERROR_EVENT and 2 <= len(events) <= 7
    assert "longer than 0.5 s" in json.loads(events[-1][1])["message"]


@pytest.mark.parametrize(
    "fault",
    [Fault.reset_after(content_type="application/json"), Fault.hang_mid(content_type="application/json")],
    ids=["reset", "stall"],
)
def test_a_broken_non_stream_body_is_cut_not_completed(upstream: FaultUpstream, fault: Fault) -> None:
    a = name()
    plan = Plan([attempt("a", upstream.script(a, fault))], Timeouts(connect=1, first_byte=1, idle=0.4, total=10))
    result = run(plan)
    assert result.status == 200
    assert isinstance(result.client_error, aiohttp.ClientPayloadError)  # the client sees it incomplete
    assert UPSTREAM_ERROR_EVENT.encode() not in result.body


# -- the relay itself ----------------------------------------------------------------------------


def test_tokens_are_single_use_and_expire(upstream: FaultUpstream) -> None:
    a = name()

    async def main() -> None:
        relay = Relay()
        await relay.start()
        try:
            url = upstream.script(a, Fault.sse())
            token = relay.register(Plan([attempt("a", url)], FAST))
            expiring = relay.register(Plan([attempt("a", url)], Timeouts(total=0.2)))
            assert len(token) >= 32 and token != expiring
            async with aiohttp.ClientSession() as client:
                async with client.post(relay.url(token)) as first:
                    assert first.status == 200
                    await first.read()
                async with client.post(relay.url(token)) as again:
                    assert again.status == 404
                    assert (await again.json())["error"]["code"] == "relay_plan_unknown"
                await asyncio.sleep(0.3)
                assert relay.pending == 0
                async with client.post(relay.url(expiring)) as late:
                    assert late.status == 404
        finally:
            await relay.stop()

    asyncio.run(main())
    assert len(upstream.hits_of(a)) == 1


def test_connections_to_an_upstream_are_reused(upstream: FaultUpstream) -> None:
    a = name()

    async def main() -> None:
        relay = Relay()
        await relay.start()
        try:
            url = upstream.script(a, Fault.json({"n": 1}))
            for _ in range(3):
                result = await relay_once(Plan([attempt("a", url)], FAST), relay=relay)
                assert result.status == 200
        finally:
            await relay.stop()

    asyncio.run(main())
    assert len({h.peer_port for h in upstream.hits_of(a)}) == 1


def test_client_going_away_closes_the_upstream_stream(upstream: FaultUpstream) -> None:
    a = name()
    seen: list[tuple[str, str, int | None, float]] = []

    async def main() -> None:
        relay = Relay(on_attempt=lambda *x: seen.append(x))
        await relay.start()
        try:
            token = relay.register(Plan([attempt("a", upstream.script(a, Fault.sse(events=50, interval=0.05)))], FAST))
            async with aiohttp.ClientSession() as client:
                response = await client.post(relay.url(token))
                await response.content.readany()
                response.close()  # drop the connection mid-stream, as mitmproxy does when Codex cancels
            for _ in range(40):
                if seen:
                    break
                await asyncio.sleep(0.05)
        finally:
            await relay.stop()

    asyncio.run(main())
    assert [(d, o) for d, o, _, _ in seen] == [("a", "client_closed")]
    assert len(upstream.sent[a]) < 40  # the upstream stream was abandoned, not read to the end


def test_callback_errors_do_not_break_the_request(upstream: FaultUpstream) -> None:
    a, b = name(), name()

    def explode(*_: Any) -> None:
        raise RuntimeError("metrics broke")

    async def main() -> Result:
        relay = Relay(on_attempt=explode, on_auth_failure=explode)
        await relay.start()
        try:
            plan = Plan(
                [attempt("a", upstream.script(a, Fault.status(500))), attempt("b", upstream.script(b, Fault.sse()))],
                FAST,
            )
            return await relay_once(plan, relay=relay)
        finally:
            await relay.stop()

    result = asyncio.run(main())
    assert result.status == 200 and result.outcomes == [("a", "server_error"), ("b", "ok")]


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0  # in the past
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None
    assert parse_retry_after({}) is None


def test_a_factory_that_always_fails_is_bounded() -> None:
    def build(i: int) -> Attempt | None:
        raise RuntimeError("no credentials")

    result = run(Plan(build, FAST, max_attempts=3))
    assert result.status == 502
    assert [o for _, o in result.outcomes] == ["build_failed"] * 3
