"""Per-provider budgets of a failed-over request: charged to the provider (and model) that answered,
at its price — not to the first choice the request was admitted for.

A real gateway process, two fake OpenAI upstreams (the first answers 429 or 500, the second
answers), soft per-provider budgets, the embedded store read from its file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fakes.failover_pair import failover_policy
from fakes.gateway import ALICE_KEY, Gateway, free_port
from fakes.openai_upstream import FakeOpenAI

FIRST_PRICE = (1.0, 8.0)  # $ per million input / output tokens
SECOND_PRICE = (2.0, 16.0)
LIMIT_USD = 0.0001  # one answer of the second model (11 in, 7 out: $0.000134) takes its provider past it


@pytest.fixture
def gateway(tmp_path: Path, upstreams: dict[str, FakeOpenAI]) -> Iterator[Gateway]:
    policy = tmp_path / "policy.yaml"
    budget = f"budgets: [{{limit_usd: {LIMIT_USD}, period: 1M, hard: false}}]"
    policy.write_text(
        failover_policy(upstreams["first"].url, upstreams["second"].url, first_limits=budget, second_limits=budget,
                        output_allowance=1, first_price=FIRST_PRICE, second_price=SECOND_PRICE)
    )  # fmt: skip
    gateway = Gateway(policy, tmp_path / "data")
    gateway.metrics_port = free_port()
    gateway.start()
    yield gateway
    gateway.stop()


def spent(data_dir: Path, request_id: str) -> dict[str, float]:
    """USD per provider counter in the embedded store, once the request's settlement has landed."""
    deadline = time.monotonic() + 15
    with sqlite3.connect(f"file:{data_dir / 'counters.sqlite3'}?mode=ro", uri=True) as db:
        # (a failed-over request's reservation moved to the candidate, under "<request id>~<index>")
        held = "SELECT 1 FROM reservation WHERE request_id = ? OR request_id LIKE ?"
        while db.execute(held, (request_id, f"{request_id}~%")).fetchone():
            assert time.monotonic() < deadline, "the request's reservation was never settled"
            time.sleep(0.02)
        rows = db.execute("SELECT counter_id, SUM(used) FROM bucket WHERE counter_id LIKE 'provider:%/usd/%'"
                          " GROUP BY counter_id").fetchall()  # fmt: skip
    return {counter_id.split("/")[0]: used for counter_id, used in rows}


@pytest.mark.parametrize("status", [429, 500])
def test_a_failed_over_request_is_charged_to_the_provider_that_answered(
    gateway: Gateway, upstreams: dict[str, FakeOpenAI], status: int
) -> None:
    client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
    upstreams["first"].failures.append((status, {}))
    raw = client.responses.with_raw_response.create(model="gpt-first", input="hello", extra_headers={"session-id": "a"})
    assert raw.http_response.status_code == 200
    assert raw.headers["x-codexgate-provider"] == "second"
    assert (len(upstreams["first"].received), len(upstreams["second"].received)) == (1, 1)
    (record,) = gateway.wait_accounting(lambda line: line["session_id"] == "a")
    assert record["provider"] == "second" and record["charge"] == "actual"
    second_cost = (11 * SECOND_PRICE[0] + 7 * SECOND_PRICE[1]) / 1e6
    assert record["cost_usd"] == pytest.approx(second_cost)  # the answering model's price

    counters = spent(gateway.data_dir, record["request_id"])
    assert counters.get("provider:second") == pytest.approx(second_cost)
    assert counters.get("provider:first", 0.0) == pytest.approx(0.0)

    # The second provider's budget is spent (the next request for it is refused); the first one's is not.
    with pytest.raises(openai.APIStatusError) as refused:
        client.responses.create(model="gpt-second", input="hello", extra_headers={"session-id": "b"})
    assert refused.value.status_code == 402
    assert "provider second" in refused.value.message
    served = client.responses.with_raw_response.create(model="gpt-first", input="hi", extra_headers={"session-id": "c"})
    assert served.http_response.status_code == 200 and served.headers["x-codexgate-provider"] == "first"
