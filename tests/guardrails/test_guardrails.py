"""Guardrails: every detector on positives and near misses, what `scan` walks (and what it must
not), redaction, settings validation, speed on the real Codex body, and the addon's actions."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest
from guardrail_support import (
    ANTHROPIC_KEY,
    AWS_KEY_ID,
    AWS_SECRET,
    AWS_TEMP_KEY_ID,
    GITHUB_OAUTH,
    GITHUB_PAT_CLASSIC,
    GITHUB_PAT_FINE,
    GOOGLE_KEY,
    JWT,
    OPENAI_KEY,
    OPENAI_LEGACY_KEY,
    PEM_BODY,
    PRIVATE_KEY,
    RSA_PRIVATE_KEY,
    SLACK_BOT_TOKEN,
    SLACK_WEBHOOK,
    codex_body,
    compiled_policy,
    governed_flow,
    with_tool_output,
)
from mitmproxy import http
from mitmproxy.test import taddons
from pydantic import ValidationError

from codexgate.addons.guardrails import HEADER, Guardrails
from codexgate.detectors import (
    BUILTIN_DETECTORS,
    CustomRule,
    Finding,
    GuardrailSettings,
    ScanCache,
    action_for,
    builtin_detectors,
    card_number_ok,
    luhn_ok,
    redact,
    redact_text,
    scan,
    scan_text,
    texts,
)
from codexgate.flowstate import state_of

DETECTORS = builtin_detectors()


def rules_in(text: str) -> list[tuple[str, str]]:
    """(rule, matched text) of every detection in `text`."""
    return [(rule, text[start:end]) for rule, start, end in scan_text(text, DETECTORS)]


# ---------------------------------------------------------------- detectors

POSITIVES = [
    ("aws_access_key_id", f"export AWS_ACCESS_KEY_ID={AWS_KEY_ID}", AWS_KEY_ID),
    ("aws_access_key_id", f'"AccessKeyId": "{AWS_TEMP_KEY_ID}",', AWS_TEMP_KEY_ID),
    ("aws_secret_access_key", f"aws_secret_access_key = {AWS_SECRET}\n", AWS_SECRET),
    ("aws_secret_access_key", f'AWS_SECRET_ACCESS_KEY: "{AWS_SECRET}"', AWS_SECRET),
    ("aws_secret_access_key", f'{{"cmd": "export AWS_SECRET_ACCESS_KEY=\\"{AWS_SECRET}\\""}}', AWS_SECRET),
    ("github_token", f"token: {GITHUB_PAT_CLASSIC}", GITHUB_PAT_CLASSIC),
    ("github_token", f"GH_TOKEN={GITHUB_OAUTH}", GITHUB_OAUTH),
    ("github_token", f"Authorization: Bearer {GITHUB_PAT_FINE}", GITHUB_PAT_FINE),
    ("openai_api_key", f"OPENAI_API_KEY={OPENAI_KEY}", OPENAI_KEY),
    ("openai_api_key", f"key = '{OPENAI_LEGACY_KEY}'", OPENAI_LEGACY_KEY),
    ("anthropic_api_key", f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}", ANTHROPIC_KEY),
    ("google_api_key", f"https://maps.googleapis.com/maps/api/js?key={GOOGLE_KEY}&v=3", GOOGLE_KEY),
    ("slack_token", f"SLACK_BOT_TOKEN={SLACK_BOT_TOKEN}", SLACK_BOT_TOKEN),
    ("slack_token", f"curl -X POST {SLACK_WEBHOOK} -d @msg.json", SLACK_WEBHOOK[len("https://") :]),
    ("private_key", f"$ cat id_rsa\n{PRIVATE_KEY}\n$ ", PRIVATE_KEY),
    ("private_key", f"key.pem:\n{RSA_PRIVATE_KEY}", RSA_PRIVATE_KEY),
    ("url_password", "DATABASE_URL=postgres://app:s3cr3t-Pa55@db.internal:5432/prod", "s3cr3t-Pa55"),
    ("jwt", f"Cookie: session={JWT}; Path=/", JWT),
    ("email", "Contact jane.doe+codex@example.co.uk for access.", "jane.doe+codex@example.co.uk"),
    ("email", "GET https://example.com/users/jane@example.com/profile", "jane@example.com"),
    (
        "email",
        "curl 'https://api.example.com/v1/lookup?email=bob.smith@corp.example.org'",
        "bob.smith@corp.example.org",
    ),
    ("phone_number", "call +1 415 555 2671 today", "+1 415 555 2671"),
    ("phone_number", "tel: +14155552671", "+14155552671"),
    ("phone_number", "Phone: (415) 555-2671.", "(415) 555-2671"),
    ("phone_number", "fax 415-555-2671", "415-555-2671"),
    ("phone_number", "office 415.555.2671", "415.555.2671"),
    ("phone_number", "+44 20 7946 0958 (London)", "+44 20 7946 0958"),
    ("phone_number", "UK: 020 7946 0958", "020 7946 0958"),
    ("phone_number", "portable : 06 12 34 56 78", "06 12 34 56 78"),
    ("phone_number", "Telefon +49 (30) 1234-5678", "+49 (30) 1234-5678"),
    ("credit_card", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("credit_card", "card=4111-1111-1111-1111", "4111-1111-1111-1111"),
    ("credit_card", '{"pan": "5555555555554444"}', "5555555555554444"),
    ("credit_card", "amex 3782 822463 10005", "3782 822463 10005"),
]


@pytest.mark.parametrize(
    ("rule", "text", "secret"), POSITIVES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(POSITIVES)]
)
def test_detector_fires_on_its_positive_example(rule: str, text: str, secret: str) -> None:
    assert rules_in(text) == [(rule, secret)]


NEAR_MISSES = [
    # AWS: documentation example, inside a longer identifier, too short, lowercase, unique ids
    "AccessKeyId: AKIAIOSFODNN7EXAMPLE",
    f"X{AWS_KEY_ID}",
    AWS_KEY_ID[:-1],
    AWS_KEY_ID.lower(),
    "RoleId: AROA" + "Z3MHQW7TESTKEY42",
    # a bare 40-character base64 string, and the context with a value of the wrong length
    f"checksum {AWS_SECRET}",
    f"aws_secret_access_key = {AWS_SECRET[:-2]}",
    # GitHub: too short, glued to a word
    "ghp_" + "shortToken123",
    "xghp_" + "A1b2C3d4" * 4 + "E5f6",
    # sk-: words, no digit; inside a word
    "pip install sk-learn-compatible-estimator-wrapper",
    "task-0123456789abcdefghij0123",
    # Google: one character short
    GOOGLE_KEY[:-1] + " ",
    # Slack: too short
    "xoxb-12345",
    # private keys: markers only, placeholders
    '_PKCS8_MARKER = ("-----BEGIN ' + 'PRIVATE KEY-----", "-----END ' + 'PRIVATE KEY-----")',
    '"private_key": "-----BEGIN ' + "EC PRIVATE KEY-----\\n<key bytes>\\n-----END " + 'EC PRIVATE KEY-----\\n"',
    "-----BEGIN " + "PUBLIC KEY-----\n" + PEM_BODY + "\n-----END " + "PUBLIC KEY-----",
    # URL credentials that are placeholders, and a user without a password
    "redis://[[username]:[password]]@localhost:6379/0",
    "postgres://user:${DB_PASSWORD}@db/prod",
    "https://REDACTED:REDACTED@www.example.com/",
    "https://token@github.com/org/repo.git",
    # JWT: a header alone
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    # email-like strings that are not addresses (decided: URL credentials and scp-style git
    # remotes are not; addresses in URL paths and queries are, see POSITIVES)
    "git clone git@github.com:openai/codex.git",
    "ssh://git@github.com/openai/codex",
    "npm i -g @openai/codex@0.169.0",
    "background: url(icon@2x.png)",
    "@pytest.fixture\ndef user(): ...",
    "user@localhost",
    # phone-like: dates, times, versions, IPs, bare digit runs, hex dumps, ids
    "released 2024-01-15 at 10:30:45",
    "Windows 10.0.19045.3803",
    "listening on 192.168.100.200:8080",
    "order id 4155552671",
    "7f 45 4c 46 02 01 01 00  00 00 00 00 00 00 00 00",
    "00000010  02 00 3e 00 01 00 00 00  c5 48 40 00",
    "Chunk ID: e174f4\nWall time: 0.0000 seconds\nProcess exited with code 0",
    "uuid 0192f6a1-3b2c-7d4e-8f90-123456789abc",
    # card-like: Luhn failure with a valid issuer, epoch milliseconds, one digit repeated,
    # mixed separators, too few digits, inside a longer number
    "card 4111 1111 1111 1112",
    "4111111111111112",
    "created_at 1717171717171",
    "0000 0000 0000 0000",
    "4111 1111-1111 1111",
    "411111111111",
    "ref 94111111111111111111",
    "sha 4111111111111111abcdef",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_detectors_stay_quiet_on_near_misses(text: str) -> None:
    assert rules_in(text) == []


def test_luhn_and_issuer_checks() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert luhn_ok("79927398713")
    assert card_number_ok("4111 1111 1111 1111")
    assert not card_number_ok("1234567812345670")  # passes Luhn, no card network starts with 12
    assert luhn_ok("1234567812345670")


def test_overlapping_detections_are_reported_once() -> None:
    # A card number is not also a phone number; a key used as a URL password is one finding, of
    # the detector listed first.
    assert rules_in("4111 1111 1111 1111") == [("credit_card", "4111 1111 1111 1111")]
    text = f"https://x:{OPENAI_KEY}@api.example.com"
    assert rules_in(text) == [("openai_api_key", OPENAI_KEY)]


def test_every_builtin_has_a_positive_example() -> None:
    assert {rule for rule, _, _ in POSITIVES} == set(BUILTIN_DETECTORS)


# ---------------------------------------------------------------- what scan walks


def test_real_codex_body_has_no_findings() -> None:
    assert scan(codex_body(), DETECTORS) == []


def test_planted_aws_key_in_tool_output_is_found_at_its_path() -> None:
    output = f"Chunk ID: e174f4\nOutput:\n[default]\naws_access_key_id = {AWS_KEY_ID}\n"
    body = with_tool_output(codex_body(), output)
    findings = scan(body, DETECTORS)
    start = output.index(AWS_KEY_ID)
    assert findings == [Finding("aws_access_key_id", ("input", 5, "output"), start, start + len(AWS_KEY_ID))]
    assert findings[0].location == "input[5].output"
    assert AWS_KEY_ID not in repr(findings) and AWS_KEY_ID not in findings[0].describe()


def test_scan_walks_every_user_controlled_field() -> None:
    body: dict[str, Any] = {
        "model": "gpt-5.5",
        "instructions": f"deploy with {GITHUB_PAT_CLASSIC}",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"key {OPENAI_KEY}"}]},
            {"role": "user", "content": "mail jane@example.com"},
            {"type": "function_call", "name": "exec", "arguments": json.dumps({"cmd": f"echo {AWS_KEY_ID}"})},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": JWT}]},
            {"type": "custom_tool_call", "name": "apply_patch", "input": f"+TOKEN={SLACK_BOT_TOKEN}\n"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": f"{GOOGLE_KEY} "},
        ],
    }
    assert [f.location for f in scan(body, DETECTORS)] == [
        "instructions",
        "input[0].content[0].text",
        "input[1].content",
        "input[2].arguments",
        "input[3].output[0].text",
        "input[4].input",
        "input[5].output",
    ]


def test_scan_skips_tools_model_metadata_and_reasoning() -> None:
    body = codex_body()
    body["tools"][0]["description"] += f" example key {AWS_KEY_ID}"
    body["tools"].append({"type": "function", "name": "x", "parameters": {"default": OPENAI_KEY}})
    body["client_metadata"] = {"owner": "jane@example.com", "token": GITHUB_PAT_CLASSIC}
    body["prompt_cache_key"] = AWS_KEY_ID
    body["model"] = "jane@example.com"
    body["input"].append({"type": "reasoning", "encrypted_content": OPENAI_KEY, "summary": []})
    body["input"].append({"type": "additional_tools", "tools": [{"description": AWS_KEY_ID}]})
    body["input"][4]["call_id"] = AWS_KEY_ID
    assert scan(body, DETECTORS) == []


def test_scan_chat_completions_and_string_input() -> None:
    chat = {
        "model": "gpt-5.5",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "my card 4111 1111 1111 1111"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": f'{{"k": "{ANTHROPIC_KEY}"}}'}}],
            },
            {"role": "tool", "tool_call_id": "t", "content": f"found {AWS_KEY_ID}"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": AWS_KEY_ID}}],
        "metadata": {"user": "jane@example.com"},
    }
    assert [(f.rule, f.location) for f in scan(chat, DETECTORS)] == [
        ("credit_card", "messages[1].content[0].text"),
        ("anthropic_api_key", "messages[2].tool_calls[0].function.arguments"),
        ("aws_access_key_id", "messages[3].content"),
    ]
    assert [(f.rule, f.location) for f in scan({"input": f"hi {OPENAI_KEY}"}, DETECTORS)] == [
        ("openai_api_key", "input")
    ]


def test_scan_is_fast_on_the_real_codex_body() -> None:
    body = codex_body()
    detectors = GuardrailSettings().detectors_compiled()
    assert sum(len(text) for _, text in texts(body)) > 25_000
    rounds = 20
    cold = scan(body, detectors)
    cache = ScanCache()
    bodies = [codex_body() for _ in range(rounds)]  # fresh strings each turn, as Codex re-sends them
    for each in bodies:
        assert scan(each, detectors, cache) == cold  # the cache changes nothing but the work
    # Every text of a re-sent conversation after the first is answered from the cache.
    assert cache.hits >= rounds - 1


# ---------------------------------------------------------------- redaction


def test_redact_replaces_only_the_secret_and_leaves_the_body_alone() -> None:
    output = f"aws_access_key_id = {AWS_KEY_ID}\nregion = eu-west-1\n"
    body = with_tool_output(codex_body(), output)
    original = copy.deepcopy(body)
    redacted = redact(body, scan(body, DETECTORS))
    assert body == original
    assert redacted["input"][5]["output"] == "aws_access_key_id = [REDACTED:aws_access_key_id]\nregion = eu-west-1\n"
    assert redacted["input"][:5] == body["input"][:5] and redacted["input"][6:] == body["input"][6:]
    assert {k: v for k, v in redacted.items() if k != "input"} == {k: v for k, v in body.items() if k != "input"}
    assert redacted["tools"] is body["tools"]  # untouched parts are shared, not copied
    assert redacted["input"][0] is body["input"][0]


def test_redact_several_findings_in_one_string_and_nested_parts() -> None:
    text = f"a {OPENAI_KEY} b jane@example.com c {AWS_KEY_ID}"
    body: dict[str, Any] = {
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
        "instructions": JWT,
    }
    redacted = redact(body, scan(body, DETECTORS))
    assert redacted["input"][0]["content"][0]["text"] == (
        "a [REDACTED:openai_api_key] b [REDACTED:email] c [REDACTED:aws_access_key_id]"
    )
    assert redacted["instructions"] == "[REDACTED:jwt]"
    assert body["input"][0]["content"][0]["text"] == text


def test_redacted_function_call_arguments_stay_valid_json() -> None:
    arguments = json.dumps({"cmd": f"printf '{PRIVATE_KEY}' > key.pem && export AWS_SECRET_ACCESS_KEY={AWS_SECRET}"})
    body = {"input": [{"type": "function_call", "name": "exec", "arguments": arguments}]}
    findings = scan(body, DETECTORS)
    assert [f.rule for f in findings] == ["private_key", "aws_secret_access_key"]
    cmd = json.loads(redact(body, findings)["input"][0]["arguments"])["cmd"]
    assert (
        cmd
        == "printf '[REDACTED:private_key]' > key.pem && export AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_access_key]"
    )


def test_unterminated_private_key_is_redacted_to_the_end_of_its_base64() -> None:
    text = "$ head -5 id_rsa\n-----BEGIN " + "OPENSSH PRIVATE KEY-----\n" + PEM_BODY + "\n$ ls"
    assert redact_text(text, DETECTORS) == "$ head -5 id_rsa\n[REDACTED:private_key]\n$ ls"


def test_redact_text_for_audit_content() -> None:
    text = f"deploy with {GITHUB_PAT_CLASSIC} and call (415) 555-2671"
    assert redact_text(text, DETECTORS) == "deploy with [REDACTED:github_token] and call [REDACTED:phone_number]"
    assert redact_text("nothing here", DETECTORS) == "nothing here"


# ---------------------------------------------------------------- settings


def test_settings_defaults_and_action_for() -> None:
    settings = GuardrailSettings(action="redact", team_actions={"research": "block"})
    assert settings.detectors == list(BUILTIN_DETECTORS)
    assert action_for(settings, "research") == "block"
    assert action_for(settings, "platform") == "redact"
    assert action_for(settings, None) == "redact"
    assert GuardrailSettings().action == "log" and not GuardrailSettings().audit_content


def test_detectors_are_compiled_once_per_settings_object() -> None:
    settings = GuardrailSettings(detectors=["email"], custom=[CustomRule(name="ticket", pattern=r"TICKET-\d+")])
    first = settings.detectors_compiled()
    assert first is settings.detectors_compiled()
    assert [d.name for d in first] == ["email", "ticket"]
    assert GuardrailSettings(detectors=["email"]).detectors_compiled() is not first


def test_custom_rule_pattern_must_compile_and_the_error_names_the_rule() -> None:
    with pytest.raises(ValidationError, match="custom rule 'internal-host': pattern does not compile"):
        GuardrailSettings.model_validate({"custom": [{"name": "internal-host", "pattern": "([a-z]+"}]})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"detectors": ["email", "ssn"]}, "unknown detector"),
        ({"detectors": ["email", "email"]}, "listed twice"),
        ({"custom": [{"name": "email", "pattern": "x"}]}, "name is taken"),
        ({"custom": [{"name": "a", "pattern": "x"}, {"name": "a", "pattern": "y"}]}, "name is taken"),
        ({"custom": [{"name": "has space", "pattern": "x"}]}, "should match pattern"),
        ({"action": "drop"}, "Input should be"),
        ({"team_actions": {"research": "warn"}}, "Input should be"),
        ({"detector": ["email"]}, "Extra inputs are not permitted"),
    ],
)
def test_settings_reject_mistakes(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GuardrailSettings.model_validate(data)


def test_settings_are_frozen() -> None:
    settings = GuardrailSettings()
    with pytest.raises(ValidationError):
        settings.action = "block"  # type: ignore[misc]


def test_custom_rule_is_scanned_with_its_name() -> None:
    settings = GuardrailSettings(
        detectors=[], custom=[CustomRule(name="codename", pattern=r"\bPROJECT-(?:FALCON|OWL)\b")]
    )
    body = {"input": "status of PROJECT-FALCON?"}
    assert [(f.rule, f.start, f.end) for f in scan(body, settings.detectors_compiled())] == [("codename", 10, 24)]


# ---------------------------------------------------------------- the addon


@pytest.fixture(autouse=True)
def mitmproxy_context() -> Iterator[taddons.context]:
    """One mitmproxy test context per test: its log handler (installed for the rest of the test)
    posts to the context's own loop, which must stay open while hooks run in `asyncio.run`."""
    with taddons.context() as tctx:
        yield tctx


def text_of(message: http.Message) -> str:
    return message.get_text() or ""


def run(addon: Guardrails, flow: http.HTTPFlow) -> None:
    """The (async) request hook, as mitmproxy awaits it."""
    asyncio.run(addon.request(flow))


def leaked_body() -> dict[str, Any]:
    return with_tool_output(
        codex_body(), f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
    )


def test_block_answers_400_naming_rules_and_locations_and_forwards_nothing(caplog: pytest.LogCaptureFixture) -> None:
    flow, state = governed_flow(leaked_body())
    caplog.set_level(logging.DEBUG)
    run(Guardrails(settings_override=GuardrailSettings(action="block")), flow)
    assert flow.response is not None and flow.response.status_code == 400
    error = json.loads(text_of(flow.response))["error"]
    assert error["code"] == "guardrail_blocked" and error["type"] == "invalid_request_error"
    assert "aws_access_key_id at input[5].output" in error["message"]
    assert "aws_secret_access_key at input[5].output" in error["message"]
    assert flow.response.headers[HEADER] == "blocked=aws_access_key_id,aws_secret_access_key"
    assert state.decision == "guardrail_blocked" and state.answered_locally
    assert state_of(flow).guardrail_findings == ["aws_access_key_id", "aws_secret_access_key"]
    assert state_of(flow).guardrail_action == "block"
    for secret in (AWS_KEY_ID, AWS_SECRET):
        assert secret not in text_of(flow.response) and secret not in caplog.text
    assert "guardrail blocked" in caplog.text


def test_redact_rewrites_the_forwarded_body_and_marks_the_response() -> None:
    flow, state = governed_flow(leaked_body())
    addon = Guardrails(settings_override=GuardrailSettings(action="redact"))
    run(addon, flow)
    assert flow.response is None
    forwarded = text_of(flow.request)
    assert AWS_KEY_ID not in forwarded and AWS_SECRET not in forwarded
    assert json.loads(forwarded) == state.body
    assert state.body is not None
    assert state.body["input"][5]["output"] == (
        "[default]\naws_access_key_id = [REDACTED:aws_access_key_id]\n"
        "aws_secret_access_key = [REDACTED:aws_secret_access_key]\n"
    )
    assert state.body["input"][:5] == codex_body()["input"][:5]
    assert state_of(flow).guardrail_findings == ["aws_access_key_id", "aws_secret_access_key"]
    assert state_of(flow).guardrail_action == "redact"
    flow.response = http.Response.make(200, b"data: {}\n\n", {"content-type": "text/event-stream"})
    addon.responseheaders(flow)
    assert flow.response.headers[HEADER] == "redacted=aws_access_key_id,aws_secret_access_key"


def test_redact_header_is_set_on_answers_made_inside_the_gateway() -> None:
    flow, _ = governed_flow(leaked_body())
    addon = Guardrails(settings_override=GuardrailSettings(action="redact"))
    run(addon, flow)
    flow.response = http.Response.make(200, b"{}", {"content-type": "application/json"})  # mock provider
    addon.response(flow)
    assert flow.response.headers[HEADER].startswith("redacted=")


def test_log_passes_unchanged_with_a_line_naming_rule_and_location(caplog: pytest.LogCaptureFixture) -> None:
    body = leaked_body()
    flow, state = governed_flow(body)
    content = flow.request.content
    caplog.set_level(logging.DEBUG)
    run(Guardrails(settings_override=GuardrailSettings()), flow)
    assert flow.response is None
    assert flow.request.content == content and state.body == body
    assert state_of(flow).guardrail_findings == ["aws_access_key_id", "aws_secret_access_key"]
    assert state_of(flow).guardrail_action == "log"
    lines = [r.getMessage() for r in caplog.records if r.name == "codexgate.addons.guardrails"]
    assert len(lines) == 2
    assert "aws_access_key_id at input[5].output" in lines[0] and "team platform" in lines[0]
    assert AWS_KEY_ID not in caplog.text and AWS_SECRET not in caplog.text


def test_clean_request_passes_untouched() -> None:
    flow, state = governed_flow(codex_body())
    content = flow.request.content
    run(Guardrails(settings_override=GuardrailSettings(action="block")), flow)
    assert flow.response is None and flow.request.content == content
    assert not state_of(flow).guardrail_findings and state.decision == "pending"


def test_team_action_and_rule_action() -> None:
    settings = GuardrailSettings(
        action="log",
        team_actions={"research": "block"},
        custom=[CustomRule(name="codename", pattern="PROJECT-FALCON", action="redact")],
    )
    flow, _ = governed_flow(with_tool_output(codex_body(), f"{AWS_KEY_ID}"), key="rita")
    run(Guardrails(settings_override=settings), flow)
    assert flow.response is not None and flow.response.status_code == 400  # research blocks

    flow, state = governed_flow(with_tool_output(codex_body(), f"{AWS_KEY_ID} PROJECT-FALCON"), key="alice")
    run(Guardrails(settings_override=settings), flow)
    assert flow.response is None  # platform logs; the custom rule redacts its own finding
    assert state.body is not None and state.body["input"][5]["output"] == f"{AWS_KEY_ID} [REDACTED:codename]"
    assert state_of(flow).guardrail_findings == ["aws_access_key_id", "codename"]
    assert state_of(flow).guardrail_action == "redact"


def test_chat_completions_request_is_redacted() -> None:
    body = {"model": "mock-model", "messages": [{"role": "user", "content": f"my key is {OPENAI_KEY}"}]}
    flow, _ = governed_flow(body, endpoint="chat")
    run(Guardrails(settings_override=GuardrailSettings(action="redact")), flow)
    assert json.loads(text_of(flow.request))["messages"][0]["content"] == "my key is [REDACTED:openai_api_key]"


def test_settings_come_from_the_policy_when_it_has_a_guardrails_section() -> None:
    compiled = compiled_policy()
    # Until the policy schema has `guardrails`, a policy without it means: do nothing.
    source = types.SimpleNamespace(current=lambda: compiled)
    flow, _ = governed_flow(leaked_body(), policy=compiled)
    run(Guardrails(source), flow)  # type: ignore[arg-type]
    assert flow.response is None and not state_of(flow).guardrail_findings
    # With the section (stubbed here), its settings apply.
    with_section = types.SimpleNamespace(policy=types.SimpleNamespace(guardrails=GuardrailSettings(action="block")))
    source = types.SimpleNamespace(current=lambda: with_section)
    flow, state = governed_flow(leaked_body(), policy=compiled)
    state.policy = with_section  # type: ignore[assignment]
    run(Guardrails(source), flow)  # type: ignore[arg-type]
    assert flow.response is not None and flow.response.status_code == 400
    # A request keeps the policy it was admitted under, even if a reload happened meanwhile.
    source = types.SimpleNamespace(current=lambda: compiled)
    flow, state = governed_flow(leaked_body(), policy=compiled)
    state.policy = with_section  # type: ignore[assignment]
    run(Guardrails(source), flow)  # type: ignore[arg-type]
    assert flow.response is not None and flow.response.status_code == 400
    flow, _ = governed_flow(leaked_body(), policy=compiled)
    run(Guardrails(types.SimpleNamespace(current=lambda: with_section)), flow)  # type: ignore[arg-type]
    assert flow.response is None


def test_flows_that_are_answered_ungoverned_or_without_body_are_skipped() -> None:
    addon = Guardrails(settings_override=GuardrailSettings(action="block"))
    flow, _ = governed_flow(leaked_body())
    flow.response = http.Response.make(401, b"{}")
    run(addon, flow)
    assert flow.response.status_code == 401
    flow, state = governed_flow(leaked_body())
    state.body = None
    run(addon, flow)
    assert flow.response is None
    flow, state = governed_flow(leaked_body())
    flow.metadata.clear()  # not governed (proxy traffic to another host)
    run(addon, flow)
    assert flow.response is None


class Codewords:
    """A registered sync detector (e.g. a local dictionary)."""

    name = "codeword"

    def scan(self, text: str) -> list[tuple[int, int]]:
        at = text.find("bluebird")
        return [] if at < 0 else [(at, at + len("bluebird"))]


class RemoteDlp:
    """An async detector, as an external DLP service would be."""

    name = "remote_dlp"

    def __init__(self) -> None:
        self.calls = 0

    async def scan(self, text: str) -> list[tuple[int, int]]:
        self.calls += 1
        await asyncio.sleep(0)
        at = text.find("Ada Lovelace")
        return [] if at < 0 else [(at, at + len("Ada Lovelace"))]


def test_registered_detectors_sync_and_async() -> None:
    dlp = RemoteDlp()
    addon = Guardrails(settings_override=GuardrailSettings(action="redact"), detectors=[Codewords()])
    addon.register(dlp)
    flow, state = governed_flow(with_tool_output(codex_body(), "bluebird says hi to Ada Lovelace"))
    run(addon, flow)
    assert state.body is not None
    assert state.body["input"][5]["output"] == "[REDACTED:codeword] says hi to [REDACTED:remote_dlp]"
    assert state_of(flow).guardrail_findings == ["codeword", "remote_dlp"]
    assert dlp.calls == len(list(texts(codex_body())))
    with pytest.raises(TypeError):
        addon.register(object())  # type: ignore[arg-type]


def test_a_failing_detector_fails_closed() -> None:
    class Broken:
        name = "broken"

        def scan(self, text: str) -> list[tuple[int, int]]:
            raise ConnectionError("DLP service down")

    flow, state = governed_flow(codex_body())
    run(Guardrails(settings_override=GuardrailSettings(), detectors=[Broken()]), flow)
    assert flow.response is not None and flow.response.status_code == 500
    assert state_of(flow) is state and state.decision == "internal_error"


def test_cache_is_reused_across_turns_and_dropped_with_new_settings() -> None:
    settings = GuardrailSettings(action="redact")
    addon = Guardrails(settings_override=settings)
    for _ in range(2):
        flow, state = governed_flow(leaked_body())
        run(addon, flow)
        assert state.body is not None and AWS_KEY_ID not in json.dumps(state.body)
    assert addon._cache.hits > 0
    addon._override = GuardrailSettings(action="redact", detectors=["email"])
    flow, state = governed_flow(leaked_body())
    run(addon, flow)
    assert not state_of(flow).guardrail_findings  # the old results were not reused
