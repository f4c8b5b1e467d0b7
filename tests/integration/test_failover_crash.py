"""kill -9 of the gateway while a failed-over answer streams: the recovery at the next start charges
the deployment that was answering (its provider, model and price), not the first choice.

A real gateway process (embedded store, or a real redis-server), two fake OpenAI upstreams: the
first answers 500, the second starts streaming and holds; the gateway is killed (-9) once the
client has the first event, then started again on the same data dir."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes.counter_use import counter_use
from fakes.failover_pair import failover_policy
from fakes.gateway import ALICE_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.stores.factory import EMBEDDED_FILE


def write_policy(path: Path, upstreams: dict[str, FakeOpenAI]) -> Path:
    budget = "budgets: [{limit_usd: 100, period: 1d, rolling: true}]"  # hard (the default)
    path.write_text(
        failover_policy(upstreams["first"].url, upstreams["second"].url,
                        first_limits=budget, second_limits=budget, key_limits=budget)
    )  # fmt: skip
    return path


def used(policy: Path, store_spec: str, data_dir: Path) -> dict[str, float]:
    """Each level's USD use (the policy has budgets only), by level."""
    return {counter_id.split("/")[0]: value for counter_id, value in counter_use(policy, store_spec, data_dir).items()}


def wal_lines(data_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((data_dir / "wal").glob("forwarded-*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_kill_9_mid_stream_after_a_failover_charges_the_answering_provider(
    tmp_path: Path, upstreams: dict[str, FakeOpenAI], store: str, request: pytest.FixtureRequest
) -> None:
    store_spec = request.getfixturevalue("fresh_redis_server").url if store == "redis" else "embedded"
    policy = write_policy(tmp_path / "policy.yaml", upstreams)
    data_dir = tmp_path / "data"
    gateway = Gateway(policy, data_dir)
    gateway.store = store_spec
    gateway.start()
    upstreams["first"].failures.append((500, {}))
    upstreams["second"].hold_stream.set()  # the answer's first event, then it waits: in flight for sure
    try:
        body = {"model": "gpt-first", "input": "a long story, please", "stream": True}
        headers = {"authorization": f"Bearer {ALICE_KEY}", "session-id": "crash"}
        with httpx.stream("POST", f"{gateway.base_url}/responses", json=body, headers=headers, timeout=30) as answer:
            assert answer.status_code == 200
            assert answer.headers["x-codexgate-provider"] == "second"
            assert b"response.created" in next(answer.iter_bytes())  # the failed-over answer is streaming
            assert gateway.process is not None
            gateway.process.kill()  # kill -9: no hook, no settlement, no accounting line
            gateway.process.wait(10)
    except httpx.HTTPError:
        pass  # the gateway died under the stream
    finally:
        upstreams["second"].release_stream.set()
        gateway.stop()
    assert len(upstreams["first"].received) == len(upstreams["second"].received) == 1
    assert gateway.accounting() == []  # the request left no line itself
    left = wal_lines(data_dir)
    (entry,) = [line for line in left if "id" in line]
    assert entry["provider"] == "first"  # admitted for the first choice

    restarted = Gateway(policy, data_dir)
    restarted.store = store_spec
    restarted.start()
    try:
        assert "1 had no record and were recorded now" in restarted.wait_log("write-ahead log:")
        (line,) = restarted.wait_accounting(lambda r: bool(r.get("recovered")))
    finally:
        restarted.stop()
    assert line["request_id"] == entry["id"] and line["charge"] == "estimate"
    assert (line["provider"], line["model"], line["model_requested"]) == ("second", "gpt-second", "gpt-first")
    # The second model's estimate: twice the first's (same tokens, twice the price).
    assert line["cost_usd"] == pytest.approx(2 * entry["estimate"][0], rel=1e-9) and line["cost_usd"] > 0
    # The store agrees with the line: the second provider charged, the first not, the key once.
    spent = used(policy, store_spec, data_dir)
    assert spent["provider:second"] == pytest.approx(line["cost_usd"], rel=1e-9)
    assert spent["provider:first"] == pytest.approx(0.0, abs=1e-12)
    assert spent["key:alice"] == pytest.approx(line["cost_usd"], rel=1e-9)
    # What recovery read: the move to the second deployment, on record before its reservation.
    (switch,) = [line for line in left if "switch" in line]
    assert (switch["switch"], switch["provider"], switch["model"]) == (entry["id"], "second", "gpt-second")
    if store == "embedded":
        with sqlite3.connect(f"file:{data_dir / EMBEDDED_FILE}?mode=ro", uri=True) as db:
            assert db.execute("SELECT request_id FROM reservation").fetchall() == []
