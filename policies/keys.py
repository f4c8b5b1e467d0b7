"""Virtual keys: generated here, shown once, stored in the policy only as a sha256 hash."""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from pathlib import Path

from codexgate.policies.loader import PolicyError, parse_policy
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

KEY_PREFIX = "sk-cg-"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def add_key(policy_path: str | Path, name: str, team: str, models: list[str] | None) -> str:
    """Append a key entry to the policy, keeping its comments and order; returns the secret.

    The edited text is validated before it is written, so a failed call leaves the file as it was.
    """
    path = Path(policy_path)
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # one key per line, however long its hash
    original = path.read_text(encoding="utf-8")
    document = yaml.load(original)
    if not isinstance(document, CommentedMap):
        raise PolicyError([f"{path}:1: the policy must be a YAML mapping"])
    keys = document.get("keys")
    if keys is None:
        keys = CommentedSeq()
        document["keys"] = keys
    for existing in keys:
        if isinstance(existing, dict) and existing.get("name") == name:
            raise PolicyError([f"{path}: a key named {name!r} already exists"])
    secret = generate_key()
    entry = CommentedMap()
    entry["name"] = name
    entry["team"] = team
    entry["hash"] = hash_key(secret)
    if models:
        entry["models"] = CommentedSeq(models)
        entry["models"].fa.set_flow_style()
    entry.fa.set_flow_style()
    keys.append(entry)
    buffer = io.StringIO()
    yaml.dump(document, buffer)
    text = buffer.getvalue()
    parse_policy(text, str(path))  # raises PolicyError naming the problem; nothing written
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return secret
