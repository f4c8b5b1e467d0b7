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

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from codexgate.jsonline import canonical_line, canonical_text

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from codexgate.audit_signing import CheckpointLog
    from codexgate.flowstate import GatewayRequest

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
# audit-000001.jsonl is the default writer's chain; audit-w1-000001.jsonl is writer "w1"'s (several
# processes of one deployment each keep a chain of their own; `verify` checks them all).
WRITER_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
FILE_PATTERN = re.compile(r"^audit-(?:([a-z][a-z0-9_]{0,31})-)?(\d{6,})\.jsonl$")
BREAK_EVENT = "chain_break"  # first record of a segment the writer started because its file changed under it
CRASH_EVENT = "crash"  # written at start-up when the previous run ended without shutting down
CHAIN_FIELDS = ("seq", "prev", "hash")
_TAIL_BLOCK = 64 * 1024
_HASH_SLOT = "<hash>"  # where `chained_line` puts the hash
_SLOT_MEMBER_BYTES = f'"hash":"{_HASH_SLOT}"'.encode("ascii")


def canonical(obj: dict[str, Any]) -> bytes:
    """The one byte form a record is hashed and stored in: `json.dumps(obj, sort_keys=True,
    separators=(",", ":"), ensure_ascii=True, allow_nan=False)`.

    ASCII-only so that the bytes do not depend on an encoding choice and a lone surrogate
    cannot make a write fail; no NaN/Infinity, which are not JSON.
    """
    return canonical_text(obj).encode("ascii")


def chained_line(stored: dict[str, Any], hmac_key: bytes | None) -> tuple[str, bytes]:
    """The hash of `stored` (a record with seq and prev, without hash) and its line: the canonical
    form of the record with its hash, i.e. `canonical(stored | {"hash": ...}) + b"\n"`.

    Encoded once, with a stand-in where the hash goes (the encoder sorts it into place): the line
    is that text with the hash put in, the hashed form the same text without the member. All in
    bytes, as the encoder gives them (no decode and encode again)."""
    before, member, after = canonical_line({**stored, "hash": _HASH_SLOT}).partition(_SLOT_MEMBER_BYTES)
    if member and _SLOT_MEMBER_BYTES not in after:
        # Inside a string every quote is escaped, so the member is a key of some object: ours, as
        # it is the only one. The hashed form drops it with one of its commas (and the line's newline).
        # Slices and `+`, not endswith/removeprefix: no call (`before` holds at least the "{").
        rest = after[:-1]
        if before[-1:] == b",":
            payload = before[:-1] + rest
        elif rest[:1] == b",":
            payload = before + rest[1:]
        else:
            payload = before + rest
        # `record_hash`, inline.
        digest = hmac.digest(hmac_key, payload, "sha256").hex() if hmac_key else hashlib.sha256(payload).hexdigest()
        return digest, b'%b"hash":"%b"%b' % (before, digest.encode("ascii"), after)
    # A nested object with the same member (never in the gateway's records): two halves instead.
    low = canonical_text({name: value for name, value in stored.items() if name < "hash"})[1:-1]
    high = canonical_text({name: value for name, value in stored.items() if name > "hash"})[1:-1]
    # Either half may be empty: a comma only between two non-empty parts.
    text = f"{{{low},{high}}}" if low and high else f"{{{low}{high}}}"
    digest = record_hash(text.encode("ascii"), hmac_key)
    line = f'{{{low}{"," if low else ""}"hash":"{digest}"{"," if high else ""}{high}}}\n'
    return digest, line.encode("ascii")


def record_hash(payload: bytes, hmac_key: bytes | None) -> str:
    if hmac_key:
        # hmac.digest: the one-shot form of hmac.new(...).hexdigest()'s bytes, without the HMAC object.
        return hmac.digest(hmac_key, payload, "sha256").hex()
    return hashlib.sha256(payload).hexdigest()


def file_name(number: int, writer: str = "") -> str:
    return f"audit-{writer}-{number:06d}.jsonl" if writer else f"audit-{number:06d}.jsonl"


def file_number(path: Path) -> int | None:
    match = FILE_PATTERN.match(path.name)
    return int(match.group(2)) if match else None


def file_writer(path: Path) -> str | None:
    """The writer whose chain `path` belongs to ("" for the default one), None if not a chain file."""
    match = FILE_PATTERN.match(path.name)
    return (match.group(1) or "") if match else None


def audit_files(directory: Path, writer: str = "") -> list[Path]:
    """One writer's chain files in `directory`, in chain order (by number, not by name)."""
    found = [
        (file_number(path), path)
        for path in directory.glob("audit-*.jsonl")
        if path.is_file() and file_writer(path) == writer
    ]
    return [path for number, path in sorted((n, p) for n, p in found if n is not None)]


def writers(directory: Path) -> list[str]:
    """Every writer with a chain in `directory`, the default one ("") first."""
    found = {file_writer(path) for path in directory.glob("audit-*.jsonl") if path.is_file()}
    return sorted(name for name in found if name is not None)


def head_path(directory: Path, writer: str = "") -> Path:
    """Where the writer notes its last synced record, so a restart never reuses sequence numbers
    of records that were removed while it was down."""
    return directory / (f"head-{writer}.json" if writer else "head.json")


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
    """Appends hash-chained records; one instance per directory, writer id and process.

    Before each record it checks that its file is still the one it writes (same inode, the size it
    left it at): a file replaced (e.g. `sed -i`), truncated, appended to by someone else or deleted
    is never appended to blindly. The writer starts a new segment whose first record
    (``event: chain_break``) names what it found, logs an error and calls `on_break` (a metric).
    """

    def __init__(
        self,
        directory: str | Path,
        hmac_key: bytes | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        fsync: bool = True,
        writer: str = "",
        signer: CheckpointLog | None = None,
        on_break: Callable[[str], None] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if writer and not WRITER_PATTERN.match(writer):
            raise ValueError(f"writer id {writer!r}: use a lower-case letter, then letters, digits or _ (max 32)")
        self.directory = Path(directory)
        self.writer = writer
        self._key = hmac_key or None
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._signer = signer
        self._on_break = on_break
        self._fd: int | None = None
        self._path = ""
        self._inode: tuple[int, int] = (0, 0)
        self._size = 0
        self._number = 0
        self._seq = 0
        self._prev = GENESIS
        self._torn = False  # the current file ends in a partial write: the next record needs a new file
        # Checkpoints: the sha256 of the current file so far, and of files finished since the last one.
        self._file_digest: Any = None
        self._touched: dict[str, tuple[int, str]] = {}
        self.checkpointed_seq = 0
        self.breaks = 0
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
        return self.directory / file_name(self._number, self.writer)

    @property
    def signing(self) -> bool:
        return self._signer is not None

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
        files = audit_files(self.directory, self.writer)
        known = self._known_head()
        if not files:
            self._open(1, new=True)
            if known is not None:
                self._continue_after_break(
                    known, f"no audit files, but the writer had written up to seq {known[0]}", starting=True
                )
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
        lost: str | None = None
        if known is not None and (known[0] > self._seq or (known[0] == self._seq and known[1] != self._prev)):
            lost = (
                f"the log ends at seq {self._seq} but the writer had written up to seq {known[0]} "
                "(records were removed or replaced while it was stopped)"
                if known[0] > self._seq
                else f"record seq {known[0]} is not the one the writer wrote (replaced while it was stopped)"
            )
        if torn or lost:
            if torn:
                logger.warning(
                    "audit log %s ends in an incomplete record (crash while writing?); the chain goes on in a new file",
                    newest,
                )
            self._open(self._free_number(number + 1), new=True)
            if lost:
                self._continue_after_break(known, lost, starting=True)  # type: ignore[arg-type]
        else:
            self._open(number, new=False)

    def _known_head(self) -> tuple[int, str] | None:
        """The furthest record the writer is known to have written: its head file or its last checkpoint."""
        best: tuple[int, str] | None = None
        candidates: list[Any] = []
        with contextlib.suppress(OSError, ValueError):
            candidates.append(json.loads(head_path(self.directory, self.writer).read_bytes()))
        from codexgate.audit_signing import checkpoints_path, last_checkpoint

        candidates.append(last_checkpoint(checkpoints_path(self.directory, self.writer)))
        for item in candidates:
            usable = isinstance(item, dict) and type(item.get("seq")) is int and isinstance(item.get("hash"), str)
            if usable and (best is None or item["seq"] > best[0]):
                best = (item["seq"], item["hash"])
        return best

    def _free_number(self, number: int) -> int:
        while (self.directory / file_name(number, self.writer)).exists():
            number += 1
        return number

    def _continue_after_break(self, known: tuple[int, str], reason: str, *, starting: bool = False) -> None:
        """Sequence numbers are never reused: the chain goes on from the furthest known record, and
        the new segment's first record says why records before it are missing."""
        # A warning while starting: mitmproxy stops a gateway that logs an error during start-up,
        # and a gateway that cannot start records nothing at all.
        logger.log(
            logging.WARNING if starting else logging.ERROR,
            "AUDIT CHAIN BREAK in %s: %s; continuing from seq %d in %s",
            self.directory,
            reason,
            known[0],
            self.path.name,
        )
        self.breaks += 1
        if self._on_break is not None:
            self._on_break(reason)
        self._seq, self._prev = known
        self._write_chained(
            {"event": BREAK_EVENT, "reason": reason, "time": _utc_iso(time.time()), "after_seq": known[0]}
        )

    def _open(self, number: int, *, new: bool) -> None:
        path = self.directory / file_name(number, self.writer)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if new else 0)
        fd = os.open(path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file may have been made readable by someone
            status = os.fstat(fd)
            digest = None
            if self._signer is not None:
                digest = hashlib.sha256()
                if status.st_size:
                    with open(path, "rb") as handle:  # once, at start: checkpoints cover the whole file
                        for block in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(block)
        except OSError:
            os.close(fd)
            raise
        if self._fd is not None and self._file_digest is not None:
            self._touched[self.path.name] = (self._size, self._file_digest.hexdigest())
        # Only now let go of the old file: if opening failed, the writer keeps a usable one.
        if self._fd is not None and self._fsync is False and new:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)  # batch mode syncs only the current file: the finished one first
        self.close()
        self._fd, self._number, self._size, self._torn = fd, number, status.st_size, False
        self._path = str(path)
        self._inode = (status.st_dev, status.st_ino)
        self._file_digest = digest
        if new and self._fsync:
            # Without this a crash can lose the new file's directory entry, which verify
            # would then (rightly) report as a missing file.
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _file_changed(self) -> str | None:
        """What happened to the current file since the writer last wrote it, or None.

        A stat of the path, not an fstat of the descriptor: a file renamed away (log rotation)
        still looks intact through the writer's own descriptor."""
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            return self._change(None)
        if status.st_ino == self._inode[1] and status.st_dev == self._inode[0] and status.st_size == self._size:
            return None  # the common case, decided without building anything
        return self._change(status)

    def _change(self, status: os.stat_result | None) -> str:
        """What `status` (a stat of the current file's path; None: no such file) says happened to it,
        when it is not the file as the writer left it."""
        name = os.path.basename(self._path)
        if status is None:
            return f"{name} was deleted while the writer had it open"
        if (status.st_dev, status.st_ino) != self._inode:
            return f"{name} was replaced by another file (e.g. sed -i) while the writer had it open"
        if status.st_size < self._size:
            return f"{name} was truncated to {status.st_size} bytes; the writer had written {self._size}"
        return f"{name} grew to {status.st_size} bytes; the writer had written {self._size} (another writer?)"

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append `record` to the chain; returns it as stored (with seq, prev and hash)."""
        if self._fd is None:
            raise ValueError("audit writer is closed")
        if "seq" in record or "prev" in record or "hash" in record:  # CHAIN_FIELDS, without a call
            clash = [name for name in CHAIN_FIELDS if name in record]
            raise ValueError(f"audit record must not carry {', '.join(clash)}: the writer sets them")
        # Before EVERY record, one stat of the path. Not once per group commit: a record written
        # after a replacement (`sed -i`) or a rotation and before the next check would go to the
        # unlinked or renamed-away inode, i.e. be lost from the chain's files (see the class docstring).
        if not self._torn and (changed := self._file_changed()) is not None:
            # Whatever is in that file now, the writer's own chain head is what it wrote last.
            self._open(self._free_number(self._number + 1), new=True)
            self._continue_after_break((self._seq, self._prev), changed)
        return self._write_chained(record)

    def _write_chained(self, record: dict[str, Any]) -> dict[str, Any]:
        stored = dict(record)
        stored["seq"] = self._seq + 1
        stored["prev"] = self._prev
        stored["hash"], line = chained_line(stored, self._key)
        if self._torn or (self._size > 0 and self._size + len(line) > self._max_bytes):
            self._open(self._free_number(self._number + 1), new=True)
        fd = self._fd
        assert fd is not None
        # The append, one write(2) but for a short one (signal, full disk): then the rest, or the
        # error. `rest` empties as the line lands (a slice, not a len() call per round).
        written = 0
        rest = line
        try:
            while rest:
                count = os.write(fd, rest)
                written += count
                rest = rest[count:]
        except OSError:
            # Part of the line may be on disk (disk full, I/O error): never append after it.
            # Even when nothing landed, a fresh file costs nothing and needs no guessing.
            self._size += written
            self._torn = True
            raise
        self._size += written
        if self._file_digest is not None:
            self._file_digest.update(line)
        # The record is in the file now; only from here on does the chain move forward.
        self._seq, self._prev = stored["seq"], stored["hash"]
        if self._fsync:
            os.fsync(fd)
        return stored

    def duplicate_fd(self) -> int | None:
        """A duplicate of the current file's descriptor, for an fsync off the event loop
        (the writer may rotate and close its own descriptor meanwhile)."""
        return os.dup(self._fd) if self._fd is not None else None

    # -- head file and checkpoints (called at group commit, after the records' fsync) --------------------

    def head(self) -> dict[str, Any]:
        return {
            "writer": self.writer,
            "seq": self._seq,
            "hash": self._prev,
            "file": self.path.name,
            "bytes": self._size,
        }

    def save_head(self, head: dict[str, Any]) -> None:
        """Atomically replace the head file (thread-safe: touches nothing else of the writer)."""
        path = head_path(self.directory, self.writer)
        # One temporary file per thread: the group commit's and the final one at shutdown may overlap.
        temporary = path.with_suffix(f".{threading.get_ident()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, canonical(head))
        finally:
            os.close(fd)
        # No fsync: the records it names were synced first, and a head file that a power loss
        # leaves older (or unreadable) only makes the check after a restart less strict.
        os.replace(temporary, path)

    def checkpoint_snapshot(self) -> dict[str, Any] | None:
        """What the next checkpoint covers (on the event loop; cheap), None if nothing new."""
        if self._signer is None or self._seq == self.checkpointed_seq or self._file_digest is None:
            return None
        files = dict(self._touched)
        files[self.path.name] = (self._size, self._file_digest.copy().hexdigest())
        self._touched = {}
        self.checkpointed_seq = self._seq
        now = time.time()
        return {
            "writer": self.writer,
            "seq": self._seq,
            "hash": self._prev,
            "chain": "hmac-sha256" if self._key else "sha256",
            "files": [{"name": name, "bytes": size, "sha256": digest} for name, (size, digest) in files.items()],
            "time": _utc_iso(now),
            "ts": round(now, 3),
        }

    def sign_checkpoint(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Sign and append a snapshot (off the loop is fine: one sync at a time calls this)."""
        assert self._signer is not None
        return self._signer.append(snapshot)

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
    writer: str = ""
    crashes: tuple[str, ...] = ()  # crashes the gateway recorded (chain intact, records recovered)
    notes: tuple[str, ...] = ()  # breaks that lost nothing, signed coverage, ...
    signed_seq: int | None = None  # with --public-key: records up to here are proven by a signature


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


def _expand(paths: list[Path] | list[str] | Path | str) -> list[tuple[str, list[Path], Path | None]]:
    """(writer, its files in chain order, the directory its checkpoints are in) per chain.

    A directory stands for every chain in it; files given one by one are grouped by writer
    and kept in the order given."""
    items: list[Path | str] = [paths] if isinstance(paths, str | Path) else list(paths)
    chains: list[tuple[str, list[Path], Path | None]] = []
    loose: dict[str, list[Path]] = {}
    for item in (Path(raw) for raw in items):
        if item.is_dir():
            found = writers(item)
            if not found and len(items) == 1:
                chains.append(("", [], item))
            chains.extend((writer, audit_files(item, writer), item) for writer in found)
        else:
            loose.setdefault(file_writer(item) or "", []).append(item)
    chains.extend((writer, files, files[0].parent) for writer, files in loose.items())
    return chains


class _Verifier:
    def __init__(
        self, files: list[Path], hmac_key: bytes | None, check_hashes: bool = True, capture: set[int] | None = None
    ) -> None:
        self.files = files
        self.key = hmac_key or None
        # False for an HMAC chain checked without its key: links are followed, content is proven by
        # the signed checkpoints' file digests instead.
        self.check_hashes = check_hashes
        self.capture = capture or set()
        self.captured: dict[int, str] = {}
        self.crashes: list[str] = []
        self.notes: list[str] = []
        self.writer = ""
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
        crashes, notes = tuple(self.crashes), tuple(self.notes)
        if self.problem is None:
            return VerifyResult(
                True, self.records, self.files_read, None, None, None, self.seq, self.prev, self.writer, crashes, notes
            )
        message, path, line = self.problem
        after = self.records - self.records_at_problem
        if not self.later_problem and after:
            message += f"; the chain continues intact after it ({after} more records)"
        return VerifyResult(
            False,
            self.records,
            self.files_read,
            message,
            str(path),
            line,
            self.seq,
            self.prev,
            self.writer,
            crashes,
            notes,
        )

    def _report(self, message: str, path: Path, line: int | None, go_on: bool = False) -> bool:
        """Remember the first problem; True when verification should stop.

        After a truncated tail or a break the writer recorded, the chain is followed further (the
        writer resumed it), only to say in the message whether it continues intact.
        """
        if self.problem is None:
            self.problem = (message, path, line)
            self.records_at_problem = self.records
            return not (go_on or message.startswith("truncated tail"))
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
        if self.check_hashes and _expected_hash(record, self.key) != record["hash"]:
            return not self._report(self._hash_problem(line, index), line.path, line.number)
        if canonical(record) != line.text:
            return not self._report("record is not in canonical form: the line was rewritten", line.path, line.number)
        event = record.get("event")
        if record["seq"] != self.seq + 1 or record["prev"] != self.prev:
            if event != BREAK_EVENT:
                return not self._report(self._link_problem(line, index, missing_before), line.path, line.number)
            # The writer itself found its file changed and said so: records before it are lost,
            # which is an error, but the chain goes on from its own last record.
            lost = record["seq"] - self.seq - 1
            what = (
                f"{lost} record{'s' if lost != 1 else ''} (seq {self.seq + 1}..{record['seq'] - 1}) lost"
                if lost > 0
                else "records lost"
            )
            if self._report(
                f"chain break recorded by the writer: {record.get('reason')}; {what}",
                line.path,
                line.number,
                go_on=True,
            ):
                return False
        elif event == BREAK_EVENT:
            self.notes.append(
                f"seq {record['seq']}: the writer started a new segment: {record.get('reason')} (nothing lost)"
            )
        if event == CRASH_EVENT:
            self.crashes.append(f"seq {record['seq']} ({record.get('time')}): {record.get('summary')}")
        self.seq, self.prev = record["seq"], record["hash"]
        if self.seq in self.capture:
            self.captured[self.seq] = self.prev
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


def _check_checkpoints(
    result: VerifyResult, verifier: _Verifier, directory: Path, writer: str, public_key: Ed25519PublicKey
) -> VerifyResult:
    """What the signed checkpoints prove on top of the chain: a verifier with the public key only."""
    from codexgate.audit_signing import checkpoints_path, prefix_sha256, read_checkpoints

    path = checkpoints_path(directory, writer)
    checkpoints, problem = read_checkpoints(path, public_key)
    problems: list[str] = [problem] if problem else []
    for checkpoint in checkpoints:
        number, seq = checkpoint["checkpoint"], checkpoint["seq"]
        found = verifier.captured.get(seq)
        if found is None and result.ok:
            problems.append(
                f"checkpoint {number} signed records up to seq {seq}, but the log ends at seq {result.head_seq}"
                " (records were cut off or deleted)"
            )
        elif found is not None and found != checkpoint["hash"]:
            problems.append(
                f"record seq {seq} is not the one checkpoint {number} signed (the chain was rebuilt after an edit)"
            )
    claims: dict[str, tuple[int, str, int]] = {}
    for checkpoint in checkpoints:
        for item in checkpoint.get("files") or []:
            claims[item["name"]] = (item["bytes"], item["sha256"], checkpoint["checkpoint"])
    for name, (size, digest, number) in claims.items():
        file = directory / name
        got = prefix_sha256(file, size) if file.is_file() else "missing"
        if got == "missing":
            problems.append(f"{name} is missing; checkpoint {number} signed {size} bytes of it")
        elif got is None:
            problems.append(f"{name} is shorter than the {size} bytes checkpoint {number} signed (cut off)")
        elif got != digest:
            problems.append(
                f"{name}: its first {size} bytes are not what checkpoint {number} signed "
                "(records edited, inserted, deleted or reordered)"
            )
    notes = list(result.notes)
    signed_seq = None
    if checkpoints:
        last = checkpoints[-1]
        signed_seq = last["seq"]
        unsigned = max(0, result.head_seq - signed_seq)
        notes.append(
            f"signed: records up to seq {signed_seq} are proven by checkpoint {last['checkpoint']} "
            f"(key {last['key_id']}, {last['time']}); {unsigned} newer record(s) not signed yet"
        )
    if not problems:
        return dataclasses.replace(result, notes=tuple(notes), signed_seq=signed_seq)
    if not result.ok:
        message = f"{result.problem}; signed checkpoints: {'; '.join(problems)}"
        return dataclasses.replace(result, problem=message, notes=tuple(notes), signed_seq=signed_seq)
    return dataclasses.replace(
        result,
        ok=False,
        problem="; ".join(problems),
        file=str(path),
        line=None,
        notes=tuple(notes),
        signed_seq=signed_seq,
    )


def verify_chains(
    paths: list[Path] | list[str] | Path | str,
    hmac_key: bytes | None = None,
    public_key: Ed25519PublicKey | None = None,
) -> list[VerifyResult]:
    """Check every chain (one per writer) in `paths`; each result names its FIRST problem's file and line.

    With `public_key`, the writer's signed checkpoints are checked as well, and an HMAC chain is
    checked without its key (links only: the checkpoints' file digests prove the content)."""
    results: list[VerifyResult] = []
    for writer, files, directory in _expand(paths):
        if not files:
            where = str(directory) if directory is not None else None
            problem = "no audit files found (wrong directory, or the log was deleted)"
            results.append(VerifyResult(False, 0, 0, problem, where, None, writer=writer))
            continue
        check_hashes = True
        captured: set[int] = set()
        if public_key is not None and directory is not None:
            from codexgate.audit_signing import checkpoints_path, read_checkpoints

            checkpoints, _ = read_checkpoints(checkpoints_path(directory, writer), public_key)
            captured = {checkpoint["seq"] for checkpoint in checkpoints}
            if hmac_key is None and checkpoints and checkpoints[-1].get("chain") == "hmac-sha256":
                check_hashes = False
        verifier = _Verifier(files, hmac_key, check_hashes, captured)
        verifier.writer = writer
        result = verifier.run()
        if public_key is not None and directory is not None:
            result = _check_checkpoints(result, verifier, directory, writer, public_key)
        if result.ok:
            logger.debug("audit chain %r intact: %d records in %d files", writer, result.records, result.files)
        results.append(result)
    return results


def verify(
    paths: list[Path] | Path, hmac_key: bytes | None = None, public_key: Ed25519PublicKey | None = None
) -> VerifyResult:
    """Check the whole log (every writer's chain); the result names the FIRST problem's file and line."""
    results = verify_chains(paths, hmac_key, public_key)
    if not results:
        return VerifyResult(False, 0, 0, "no audit files found", None, None)
    if len(results) == 1:
        return results[0]
    bad = next((result for result in results if not result.ok), None)
    combined = dataclasses.replace(
        bad or results[0],
        records=sum(result.records for result in results),
        files=sum(result.files for result in results),
        crashes=tuple(crash for result in results for crash in result.crashes),
        notes=tuple(note for result in results for note in result.notes),
    )
    if bad is not None and bad.problem is not None:
        combined = dataclasses.replace(combined, problem=f"chain {bad.writer or '(default)'}: {bad.problem}")
    return combined


def verify_command(
    paths: list[str], data_dir: str | None, hmac_key_ref: str | None, public_key_path: str | None = None
) -> int:
    """`codexgate audit verify`: print the verdict per chain; exit 0 intact, 1 tampered or damaged,
    2 intact but with crashes recorded (requests recovered from the write-ahead log)."""
    from codexgate.secrets import SecretResolver, SecretUnavailable

    if paths:
        targets: list[Path] = []
        for raw in paths:
            path = Path(raw).expanduser()
            # Accept the data dir itself as well as its audit subdirectory.
            if path.is_dir() and not writers(path) and (path / "audit").is_dir():
                path = path / "audit"
            targets.append(path)
    else:
        if data_dir is None:
            from codexgate.datadir import default_data_dir

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
    public_key = None
    if public_key_path:
        from codexgate.audit_signing import load_public_key

        try:
            public_key = load_public_key(Path(public_key_path).expanduser())
        except (OSError, ValueError) as exc:
            print(f"ERROR: public key: {exc}")
            return 1
    missing = [str(path) for path in targets if not path.exists()]
    if missing:
        print(f"ERROR: no such file or directory: {', '.join(missing)}")
        return 1
    results = verify_chains(targets[0] if len(targets) == 1 else targets, key, public_key)
    status = 0
    for result in results:
        label = f"chain {result.writer}: " if result.writer else ""
        if not result.ok:
            where = result.file or "?"
            if result.line is not None:
                where = f"{where}:{result.line}"
            print(f"{label}TAMPERED: {result.problem} at {where}")
            status = 1
        elif result.crashes:
            print(
                f"{label}CRASH: {result.records} records in {result.files} files, chain intact, but the gateway "
                f"crashed {len(result.crashes)} time{'s' if len(result.crashes) != 1 else ''}; what was in flight "
                "was recorded from its write-ahead log:"
            )
            status = max(status, 2)
        else:
            print(f"{label}OK: {result.records} records in {result.files} files, chain intact")
        for crash in result.crashes:
            print(f"  crash at {crash}")
        if result.ok:
            print(f"{label}head: seq {result.head_seq} hash {result.head_hash}")
        for note in result.notes:
            print(f"  note: {note}")
    return status


def _utc_iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_record(state: GatewayRequest, status: int, body: bytes, error: str | None = None) -> dict[str, Any]:
    """What the audit log keeps about one request: who, what was asked, what was served, the cost
    (`codexgate.records.audit_fields` of the request's one record).

    The body is only hashed (so a disputed request can be matched without the log holding
    prompts); no header and no key material is ever copied in, only the key's name.
    """
    from codexgate.records import audit_fields, request_record

    return audit_fields(request_record(state, status, error), hashlib.sha256(body or b"").hexdigest())
