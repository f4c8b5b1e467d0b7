"""Holds the data dir's lock for the life of the gateway (see `codexgate.datadir`), and names the
writer whose audit chain and write-ahead log this process keeps."""

from __future__ import annotations

import logging
from pathlib import Path

from mitmproxy import ctx, exceptions
from mitmproxy.addonmanager import Loader

from codexgate import datadir

logger = logging.getLogger(__name__)


class DataDirLock:
    def __init__(self) -> None:
        self._fd: int | None = None
        self._locked: Path | None = None

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "codexgate_writer_id",
            str,
            "",
            "Which process of a deployment this is: names its own audit chain (audit-<id>-NNNNNN.jsonl) and "
            "write-ahead log, so several processes sharing one data dir never write one file. Default: the "
            "single gateway ('').",
        )

    def configure(self, updated: set[str]) -> None:
        if "codexgate_data_dir" not in updated:
            return
        raw = getattr(ctx.options, "codexgate_data_dir", "") or ""
        data_dir = Path(raw).expanduser().resolve() if raw else None
        if data_dir == self._locked:
            return
        self._release()
        if data_dir is None or not data_dir.is_dir():
            return  # nothing to protect yet; the addons that make the data dir report what is wrong
        fd = datadir.adopted(data_dir)
        if fd is None:
            try:
                fd = datadir.acquire(data_dir)
            except datadir.DataDirBusy as exc:
                raise exceptions.OptionsError(str(exc)) from None
            except OSError as exc:
                raise exceptions.OptionsError(f"cannot lock data dir {data_dir}: {exc}") from None
        self._fd, self._locked = fd, data_dir

    def _release(self) -> None:
        if self._fd is not None:
            datadir.release(self._fd)
        self._fd = self._locked = None

    def done(self) -> None:
        self._release()
