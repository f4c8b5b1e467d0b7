"""The real interactive Codex (its terminal UI, in tmux) launched by `codexgate codex`, both modes.

A developer's day: a developer whose Codex was never signed in, and one signed in with ChatGPT,
each runs `codexgate codex`, types a prompt, approves a command, switches model with `/model`
(seeing exactly the models their key may use) to a model the gateway translates, and gets its
answer — with the developer's own sign-in untouched, their AGENTS.md read, their sessions kept,
the virtual key invisible to the commands Codex runs, and no gateway ERROR in Codex's log.
"""

from __future__ import annotations

import base64
import json
import re
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes import gemini_upstream as gemini_fake
from fakes.codex_cli import codex_env, gateway_errors, log_db_errors
from fakes.gateway import ALICE_KEY, Gateway
from fakes.tmux_session import TmuxSession

from codexgate.policies.keys import hash_key

pytestmark = pytest.mark.e2e

BROKE_KEY = "sk-cg-broke-tui-key-000000000000000000000000000"
KEY_MODELS = ["mock-model", "claude-sonnet-4-5", "gemini-2.5-flash"]  # what alice's key may use, in policy order
SHOWN_AS = {
    "mock-model": "mock-model",
    "claude-sonnet-4-5": "Claude Sonnet 4.5",
    "gemini-2.5-flash": "gemini-2.5-flash",
}
AGENTS_MARKER = "agents-md-marker-7c1e"
CHATGPT_ACCESS_TOKEN = "chatgpt-access-token-of-the-developer"
DEVELOPER_TOKEN = "npm-token-of-the-developer"


@pytest.fixture(scope="module")
def claude() -> Iterator[anthropic_fake.FakeAnthropic]:
    fake = anthropic_fake.FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gemini() -> Iterator[gemini_fake.FakeGemini]:
    fake = gemini_fake.FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def tui_gateway(
    tmp_path_factory: pytest.TempPathFactory, claude: anthropic_fake.FakeAnthropic, gemini: gemini_fake.FakeGemini
) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("tui")
    policy = root / "policy.yaml"
    policy.write_text(
        f"""\
providers:
  local: {{kind: mock, output_tokens: 5}}
  anthropic: {{kind: anthropic, base_url: "{claude.url}", keys: [{{value: env:CG_ANTHROPIC_KEY}}]}}
  google: {{kind: gemini, base_url: "{gemini.url}", keys: [{{value: env:CG_GEMINI_KEY}}]}}
models:
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
  claude-sonnet-4-5:
    routes: [{{provider: anthropic}}]
    codex: {{display_name: "Claude Sonnet 4.5", description: "Anthropic, translated by the gateway"}}
  gemini-2.5-flash: {{routes: [{{provider: google}}]}}
  hidden-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
teams:
  platform: {{org: acme}}
  broke: {{org: acme, budgets: [{{limit_usd: 0, period: 1M}}]}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}", models: ["mock-*", "claude-*", "gemini-*"]}}
  - {{name: broke, team: broke, hash: "{hash_key(BROKE_KEY)}", models: ["mock-*"]}}
"""
    )
    keys = {"CG_ANTHROPIC_KEY": anthropic_fake.API_KEY, "CG_GEMINI_KEY": gemini_fake.API_KEY}
    gateway = Gateway(policy, root / "data", extra_env=keys).start()
    yield gateway
    gateway.stop()


def _jwt(claims: dict[str, object]) -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def developer_home(tmp_path: Path, signed_in: bool) -> Path:
    """The developer's own CODEX_HOME: their AGENTS.md and config, and (signed_in) a ChatGPT sign-in."""
    home = tmp_path / "developer-codex-home"
    home.mkdir()
    (home / "AGENTS.md").write_text(f"Team rule: mention {AGENTS_MARKER} nowhere.\n")
    (home / "config.toml").write_text('# the developer\'s own settings\nmodel_reasoning_effort = "low"\n')
    if signed_in:
        claims = {
            "email": "dev@example.com",
            "https://api.openai.com/auth": {"chatgpt_plan_type": "pro", "chatgpt_account_id": "acct-dev"},
        }
        auth = {
            "OPENAI_API_KEY": None,
            "tokens": {
                "id_token": _jwt(claims),
                "access_token": CHATGPT_ACCESS_TOKEN,
                "refresh_token": "chatgpt-refresh-token-of-the-developer",
                "account_id": "acct-dev",
            },
            "last_refresh": "2026-12-01T00:00:00Z",
        }
        (home / "auth.json").write_text(json.dumps(auth, indent=2))
        (home / "auth.json").chmod(0o600)
    return home


def launch(gateway: Gateway, mode: str, tmp_path: Path, home: Path, key: str, *codex_args: str) -> TmuxSession:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    env = codex_env(tmp_path, home)
    env.setdefault("TERM", "xterm-256color")
    env["NPM_TOKEN"] = DEVELOPER_TOKEN  # the developer's own credential, for the tools they run
    gateway_url = gateway.base_url if mode == "base-url" else gateway.proxy_url
    command = [
        sys.executable, "-m", "codexgate.cli", "codex", "--mode", mode, "--gateway", gateway_url, "--key", key,
        "--ca", str(gateway.ca_cert), "--", *codex_args,
    ]  # fmt: skip
    return TmuxSession(command, env, workdir)


def picker_models(screen: str) -> list[str]:
    """The model names the /model picker lists (`1. name (current)   description` lines)."""
    listing = screen.split("Select Model", 1)[1].split("enter select", 1)[0]
    rows = re.findall(r"^\s*(?:›\s*)?\d+\.\s+(.+?)\s{2,}", listing, re.MULTILINE)
    return [row.removesuffix(" (current)") for row in rows]


def quit_codex(session: TmuxSession) -> None:
    session.command("/quit", None)


@pytest.mark.parametrize(
    ("mode", "signed_in"),
    [("base-url", False), ("proxy", True), ("base-url", True), ("proxy", False)],
    ids=["base-url-fresh", "proxy-chatgpt", "base-url-chatgpt", "proxy-fresh"],
)
def test_interactive_day(
    tui_gateway: Gateway,
    claude: anthropic_fake.FakeAnthropic,
    gemini: gemini_fake.FakeGemini,
    mode: str,
    signed_in: bool,
    tmp_path: Path,
) -> None:
    home = developer_home(tmp_path, signed_in)
    auth_before = (home / "auth.json").read_bytes() if signed_in else None
    config_before = (home / "config.toml").read_bytes()
    workdir = tmp_path / "work"
    session = launch(tui_gateway, mode, tmp_path, home, ALICE_KEY, "-a", "on-request", "-s", "workspace-write")
    try:
        # Straight into a session on the key's first model: no sign-in screen.
        screen = session.wait_for("? for shortcuts")
        assert "Sign in with ChatGPT" not in screen

        # A prompt whose command needs approval; approved, it runs and the model answers.
        session.submit("please run `touch approved-file` outside the sandbox", "touch approved-file")
        session.wait_for("Would you like to run the following command?", "touch approved-file")
        session.press_until_gone("y", "Would you like to run the following command?")
        session.wait_until("The command finished. Its output was")
        assert (workdir / "approved-file").exists()

        # The commands Codex runs see neither the key nor Codex's credential variables.
        session.submit("please run `env > env-of-tools.txt`", "env > env-of-tools.txt")
        session.wait_until("The command finished. Its output was", count=2)
        seen = (workdir / "env-of-tools.txt").read_text()
        assert ALICE_KEY not in seen and "CODEX_API_KEY" not in seen and CHATGPT_ACCESS_TOKEN not in seen
        assert f"NPM_TOKEN={DEVELOPER_TOKEN}" in seen  # the developer's own credentials stay
        if mode == "proxy":
            # ... but still the proxy and the CA, so package managers go through the gateway.
            assert f"HTTPS_PROXY={tui_gateway.proxy_url}" in seen and "CODEX_CA_CERTIFICATE=" in seen

        # /model lists exactly the key's models; switch to Claude, which the gateway translates.
        session.command("/model", "Select Model")
        screen = session.wait_for("Select Model", "enter select")
        assert picker_models(screen) == [SHOWN_AS[model] for model in KEY_MODELS], screen
        assert "Selecting models may not be supported" not in screen
        session.press_until_gone(str(KEY_MODELS.index("claude-sonnet-4-5") + 1), "Select Model and Effort")
        session.wait_for("Select Reasoning Level")
        session.press_until_gone("Enter", "Select Reasoning Level")
        session.wait_for("Model changed to claude-sonnet-4-5", "Claude Sonnet 4.5 medium ·")
        marker = f"claude-answer-{uuid.uuid4().hex[:8]}"
        before = len(claude.received)
        claude.replies.append(anthropic_fake.Reply(content=[{"type": "text", "text": f"Claude here: {marker}"}]))
        session.submit("hello from the terminal")
        session.wait_until(marker)
        claude_bodies = [r.body.decode() for r in claude.received[before:] if r.path == "/v1/messages"]
        assert claude_bodies and not claude.invalid
        assert AGENTS_MARKER in claude_bodies[-1]  # the developer's AGENTS.md reached the model

        # And on to Gemini, in the same session.
        session.command("/model", "Select Model")
        session.press_until_gone(str(KEY_MODELS.index("gemini-2.5-flash") + 1), "Select Model and Effort")
        session.wait_for("Select Reasoning Level")
        session.press_until_gone("Enter", "Select Reasoning Level")
        session.wait_for("Model changed to gemini-2.5-flash")
        marker = f"gemini-answer-{uuid.uuid4().hex[:8]}"
        usage = gemini_fake.usage_metadata(900, 12)
        gemini.script(gemini_fake.Reply(chunks=[gemini_fake.chunk([gemini_fake.text_part(marker)], "STOP", usage)]))
        session.submit("and now Gemini, please")
        session.wait_until(marker)
        quit_codex(session)
    finally:
        session.close()

    records = [r for r in tui_gateway.accounting() if r.get("session_id") and r["key"] == "alice"]
    assert set(KEY_MODELS) <= {r["model"] for r in records}
    # The developer's own sign-in and config are untouched; the session is in their sessions.
    if signed_in:
        assert (home / "auth.json").read_bytes() == auth_before
    assert (home / "config.toml").read_bytes() == config_before
    assert list((home / "sessions").rglob("rollout-*.jsonl"))
    # No gateway-related ERROR in Codex's log database.
    overlay = tmp_path / "codexgate-home" / "codex-home"
    assert gateway_errors(log_db_errors(overlay)) == []


@pytest.mark.parametrize("mode", ["base-url", "proxy"])
def test_budget_refusal_on_screen(tui_gateway: Gateway, mode: str, tmp_path: Path) -> None:
    home = developer_home(tmp_path, signed_in=False)
    session = launch(tui_gateway, mode, tmp_path, home, BROKE_KEY)
    try:
        session.wait_for("? for shortcuts")
        session.submit("hello, is there budget left?")
        # Codex retries the 402 a few times, then shows the gateway's message.
        session.wait_until("team broke: monthly budget $0.00 used", timeout=120)
    finally:
        session.close()


def test_first_run_asks_checks_and_remembers(tui_gateway: Gateway, tmp_path: Path) -> None:
    home = developer_home(tmp_path, signed_in=True)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = codex_env(tmp_path, home)
    env.setdefault("TERM", "xterm-256color")
    command = [sys.executable, "-m", "codexgate.cli", "codex", "--", "-m", "mock-model"]
    session = TmuxSession(command, env, workdir)
    try:
        session.wait_for("Gateway URL for base-url mode")
        session.submit(tui_gateway.base_url.removesuffix("/v1"), "127.0.0.1")
        session.wait_for("Virtual key")
        session.type_text("sk-cg-not-a-key-of-this-gateway-0000000000000")
        session.press("Enter")
        # Checked against the gateway: refused, asked again.
        session.wait_for("the gateway refused the key (401)")
        session.wait_for("Gateway URL for base-url mode [http://127.0.0.1:")
        session.press("Enter")  # keep the URL given before
        session.wait_until("Virtual key", count=2)
        session.type_text(ALICE_KEY)
        session.press("Enter")
        session.wait_for("? for shortcuts")
        quit_codex(session)
    finally:
        session.close()
    profile = tmp_path / "codexgate-home" / "profile.json"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    assert json.loads(profile.read_text())["key"] == ALICE_KEY
    # The next run asks nothing.
    again = TmuxSession(command, env, workdir)
    try:
        screen = again.wait_for("? for shortcuts")
        assert "Virtual key" not in again.scrollback() and "Sign in with ChatGPT" not in screen
    finally:
        again.close()
