"""Secrets out of the process list and the web console; the console cannot loosen enforcement."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway, free_port, policy_text
from fakes.openai_upstream import FakeOpenAI
from fakes.redis_server import RedisServer

from codexgate.audit import verify

WEB_PASSWORD = "console-secret-4711"
REDIS_PASSWORD = "redis-secret-0815"


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=REDIS_PASSWORD)
    yield server
    server.kill()


@pytest.fixture
def web_gateway(tmp_path: Path, fake_openai: FakeOpenAI, redis_with_password: RedisServer) -> Iterator[Gateway]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, tmp_path / "data", extra_env={"CODEXGATE_WEB_PASSWORD": WEB_PASSWORD})
    gateway.store = redis_with_password.url
    gateway.web_port = free_port()  # type: ignore[attr-defined]
    gateway.extra_args = ["--web", "--web-port", str(gateway.web_port)]  # type: ignore[attr-defined]
    gateway.start()
    yield gateway
    gateway.stop()


def test_no_secret_in_the_process_list_or_the_console(web_gateway: Gateway) -> None:
    pid = web_gateway.process.pid  # type: ignore[union-attr]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout
    for shown in (cmdline, ps):
        assert "mitmweb" in shown  # the right process
        assert WEB_PASSWORD not in shown and REDIS_PASSWORD not in shown
    # The store works with the password it was given by file (a charged request goes through Redis).
    sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=web_gateway.base_url, max_retries=0, timeout=20)
    sdk.responses.create(model="mock-model", input="through redis with a password")
    # The files that hold the secrets are the owner's alone.
    for path in (web_gateway.data_dir / "store.url", web_gateway.data_dir / "mitmproxy" / "config.yaml"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert WEB_PASSWORD not in (web_gateway.data_dir / "mitmproxy" / "config.yaml").read_text()
    # mitmweb's options API shows neither.
    web = f"http://127.0.0.1:{web_gateway.web_port}"  # type: ignore[attr-defined]
    options = httpx.get(f"{web}/options?token={WEB_PASSWORD}", timeout=10)
    assert options.status_code == 200
    assert REDIS_PASSWORD not in options.text and WEB_PASSWORD not in options.text
    assert options.json()["codexgate_store"]["value"].startswith("file:")


def _console(gateway: Gateway) -> httpx.Client:
    """A mitmweb API client as the browser UI is one: authenticated, with a matching XSRF cookie
    and header (tornado compares the two)."""
    web = f"http://127.0.0.1:{gateway.web_port}"  # type: ignore[attr-defined]
    client = httpx.Client(base_url=web, timeout=10)
    client.cookies.set("_mitmproxy_xsrf", "5ca1ab1e")
    client.headers["X-XSRFToken"] = "5ca1ab1e"
    client.headers["authorization"] = f"Bearer {WEB_PASSWORD}"
    return client


def _audit_records(gateway: Gateway) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((gateway.data_dir / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def _wait(condition, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_console_cannot_switch_enforcement_off_and_changes_are_audited(web_gateway: Gateway) -> None:
    console = _console(web_gateway)
    refused = console.put("/options", json={"codexgate_audit": False})
    assert refused.status_code == 400
    assert "cannot be changed while the gateway runs" in refused.text
    assert console.get("/options").json()["codexgate_audit"]["value"] is True
    refused = console.put("/options", json={"codexgate_store": "embedded", "codexgate_policy": "/tmp/other.yaml"})
    assert refused.status_code == 400
    assert "refused" in web_gateway.wait_log("runtime change of")
    # The audit log is still on: the next request is recorded, and so are the refusals.
    sdk = openai.OpenAI(api_key=ALICE_KEY, base_url=web_gateway.base_url, max_retries=0, timeout=20)
    sdk.responses.create(model="mock-model", input="after the refused change", extra_headers={"session-id": "after"})
    _wait(lambda: any(r.get("session_id") == "after" for r in _audit_records(web_gateway)))
    changes = [r for r in _audit_records(web_gateway) if r.get("event") == "option_change"]
    assert {"options": ["codexgate_audit"], "refused": True}.items() <= changes[0].items()
    assert changes[1]["refused"] and set(changes[1]["options"]) == {"codexgate_store", "codexgate_policy"}
    # A harmless change is allowed, and audited too.
    accepted = console.put("/options", json={"view_filter": "~u responses"})
    assert accepted.status_code == 200, accepted.text
    _wait(lambda: any(r.get("options") == ["view_filter"] for r in _audit_records(web_gateway)))
    assert [r for r in _audit_records(web_gateway) if r.get("options") == ["view_filter"]][0]["refused"] is False
    # The option records are links of the same tamper-evident chain.
    result = verify(web_gateway.data_dir / "audit")
    assert result.ok, result.problem


def test_cli_keeps_store_credentials_out_of_arguments(tmp_path: Path) -> None:
    from codexgate.cli import store_option

    assert store_option("embedded", tmp_path) == "embedded"
    assert store_option("redis://127.0.0.1:6379/0", tmp_path) == "redis://127.0.0.1:6379/0"
    option = store_option("redis://:pw@127.0.0.1:6379/0", tmp_path)
    assert option == f"file:{tmp_path / 'store.url'}" and "pw" not in option
    assert (tmp_path / "store.url").read_text().strip() == "redis://:pw@127.0.0.1:6379/0"
    assert os.stat(tmp_path / "store.url").st_mode & 0o077 == 0
