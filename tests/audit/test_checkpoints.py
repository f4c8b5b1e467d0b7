"""Signed checkpoints (an auditor needs only the public key), the writer's own file checks (a
replaced or truncated file starts a new segment that names the break), writers of their own, and
the same in a real gateway process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fakes.gateway import ALICE_KEY, Gateway, policy_text
from fakes.openai_upstream import FakeOpenAI
from mitmproxy.test import taddons

from codexgate import audit
from codexgate.addons.audit_log import AuditLog
from codexgate.audit import BREAK_EVENT, AuditWriter, canonical, record_hash, verify, verify_command
from codexgate.audit_signing import (
    CheckpointLog,
    checkpoints_path,
    load_private_key,
    load_public_key,
    write_key_pair,
)

HMAC_KEY = b"audit-hmac-secret"


def record(n: int) -> dict[str, Any]:
    return {"event": "test", "n": n, "pad": "x" * 40}


def line_length() -> int:
    return len(canonical(dict(record(1), seq=1, prev="0" * 64, hash="0" * 64))) + 1


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signing.key", tmp_path / "signing.pub"
    write_key_pair(private, public)
    return private, public


def signed_log(directory: Path, private: Path, count: int = 9, hmac_key: bytes | None = None) -> AuditWriter:
    """`count` records in files of three, a checkpoint after every third record (as group commits do)."""
    key = load_private_key(private.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    writer = AuditWriter(
        directory, hmac_key=hmac_key, max_bytes=3 * line_length(), fsync=False, signer=CheckpointLog(directory, "", key)
    )
    for n in range(1, count + 1):
        writer.write(record(n))
        if n % 3 == 0:
            snapshot = writer.checkpoint_snapshot()
            assert snapshot is not None
            writer.sign_checkpoint(snapshot)
    writer.close()
    return writer


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def name(number: int) -> str:
    return f"audit-{number:06d}.jsonl"


def rehash(fields: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if k != "hash"}
    body["hash"] = record_hash(canonical(body), key)
    return body


# --- what a forger can do to the files, and what the public key finds --------------------------------------


def edit(directory: Path) -> None:
    path = directory / name(2)
    path.write_bytes(path.read_bytes().replace(b'"n":5', b'"n":6'))


def delete(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    del lines[1]
    path.write_bytes(b"".join(lines))


def insert(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    lines.insert(1, lines[1])
    path.write_bytes(b"".join(lines))


def reorder(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    lines[0], lines[1] = lines[1], lines[0]
    path.write_bytes(b"".join(lines))


def truncate(directory: Path) -> None:
    """The last record cut off at a line boundary: an intact but shorter chain."""
    path = directory / name(3)
    path.write_bytes(b"".join(lines_of(path)[:-1]))


def delete_newest_file(directory: Path) -> None:
    (directory / name(3)).unlink()


def rebuild_after_edit(directory: Path) -> None:
    """Edit record 5, then recompute every hash and link from there on (plain sha256: anyone can)."""
    prev = None
    for number in (1, 2, 3):
        path = directory / name(number)
        out = []
        for raw in lines_of(path):
            fields = json.loads(raw)
            if fields["n"] == 5:
                fields["n"] = 55
            if prev is not None and fields["seq"] >= 5:
                fields["prev"] = prev
            if fields["seq"] >= 5:
                fields = rehash(fields)
            prev = fields["hash"]
            out.append(canonical(fields) + b"\n")
        path.write_bytes(b"".join(out))


TAMPERING: list[tuple[Callable[[Path], None], str]] = [
    (edit, "not what checkpoint"),
    (delete, "audit-000002.jsonl is shorter than the"),
    (insert, "not what checkpoint"),
    (reorder, "not what checkpoint"),
    (truncate, "shorter than the"),
    (delete_newest_file, "audit-000003.jsonl is missing"),
    (rebuild_after_edit, "not the one checkpoint 3 signed (the chain was rebuilt after an edit)"),
]


@pytest.mark.parametrize(("tamper", "found"), TAMPERING, ids=[t.__name__ for t, _ in TAMPERING])
@pytest.mark.parametrize("hmac_key", [None, HMAC_KEY], ids=["sha256", "hmac"])
def test_public_key_alone_detects_tampering(
    tmp_path: Path, keys: tuple[Path, Path], tamper: Callable[[Path], None], found: str, hmac_key: bytes | None
) -> None:
    directory = tmp_path / "audit"
    signed_log(directory, keys[0], hmac_key=hmac_key)
    public = load_public_key(keys[1])
    intact = verify(directory, public_key=public)  # no HMAC key: the auditor has the public key only
    assert intact.ok and intact.signed_seq == 9 and intact.records == 9, intact.problem
    tamper(directory)
    result = verify(directory, public_key=public)
    assert not result.ok
    assert found in (result.problem or ""), result.problem
    if tamper is rebuild_after_edit and hmac_key is None:
        # Without the public key, a rebuilt plain chain passes: the checkpoints are what catches it.
        assert verify(directory).ok


def test_checkpoints_cannot_be_forged_or_dropped(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    directory = tmp_path / "audit"
    signed_log(directory, keys[0])
    public = load_public_key(keys[1])
    path = checkpoints_path(directory)
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    assert len(lines) == 3

    path.write_bytes(lines[0] + lines[1].replace(b'"seq":6', b'"seq":5') + lines[2])
    assert "signature does not verify" in (verify(directory, public_key=public).problem or "")
    path.write_bytes(lines[0] + lines[2])
    assert "does not follow the one before it" in (verify(directory, public_key=public).problem or "")

    # A forger's own key: checkpoints that verify with it, but not with the auditor's.
    forger_private, forger_public = tmp_path / "forger.key", tmp_path / "forger.pub"
    write_key_pair(forger_private, forger_public)
    path.unlink()
    rebuild_after_edit(directory)
    signed_again = tmp_path / "again"
    signed_log(signed_again, forger_private)
    path.write_bytes(checkpoints_path(signed_again).read_bytes())
    result = verify(directory, public_key=public)
    assert not result.ok and "not with this public key" in (result.problem or "")

    path.unlink()
    assert "no signed checkpoints" in (verify(directory, public_key=public).problem or "")


def test_records_after_the_last_checkpoint_are_named_unsigned(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    directory = tmp_path / "audit"
    signed_log(directory, keys[0], count=8)  # checkpoints at 3 and 6; records 7 and 8 not signed yet
    result = verify(directory, public_key=load_public_key(keys[1]))
    assert result.ok and result.signed_seq == 6
    assert any("2 newer record(s) not signed yet" in note for note in result.notes)


def test_hmac_path_keeps_working(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    directory = tmp_path / "audit"
    signed_log(directory, keys[0], hmac_key=HMAC_KEY)
    assert verify(directory, HMAC_KEY).ok
    assert verify(directory, HMAC_KEY, load_public_key(keys[1])).ok
    assert not verify(directory, b"wrong").ok
    edit(directory)
    assert "hash mismatch" in (verify(directory, HMAC_KEY).problem or "")


def test_keygen_and_verify_commands(
    tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "codexgate.cli", "audit", "keygen", "--private", str(tmp_path / "k"),
         "--public", str(tmp_path / "k.pub")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0 and "codexgate_audit_signing_key=file:" in made.stdout
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert isinstance(load_public_key(tmp_path / "k.pub"), Ed25519PublicKey)
    again = subprocess.run(
        [sys.executable, "-m", "codexgate.cli", "audit", "keygen", "--private", str(tmp_path / "k"),
         "--public", str(tmp_path / "k2.pub")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1 and "not overwriting" in again.stderr

    directory = tmp_path / "data" / "audit"
    signed_log(directory, keys[0])
    assert verify_command([], str(tmp_path / "data"), None, str(keys[1])) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 9 records in 3 files, chain intact") and "proven by checkpoint 3" in out
    rebuild_after_edit(directory)
    assert verify_command([], str(tmp_path / "data"), None) == 0  # a rebuilt plain chain fools the chain alone
    assert verify_command([], str(tmp_path / "data"), None, str(keys[1])) == 1
    assert "TAMPERED: " in capsys.readouterr().out


# --- the writer checks its file ----------------------------------------------------------------------------


def test_file_replaced_by_sed_starts_a_new_segment(tmp_path: Path) -> None:
    breaks: list[str] = []
    writer = AuditWriter(tmp_path, fsync=False, on_break=breaks.append)
    for n in range(1, 4):
        writer.write(record(n))
    subprocess.run(["sed", "-i", 's/"n":2/"n":7/', str(tmp_path / name(1))], check=True)
    stored = writer.write(record(4))
    writer.write(record(5))
    writer.close()
    assert len(breaks) == 1 and "replaced by another file" in breaks[0]
    second = [json.loads(line) for line in lines_of(tmp_path / name(2))]
    assert second[0]["event"] == BREAK_EVENT and second[0]["seq"] == 4 and "sed -i" in second[0]["reason"]
    assert stored["seq"] == 5  # the writer's own sequence goes on: nothing reused, nothing appended blindly
    result = verify(tmp_path)
    assert not result.ok and "hash mismatch: the record was edited" in (result.problem or "")  # sed's edit
    assert result.line == 2


def test_truncated_file_starts_a_new_segment_and_verify_names_the_loss(tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    for n in range(1, 5):
        writer.write(record(n))
    path = tmp_path / name(1)
    path.write_bytes(b"".join(lines_of(path)[:1]))  # in place: same inode, shorter
    writer.write(record(5))
    writer.close()
    assert writer.breaks == 1
    result = verify(tmp_path)
    assert not result.ok
    assert "chain break recorded by the writer" in (result.problem or "")
    assert "truncated to" in (result.problem or "") and "3 records (seq 2..4) lost" in (result.problem or "")
    assert "the chain continues intact after it" in (result.problem or "")


def test_restart_after_truncation_never_reuses_sequence_numbers(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, fsync=False) as writer:
        for n in range(1, 6):
            writer.write(record(n))
        writer.save_head(writer.head())  # what a group commit does
    path = tmp_path / name(1)
    path.write_bytes(b"".join(lines_of(path)[:2]))  # records 3-5 cut while the gateway was down
    with AuditWriter(tmp_path, fsync=False) as writer:
        assert writer.seq == 6  # 5 was the last written; 6 is the break record
        stored = writer.write(record(6))
    assert stored["seq"] == 7
    first = json.loads(lines_of(tmp_path / name(2))[0])
    assert first["event"] == BREAK_EVENT and "written up to seq 5" in first["reason"]
    result = verify(tmp_path)
    assert not result.ok and "3 records (seq 3..5) lost" in (result.problem or "")


def test_writers_keep_chains_of_their_own_and_verify_checks_all(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, fsync=False) as main, AuditWriter(tmp_path, fsync=False, writer="w1") as worker:
        for n in range(3):
            main.write(record(n))
            worker.write(record(n))
    assert sorted(p.name for p in tmp_path.glob("audit-*")) == ["audit-000001.jsonl", "audit-w1-000001.jsonl"]
    chains = audit.verify_chains(tmp_path)
    assert [(c.writer, c.ok, c.records) for c in chains] == [("", True, 3), ("w1", True, 3)]
    combined = verify(tmp_path)
    assert combined.ok and combined.records == 6
    worker_file = tmp_path / "audit-w1-000001.jsonl"
    worker_file.write_bytes(worker_file.read_bytes().replace(b'"n":1', b'"n":9'))
    result = verify(tmp_path)
    assert not result.ok and (result.problem or "").startswith("chain w1: hash mismatch")
    with pytest.raises(ValueError, match="writer id"):
        AuditWriter(tmp_path, writer="Bad-Id")


def test_addon_signs_checkpoints_with_a_key_from_a_secret_store(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CG_TEST_SIGNING_KEY", keys[0].read_text())
    addon = AuditLog()
    with taddons.context(addon) as context:
        context.configure(
            addon, codexgate_audit_dir=str(tmp_path / "audit"), codexgate_audit_signing_key="env:CG_TEST_SIGNING_KEY"
        )
        for n in range(4):
            addon.append(record(n))
        with pytest.raises(Exception, match="codexgate_audit_signing_key"):
            context.configure(addon, codexgate_audit_signing_key="env:CG_TEST_SIGNING_KEY_UNSET")
    result = verify(tmp_path / "audit", public_key=load_public_key(keys[1]))
    assert result.ok and result.signed_seq == 4  # the checkpoint at close covers everything


# --- in a real gateway --------------------------------------------------------------------------------------


def test_gateway_signs_checkpoints_and_notices_its_file_replaced(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    upstream = FakeOpenAI().start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(upstream.url))
    gateway = Gateway(policy, tmp_path / "data")
    gateway.metrics_port = free_metrics_port()
    gateway.extra_args = [
        "--set", f"codexgate_audit_signing_key=file:{keys[0]}", "--set", "codexgate_audit_checkpoint_records=2",
    ]  # fmt: skip
    gateway.start()
    audit_dir = tmp_path / "data" / "audit"
    try:
        client = openai.OpenAI(api_key=ALICE_KEY, base_url=gateway.base_url, max_retries=0, timeout=30)
        for n in range(3):
            client.responses.create(model="gpt-test", input=f"signed {n}")
        gateway.wait_accounting(lambda line: True, 3)
        wait_for(lambda: checkpoints_path(audit_dir).exists(), "a checkpoint")
        subprocess.run(["sed", "-i", "s/gpt-test/gpt-tset/", str(audit_dir / name(1))], check=True)
        client.responses.create(model="gpt-test", input="after sed")
        log = gateway.wait_log("AUDIT CHAIN BREAK")
        assert "replaced by another file" in log
        metrics = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).text
        assert "codexgate_audit_chain_breaks_total 1.0" in metrics
    finally:
        gateway.stop()
        upstream.stop()
    assert sorted(p.name for p in audit_dir.glob("audit-*.jsonl")) == [name(1), name(2)]
    verdict = subprocess.run(
        [sys.executable, "-m", "codexgate.cli", "audit", "verify", "--data-dir", str(tmp_path / "data"),
         "--public-key", str(keys[1])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verdict.returncode == 1
    assert "TAMPERED: hash mismatch" in verdict.stdout  # sed's edit, found at its line
    assert "not what checkpoint" in verdict.stdout  # and by the public key alone


def free_metrics_port() -> int:
    from fakes.gateway import free_port

    return free_port()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_private_key_file_is_owner_only(keys: tuple[Path, Path]) -> None:
    assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert os.path.getsize(keys[1]) > 0
