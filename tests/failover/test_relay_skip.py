"""The relay's skipped attempts (`Skip`, returned by the plan's factory when the gateway's limits do
not admit the request at that deployment): nothing is sent, the record says why, a later attempt
may still answer, and when none does the first skip's own refusal is the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fault_upstream import Fault, FaultUpstream
from test_relay import FAST, attempt, name, run

from codexgate.relay import ATTEMPT_HEADER, ATTEMPTS_HEADER, Attempt, Plan, Skip

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    fake = FaultUpstream().start()
    yield fake
    fake.stop()


def refusal(deployment: str, status: int, code: str) -> Skip:
    body = json.dumps({"error": {"message": f"{deployment}: {code}", "type": "x", "code": code}}).encode()
    headers = {"content-type": "application/json", "x-codexgate-error": code, "retry-after": "7",
               "content-length": "999"}  # fmt: skip
    return Skip(deployment, code, f"{code} there", status, headers, body)


def test_a_skipped_attempt_is_not_sent_and_the_next_one_answers(upstream: FaultUpstream) -> None:
    a, c = name(), name()
    urls = [upstream.script(a, Fault.status(500)), "", upstream.script(c, Fault.sse())]

    def build(i: int) -> Attempt | Skip | None:
        if i == 1:
            return refusal("b/m#0", 402, "budget_exceeded")
        return attempt(f"{'abc'[i]}/m#0", urls[i]) if i < 3 else None

    result = run(Plan(build, FAST))
    assert result.status == 200 and result.headers[ATTEMPT_HEADER] == "2"
    assert result.outcomes == [("a/m#0", "server_error"), ("b/m#0", "skipped_budget_exceeded"), ("c/m#0", "ok")]
    assert ("b/m#0", "skipped_budget_exceeded", None) in [(d, o, s) for d, o, s, _ in result.attempts_seen]


def test_when_none_answers_the_first_skip_is_the_answer(upstream: FaultUpstream) -> None:
    a = name()
    skips = {1: refusal("b/m#0", 402, "budget_exceeded"), 2: refusal("c/m#0", 429, "rate_limit_exceeded")}

    def build(i: int) -> Attempt | Skip | None:
        if i == 0:
            return attempt("a/m#0", upstream.script(a, Fault.status(429)))
        return skips.get(i)

    result = run(Plan(build, FAST))
    assert result.status == 402  # not the relay's own "all rate limited" 429
    assert json.loads(result.body) == json.loads(skips[1].body)
    assert result.headers["x-codexgate-error"] == "budget_exceeded" and result.headers["retry-after"] == "7"
    assert int(result.headers["content-length"]) == len(result.body)  # framed anew
    assert [o for _, o in result.outcomes] == ["rate_limited", "skipped_budget_exceeded", "skipped_rate_limit_exceeded"]
    assert ATTEMPT_HEADER not in result.headers and ATTEMPTS_HEADER in result.headers
