"""OptionsLock: once running, enforcement options stay as started; every runtime change is audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from codexgate.addons.audit_log import AuditLog
from codexgate.addons.options_lock import OptionsLock, locked


def records(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


def test_changes_before_running_are_start_up_and_after_it_are_checked(tmp_path: Path) -> None:
    audit = AuditLog()
    lock = OptionsLock(audit)
    with taddons.context(lock, audit) as tctx:
        tctx.options.update(codexgate_audit_dir=str(tmp_path))  # start-up: allowed, not audited
        assert records(tmp_path) == []
        lock.running()
        with pytest.raises(exceptions.OptionsError, match="codexgate_audit cannot be changed"):
            tctx.options.update(codexgate_audit=False)
        assert tctx.options.codexgate_audit is True  # rolled back
        with pytest.raises(exceptions.OptionsError):
            tctx.options.update(ignore_hosts=[".*"])
        assert tctx.options.ignore_hosts == []
        tctx.options.update(showhost=True)  # not an enforcement option: allowed
        assert tctx.options.showhost is True
    written = records(tmp_path)
    assert [(r["options"], r["refused"]) for r in written] == [
        (["codexgate_audit"], True), (["ignore_hosts"], True), (["showhost"], False)
    ]  # fmt: skip


def test_what_is_locked() -> None:
    assert locked("codexgate_store") and locked("codexgate_policy") and locked("web_password")
    assert locked("mode") and locked("allow_hosts") and not locked("view_filter")
