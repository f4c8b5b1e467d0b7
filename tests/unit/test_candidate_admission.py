"""Limits.admit_candidate with a real embedded store: before the relay tries another deployment, the
request's reservation moves to that deployment's levels (at most one held at any time), or the
candidate is skipped with the refusal a first choice would get; a dead store fails closed, a
request that ended meanwhile keeps nothing held, and a move that cannot be put on record is not
made. Also the write-ahead log's `switch` lines (codexgate/wal.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from unit_support import KEYS, UPSTREAM_ENV, governed, make_flow

from codexgate.addons.limits import Limits, Switch
from codexgate.addons.policy_source import PolicySource
from codexgate.flowstate import Candidate, Decision, GatewayRequest, RelayedRequest
from codexgate.metrics import GatewayMetrics
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import load_policy
from codexgate.relay import Skip
from codexgate.stores.base import Amounts, Counter, StoreUnavailable
from codexgate.stores.embedded import EmbeddedStore
from codexgate.wal import ForwardLog, PreviousRun

pytest_plugins = ["unit_support"]

MAIN = Candidate("main/gpt-main#0", "gpt-main", "main", "gpt-main", 0)
BACKUP = Candidate("backup/gpt-backup#0", "gpt-backup", "backup", "gpt-backup", 0)
MAIN_SECOND_KEY = Candidate("main/gpt-main#1", "gpt-main", "main", "gpt-main", 1)


def write_policy(tmp_path: Path, backup_limits: str = "", on_store_error: str = "closed") -> Path:
    one = f"{{value: env:{UPSTREAM_ENV}}}"
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"""\
gateway: {{on_store_error: {on_store_error}}}
providers:
  main: {{kind: openai, base_url: "https://main.example.net/v1", keys: [{one}, {one}]}}
  backup: {{kind: openai, base_url: "https://backup.example.net/v1", keys: [{one}]{backup_limits}}}
models:
  gpt-main:
    routes: [{{provider: main}}]
    fallbacks: [gpt-backup]
    max_output_tokens: 10000
    price: {{input_per_mtok: 1, output_per_mtok: 10}}
  gpt-backup:
    routes: [{{provider: backup}}]
    max_output_tokens: 10000
    price: {{input_per_mtok: 2, output_per_mtok: 20}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: {hash_key(KEYS["alice"])}, budgets: [{{limit_usd: 100, period: 1d}}]}}
"""
    )
    return path


class Harness:
    def __init__(self, tmp_path: Path, policy: Path, store: Any = None) -> None:
        metrics = GatewayMetrics()
        self.path = tmp_path / "counters.sqlite3"
        self.limits = Limits(PolicySource(metrics), metrics)
        self.limits.store = store or EmbeddedStore(str(self.path))
        self.body: dict[str, Any] = {"model": "gpt-main", "input": "hello " * 50}
        self.flow = make_flow(body=self.body)
        self.state: GatewayRequest = governed(
            self.flow, load_policy(policy), key="alice", model="gpt-main", body=self.body
        )
        self.state.relayed = RelayedRequest(token="t", candidates=[MAIN, BACKUP, MAIN_SECOND_KEY])
        self.state.provider, self.state.upstream_model = "main", "gpt-main"

    def reservations(self) -> list[str]:
        with sqlite3.connect(self.path) as db:
            return sorted(row[0] for row in db.execute("SELECT request_id FROM reservation"))

    def used(self, prefix: str) -> float:
        with sqlite3.connect(self.path) as db:
            (value,) = db.execute(
                "SELECT COALESCE(SUM(used), 0) FROM bucket WHERE counter_id LIKE ?", (prefix + "%",)
            ).fetchone()
        return float(value)

    def run(self, *indices: int) -> list[Skip | None]:
        async def go() -> list[Skip | None]:
            await self.limits.request(self.flow)
            assert self.state.relayed is not None and self.state.relayed.admit is not None
            answers = [await self.state.relayed.admit(index) for index in indices]
            if self.limits.pending_settlements:
                await asyncio.gather(*self.limits.pending_settlements)
            return answers

        return asyncio.run(go())


def spend(tmp_path: Path, policy: Path, level: tuple[str, str], usd: float) -> None:
    """`usd` already spent at one level (earlier requests)."""
    from codexgate.addons.limits import counters_for

    compiled = load_policy(policy).policy
    limited = compiled.providers[level[1]] if level[0] == "provider" else compiled.keys[0]
    counters = counters_for([(level[0], level[1], limited)], time.time(), compiled.gateway.hard_budgets.epsilon_usd)

    async def go() -> None:
        store = EmbeddedStore(str(tmp_path / "counters.sqlite3"))
        assert (await store.reserve("earlier", counters, Amounts(usd=usd, requests=1), time.time())).admitted
        assert await store.settle("earlier", Amounts(usd=usd, requests=1))
        await store.close()

    asyncio.run(go())


def test_the_reservation_moves_to_the_candidate_and_is_held_once(tmp_path: Path, upstream_env: str) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 50, period: 1d}]")
    harness = Harness(tmp_path, policy)
    first, again = harness.run(1, 1)  # (the same candidate again: a retry after Retry-After)
    assert first is None and again is None
    rid = harness.state.request_id
    assert harness.reservations() == [f"{rid}~1"]
    metering = harness.state.metering
    assert metering is not None and metering.reserved and metering.reservation_id == f"{rid}~1"
    assert (metering.provider, metering.model) == ("backup", "gpt-backup")
    # The key counts the request once, at the backup's price; the first provider holds nothing.
    assert harness.used("key:alice/usd") == pytest.approx(metering.reservation.usd)
    assert harness.used("provider:backup/usd") == pytest.approx(metering.reservation.usd)
    assert metering.estimate.usd > 0 and metering.price is not None


def test_a_spent_candidate_is_skipped_holding_nothing_and_a_later_one_reserves_again(
    tmp_path: Path, upstream_env: str
) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 1, period: 1d}]")
    spend(tmp_path, policy, ("provider", "backup"), 1.0)
    harness = Harness(tmp_path, policy)
    skipped, later = harness.run(1, 2)
    assert isinstance(skipped, Skip)
    assert (skipped.status, skipped.reason, skipped.outcome) == (402, "budget_exceeded", "skipped_budget_exceeded")
    error = json.loads(skipped.body)["error"]
    assert error["code"] == "budget_exceeded" and error["message"].startswith("provider backup:")
    assert skipped.headers["x-codexgate-error"] == "budget_exceeded"
    assert harness.state.relayed is not None and harness.state.relayed.refusal is Decision.BUDGET_EXCEEDED
    # The other key of the first provider: counted there again, under its own id.
    assert later is None
    rid = harness.state.request_id
    assert harness.reservations() == [f"{rid}~2"]
    metering = harness.state.metering
    assert metering is not None and metering.reserved and metering.provider == "main"
    assert harness.used("key:alice/usd") == pytest.approx(metering.reservation.usd)
    assert harness.used("provider:backup/usd") == pytest.approx(1.0)


def test_a_hard_budget_caps_the_candidates_output_and_the_next_one_gets_the_clients_body(
    tmp_path: Path, upstream_env: str
) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 0.05, period: 1d}]")  # < 10k output at $20/M
    harness = Harness(tmp_path, policy)
    capped, uncapped = harness.run(1, 2)
    assert capped is None and uncapped is None
    # Capped for the backup (what its budget could pay), then as the client sent it for the main one.
    assert "max_output_tokens" not in harness.body


def test_the_backup_is_capped_to_what_its_budget_pays(tmp_path: Path, upstream_env: str) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 0.05, period: 1d}]")
    harness = Harness(tmp_path, policy)
    (answer,) = harness.run(1)
    assert answer is None
    metering = harness.state.metering
    assert metering is not None and metering.output_cap is not None
    assert 1000 < harness.body["max_output_tokens"] == metering.output_cap < 2500
    assert metering.reservation.usd <= 0.05 + 1e-9


class FlakyStore(EmbeddedStore):
    """The embedded store, whose release or reserve can fail or be interleaved with something."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.fail_release = False
        self.fail_reserve_after = -1  # reserve calls that succeed before the store dies
        self.before_reserve: Callable[[], None] | None = None

    async def release(self, request_id: str) -> bool:
        if self.fail_release:
            raise StoreUnavailable("the store is down")
        return await super().release(request_id)

    async def reserve(self, request_id: str, counters: list[Counter], amounts: Amounts, now: float) -> Any:
        if self.fail_reserve_after == 0:
            raise StoreUnavailable("the store is down")
        self.fail_reserve_after -= 1
        if self.before_reserve is not None and "~" in request_id:
            self.before_reserve()
        return await super().reserve(request_id, counters, amounts, now)


@pytest.mark.parametrize("where", ["release", "reserve"])
def test_a_dead_store_fails_closed(tmp_path: Path, upstream_env: str, where: str) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 50, period: 1d}]")
    store = FlakyStore(str(tmp_path / "counters.sqlite3"))
    harness = Harness(tmp_path, policy, store)
    if where == "release":
        store.fail_release = True
    else:
        store.fail_reserve_after = 1  # the admission's reservation, then down
    (skipped,) = harness.run(1)
    assert isinstance(skipped, Skip) and (skipped.status, skipped.reason) == (503, "store_unavailable")
    assert harness.state.relayed is not None and harness.state.relayed.refusal is Decision.STORE_UNAVAILABLE
    metering = harness.state.metering
    assert metering is not None
    rid = harness.state.request_id
    if where == "release":
        # Still held for the first choice (Charge releases it once the relay answers the refusal).
        assert metering.reserved and metering.reservation_id == rid and harness.reservations() == [rid]
    else:
        assert not metering.reserved and harness.reservations() == []  # released, nothing new


def test_a_dead_store_with_on_store_error_open_lets_the_candidate_go_unmetered(
    tmp_path: Path, upstream_env: str
) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 50, period: 1d}]", on_store_error="open")
    store = FlakyStore(str(tmp_path / "counters.sqlite3"))
    harness = Harness(tmp_path, policy, store)
    store.fail_reserve_after = 1
    assert harness.run(1) == [None]
    metering = harness.state.metering
    assert metering is not None and metering.unmetered and not metering.reserved


def test_a_request_that_ended_meanwhile_keeps_nothing_held(tmp_path: Path, upstream_env: str) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 50, period: 1d}]")
    store = FlakyStore(str(tmp_path / "counters.sqlite3"))
    harness = Harness(tmp_path, policy, store)

    def settle_meanwhile() -> None:  # Charge settled the flow (it had ended) while the move was under way
        assert harness.state.metering is not None
        harness.state.metering.settled = True

    store.before_reserve = settle_meanwhile
    (skipped,) = harness.run(1)
    assert isinstance(skipped, Skip) and skipped.reason == "settled"
    assert harness.reservations() == []
    assert harness.used("key:alice/usd") == pytest.approx(0.0)


def test_a_move_that_cannot_be_put_on_record_is_not_made(tmp_path: Path, upstream_env: str) -> None:
    policy = write_policy(tmp_path, ", budgets: [{limit_usd: 50, period: 1d}]")
    harness = Harness(tmp_path, policy)
    seen: list[Switch] = []

    def disk_full(switch: Switch) -> None:
        seen.append(switch)
        raise OSError(28, "No space left on device")

    harness.limits.on_switch.append(disk_full)
    (skipped,) = harness.run(1)
    assert isinstance(skipped, Skip) and (skipped.status, skipped.reason) == (503, "record_unavailable")
    rid = harness.state.request_id
    assert harness.reservations() == [rid]  # unchanged: still the first choice's
    (switch,) = seen
    assert (switch.reservation_id, switch.candidate, switch.reserving) == (f"{rid}~1", BACKUP, True)


def test_switch_lines_keep_their_segment_and_recovery_reads_the_last(tmp_path: Path) -> None:
    log = ForwardLog(tmp_path / "wal")
    log.append("r1", {"id": "r1", "provider": "main"})
    log._number += 1  # a new segment starts while r1 is in flight (as maintain() does)
    log._open_segment()
    log.note("r1", {"switch": "r1", "reservation": "r1~1", "provider": "backup"})
    log.note("r1", {"switch": "r1", "reservation": "r1~2", "provider": "main"})
    assert log._open_requests[log._number] == 1  # the second segment lives while r1 is unfinished
    previous = PreviousRun(sorted((tmp_path / "wal").glob("forwarded-*.jsonl")))
    assert [line["reservation"] for line in previous.switches["r1"]] == ["r1~1", "r1~2"]
    assert previous.entries["r1"]["provider"] == "main"
    log.finish("r1")
    assert log.unfinished == 0 and set(log._open_requests.values()) == {0}
    log.close()
