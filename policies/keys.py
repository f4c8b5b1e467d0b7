"""Virtual keys: generated here, shown once, stored in the policy only as a sha256 hash."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

from codexgate.policies.loader import PolicyError, parse_policy

KEY_PREFIX = "sk-cg-"
_KEYS_LINE = re.compile(r"^keys:\s*(?P<empty>\[\s*\])?\s*(#.*)?$")
_ITEM_LINE = re.compile(r"^(?P<indent>\s*)- ")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9_.-][A-Za-z0-9_.:*?-]*$")


def _scalar(value: str) -> str:
    # Plain where YAML reads it back unchanged; otherwise a JSON string (valid YAML), so that
    # e.g. a pattern starting with "*" is not taken for an alias.
    if _PLAIN_SCALAR.match(value) and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "~"):
        return value
    return json.dumps(value)


def _entry(name: str, team: str, key_hash: str, models: list[str] | None) -> str:
    fields = [f"name: {_scalar(name)}", f"team: {_scalar(team)}", f"hash: {_scalar(key_hash)}"]
    if models:
        fields.append(f"models: [{', '.join(_scalar(m) for m in models)}]")
    return "{" + ", ".join(fields) + "}"


def insert_key_entry(text: str, entry: str) -> str:
    """The policy text with `entry` appended to its `keys:` list, every other byte unchanged.

    A textual edit rather than a YAML round trip: the file is a reviewed document, and a
    pull request adding a key should show exactly one added line.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines) if _KEYS_LINE.match(line.rstrip("\n"))), None)
    if start is None:
        return "".join(lines) + f"keys:\n  - {entry}\n"
    if _KEYS_LINE.match(lines[start].rstrip("\n")).group("empty"):  # type: ignore[union-attr]
        lines[start] = "keys:\n"
        lines.insert(start + 1, f"  - {entry}\n")
        return "".join(lines)
    end = start + 1
    last_item_line = start
    indent = "  "
    found_indent = False
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not line[0].isspace() and not line.startswith("-"):
            break  # the next top-level section
        if stripped and not stripped.startswith("#"):
            last_item_line = end
            item = _ITEM_LINE.match(line)
            if item and not found_indent:
                indent, found_indent = item.group("indent"), True
        end += 1
    lines.insert(last_item_line + 1, f"{indent}- {entry}\n")
    return "".join(lines)


def add_key(policy_path: str | Path, name: str, team: str, models: list[str] | None) -> str:
    """Append a key entry to the policy, keeping its comments and order; returns the secret.

    The edited text is validated before it is written, so a failed call leaves the file as it was.
    """
    path = Path(policy_path)
    original = path.read_text(encoding="utf-8")
    current = parse_policy(original, str(path))
    if any(key.name == name for key in current.policy.keys):
        raise PolicyError([f"{path}: a key named {name!r} already exists"])
    secret = generate_key()
    text = insert_key_entry(original, _entry(name, team, hash_key(secret), models))
    parse_policy(text, str(path))  # raises PolicyError naming the problem; nothing written
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, path.stat().st_mode & 0o777)
    tmp.replace(path)
    return secret
