"""PolicySource hot reload, and the fail-closed wrapper around request hooks."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons
from unit_support import error_of, governed, make_flow, policy_yaml

from codexgate.addons.intake import Intake
from codexgate.addons.key_guard import KeyGuard
from codexgate.addons.mock_upstream import MockUpstream
from codexgate.addons.policy_source import PolicySource
from codexgate.flowstate import state_of

pytest_plugins = ["unit_support"]

_NEXT_MTIME = [1_900_000_000_000_000_000]


def rewrite(path: Path, text: str) -> None:
    """Write and give the file an mtime distinct from every earlier one."""
    path.write_text(text, encoding="utf-8")
    _NEXT_MTIME[0] += 1_000_000_000
    os.utime(path, ns=(_NEXT_MTIME[0], _NEXT_MTIME[0]))


EXTRA_MODEL = "  gpt-5.9-new:\n    routes: [{provider: openai}]\n"


def test_edit_applies_to_next_current(source, policy_file):
    first = source.current()
    assert source.current() is first  # unchanged file: same object, no reload
    assert first.lookup_model("gpt-5.9-new") is None
    rewrite(policy_file, policy_yaml(extra_models=EXTRA_MODEL))
    fresh = source.current()
    assert fresh is not first
    assert fresh.lookup_model("gpt-5.9-new") is not None
    assert source.reloads == 1
    assert source.reload_failures == 0
    assert source.current() is fresh


def test_broken_edit_keeps_last_good_and_counts_once(source, policy_file):
    good = source.current()
    rewrite(policy_file, policy_yaml() + "bogus_section: 1\n")
    assert source.current() is good
    assert source.reload_failures == 1
    assert source.current() is good  # same broken mtime: not retried, not counted again
    assert source.reload_failures == 1

    rewrite(policy_file, "providers: [unclosed\n")
    assert source.current() is good
    assert source.reload_failures == 2

    rewrite(policy_file, policy_yaml(extra_models=EXTRA_MODEL))
    fixed = source.current()
    assert fixed is not good
    assert fixed.lookup_model("gpt-5.9-new") is not None
    assert source.reloads == 1


def test_deleted_file_is_not_an_error(source, policy_file):
    good = source.current()
    policy_file.unlink()
    assert source.current() is good
    assert source.reload_failures == 0


def test_configure_rejects_broken_or_missing_policy(tmp_path, policy_file):
    addon = PolicySource()
    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: {}\n")
    with taddons.context(addon) as tctx:
        with pytest.raises(RuntimeError):
            addon.current()
        tctx.configure(addon, codexgate_policy=str(policy_file))
        good = addon.current()
        with pytest.raises(exceptions.OptionsError, match=r"broken\.yaml:1: providers"):
            tctx.configure(addon, codexgate_policy=str(broken))
        with pytest.raises(exceptions.OptionsError, match="cannot read policy"):
            tctx.configure(addon, codexgate_policy=str(tmp_path / "missing.yaml"))
        assert addon.current().path == good.path
        assert tctx.options.codexgate_policy == str(policy_file)


def test_data_dir_created_owner_only(source, tmp_path):
    mode = stat.S_IMODE(os.stat(tmp_path / "data").st_mode)
    assert mode == 0o700


def test_fail_closed_answers_500_instead_of_forwarding(source, monkeypatch):
    def broken(self):
        raise RuntimeError("store exploded")

    monkeypatch.setattr(PolicySource, "current", broken)
    flow = make_flow(body={"model": "gpt-5.5"})
    Intake(source).requestheaders(flow)
    assert flow.response is not None
    assert flow.response.status_code == 500
    error = error_of(flow)
    assert error["code"] == "gateway_internal_error"
    assert error["type"] == "server_error"
    assert flow.id in error["message"]
    assert "store exploded" not in error["message"]

    # the same for a flow no policy step would otherwise touch
    other = make_flow("GET", "https://github.com/", mode="regular")
    KeyGuard(source).requestheaders(other)
    assert other.response.status_code == 500


def test_fail_closed_async_hook(compiled):
    # a route to a provider the policy does not have: the mock upstream raises KeyError
    flow = make_flow(body={"model": "mock"})
    state = governed(flow, compiled, key="alice", body={"model": "mock"}, model="mock-model")
    state.cleared = True
    state.provider = "no-such-provider"
    asyncio.run(MockUpstream().request(flow))
    assert flow.response.status_code == 500
    assert error_of(flow)["code"] == "gateway_internal_error"
    assert state_of(flow).decision == "internal_error"
