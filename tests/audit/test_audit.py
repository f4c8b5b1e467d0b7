"""The audit log: hash chain across rotated files, every kind of tampering found at its line,
HMAC keys, restarts and torn tails, the verify command, and the AuditLog addon."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from codexgate import audit
from codexgate.addons.audit_log import AuditLog
from codexgate.addons.policy_source import PolicySource
from codexgate.audit import GENESIS, AuditWriter, audit_record, canonical, verify, verify_command
from codexgate.flowstate import METADATA_KEY, Decision, GatewayRequest
from codexgate.policies.keys import hash_key
from codexgate.policies.loader import CompiledPolicy, parse_policy
from codexgate.usage import Usage

# Records of one fixed length, so that a max_bytes of three lines puts exactly three in a file.
PER_FILE = 3


def record(n: int) -> dict[str, Any]:
    return {"event": "test", "n": n, "pad": "x" * 40}


def line_length() -> int:
    stored = dict(record(1), seq=1, prev=GENESIS, hash=GENESIS)
    return len(canonical(stored)) + 1


def write_log(directory: Path, count: int, key: bytes | None = None, per_file: int = PER_FILE) -> list[dict]:
    with AuditWriter(directory, hmac_key=key, max_bytes=per_file * line_length(), fsync=False) as writer:
        return [writer.write(record(n)) for n in range(1, count + 1)]


def name(number: int) -> str:
    return f"audit-{number:06d}.jsonl"


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def forge(fields: dict[str, Any], key: bytes | None = None) -> bytes:
    """A line whose hash is right for its own content (what a careless forger produces)."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    body["hash"] = audit.record_hash(canonical(body), key)
    return canonical(body) + b"\n"


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Nine records in three files of three."""
    directory = tmp_path / "audit"
    write_log(directory, 9)
    assert sorted(p.name for p in directory.iterdir()) == [name(1), name(2), name(3)]
    return directory


# --- the chain ---------------------------------------------------------------------------------------------


def test_chain_across_rotated_files(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    stored = write_log(directory, 10)
    files = sorted(directory.iterdir())
    assert [p.name for p in files] == [name(1), name(2), name(3), name(4)]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert [len(lines_of(p)) for p in files] == [3, 3, 3, 1]

    # Each file's first record links to the previous file's last one.
    on_disk = [json.loads(line) for p in files for line in lines_of(p)]
    assert on_disk == stored
    assert [r["seq"] for r in on_disk] == list(range(1, 11))
    assert on_disk[0]["prev"] == GENESIS
    for before, after in zip(on_disk, on_disk[1:], strict=False):
        assert after["prev"] == before["hash"]
    for r in on_disk:
        body = {k: v for k, v in r.items() if k != "hash"}
        assert r["hash"] == hashlib.sha256(canonical(body)).hexdigest()

    result = verify(directory)
    assert (result.ok, result.records, result.files, result.problem) == (True, 10, 4, None)
    assert (result.head_seq, result.head_hash) == (10, stored[-1]["hash"])
    # Explicit files in order verify the same.
    assert verify(files).ok


def test_directories_made_owner_only(tmp_path: Path) -> None:
    AuditWriter(tmp_path / "data" / "audit", fsync=False).close()
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / "audit").stat().st_mode) == 0o700


def test_lines_are_canonical_json(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, fsync=False) as writer:
        stored = writer.write({"b": "é ☃", "a": [1, 2.5, None], "c": {"z": 1, "y": True}})
    line = (tmp_path / name(1)).read_bytes()
    assert line == json.dumps(stored, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    assert verify(tmp_path).ok


def test_writer_refuses_chain_fields(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, fsync=False) as writer:
        for field in ("seq", "prev", "hash"):
            with pytest.raises(ValueError, match=field):
                writer.write({field: 1})
        assert writer.seq == 0
        writer.write({"ok": True})
    assert verify(tmp_path).records == 1


def test_empty_log_verifies_and_missing_log_does_not(tmp_path: Path) -> None:
    AuditWriter(tmp_path / "audit").close()
    result = verify(tmp_path / "audit")
    assert (result.ok, result.records, result.files) == (True, 0, 1)
    (tmp_path / "empty").mkdir()
    result = verify(tmp_path / "empty")
    assert not result.ok and "no audit files" in (result.problem or "")
    assert result.file == str(tmp_path / "empty")
    result = verify(tmp_path / "nothing-here")
    assert not result.ok and "cannot read" in (result.problem or "")


# --- tampering ---------------------------------------------------------------------------------------------


def edit_field(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    lines[1] = lines[1].replace(b'"n":5', b'"n":6')
    path.write_bytes(b"".join(lines))


def delete_line(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    del lines[1]
    path.write_bytes(b"".join(lines))


def insert_forged(directory: Path) -> None:
    """A record with the next seq and a hash right for its content, but a made-up prev."""
    path = directory / name(2)
    lines = lines_of(path)
    fake = dict(json.loads(lines[0]), n=99, seq=5, prev="f" * 64)
    lines.insert(1, forge(fake))
    path.write_bytes(b"".join(lines))


def insert_duplicate_seq(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    fake = dict(json.loads(lines[0]), n=99)
    lines.insert(1, forge(fake))
    path.write_bytes(b"".join(lines))


def swap_lines(directory: Path) -> None:
    path = directory / name(2)
    lines = lines_of(path)
    lines[0], lines[1] = lines[1], lines[0]
    path.write_bytes(b"".join(lines))


def move_line_far(directory: Path) -> None:
    """Record 4 moved to the end of the next file."""
    second, third = directory / name(2), directory / name(3)
    lines = lines_of(second)
    moved = lines.pop(0)
    second.write_bytes(b"".join(lines))
    third.write_bytes(third.read_bytes() + moved)


def truncate_tail(directory: Path) -> None:
    path = directory / name(3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - line_length() // 2])


def delete_middle_file(directory: Path) -> None:
    (directory / name(2)).unlink()


def cut_end_of_middle_file(directory: Path) -> None:
    path = directory / name(2)
    path.write_bytes(b"".join(lines_of(path)[:-1]))


def reformat_line(directory: Path) -> None:
    """Same content, different bytes: not what the writer wrote."""
    path = directory / name(2)
    lines = lines_of(path)
    lines[2] = json.dumps(json.loads(lines[2])).encode() + b"\n"
    path.write_bytes(b"".join(lines))


def garbage_line(directory: Path) -> None:
    path = directory / name(1)
    lines = lines_of(path)
    lines.insert(1, b"not json at all\n")
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("tamper", "file", "line", "problem"),
    [
        (edit_field, 2, 2, "hash mismatch: the record was edited"),
        (delete_line, 2, 2, "1 record missing: expected seq 5, found seq 6"),
        (insert_forged, 2, 2, "inserted record"),
        (insert_duplicate_seq, 2, 2, "inserted record"),
        (swap_lines, 2, 1, "records out of order"),
        (move_line_far, 2, 1, "records out of order"),
        (truncate_tail, 3, 3, "truncated tail"),
        (delete_middle_file, 3, 1, "missing file audit-000002.jsonl"),
        (cut_end_of_middle_file, 3, 1, "1 record missing: expected seq 6, found seq 7"),
        (reformat_line, 2, 3, "not in canonical form"),
        (garbage_line, 1, 2, "malformed record"),
    ],
)
def test_tampering_is_found_at_its_line(
    log_dir: Path, tamper: Callable[[Path], None], file: int, line: int, problem: str
) -> None:
    assert verify(log_dir).ok
    tamper(log_dir)
    result = verify(log_dir)
    assert not result.ok
    assert problem in (result.problem or ""), result.problem
    assert (result.file, result.line) == (str(log_dir / name(file)), line), result


def test_reports_the_first_problem(log_dir: Path) -> None:
    truncate_tail(log_dir)
    edit_field(log_dir)
    result = verify(log_dir)
    assert (result.file, result.line, result.records) == (str(log_dir / name(2)), 2, 4)
    assert "hash mismatch" in (result.problem or "")


def test_deleted_first_file_breaks_genesis(log_dir: Path) -> None:
    (log_dir / name(1)).unlink()
    result = verify(log_dir)
    assert not result.ok
    assert "missing file audit-000001.jsonl" in (result.problem or "")
    assert (result.file, result.line) == (str(log_dir / name(2)), 1)


def test_explicit_files_with_one_left_out(log_dir: Path) -> None:
    result = verify([log_dir / name(1), log_dir / name(3)])
    assert not result.ok and "missing file audit-000002.jsonl" in (result.problem or "")


def test_files_given_in_the_wrong_order(log_dir: Path) -> None:
    result = verify([log_dir / name(2), log_dir / name(1), log_dir / name(3)])
    assert not result.ok
    assert (result.file, result.line) == (str(log_dir / name(2)), 1)


# --- HMAC ---------------------------------------------------------------------------------------------------

KEY = b"audit-key-kept-elsewhere"


def test_hmac_right_key_passes_wrong_key_fails(tmp_path: Path) -> None:
    write_log(tmp_path, 7, key=KEY)
    assert verify(tmp_path, KEY).ok
    wrong = verify(tmp_path, b"not-the-key")
    assert not wrong.ok and "wrong HMAC key" in (wrong.problem or "")
    assert (wrong.file, wrong.line) == (str(tmp_path / name(1)), 1)
    keyless = verify(tmp_path)
    assert not keyless.ok and "HMAC-keyed" in (keyless.problem or "")


def test_plain_log_checked_with_a_key(tmp_path: Path) -> None:
    write_log(tmp_path, 4)
    result = verify(tmp_path, KEY)
    assert not result.ok and "not HMAC-keyed" in (result.problem or "")


def test_forger_without_the_key_cannot_recompute(tmp_path: Path) -> None:
    """Rewrite a record and re-chain everything after it, as well as one can without the key."""
    write_log(tmp_path, 6, key=KEY)
    files = sorted(tmp_path.iterdir())
    records = [json.loads(line) for p in files for line in lines_of(p)]
    records[3]["n"] = 1000
    for guess in (None, b"", b"guessed-key"):
        prev = records[2]["hash"]
        forged = []
        for r in records[3:]:
            body = {k: v for k, v in r.items() if k != "hash"}
            body["prev"] = prev
            line = forge(body, guess)
            prev = json.loads(line)["hash"]
            forged.append(line)
        files[1].write_bytes(b"".join(forged[:3]))
        # The forged lines link to each other and to the untouched record before them,
        # but the real key flags the first of them.
        result = verify(tmp_path, KEY)
        assert not result.ok and "hash mismatch" in (result.problem or "")
        assert (result.file, result.line, result.records) == (str(files[1]), 1, 3)


# --- restarts and torn tails ---------------------------------------------------------------------------------


def test_resume_after_restart_continues_the_chain(tmp_path: Path) -> None:
    first = write_log(tmp_path, 4)  # files of 3: the second file holds one record
    with AuditWriter(tmp_path, max_bytes=PER_FILE * line_length(), fsync=False) as writer:
        assert (writer.seq, writer.last_hash) == (4, first[-1]["hash"])
        assert writer.path == tmp_path / name(2)
        resumed = writer.write(record(5))
    assert (resumed["seq"], resumed["prev"]) == (5, first[-1]["hash"])
    assert len(lines_of(tmp_path / name(2))) == 2  # appended to the newest file, not a new one
    result = verify(tmp_path)
    assert (result.ok, result.records, result.files) == (True, 5, 2)


def test_resume_with_key(tmp_path: Path) -> None:
    write_log(tmp_path, 2, key=KEY)
    with AuditWriter(tmp_path, hmac_key=KEY, fsync=False) as writer:
        writer.write(record(3))
    assert verify(tmp_path, KEY).records == 3


def test_resume_warns_when_the_key_changed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_log(tmp_path, 2, key=KEY)
    with caplog.at_level(logging.WARNING), AuditWriter(tmp_path, hmac_key=b"other", fsync=False):
        pass
    assert "does not verify with the configured key" in caplog.text


def test_torn_tail_from_a_crash_is_reported_and_the_writer_moves_past(tmp_path: Path) -> None:
    stored = write_log(tmp_path, 2, per_file=100)
    half = canonical(dict(record(3), seq=3, prev=stored[-1]["hash"]))[:30]
    with open(tmp_path / name(1), "ab") as handle:  # the crash: half a line, no newline
        handle.write(half)

    crashed = verify(tmp_path)
    assert not crashed.ok and (crashed.file, crashed.line) == (str(tmp_path / name(1)), 3)
    assert (crashed.problem or "").startswith("truncated tail")

    with AuditWriter(tmp_path, fsync=False) as writer:
        assert writer.path == tmp_path / name(2)  # never appends after the garbage
        after = writer.write(record(3))
        writer.write(record(4))
    assert (after["seq"], after["prev"]) == (3, stored[-1]["hash"])
    assert (tmp_path / name(1)).read_bytes().endswith(half)  # evidence kept as it was

    result = verify(tmp_path)
    assert not result.ok  # a record may have been lost: an error by default
    assert (result.file, result.line) == (str(tmp_path / name(1)), 3)
    assert "truncated tail" in (result.problem or "")
    assert "the chain continues intact after it (2 more records)" in (result.problem or "")
    assert result.records == 4


def test_torn_tail_then_tampering_after_it(tmp_path: Path) -> None:
    write_log(tmp_path, 2, per_file=100)
    with open(tmp_path / name(1), "ab") as handle:
        handle.write(b'{"event":"te')
    with AuditWriter(tmp_path, fsync=False) as writer:
        writer.write(record(3))
        writer.write(record(4))
    edit = tmp_path / name(2)
    edit.write_bytes(edit.read_bytes().replace(b'"n":4', b'"n":5'))
    result = verify(tmp_path)
    assert (result.file, result.line) == (str(tmp_path / name(1)), 3)
    assert "after it also: hash mismatch" in (result.problem or "")
    assert f"{edit}:2" in (result.problem or "")


def test_newest_file_only_garbage(tmp_path: Path) -> None:
    stored = write_log(tmp_path, 3, per_file=3)
    (tmp_path / name(2)).write_bytes(b"\0\0\0\0")  # e.g. a crash that left a zero-filled block
    with AuditWriter(tmp_path, fsync=False) as writer:
        assert writer.path == tmp_path / name(3)
        assert writer.write(record(4))["prev"] == stored[-1]["hash"]
    result = verify(tmp_path)
    assert (result.file, result.line) == (str(tmp_path / name(2)), 1)
    assert "truncated tail" in (result.problem or "")


def test_partial_write_is_never_appended_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = AuditWriter(tmp_path, fsync=False)
    writer.write(record(1))
    real_write = os.write

    calls = 0

    def disk_full(fd: int, data: bytes) -> int:
        # As the kernel does it: a short write, then the error on the next call.
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, data[:10])
        monkeypatch.setattr(audit.os, "write", real_write)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit.os, "write", disk_full)
    with pytest.raises(OSError):
        writer.write(record(2))
    assert writer.seq == 1
    retried = writer.write(record(2))
    writer.close()
    assert retried["seq"] == 2 and writer.path == tmp_path / name(2)
    result = verify(tmp_path)
    assert (result.file, result.line, result.records) == (str(tmp_path / name(1)), 2, 2)
    assert "truncated tail" in (result.problem or "")


def test_fsync_on(tmp_path: Path) -> None:
    with AuditWriter(tmp_path, max_bytes=1) as writer:
        for n in range(3):
            writer.write(record(n))
    assert verify(tmp_path).files == 3


# --- the verify command --------------------------------------------------------------------------------------


def test_verify_command(log_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_command([str(log_dir)], None, None) == 0
    assert capsys.readouterr().out.startswith("OK: 9 records in 3 files, chain intact\n")
    # --data-dir DIR means DIR/audit; a data dir given as a path works too.
    assert verify_command([], str(tmp_path), None) == 0
    assert verify_command([str(tmp_path)], None, None) == 0
    capsys.readouterr()
    delete_line(log_dir)
    assert verify_command([], str(tmp_path), None) == 1
    out = capsys.readouterr().out
    assert out == f"TAMPERED: 1 record missing: expected seq 5, found seq 6 at {log_dir / name(2)}:2\n"


def test_verify_command_with_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    write_log(tmp_path / "audit", 2, key=KEY)
    monkeypatch.setenv("CG_AUDIT_KEY", KEY.decode())
    key_file = tmp_path / "key"
    key_file.write_text(KEY.decode() + "\n")
    assert verify_command([], str(tmp_path), "env:CG_AUDIT_KEY") == 0
    assert verify_command([], str(tmp_path), f"file:{key_file}") == 0
    assert verify_command([], str(tmp_path), None) == 1
    assert "TAMPERED: hash mismatch" in capsys.readouterr().out
    assert verify_command([], str(tmp_path), "env:CG_AUDIT_KEY_UNSET") == 1
    assert "ERROR" in capsys.readouterr().out


def test_verify_command_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_command([str(tmp_path / "nope")], None, None) == 1
    assert "ERROR" in capsys.readouterr().out


# --- the record and the addon --------------------------------------------------------------------------------

CLIENT_KEY = "sk-cg-alice-audit-test-key-000000000000000"
UPSTREAM_KEY = "sk-proj-upstream-audit-secret-9999"
PROMPT = "the secret prompt text 4242"

POLICY = f"""\
providers:
  local: {{kind: mock, output_tokens: 5}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(CLIENT_KEY)}"}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> tuple[Path, CompiledPolicy]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path, parse_policy(POLICY, str(path))


def governed_flow(compiled: CompiledPolicy, *, response: bool = True) -> tuple[http.HTTPFlow, GatewayRequest]:
    content = json.dumps({"model": "mock-model", "input": PROMPT}).encode()
    flow = tflow.tflow(resp=response)
    headers: dict[str | bytes, str | bytes] = {
        "authorization": f"Bearer {CLIENT_KEY}",
        "x-upstream": UPSTREAM_KEY,
        "content-type": "application/json",
    }
    flow.request = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", content, headers)
    state = GatewayRequest(request_id=flow.id, policy=compiled, mode="gateway", endpoint="responses")
    state.key = compiled.keys_by_hash[hash_key(CLIENT_KEY)]
    state.team, state.org, state.session_id = "platform", "acme", "sess-1"
    state.model_requested = state.model = state.upstream_model = "mock-model"
    state.provider = "local"
    state.decision = Decision.ANSWERED
    state.usage = Usage(input_tokens=11, output_tokens=5)
    state.cost_usd = 0.000021
    state.charge_basis = "actual"
    flow.metadata[METADATA_KEY] = state
    return flow, state


def test_audit_record_fields(policy: tuple[Path, CompiledPolicy]) -> None:
    flow, state = governed_flow(policy[1])
    body = flow.request.raw_content or b""
    rec = audit_record(state, 200, body)
    assert rec["time"].endswith("Z") and "T" in rec["time"]
    assert isinstance(rec["ts"], float)
    assert {k: rec[k] for k in ("request_id", "session_id", "mode", "key", "team", "org")} == {
        "request_id": flow.id,
        "session_id": "sess-1",
        "mode": "gateway",
        "key": "alice",
        "team": "platform",
        "org": "acme",
    }
    assert (rec["model_requested"], rec["model"], rec["provider"], rec["upstream_model"]) == (
        "mock-model",
        "mock-model",
        "local",
        "mock-model",
    )
    assert rec["usage"] == {"input_tokens": 11, "cached_tokens": 0, "output_tokens": 5, "reasoning_tokens": 0}
    assert (rec["cost_usd"], rec["charge"], rec["status"], rec["decision"]) == (0.000021, "actual", 200, "answered")
    assert rec["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert PROMPT not in json.dumps(rec)


def test_addon_one_record_per_request_no_secrets(
    policy: tuple[Path, CompiledPolicy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, compiled = policy
    data_dir = tmp_path / "data"
    addon = AuditLog()
    source = PolicySource()
    with taddons.context(source, addon) as tctx:
        tctx.configure(source, codexgate_policy=str(path), codexgate_data_dir=str(data_dir))
        answered, answered_state = governed_flow(compiled)
        addon.response(answered)
        addon.response(answered)  # hooks that fire twice still make one record
        addon.error(answered)
        assert answered_state.audited is True

        broken, state = governed_flow(compiled, response=False)
        state.decision = Decision.FORWARDED
        broken.error = tflow.terr()
        addon.error(broken)

        ungoverned = tflow.tflow(resp=True)
        addon.response(ungoverned)
        assert METADATA_KEY not in ungoverned.metadata
        assert addon.records == 2

    audit_dir = data_dir / "audit"
    assert stat.S_IMODE(audit_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    result = verify(audit_dir)
    assert (result.ok, result.records) == (True, 2)
    text = (audit_dir / name(1)).read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["request_id"], r["status"], r["decision"]) for r in records] == [
        (answered.id, 200, "answered"),
        (broken.id, 502, "upstream_error"),
    ]
    assert records[1]["error"] == broken.error.msg
    assert records[0]["body_sha256"] == hashlib.sha256(answered.request.raw_content or b"").hexdigest()
    for secret in (PROMPT, CLIENT_KEY, UPSTREAM_KEY, "Bearer", "authorization", hash_key(CLIENT_KEY)[7:]):
        assert secret not in text


def test_addon_hmac_key_and_dir_options(
    policy: tuple[Path, CompiledPolicy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = policy[1]
    monkeypatch.setenv("CG_TEST_AUDIT_KEY", KEY.decode())
    addon = AuditLog()
    with taddons.context(addon) as tctx:
        tctx.configure(
            addon, codexgate_audit_dir=str(tmp_path / "elsewhere"), codexgate_audit_hmac_key="env:CG_TEST_AUDIT_KEY"
        )
        addon.response(governed_flow(compiled)[0])
        with pytest.raises(exceptions.OptionsError, match="env:NAME or file:PATH"):
            tctx.configure(addon, codexgate_audit_hmac_key="plain-text-key")
        with pytest.raises(exceptions.OptionsError, match="CG_TEST_AUDIT_UNSET"):
            tctx.configure(addon, codexgate_audit_hmac_key="env:CG_TEST_AUDIT_UNSET")
    assert verify(tmp_path / "elsewhere", KEY).records == 1
    assert not verify(tmp_path / "elsewhere").ok


def test_addon_disabled(policy: tuple[Path, CompiledPolicy], tmp_path: Path) -> None:
    addon = AuditLog()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, codexgate_audit=False, codexgate_audit_dir=str(tmp_path / "audit"))
        addon.response(governed_flow(policy[1])[0])
    assert not (tmp_path / "audit").exists()


def test_addon_write_failure_is_loud_and_does_not_raise(
    policy: tuple[Path, CompiledPolicy], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    addon = AuditLog()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, codexgate_audit_dir=str(tmp_path / "audit"))
        assert addon._writer is not None
        addon._writer.close()  # e.g. the file went away under it
        flow = governed_flow(policy[1])[0]
        with caplog.at_level(logging.ERROR):
            addon.response(flow)
    assert addon.failures == 1 and addon.records == 0
    assert any(r.levelno == logging.ERROR and "AUDIT RECORD NOT WRITTEN" in r.getMessage() for r in caplog.records)
