"""Metrics scraped after real traffic, the audit chain of a real run, and no secret anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, CAROL_KEY, UPSTREAM_KEY, Gateway, free_port, policy_text
from fakes.openai_upstream import FakeOpenAI
from prometheus_client.parser import text_string_to_metric_families

from codexgate.cli import main as cli_main


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("observed")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, root / "data")
    gateway.metrics_port = free_port()
    gateway.start()
    sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=20)
    for _ in range(3):
        sdk.responses.create(model="gpt-test", input="observe me")
    with sdk.responses.create(model="gpt-test", input="stream me", stream=True) as stream:
        for _ in stream:
            pass
    sdk.responses.create(model="mock-model", input="local")
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(api_key=CAROL_KEY, base_url=gateway.base_url, max_retries=0).responses.create(
            model="gpt-test", input="x"
        )
    gateway.wait_accounting(lambda _: True, count=6)  # every request above has ended
    yield gateway
    gateway.stop()


def scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_after_real_traffic(observed: Gateway) -> None:
    samples = scrape(observed)
    assert value(samples, "codexgate_requests_total", key="alice", model="gpt-test", decision="forwarded") == 4
    assert value(samples, "codexgate_requests_total", key="alice", model="mock-model", decision="answered") == 1
    assert value(samples, "codexgate_refusals_total", reason="model_not_allowed", team="platform") == 1
    # The fake upstream reports 11 input (3 cached) and 7 output (2 reasoning) tokens per answer.
    assert value(samples, "codexgate_tokens_total", key="alice", model="gpt-test", kind="input") == 44
    assert value(samples, "codexgate_tokens_total", key="alice", model="gpt-test", kind="cached") == 12
    assert value(samples, "codexgate_tokens_total", key="alice", model="gpt-test", kind="output") == 28
    assert value(samples, "codexgate_tokens_total", key="alice", model="gpt-test", kind="reasoning") == 8
    # gpt-test: $1 in / $8 out per million tokens.
    assert value(samples, "codexgate_cost_usd_total", key="alice", model="gpt-test") == pytest.approx(
        4 * (11 * 1 + 7 * 8) / 1e6
    )
    assert value(samples, "codexgate_request_duration_seconds_count", provider="openai") == 4


def test_audit_chain_of_a_real_run_verifies_and_catches_an_edit(
    observed: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["audit", "verify", "--data-dir", str(observed.data_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    files = sorted((observed.data_dir / "audit").glob("audit-*.jsonl"))
    lines = files[0].read_text().splitlines()
    assert len(lines) >= 6
    copy = tmp_path / "audit-000001.jsonl"
    copy.write_text("\n".join([lines[0], lines[1].replace('"status":200', '"status":201'), *lines[2:]]) + "\n")
    assert cli_main(["audit", "verify", str(copy)]) == 1
    assert f"{copy}:2" in capsys.readouterr().out


def test_no_secret_leaks_anywhere(observed: Gateway) -> None:
    places = {
        "gateway log": observed.log_text(),
        "accounting": (observed.data_dir / "accounting.jsonl").read_text(),
        "audit": "".join(p.read_text() for p in (observed.data_dir / "audit").glob("*.jsonl")),
        "metrics": httpx.get(f"http://127.0.0.1:{observed.metrics_port}/metrics", timeout=10).text,
        "policy state": "".join(p.read_text(errors="replace") for p in observed.data_dir.glob("*.yaml")),
    }
    for place, text in places.items():
        assert UPSTREAM_KEY not in text, f"provider key in {place}"
        assert ALICE_KEY not in text and CAROL_KEY not in text, f"virtual key in {place}"


def test_grafana_dashboard_uses_only_exported_metrics(observed: Gateway) -> None:
    import json
    import re

    dashboard = json.loads((Path(__file__).parents[2] / "dashboards" / "codexgate.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\bcodexgate_[a-z_]+", expr)}
    text = httpx.get(f"http://127.0.0.1:{observed.metrics_port}/metrics", timeout=10).text
    exported = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples} | {
        family.name for family in text_string_to_metric_families(text)
    }
    assert used, "the dashboard queries nothing"
    assert used <= exported, f"dashboard uses metrics the gateway does not export: {sorted(used - exported)}"


def test_audit_content_only_when_asked_and_redacted(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    import json

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url) + "guardrails: {action: log, audit_content: true}\n")
    gateway = Gateway(policy, tmp_path / "data").start()
    try:
        secret = "AKIAIOSFODNN7ABCDEFG"
        sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=20)
        sdk.responses.create(model="mock-model", input=f"my key is {secret}, keep it safe")
        assert gateway.wait_accounting(lambda _: True)  # ended; stopping flushes the audit log
    finally:
        gateway.stop()
    records = [
        json.loads(line) for p in (tmp_path / "data" / "audit").glob("*.jsonl") for line in p.read_text().splitlines()
    ]
    record = next(r for r in records if r.get("model_requested") == "mock-model")
    assert "keep it safe" in record["content"]  # the content is there, because the policy asked
    assert secret not in record["content"] and "[REDACTED:aws_access_key_id]" in record["content"]
    assert record["guardrail_findings"] == ["aws_access_key_id"]
    assert cli_main(["audit", "verify", "--data-dir", str(tmp_path / "data")]) == 0
