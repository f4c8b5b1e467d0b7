"""Flow saving works: `codexgate up --mitmdump --set save_stream_file=…` writes flows mitmproxy reads
back, with codexgate's record in plain values and no secret; mitmweb's dump works too; no log line
carries a prompt."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import openai
from fakes.gateway import ALICE_KEY, UPSTREAM_KEY, Gateway, free_port, policy_text
from fakes.openai_upstream import FakeOpenAI
from mitmproxy import http
from mitmproxy.io import FlowReader

PROMPT = "the very private prompt 31337"
PASSWORD = "flow-dump-password"


def governed_flows(data: bytes) -> list[http.HTTPFlow]:
    flows = list(FlowReader(io.BytesIO(data)).stream())
    return [flow for flow in flows if isinstance(flow, http.HTTPFlow) and "codexgate" in flow.metadata]


def check_saved(data: bytes) -> None:
    assert ALICE_KEY.encode() not in data and UPSTREAM_KEY.encode() not in data
    flows = governed_flows(data)
    records = [flow.metadata["codexgate"] for flow in flows]
    assert records and all(isinstance(record, dict) for record in records)
    upstream = next(record for record in records if record["model_requested"] == "gpt-test")
    assert (upstream["key"], upstream["team"], upstream["org"], upstream["provider"]) == (
        "alice", "platform", "acme", "openai",
    )  # fmt: skip
    assert upstream["decision"] == "forwarded" and upstream["charge"] == "actual" and upstream["cost_usd"] > 0
    assert upstream["usage"]["output_tokens"] == 7
    assert "body" not in upstream and "policy" not in upstream
    flow = next(flow for flow in flows if flow.metadata["codexgate"]["model_requested"] == "gpt-test")
    assert flow.comment.startswith("codexgate forwarded: key=alice")
    assert flow.request.headers["authorization"] == "Bearer ***codexgate-masked***"
    kept = flow.metadata.get("codexgate.client_credentials")
    assert kept is None or all("masked" in value for _, value in kept)


def test_save_stream_file_writes_readable_flows_without_secrets(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    saved = tmp_path / "flows.mitm"
    gateway = Gateway(policy, tmp_path / "data")
    gateway.extra_args = ["--mitmdump", "--set", f"save_stream_file={saved}"]
    gateway.start()
    try:
        client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
        client.responses.create(model="gpt-test", input=PROMPT)
        client.responses.create(model="mock-model", input=PROMPT)
        gateway.wait_accounting(lambda line: True, 2)
    finally:
        gateway.stop()
    data = saved.read_bytes()
    assert len(data) > 0
    check_saved(data)
    log = gateway.log_text()
    assert "unserializable" not in log and PROMPT not in log
    # mitmproxy's own reader shows them.
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "mitmdump"), "-n", "-r", str(saved), "--set", "flow_detail=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "POST" in shown.stdout and "/v1/responses" in shown.stdout


def test_mitmweb_flow_dump_works(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, tmp_path / "data", extra_env={"CODEXGATE_WEB_PASSWORD": PASSWORD})
    web_port = free_port()
    gateway.extra_args = ["--web", "--web-port", str(web_port)]
    gateway.start()
    try:
        client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
        client.responses.create(model="gpt-test", input=PROMPT)
        gateway.wait_accounting(lambda line: True, 1)
        dump = httpx.get(f"http://127.0.0.1:{web_port}/flows/dump?token={PASSWORD}", timeout=10)
        assert dump.status_code == 200, dump.text[:500]
        check_saved(dump.content)
    finally:
        gateway.stop()
    assert PROMPT not in gateway.log_text()
