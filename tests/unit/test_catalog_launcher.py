"""codexgate/catalog.py (Codex's model catalog per key) and codexgate/launcher.py (overlay, profile,
launch arguments)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from codexgate.catalog import codex_catalog
from codexgate.launcher import (
    LaunchError,
    Profile,
    Target,
    codex_launch,
    default_model,
    prepare_overlay,
    resolve_target,
)
from codexgate.policies.loader import PolicyError, parse_policy

HASH = "sha256:" + "1" * 64
POLICY = """\
providers:
  openai: {kind: openai, keys: [{value: env:OPENAI_API_KEY}]}
  claude: {kind: anthropic, keys: [{value: env:ANTHROPIC_API_KEY}]}
  gemini: {kind: gemini, keys: [{value: env:GEMINI_API_KEY}]}
  groq: {kind: chat, preset: groq, keys: [{value: env:GROQ_API_KEY}]}
models:
  gpt-5.5: {routes: [{provider: openai}]}
  sonnet: {routes: [{provider: claude, model: claude-sonnet-4-5}], aliases: [claude-sonnet]}
  gemini-2.5-pro: {routes: [{provider: gemini}]}
  llama: {routes: [{provider: groq, model: llama-3.3-70b}]}
  described:
    routes: [{provider: claude, model: claude-opus-4-1}]
    codex:
      display_name: Opus for reviews
      description: the slow careful one
      context_window: 150000
      reasoning_levels: [high, xhigh]
      input_modalities: [text]
      apply_patch: shell
teams: {platform: {org: acme}}
orgs: {acme: {}}
keys:
  - {name: alice, team: platform, hash: "HASH"}
  - {name: claude-only, team: platform, hash: "HASH2", models: ["claude-*"]}
""".replace("HASH2", "sha256:" + "2" * 64).replace("HASH", HASH)


def catalog_for(key_name: str) -> dict[str, dict]:
    policy = parse_policy(POLICY)
    key = next(k for k in policy.policy.keys if k.name == key_name)
    return {model["slug"]: model for model in codex_catalog(policy, key)["models"]}


def test_family_defaults_give_right_context_windows() -> None:
    models = catalog_for("alice")
    assert list(models) == ["gpt-5.5", "sonnet", "gemini-2.5-pro", "llama", "described"]
    assert models["gpt-5.5"]["context_window"] == 272_000
    assert models["sonnet"]["context_window"] == 200_000
    assert models["gemini-2.5-pro"]["context_window"] == 1_048_576
    assert models["llama"]["context_window"] == 128_000 and models["llama"]["input_modalities"] == ["text"]
    assert models["sonnet"]["input_modalities"] == ["text", "image"]
    assert all(m["apply_patch_tool_type"] == "freeform" for slug, m in models.items() if slug != "described")
    assert [m["priority"] for m in models.values()] == [0, 1, 2, 3, 4]


def test_policy_metadata_overrides_the_defaults() -> None:
    described = catalog_for("alice")["described"]
    assert described["display_name"] == "Opus for reviews" and described["description"] == "the slow careful one"
    assert described["context_window"] == described["max_context_window"] == 150_000
    assert [level["effort"] for level in described["supported_reasoning_levels"]] == ["high", "xhigh"]
    assert described["default_reasoning_level"] == "xhigh"  # the middle of the levels when none is named
    assert described["input_modalities"] == ["text"]
    assert described["apply_patch_tool_type"] is None  # Codex patches through its shell tool


def test_a_key_sees_models_it_may_use_by_name_or_alias() -> None:
    assert list(catalog_for("claude-only")) == ["sonnet"]  # allowed through its alias claude-sonnet


def test_codex_metadata_is_validated() -> None:
    bad = POLICY.replace(
        "reasoning_levels: [high, xhigh]", "reasoning_levels: [high]\n      default_reasoning_level: low"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(bad, "policy.yaml")
    assert any("default_reasoning_level must be one of reasoning_levels" in p for p in info.value.problems)


def test_overlay_shares_the_developers_files_but_not_their_sign_in(tmp_path: Path) -> None:
    developer = tmp_path / "dot-codex"
    developer.mkdir()
    chatgpt_auth = '{"tokens": {"access_token": "chatgpt"}}'
    (developer / "auth.json").write_text(chatgpt_auth)
    (developer / "AGENTS.md").write_text("rules")
    (developer / "config.toml").write_text('model = "gpt-5.5"\n')
    overlay = tmp_path / "overlay"
    fake_codex = tmp_path / "codex"
    # Stands in for `codex login --with-api-key` (reads the key on stdin, writes CODEX_HOME/auth.json).
    fake_codex.write_text(
        '#!/bin/sh\nread key\nprintf \'{"auth_mode": "apikey", "OPENAI_API_KEY": "%s"}\' "$key"'
        ' > "$CODEX_HOME/auth.json"\n'
    )
    fake_codex.chmod(0o755)
    prepare_overlay(overlay, developer, "sk-cg-one", str(fake_codex))
    assert json.loads((overlay / "auth.json").read_text())["OPENAI_API_KEY"] == "sk-cg-one"
    assert (developer / "auth.json").read_text() == chatgpt_auth
    assert (overlay / "AGENTS.md").resolve() == (developer / "AGENTS.md").resolve()
    assert (overlay / "sessions").resolve() == (developer / "sessions").resolve()  # made for them
    assert not (overlay / "config.toml").is_symlink() and (overlay / "config.toml").read_text() == 'model = "gpt-5.5"\n'
    assert stat.S_IMODE(overlay.stat().st_mode) == 0o700
    # What Codex writes into the overlay's config stays there, until the developer edits theirs.
    (overlay / "config.toml").write_text('model = "claude-sonnet"\n')
    prepare_overlay(overlay, developer, "sk-cg-two", str(fake_codex))
    assert (overlay / "config.toml").read_text() == 'model = "claude-sonnet"\n'
    assert json.loads((overlay / "auth.json").read_text())["OPENAI_API_KEY"] == "sk-cg-two"
    (developer / "config.toml").write_text('model = "gpt-5.5"\nmodel_reasoning_effort = "high"\n')
    prepare_overlay(overlay, developer, "sk-cg-two", str(fake_codex))
    assert "high" in (overlay / "config.toml").read_text()


def _config_values(argv: list[str]) -> dict[str, object]:
    values = {}
    for flag, setting in zip(argv, argv[1:], strict=False):
        if flag == "-c":
            name, _, value = setting.partition("=")
            values[name] = tomllib.loads(f"v = {value}")["v"]
    return values


def test_launch_keeps_the_key_out_of_codex_and_its_tools(tmp_path: Path) -> None:
    key = "sk-cg-secret-key"
    env = {"PATH": "/bin", "CODEX_API_KEY": key, "MY_TOKEN_COPY": f"Bearer {key}", "HOME": str(tmp_path)}
    target = Target("base-url", "http://gw:4000/v1", key, None)
    argv, launch_env = codex_launch(target, env, ["-m", "mock-model"], tmp_path / "overlay", tmp_path / "cat.json")
    assert key not in json.dumps(launch_env)
    assert "CODEX_API_KEY" not in launch_env and launch_env["CODEX_HOME"] == str(tmp_path / "overlay")
    config = _config_values(argv)
    excluded = config["shell_environment_policy.exclude"]
    assert isinstance(excluded, list) and {"CODEX_API_KEY", "CODEXGATE_KEY", "MY_TOKEN_COPY"} <= set(excluded)
    assert config["model_provider"] == "codexgate"
    assert config["model_providers.codexgate.base_url"] == "http://gw:4000/v1"
    assert config["model_catalog_json"] == str(tmp_path / "cat.json")
    assert argv[0] == "--no-daemon" and argv[-2:] == ["-m", "mock-model"]
    assert not any(key in arg for arg in argv)
    proxy_argv, proxy_env = codex_launch(
        Target("proxy", "http://gw:8080", key, tmp_path / "ca.pem"), env, ["exec", "hi"], tmp_path / "overlay"
    )
    assert proxy_env["HTTPS_PROXY"] == "http://gw:8080" and proxy_env["CODEX_CA_CERTIFICATE"] == str(
        tmp_path / "ca.pem"
    )
    assert proxy_argv[0] == "--no-daemon" and "model_provider" not in _config_values(proxy_argv)

    assert "shell_environment_policy.set.HTTPS_PROXY" not in _config_values(proxy_argv)


def test_proxy_credentials_reach_codex_but_not_its_tools(tmp_path: Path) -> None:
    key = "sk-cg-secret/key"  # (a character that must be escaped in a URL's userinfo)
    target = Target("proxy", "http://gw:8080", key, tmp_path / "ca.pem", proxy_auth=True)
    argv, launch_env = codex_launch(target, {"PATH": "/bin"}, ["exec", "hi"], tmp_path / "overlay")
    assert launch_env["HTTPS_PROXY"] == "http://codex:sk-cg-secret%2Fkey@gw:8080"
    assert _config_values(argv)["shell_environment_policy.set.HTTPS_PROXY"] == "http://gw:8080"
    assert not any(key in arg or "secret" in arg for arg in argv)


def _args(**given: object) -> argparse.Namespace:
    defaults: dict[str, object] = {"mode": "base-url", "key": None, "gateway": None, "ca": None}
    return argparse.Namespace(**{**defaults, **given})


def test_without_gateway_or_key_a_non_interactive_launch_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="gateway URL .--gateway. and virtual key .--key."):
        resolve_target(_args(), tmp_path, {}, interactive=False)
    target = resolve_target(_args(), tmp_path, {"CODEXGATE_KEY": "sk-cg-k", "CODEXGATE_GATEWAY": "gw:4000"}, False)
    assert target == Target("base-url", "http://gw:4000/v1", "sk-cg-k", None)


def test_profile_is_owner_only_and_used_next_time(tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    Profile(key="sk-cg-remembered", gateways={"base-url": "http://gw:4000"}).save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    target = resolve_target(_args(), tmp_path, {}, interactive=False)
    assert target.key == "sk-cg-remembered" and target.gateway == "http://gw:4000/v1"
    assert resolve_target(_args(key="sk-cg-flag"), tmp_path, {}, interactive=False).key == "sk-cg-flag"


def test_proxy_mode_checks_the_ca_path(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="does not exist: `codexgate ca`"):
        resolve_target(_args(mode="proxy", ca=str(tmp_path / "missing.pem")), tmp_path, {}, interactive=False)


def test_codex_starts_on_a_model_the_key_may_use(tmp_path: Path) -> None:
    models = ["mock-model", "claude-sonnet-4-5"]
    assert default_model([], tmp_path, models) == "mock-model"  # no config at all
    (tmp_path / "config.toml").write_text('model = "gpt-6-astra"\n')  # not the key's
    assert default_model(["resume"], tmp_path, models) == "mock-model"
    (tmp_path / "config.toml").write_text('model = "claude-sonnet-4-5"\n')
    assert default_model([], tmp_path, models) is None
    assert default_model(["-m", "other"], tmp_path, []) is None
    assert default_model(["exec", "--model=x"], tmp_path, models) is None


def test_banner_commands_work_as_pasted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from codexgate.launcher import banner_commands

    monkeypatch.setenv("PATH", "/nonexistent")  # neither codexgate nor codex on PATH
    monkeypatch.delenv("CODEXGATE_CODEX_BIN", raising=False)  # (./dev test points it at its own Codex)
    monkeypatch.setenv("CODEXGATE_HOME", str(tmp_path / "default-home"))
    lines = banner_commands("127.0.0.1", 8080, 4000, tmp_path / "ca.pem", tmp_path / "data", "sk-cg-demo", "mock-model")
    text = "\n".join(lines)
    assert "<key>" not in text and "CODEX_API_KEY=sk-cg-demo" in text
    launchers = [line.split() for line in lines if " codex --" in line and "exec" not in line]
    assert len(launchers) == 2
    for words in launchers:
        assert Path(words[0]).is_absolute()  # this Python (or codexgate's absolute path), not a bare name
        assert "--data-dir" in words and str(tmp_path / "data") in words  # a data dir other than the default
    assert any("--mode proxy --gateway http://127.0.0.1:8080" in line for line in lines)
    # `codex exec` lines: Codex fetched by npx when it is not installed, and runnable outside a git repository.
    execs = [line for line in lines if " exec " in line]
    assert len(execs) == 2
    assert all("npx -y @openai/codex@0.169.0 exec --skip-git-repo-check " in line for line in execs), execs
    # Without a demo key (a policy of one's own): only the launcher, which asks for the key.
    assert not any("CODEX_API_KEY" in line for line in banner_commands(
        "127.0.0.1", 8080, 4000, tmp_path / "ca.pem", tmp_path / "data", None, "mock-model"
    ))  # fmt: skip
