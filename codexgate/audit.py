"""Tamper-evident audit log: append-only JSONL files whose records form one hash chain.

Every line is the canonical JSON (sorted keys, compact separators, ASCII) of a record plus
three fields the writer adds:

- ``seq``: a sequence number, 1 for the very first record, +1 per record across all files;
- ``prev``: the ``hash`` of the previous record (``"0" * 64`` for the first record);
- ``hash``: sha256 hex, or HMAC-SHA256 hex with a key, over the canonical JSON of the
  record including ``seq`` and ``prev`` but without ``hash``.

Files are ``audit-000001.jsonl``, ``audit-000002.jsonl``, ... in one owner-only directory;
when a file would grow past ``max_bytes`` the next one continues the chain.

What the chain proves, and what it does not:

- Editing, deleting, inserting or reordering records, or removing a file in the middle,
  breaks the chain at a precise line, which ``verify`` names.
- Without a key, anyone who can write the files can also recompute every hash after an
  edit; the plain chain catches accidents and careless tampering. With an HMAC key kept
  away from the log's host (or at least from whoever can write the files), a forger
  cannot produce hashes that verify.
- Cutting records off the END at a line boundary (or deleting the newest files) leaves
  a shorter chain that is still intact. Only an external anchor catches that: compare the
  head (last seq and hash) ``verify`` reports with one recorded elsewhere.

Torn tails: a crash in the middle of a write can leave an incomplete last line. The
writer never appends after such garbage: on start-up it resumes the chain from the last
complete record and starts a NEW file. ``verify`` reports the torn line as
``truncated tail`` (file and line), as an error, because the record being written may be
lost; its message also says whether the chain resumes intact after it, which tells a
crash (chain continues) from other damage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codexgate.flowstate import GatewayRequest

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
FILE_PATTERN = re.compile(r"^audit-(\d{6,})\.jsonl$")
CHAIN_FIELDS = ("seq", "prev", "hash")
_TAIL_BLOCK = 64 * 1024


def canonical(obj: dict[str, Any]) -> bytes:
    """The one byte form a record is hashed and stored in.

    ASCII-only so that the bytes do not depend on an encoding choice and a lone surrogate
    cannot make a write fail; no NaN/Infinity, which are not JSON.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def record_hash(payload: bytes, hmac_key: bytes | None) -> str:
    if hmac_key:
        return hmac.new(hmac_key, payload, hashlib.sha256).hexdigest()
    return hashlib.sha256(payload).hexdigest()


def file_name(number: int) -> str:
    return f"audit-{number:06d}.jsonl"


def file_number(path: Path) -> int | None:
    match = FILE_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def audit_files(directory: Path) -> list[Path]:
    """The chain's files in `directory`, in chain order (by number, not by name)."""
    found = [(file_number(path), path) for path in directory.glob("audit-*.jsonl") if path.is_file()]
    return [path for number, path in sorted((n, p) for n, p in found if n is not None)]


def _parse_record(text: bytes) -> dict[str, Any] | None:
    """A stored record, or None if `text` is not one (torn, garbage, wrong shape)."""
    try:
        obj = json.loads(text)
    except ValueError:  # also UnicodeDecodeError
        return None
    if not isinstance(obj, dict):
        return None
    # type() rather than isinstance: a bool is an int to Python but never a sequence number.
    if type(obj.get("seq")) is not int or not isinstance(obj.get("prev"), str) or not isinstance(obj.get("hash"), str):
        return None
    return obj


def _expected_hash(record: dict[str, Any], hmac_key: bytes | None) -> str:
    return record_hash(canonical({k: v for k, v in record.items() if k != "hash"}), hmac_key)


def _last_record(path: Path) -> tuple[dict[str, Any] | None, bool]:
    """The last complete, parseable record of `path`, and whether anything follows it.

    Reads backwards in blocks so that resuming after a restart costs the same for a 64 MB
    file as for a small one.
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        block = _TAIL_BLOCK
        while True:
            start = max(0, size - block)
            handle.seek(start)
            lines = handle.read(size - start).split(b"\n")
            # The last piece follows the final newline: empty unless the tail is torn. The first
            # piece may be cut by the block boundary, so it only counts once the block is the file.
            torn = lines[-1] != b""
            candidates = lines[:-1] if start == 0 else lines[1:-1]
            for text in reversed(candidates):
                record = _parse_record(text)
                if record is not None:
                    return record, torn
                torn = True  # a complete line that is not a record: garbage after the last record
            if start == 0:
                return None, size > 0
            block *= 4


class AuditWriter:
    """Appends hash-chained records; one instance per directory and process."""

    def __init__(
        self,
        directory: str | Path,
        hmac_key: bytes | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self._key = hmac_key or None
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._fd: int | None = None
        self._size = 0
        self._number = 0
        self._seq = 0
        self._prev = GENESIS
        self._torn = False  # the current file ends in a partial write: the next record needs a new file
        self._make_directory()
        self._resume()

    @property
    def seq(self) -> int:
        """Sequence number of the last record written (0 before the first)."""
        return self._seq

    @property
    def last_hash(self) -> str:
        return self._prev

    @property
    def path(self) -> Path:
        """The file the next record goes to (unless it rotates first)."""
        return self.directory / file_name(self._number)

    def _make_directory(self) -> None:
        if not self.directory.exists():
            # Every directory made here is ours (the data dir, when this runs before the addon
            # that owns it): owner-only, which mkdir(parents=True) would not do for the parents.
            missing = [self.directory, *(p for p in self.directory.parents if not p.exists())]
            for path in reversed(missing):
                path.mkdir(mode=0o700, exist_ok=True)
                os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
        elif self.directory.stat().st_mode & 0o077:
            logger.warning("audit directory %s is accessible to other users; it should be 0700", self.directory)

    def _resume(self) -> None:
        files = audit_files(self.directory)
        if not files:
            self._open(1, new=True)
            return
        newest = files[-1]
        number = file_number(newest)
        assert number is not None  # audit_files only lists numbered files
        record, torn = _last_record(newest)
        # The newest file may hold nothing usable (empty, or only a torn line): the chain's
        # head is then in an older file. Older files' own torn tails were moved past already.
        for older in reversed(files[:-1]):
            if record is not None:
                break
            record, _ = _last_record(older)
        if record is not None:
            self._seq, self._prev = record["seq"], record["hash"]
            if _expected_hash(record, self._key) != record["hash"]:
                logger.warning(
                    "audit log %s: the last record (seq %d) does not verify with the configured key; "
                    "the key changed or the record was altered. The chain continues from it.",
                    self.directory,
                    self._seq,
                )
        if torn:
            logger.warning(
                "audit log %s ends in an incomplete record (crash while writing?); continuing the chain in a new file",
                newest,
            )
            self._open(number + 1, new=True)
        else:
            self._open(number, new=False)

    def _open(self, number: int, *, new: bool) -> None:
        path = self.directory / file_name(number)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new else 0)
        fd = os.open(path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file may have been made readable by someone
            size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        # Only now let go of the old file: if opening failed, the writer keeps a usable one.
        self.close()
        self._fd, self._number, self._size, self._torn = fd, number, size, False
        if new and self._fsync:
            # Without this a crash can lose the new file's directory entry, which verify
            # would then (rightly) report as a missing file.
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append `record` to the chain; returns it as stored (with seq, prev and hash)."""
        if self._fd is None:
            raise ValueError("audit writer is closed")
        clash = [name for name in CHAIN_FIELDS if name in record]
        if clash:
            raise ValueError(f"audit record must not carry {', '.join(clash)}: the writer sets them")
        stored = dict(record)
        stored["seq"] = self._seq + 1
        stored["prev"] = self._prev
        stored["hash"] = record_hash(canonical(stored), self._key)
        line = canonical(stored) + b"\n"
        if self._torn or (self._size > 0 and self._size + len(line) > self._max_bytes):
            self._open(self._number + 1, new=True)
        self._append(line)
        # The record is in the file now; only from here on does the chain move forward.
        self._seq, self._prev = stored["seq"], stored["hash"]
        if self._fsync:
            assert self._fd is not None
            os.fsync(self._fd)
        return stored

    def duplicate_fd(self) -> int | None:
        """A duplicate of the current file's descriptor, for an fsync off the event loop
        (the writer may rotate and close its own descriptor meanwhile)."""
        return os.dup(self._fd) if self._fd is not None else None

    def _append(self, line: bytes) -> None:
        assert self._fd is not None
        written = 0
        try:
            while written < len(line):
                written += os.write(self._fd, line[written:])
        except OSError:
            # Part of the line may be on disk (disk full, I/O error): never append after it.
            # Even when nothing landed, a fresh file costs nothing and needs no guessing.
            self._size += written
            self._torn = True
            raise
        self._size += written

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    files: int
    problem: str | None
    file: str | None
    line: int | None
    head_seq: int = 0  # the chain's head, to compare with an anchor kept elsewhere
    head_hash: str | None = None


@dataclasses.dataclass
class _Line:
    path: Path
    number: int
    text: bytes  # without the newline
    complete: bool  # ended in a newline
    last: bool  # the file's last line
    record: dict[str, Any] | None


def _lines(path: Path, handle: IO[bytes]) -> Iterator[_Line]:
    previous: bytes | None = None
    number = 0
    for raw in handle:
        if previous is not None:
            yield _make_line(path, number, previous, last=False)
        previous = raw
        number += 1
    if previous is not None:
        yield _make_line(path, number, previous, last=True)


def _make_line(path: Path, number: int, raw: bytes, *, last: bool) -> _Line:
    complete = raw.endswith(b"\n")
    text = raw[:-1] if complete else raw
    return _Line(path, number, text, complete, last, _parse_record(text))


def _expand(paths: list[Path] | list[str] | Path | str) -> tuple[list[Path], Path | None]:
    """Files in chain order, and the directory they came from when a single one was given."""
    items: list[Path | str] = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    directory: Path | None = None
    for item in (Path(raw) for raw in items):
        if item.is_dir():
            directory = item
            files.extend(audit_files(item))
        else:
            files.append(item)
    return files, directory if len(items) == 1 else None


class _Verifier:
    def __init__(self, files: list[Path], hmac_key: bytes | None) -> None:
        self.files = files
        self.key = hmac_key or None
        self.seq = 0
        self.prev = GENESIS
        self.records = 0
        self.files_read = 0
        self.problem: tuple[str, Path, int | None] | None = None
        self.records_at_problem = 0
        self.later_problem = False

    def run(self) -> VerifyResult:
        previous_number: int | None = 0
        for index, path in enumerate(self.files):
            number = file_number(path)
            missing: list[str] = []
            if number is not None and previous_number is not None:
                missing = [file_name(n) for n in range(previous_number + 1, number)]
            previous_number = number
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below; the generator needs it open
            except OSError as exc:
                if self._report(f"cannot read file: {exc.strerror}", path, None):
                    break
                continue
            self.files_read += 1
            with handle:
                stop = False
                for line in _lines(path, handle):
                    if not self._check(line, index, missing if line.number == 1 else []):
                        stop = True
                        break
                if stop:
                    break
        return self._result()

    def _result(self) -> VerifyResult:
        if self.problem is None:
            return VerifyResult(True, self.records, self.files_read, None, None, None, self.seq, self.prev)
        message, path, line = self.problem
        after = self.records - self.records_at_problem
        if not self.later_problem and after:
            message += f"; the chain continues intact after it ({after} more records)"
        return VerifyResult(False, self.records, self.files_read, message, str(path), line, self.seq, self.prev)

    def _report(self, message: str, path: Path, line: int | None) -> bool:
        """Remember the first problem; True when verification should stop.

        After a truncated tail the chain is followed further (the writer resumes it in the
        next file), only to say in the message whether it continues intact.
        """
        if self.problem is None:
            self.problem = (message, path, line)
            self.records_at_problem = self.records
            return not message.startswith("truncated tail")
        self.later_problem = True
        first, first_path, first_line = self.problem
        self.problem = (f"{first}; after it also: {message} at {path}:{line}", first_path, first_line)
        return True

    def _check(self, line: _Line, index: int, missing_before: list[str]) -> bool:
        """Verify one line; False to stop."""
        record = line.record
        if line.last and (record is None or not line.complete):
            what = "no newline" if not line.complete else "not a valid record"
            return not self._report(
                f"truncated tail: the last line is incomplete ({what}, {len(line.text)} bytes); "
                "the writer stopped mid-record or the file was cut, and a record may be lost",
                line.path,
                line.number,
            )
        if record is None:
            return not self._report("malformed record: the line is not a valid audit record", line.path, line.number)
        if _expected_hash(record, self.key) != record["hash"]:
            return not self._report(self._hash_problem(line, index), line.path, line.number)
        if canonical(record) != line.text:
            return not self._report("record is not in canonical form: the line was rewritten", line.path, line.number)
        if record["seq"] != self.seq + 1 or record["prev"] != self.prev:
            return not self._report(self._link_problem(line, index, missing_before), line.path, line.number)
        self.seq, self.prev = record["seq"], record["hash"]
        self.records += 1
        return True

    def _following(self, line: _Line, index: int) -> Iterator[_Line]:
        """The lines after `line`, across the remaining files (a second read, only on failure)."""
        for position in range(index, len(self.files)):
            path = self.files[position]
            try:
                with open(path, "rb") as handle:
                    for other in _lines(path, handle):
                        if position > index or other.number > line.number:
                            yield other
            except OSError:
                continue

    def _next_record(self, line: _Line, index: int) -> dict[str, Any] | None:
        for other in self._following(line, index):
            return other.record
        return None

    def _hash_problem(self, line: _Line, index: int) -> str:
        if self.records > 0:
            # Earlier records verified with this very key: the key is right, the record is not.
            return "hash mismatch: the record was edited (its content does not match its hash)"
        # The first record fails. If none of the next ones verify either, the key is the
        # likelier culprit than an edit.
        checked = verified = 0
        for other in self._following(line, index):
            if other.record is None:
                continue
            checked += 1
            verified += _expected_hash(other.record, self.key) == other.record["hash"]
            if checked >= 20 or verified:
                break
        if verified:
            return "hash mismatch: the record was edited (its content does not match its hash)"
        if self.key is not None and _expected_hash(line.record or {}, None) == (line.record or {}).get("hash"):
            return "hash mismatch: wrong HMAC key (this log is not HMAC-keyed: its hashes are plain sha256)"
        if self.key is None:
            return "hash mismatch: the record was edited, or the log is HMAC-keyed (give its key)"
        if checked:
            return f"hash mismatch: wrong HMAC key (none of the first {checked + 1} records verifies with it)"
        return "hash mismatch: the record was edited, or wrong HMAC key"

    def _link_problem(self, line: _Line, index: int, missing_before: list[str]) -> str:
        record = line.record
        assert record is not None
        seq, expected = record["seq"], self.seq + 1
        following = self._next_record(line, index)
        if (
            following is not None
            and following["seq"] == expected
            and following["prev"] == self.prev
            and record["prev"] == following["hash"]
        ):
            return f"records out of order: seq {seq} comes before seq {expected} (this line and the next are swapped)"
        if following is not None and following["seq"] == expected and following["prev"] == self.prev:
            return f"inserted record: seq {seq} does not link to the previous record; the chain continues after it"
        if missing_before and seq > expected:
            return (
                f"missing file {', '.join(missing_before)}: the chain expects seq {expected} "
                f"and this file starts at seq {seq}"
            )
        if seq == expected:
            return f"prev mismatch: seq {seq} does not link to the previous record's hash (inserted or replaced record)"
        if seq > expected:
            for other in self._following(line, index):
                if other.record is not None and other.record["seq"] == expected:
                    return (
                        f"records out of order: seq {seq} where seq {expected} was expected "
                        f"(seq {expected} is at {other.path}:{other.number})"
                    )
            count = seq - expected
            where = ""
            if line.number == 1 and index > 0:
                where = f" (cut from the end of {self.files[index - 1].name} or the start of this file)"
            return f"{count} record{'s' if count != 1 else ''} missing: expected seq {expected}, found seq {seq}{where}"
        return f"seq goes backwards: expected seq {expected}, found seq {seq} (inserted, replayed or reordered record)"


def verify(paths: list[Path] | Path, hmac_key: bytes | None = None) -> VerifyResult:
    """Check the whole chain; the result names the FIRST problem's file and line."""
    files, directory = _expand(paths)
    if not files:
        where = str(directory) if directory is not None else None
        return VerifyResult(False, 0, 0, "no audit files found (wrong directory, or the log was deleted)", where, None)
    result = _Verifier(files, hmac_key).run()
    if result.ok:
        logger.debug("audit chain intact: %d records in %d files", result.records, result.files)
    return result


def verify_command(paths: list[str], data_dir: str | None, hmac_key_ref: str | None) -> int:
    """`codexgate audit verify [--data-dir DIR | PATH...]`: print the verdict, return the exit code."""
    from codexgate.secrets import SecretResolver, SecretUnavailable

    if paths:
        targets: list[Path] = []
        for raw in paths:
            path = Path(raw).expanduser()
            # Accept the data dir itself as well as its audit subdirectory.
            if path.is_dir() and not audit_files(path) and (path / "audit").is_dir():
                path = path / "audit"
            targets.append(path)
    else:
        if data_dir is None:
            from codexgate.cli import default_data_dir  # imported late: the CLI module is heavier

            base = default_data_dir()
        else:
            base = Path(data_dir).expanduser()
        targets = [base / "audit"]
    key: bytes | None = None
    if hmac_key_ref:
        try:
            key = SecretResolver().resolve(hmac_key_ref).encode("utf-8")
        except SecretUnavailable as exc:
            print(f"ERROR: audit HMAC key: {exc}")
            return 1
    missing = [str(path) for path in targets if not path.exists()]
    if missing:
        print(f"ERROR: no such file or directory: {', '.join(missing)}")
        return 1
    result = verify(targets[0] if len(targets) == 1 else targets, key)
    if result.ok:
        print(f"OK: {result.records} records in {result.files} files, chain intact")
        print(f"head: seq {result.head_seq} hash {result.head_hash}")
        return 0
    where = result.file or "?"
    if result.line is not None:
        where = f"{where}:{result.line}"
    print(f"TAMPERED: {result.problem} at {where}")
    return 1


def _utc_iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_record(state: GatewayRequest, status: int, body: bytes) -> dict[str, Any]:
    """What the audit log keeps about one request: who, what was asked, what was served, the cost.

    The body is only hashed (so a disputed request can be matched without the log holding
    prompts); no header and no key material is ever copied in, only the key's name.
    """
    now = time.time()
    usage = state.usage
    if usage is None and state.reader is not None:
        usage = state.reader.usage  # a stream that broke off: what it reported so far
    return {
        "time": _utc_iso(now),
        "ts": round(now, 3),
        "request_id": state.request_id,
        "session_id": state.session_id,
        "mode": state.mode,
        "endpoint": state.endpoint,
        "key": state.key.name if state.key is not None else None,
        "team": state.team,
        "org": state.org,
        "model_requested": state.model_requested,
        "model": state.model,
        "provider": state.provider,
        "upstream_model": state.upstream_model,
        "usage": usage.as_dict() if usage is not None else None,
        "cost_usd": round(state.cost_usd, 12) if state.cost_usd is not None else None,
        "charge": state.charge_basis,
        "status": status,
        "decision": state.decision,
        "body_sha256": hashlib.sha256(body or b"").hexdigest(),
    }
