"""A policy mounted from a Kubernetes ConfigMap hot-reloads. Kubernetes updates such a volume by
writing a new timestamped directory, pointing the `..data` symlink at it and deleting the old one;
`policy.yaml` is a symlink through `..data`. The gateway must keep reading the path it was given,
not the directory that path resolved to at start (which is gone after the first update)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway, policy_text


def _publish(mount: Path, text: str, version: int) -> None:
    """What the kubelet's atomic writer does for one ConfigMap update."""
    fresh = mount / f"..2026_12_07_{version:02d}"
    fresh.mkdir()
    (fresh / "policy.yaml").write_text(text)
    stamp = time.time_ns() + version * 1_000_000_000  # a new mtime even within one timestamp tick
    os.utime(fresh / "policy.yaml", ns=(stamp, stamp))
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    (mount / "..data_tmp").symlink_to(fresh.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    if not (mount / "policy.yaml").is_symlink():
        (mount / "policy.yaml").symlink_to("..data/policy.yaml")
    if old is not None:
        shutil.rmtree(mount / old)


def _ask(gateway: Gateway) -> str:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=ALICE_KEY, max_retries=0, timeout=20)
    return client.responses.create(model="mock-model", input="hello").status


def test_configmap_style_policy_update_is_picked_up(tmp_path: Path) -> None:
    mount = tmp_path / "policy-volume"
    mount.mkdir()
    original = policy_text("http://127.0.0.1:9/v1")
    _publish(mount, original, 1)
    gateway = Gateway(mount / "policy.yaml", tmp_path / "data").start()
    try:
        assert _ask(gateway) == "completed"
        _publish(
            mount, original.replace("name: alice, team: platform,", "name: alice, team: platform, disabled: true,"), 2
        )
        with pytest.raises(openai.AuthenticationError, match="alice is disabled"):
            _ask(gateway)
        _publish(mount, original, 3)
        assert _ask(gateway) == "completed"
    finally:
        gateway.stop()
