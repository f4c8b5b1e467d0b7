"""The real Codex CLI through the gateway to providers that do not speak the Responses API.

Each fake provider validates every request against its official SDK types (and the rules its
real API enforces), so a turn that completes means: the translated request was one the provider
accepts, the translated stream was one Codex accepts, and the tool round trip went through.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import anthropic_upstream as anthropic_fake
from fakes import bedrock_upstream as bedrock_fake
from fakes import chat_upstream as chat_fake
from fakes import gemini_upstream as gemini_fake
from fakes import vertex_upstream as vertex_fake
from fakes.codex_cli import run_codex
from fakes.gateway import ALICE_KEY, Gateway
from fakes.openai_upstream import FakeOpenAI

from codexgate.policies.keys import hash_key

pytestmark = pytest.mark.e2e

CHAT_KEY = "sk-chat-upstream-e2e"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    tokens = vertex_fake.FakeTokenEndpoint().start()
    started = {
        "chat": chat_fake.FakeChatHost(expect_headers={"authorization": f"Bearer {CHAT_KEY}"}).start(),
        "gemini": gemini_fake.FakeGemini().start(),
        "vertex_tokens": tokens,
        "vertex": vertex_fake.FakeVertex(tokens).start(),
        "bedrock": bedrock_fake.FakeBedrock().start(),
        "anthropic": anthropic_fake.FakeAnthropic().start(),
        "flaky": FakeOpenAI().start(),
    }
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(scope="module")
def provider_gateway(tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, Any]) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("providers")
    policy = root / "policy.yaml"
    price = "price: {input_per_mtok: 1, output_per_mtok: 2}"
    policy.write_text(
        f"""\
providers:
  groqish: {{kind: chat, preset: generic, base_url: "{fakes["chat"].url}", keys: [{{value: env:CG_CHAT_KEY}}]}}
  gem: {{kind: gemini, base_url: "{fakes["gemini"].url}", keys: [{{value: env:CG_GEMINI_KEY}}]}}
  vx:
    kind: vertex
    project: {vertex_fake.PROJECT}
    location: {vertex_fake.LOCATION}
    base_url: "{fakes["vertex"].url}"
    credentials: {{value: env:CG_VERTEX_KEY}}
  br:
    kind: bedrock
    region: {bedrock_fake.REGION}
    base_url: "{fakes["bedrock"].url}"
    access_key_id: {{value: env:CG_AWS_AK}}
    secret_access_key: {{value: env:CG_AWS_SK}}
  claude: {{kind: anthropic, base_url: "{fakes["anthropic"].url}", keys: [{{value: env:CG_ANTHROPIC_KEY}}]}}
  flaky: {{kind: openai, base_url: "{fakes["flaky"].url}", keys: [{{value: env:CG_TEST_UPSTREAM_KEY}}]}}
models:
  claude-sonnet-4-5: {{routes: [{{provider: claude}}]}}
  ha-model: {{routes: [{{provider: flaky}}], fallbacks: [claude-sonnet-4-5], {price}}}
  flaky-only: {{routes: [{{provider: flaky}}], {price}}}
  chat-model: {{routes: [{{provider: groqish, model: upstream-model}}], {price}}}
  gemini-2.5-flash: {{routes: [{{provider: gem}}]}}
  vertex-gemini: {{routes: [{{provider: vx, model: gemini-2.5-flash}}]}}
  bedrock-claude: {{routes: [{{provider: br, model: "anthropic.claude-sonnet-4-5-20250929-v1:0"}}]}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
"""
    )
    env = {
        "CG_CHAT_KEY": CHAT_KEY,
        "CG_GEMINI_KEY": gemini_fake.API_KEY,
        "CG_AWS_AK": bedrock_fake.ACCESS_KEY,
        "CG_AWS_SK": bedrock_fake.SECRET_KEY,
        "CG_ANTHROPIC_KEY": anthropic_fake.API_KEY,
        "CG_VERTEX_KEY": fakes["vertex_tokens"].key().json,
    }
    gateway = Gateway(policy, root / "data", extra_env=env).start()
    yield gateway
    gateway.stop()


def script_chat(fake: Any, marker: str, final: str) -> None:
    arguments = json.dumps({"cmd": f"echo {marker}"})
    fake.script(
        chat_fake.Reply(
            chunks=[
                chat_fake.chunk({"role": "assistant", "content": ""}),
                *chat_fake.tool_call_chunks("call_e2e_1", "exec_command", arguments),
                chat_fake.chunk({}, "tool_calls"),
                chat_fake.chunk(empty_choices=True, usage=chat_fake.usage(900, 20)),
            ]
        ),
        chat_fake.Reply(chunks=chat_fake.text_chunks(final, final_usage=chat_fake.usage(950, 12))),
    )


def script_gemini(fake: Any, marker: str, final: str) -> None:
    model = "gemini-2.5-flash"
    fake.script(
        gemini_fake.Reply(
            chunks=[
                gemini_fake.chunk(
                    [gemini_fake.call_part("exec_command", {"cmd": f"echo {marker}"},
                                           signature=gemini_fake.sign(model, "fc", "exec_command"))],
                    finish="STOP",
                    usage=gemini_fake.usage_metadata(900, 20),
                )
            ]
        ),
        gemini_fake.Reply(
            chunks=[
                gemini_fake.chunk([gemini_fake.text_part(final[:10])]),
                gemini_fake.chunk([gemini_fake.text_part(final[10:])], finish="STOP",
                                  usage=gemini_fake.usage_metadata(950, 12)),
            ]
        ),
    )  # fmt: skip


def script_bedrock(fake: Any, marker: str, final: str) -> None:
    fake.script(
        bedrock_fake.Reply(
            events=bedrock_fake.stream_events(
                [bedrock_fake.ToolUse("tooluse_e2e_1", "exec_command", {"cmd": f"echo {marker}"})], "tool_use"
            )
        ),
        bedrock_fake.Reply(events=bedrock_fake.stream_events([bedrock_fake.Text(final)], "end_turn")),
    )


def script_anthropic(fake: Any, marker: str, final: str) -> None:
    fake.replies.extend(
        [
            anthropic_fake.Reply(
                content=[{"type": "tool_use", "name": "exec_command", "input": {"cmd": f"echo {marker}"}}],
                stop_reason="tool_use",
            ),
            anthropic_fake.Reply(content=[{"type": "text", "text": final}]),
        ]
    )


CASES: dict[str, tuple[str, Callable[[Any, str, str], None]]] = {
    "anthropic": ("claude-sonnet-4-5", script_anthropic),
    "chat": ("chat-model", script_chat),
    "gemini": ("gemini-2.5-flash", script_gemini),
    "vertex": ("vertex-gemini", script_gemini),  # Gemini's wire format on Vertex AI, OAuth2 bearer auth
    "bedrock": ("bedrock-claude", script_bedrock),
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_codex_tool_round_trip_through_provider(
    family: str, fakes: dict[str, Any], provider_gateway: Gateway, tmp_path: Path
) -> None:
    model, script = CASES[family]
    fake = fakes[family]
    marker = f"{family}-{uuid.uuid4().hex[:8]}"
    final = f"All done via {family}: the command printed {marker}."
    before = len(fake.received)
    script(fake, marker, final)
    result = run_codex(provider_gateway, "base-url", f"please run `echo {marker}`", tmp_path, model=model)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert final in result.stdout, output
    assert not fake.invalid, fake.invalid
    received = fake.received[before:]
    assert len(received) == 2  # the turn asking for the tool, the turn carrying its output
    # The second request carried the command's real output back to the provider.
    assert marker in json.dumps([vars(r) for r in received[1:]], default=str)
    records = [r for r in provider_gateway.accounting() if r["model_requested"] == model][-2:]
    assert [r["status"] for r in records] == [200, 200]
    assert all(r["usage"] and r["usage"]["input_tokens"] > 0 for r in records), records


def test_switching_provider_mid_session(fakes: dict[str, Any], provider_gateway: Gateway, tmp_path: Path) -> None:
    """Like /model: the same session continues on another provider, history replayed to it."""
    marker = f"switch-{uuid.uuid4().hex[:8]}"
    script_gemini(fakes["gemini"], marker, f"Gemini ran it: {marker}.")
    first = run_codex(provider_gateway, "base-url", f"please run `echo {marker}`", tmp_path, model="gemini-2.5-flash")
    assert first.returncode == 0, first.stdout + first.stderr
    before = len(fakes["chat"].received)
    fakes["chat"].script(chat_fake.Reply(chunks=chat_fake.text_chunks("The chat host continues the session.")))
    second = run_codex(
        provider_gateway, "base-url", "what did the command print?", tmp_path, model="chat-model", resume=True
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "The chat host continues the session." in second.stdout
    assert not fakes["chat"].invalid, fakes["chat"].invalid
    replayed = json.dumps(fakes["chat"].received[before].body)
    assert marker in replayed  # the earlier turn's tool output travelled to the new provider
    assert "cg1." not in replayed  # Gemini's reasoning envelope was not sent to another provider


def test_codex_fails_over_to_another_provider_without_an_error(
    fakes: dict[str, Any], provider_gateway: Gateway, tmp_path: Path
) -> None:
    marker = f"failover-{uuid.uuid4().hex[:8]}"
    final = f"Claude took over: {marker}."
    fakes["flaky"].failures.append((503, {}))  # the primary's bad minute
    script_anthropic(fakes["anthropic"], marker, final)
    result = run_codex(provider_gateway, "base-url", f"please run `echo {marker}`", tmp_path, model="ha-model")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert final in result.stdout
    # Nothing shown to the developer: Codex prints its errors as "ERROR: ..." lines.
    assert not [line for line in output.splitlines() if line.startswith("ERROR:")], output
    assert "Reconnecting" not in output
    records = [r for r in provider_gateway.accounting() if r["model_requested"] == "ha-model"][-2:]
    assert [r["provider"] for r in records] == ["claude", "claude"]
    assert records[0]["attempts"][0]["outcome"] == "overloaded"


def test_codex_waits_out_a_429_when_no_fallback_is_left(
    fakes: dict[str, Any], provider_gateway: Gateway, tmp_path: Path
) -> None:
    flaky = fakes["flaky"]
    flaky.failures.append((429, {"retry-after": "1"}))
    before = len(flaky.received)
    result = run_codex(provider_gateway, "base-url", "say hello", tmp_path, model="flaky-only")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mock-model reply: say hello" in result.stdout  # the fake's answer, after Codex's retry
    assert len(flaky.received) - before == 2  # the 429, then Codex's own retry after Retry-After


def script_blank_then_call(family: str, fake: Any, marker: str, final: str) -> None:
    """The model's first answer opens with a whitespace-only text ("\\n\\n") before its tool call,
    as Claude sometimes does; Codex replays what it got, and the provider refuses blank text."""
    arguments = {"cmd": f"echo {marker}"}
    if family == "anthropic":
        fake.replies.extend(
            [
                anthropic_fake.Reply(
                    content=[
                        {"type": "text", "text": "\n\n"},
                        {"type": "tool_use", "name": "exec_command", "input": arguments},
                    ],
                    stop_reason="tool_use",
                ),
                anthropic_fake.Reply(content=[{"type": "text", "text": final}]),
            ]
        )
    elif family in ("gemini", "vertex"):
        model = "gemini-2.5-flash"
        call = gemini_fake.call_part("exec_command", arguments, signature=gemini_fake.sign(model, "fc", "exec_command"))
        fake.script(
            gemini_fake.Reply(
                chunks=[
                    gemini_fake.chunk([gemini_fake.text_part("\n\n")]),
                    gemini_fake.chunk([call], finish="STOP", usage=gemini_fake.usage_metadata(900, 20)),
                ]
            ),
            gemini_fake.Reply(
                chunks=[gemini_fake.chunk([gemini_fake.text_part(final)], "STOP", gemini_fake.usage_metadata(950, 12))]
            ),
        )
    elif family == "bedrock":
        fake.script(
            bedrock_fake.Reply(
                events=bedrock_fake.stream_events(
                    [bedrock_fake.Text("\n\n"), bedrock_fake.ToolUse("tooluse_e2e_2", "exec_command", arguments)],
                    "tool_use",
                )
            ),
            bedrock_fake.Reply(events=bedrock_fake.stream_events([bedrock_fake.Text(final)], "end_turn")),
        )
    else:
        fake.script(
            chat_fake.Reply(
                chunks=[
                    chat_fake.chunk({"role": "assistant", "content": "\n\n"}),
                    *chat_fake.tool_call_chunks("call_e2e_2", "exec_command", json.dumps(arguments)),
                    chat_fake.chunk({}, "tool_calls"),
                    chat_fake.chunk(empty_choices=True, usage=chat_fake.usage(900, 20)),
                ]
            ),
            chat_fake.Reply(chunks=chat_fake.text_chunks(final, final_usage=chat_fake.usage(950, 12))),
        )


@pytest.mark.parametrize("family", sorted(CASES))
def test_blank_text_before_a_tool_call_does_not_end_the_session(
    family: str, fakes: dict[str, Any], provider_gateway: Gateway, tmp_path: Path
) -> None:
    model, _ = CASES[family]
    fake = fakes[family]
    marker = f"blank-{family}-{uuid.uuid4().hex[:8]}"
    final = f"Done after a blank start via {family}: {marker}."
    before = len(fake.received)
    script_blank_then_call(family, fake, marker, final)
    result = run_codex(provider_gateway, "base-url", f"please run `echo {marker}`", tmp_path, model=model)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert final in result.stdout, output
    assert not fake.invalid, fake.invalid  # the replayed history carried no blank text
    assert len(fake.received[before:]) == 2
