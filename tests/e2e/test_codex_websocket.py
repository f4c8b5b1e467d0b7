"""The real Codex CLI uses Responses over WebSocket through the gateway — its first choice of
transport — in both modes, without falling back to HTTP, and each of its requests is governed."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from fakes.codex_cli import run_codex
from fakes.gateway import Gateway

pytestmark = pytest.mark.e2e

FALLBACK_SIGNS = ("failed to connect to Responses WebSocket", "Falling back from WebSockets")


def websocket_errors_logged(codex_home: Path) -> list[str]:
    """ERROR rows Codex wrote to its log database about the Responses WebSocket."""
    rows: list[str] = []
    for database in codex_home.glob("logs_*.sqlite"):
        with sqlite3.connect(database) as connection:
            rows += [
                f"{target}: {body}"
                for target, body in connection.execute(
                    "SELECT target, feedback_log_body FROM logs WHERE level = 'ERROR'"
                )
                if "websocket" in f"{target} {body}".lower()
            ]
    return rows


@pytest.mark.parametrize("mode", ["base-url", "proxy"])
def test_codex_talks_over_the_socket_and_gets_its_answer(gateway: Gateway, mode: str, tmp_path: Path) -> None:
    marker = f"ws-{uuid.uuid4().hex[:10]}"
    before = len(gateway.accounting())
    result = run_codex(gateway, mode, f"please run `echo {marker}` and tell me what it printed", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "The command finished. Its output was:" in result.stdout and marker in result.stdout
    for sign in FALLBACK_SIGNS:
        assert sign not in output
    assert websocket_errors_logged(tmp_path / "codex-home") == []
    # Both model requests of the turn (the tool call, and the answer after its output) came over
    # the socket, each governed and accounted once, in the client's own mode.
    records = [r for r in gateway.accounting()[before:] if r["endpoint"] == "responses"]
    assert len(records) >= 2, records
    assert {(r["transport"], r["mode"], r["key"], r["decision"]) for r in records} == {
        ("ws", "gateway" if mode == "base-url" else "proxy", "alice", "answered")
    }
    assert len({r["session_id"] for r in records}) == 1 and records[0]["session_id"]
