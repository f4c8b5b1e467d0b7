"""Signed checkpoints of the audit chain: an auditor checks the log with a PUBLIC key.

The hash chain (``codexgate.audit``) shows edits, but whoever can write the files can recompute
a plain chain, and an HMAC chain needs the writer's own secret to check. So, in the manner of
CloudTrail's digest files, the writer signs a *checkpoint* every N records or T seconds (and at
shutdown) with an Ed25519 private key kept in a secret store:

    {"checkpoint": 7, "writer": "", "seq": 1200, "hash": "<hash of record 1200>",
     "chain": "sha256" | "hmac-sha256",
     "files": [{"name": "audit-000002.jsonl", "bytes": 81234, "sha256": "..."}],
     "prev_checkpoint": "<sha256 of checkpoint 6's line>", "key_id": "...", "time": ..., "ts": ...,
     "signature": "<base64 Ed25519 over the canonical JSON of everything else>"}

``files`` names every log file written since the previous checkpoint with the length and sha256 of
its content so far: the verifier hashes those bytes itself, so it needs neither the HMAC key nor
trust in the records' own hashes. Checkpoints are chained (``prev_checkpoint``) and numbered, one
JSONL file per writer (``checkpoints.jsonl``, ``checkpoints-<writer>.jsonl``).

What a verifier holding only the public key proves: every record up to the last checkpoint is
exactly what the writer wrote, none is missing, inserted or reordered, and the files were not cut
shorter. What it cannot prove: records after the last checkpoint (at most N records / T seconds),
and removal of the newest checkpoints together with the records after them — compare the last
checkpoint number with one kept elsewhere, as with any log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def checkpoints_path(directory: Path, writer: str = "") -> Path:
    return directory / (f"checkpoints-{writer}.jsonl" if writer else "checkpoints.jsonl")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(text: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 private key, as `codexgate audit keygen` writes it, or the raw 32-byte
    seed in base64 (handy for an environment variable). ValueError names what is wrong, never the key."""
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(stripped.encode("ascii") + b"\n", password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a readable unencrypted PEM private key ({type(exc).__name__})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM key is not an Ed25519 key")
        return key
    try:
        seed = base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("neither a PEM private key nor a base64 Ed25519 seed") from None
    if len(seed) != 32:
        raise ValueError("a base64 Ed25519 seed must decode to 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def write_key_pair(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 pair: the private key owner-only (0600, never overwritten), the public one
    readable. Returns the key id."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _last_line(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 64 * 1024))
            lines = [line for line in handle.read().split(b"\n") if line.strip()]
    except FileNotFoundError:
        return None
    return lines[-1] if lines else None


def last_checkpoint(path: Path) -> dict[str, Any] | None:
    """The newest checkpoint line, unverified (the writer resumes its numbering from it)."""
    line = _last_line(path)
    if line is None:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class CheckpointLog:
    """Appends signed checkpoints of one writer's chain; one instance per writer."""

    def __init__(self, directory: Path, writer: str, private_key: Ed25519PrivateKey) -> None:
        self.path = checkpoints_path(directory, writer)
        self._key = private_key
        self.key_id = key_id(private_key.public_key())
        line = _last_line(self.path)
        last = last_checkpoint(self.path)
        self.number = int(last.get("checkpoint", 0)) if last else 0
        self.prev = _line_hash(line) if line is not None else GENESIS
        self._lock = threading.Lock()  # the group-commit thread and the final one at shutdown

    def append(self, snapshot: dict[str, Any], fsync: bool = True) -> dict[str, Any]:
        with self._lock:
            return self._append(snapshot, fsync)

    def _append(self, snapshot: dict[str, Any], fsync: bool) -> dict[str, Any]:
        body = dict(snapshot, checkpoint=self.number + 1, prev_checkpoint=self.prev, key_id=self.key_id)
        body["signature"] = base64.b64encode(self._key.sign(_canonical(body))).decode("ascii")
        line = _canonical(body)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line + b"\n")
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.number += 1
        self.prev = _line_hash(line)
        return body


def read_checkpoints(path: Path, public_key: Ed25519PublicKey) -> tuple[list[dict[str, Any]], str | None]:
    """The checkpoints that verify, in order, and the first problem (which ends the list)."""
    good: list[dict[str, Any]] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return good, f"no signed checkpoints ({path.name} is missing): nothing to prove the log with"
    prev = GENESIS
    wanted_id = key_id(public_key)
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            signature = base64.b64decode(record["signature"], validate=True)
            body = {k: v for k, v in record.items() if k != "signature"}
        except (ValueError, KeyError, TypeError, binascii.Error):
            return good, f"{path.name}:{number}: not a checkpoint record"
        if record.get("key_id") != wanted_id:
            return (
                good,
                f"{path.name}:{number}: signed with key {record.get('key_id')}, not with this public key ({wanted_id})",
            )
        try:
            public_key.verify(signature, _canonical(body))
        except InvalidSignature:
            return good, f"{path.name}:{number}: signature does not verify (the checkpoint was edited or forged)"
        if _canonical(record) != line:
            return good, f"{path.name}:{number}: checkpoint is not in canonical form (rewritten)"
        expected = good[-1]["checkpoint"] + 1 if good else record.get("checkpoint")
        if record.get("checkpoint") != expected or record.get("prev_checkpoint") != prev:
            return (
                good,
                f"{path.name}:{number}: checkpoint {record.get('checkpoint')} does not follow the one before it",
            )
        good.append(record)
        prev = _line_hash(line)
    if not good:
        return good, f"no signed checkpoints in {path.name}: nothing to prove the log with"
    return good, None


def prefix_sha256(path: Path, length: int) -> str | None:
    """sha256 of the first `length` bytes of `path`, or None if it is shorter."""
    digest = hashlib.sha256()
    remaining = length
    with open(path, "rb") as handle:
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 20))
            if not block:
                return None
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()
