"""Provider credentials from references: `env:NAME` and `file:PATH` (re-read when the file changes)."""

from __future__ import annotations

import os
from pathlib import Path


class SecretUnavailable(Exception):
    """The message names the reference, never a value."""


class SecretResolver:
    def __init__(self) -> None:
        self._files: dict[str, tuple[int, str]] = {}

    def resolve(self, reference: str) -> str:
        if reference.startswith("env:"):
            value = os.environ.get(reference[4:], "")
            if not value:
                raise SecretUnavailable(f"environment variable {reference[4:]} is not set")
            return value
        if reference.startswith("file:"):
            path = Path(reference[5:]).expanduser()
            try:
                mtime = path.stat().st_mtime_ns
                cached = self._files.get(str(path))
                if cached and cached[0] == mtime:
                    return cached[1]
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}") from None
            if not value:
                raise SecretUnavailable(f"secret file {path} is empty")
            self._files[str(path)] = (mtime, value)
            return value
        raise SecretUnavailable("unsupported secret reference")
