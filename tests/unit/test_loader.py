"""policies/loader.py: errors name file, line and field; `codexgate check` exit codes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from unit_support import policy_yaml

from codexgate.cli import main
from codexgate.policies.loader import PolicyError, load_policy, parse_policy

pytest_plugins = ["unit_support"]

HASH = "sha256:" + "0" * 64
BASE = """\
providers:
  openai:
    kind: openai
    keys:
      - value: env:OPENAI_API_KEY
  local: {kind: mock}
models:
  gpt-5.5:
    routes: [{provider: openai}]
orgs:
  acme: {}
teams:
  platform: {org: acme}
keys:
  - name: alice
    team: platform
    hash: HASH
""".replace("HASH", HASH)


def problems_of(text: str, path: str = "team/policy.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def test_base_policy_is_valid():
    compiled = parse_policy(BASE, "p.yaml")
    assert compiled.policy.keys[0].name == "alice"
    assert compiled.is_governed_host("api.openai.com", 443)
    assert compiled.is_governed_host("API.OpenAI.com.", 443)
    assert compiled.is_governed_host("api.openai.com", 8443)  # intercept_hosts: any port
    assert compiled.should_intercept("chatgpt.com", 443)
    assert not compiled.is_governed_host("chatgpt.com", 443)


def test_unknown_field_names_file_line_field():
    text = BASE + "    modles: [gpt-5*]\n"
    assert problems_of(text) == ["team/policy.yaml:18: keys[0].modles: Extra inputs are not permitted"]


def test_unknown_top_level_section():
    text = BASE.replace("orgs:\n", "budgets: {}\norgs:\n")
    (problem,) = problems_of(text)
    assert problem.startswith("team/policy.yaml:10: budgets: ")


def test_literal_secret_rejected_without_echo():
    secret = "sk-proj-PASTED-REAL-KEY-123456"
    text = BASE.replace("env:OPENAI_API_KEY", secret)
    (problem,) = problems_of(text)
    assert problem.startswith("team/policy.yaml:5: providers.openai.keys[0].value: ")
    assert "env:NAME" in problem
    assert secret not in problem
    assert "PASTED" not in problem


def test_duplicate_key_error_does_not_echo_secret():
    secret = "sk-proj-PASTED-REAL-KEY-123456"
    text = BASE.replace("      - value: env:OPENAI_API_KEY\n", f"      - value: {secret}\n        value: env:X\n")
    (problem,) = problems_of(text)
    assert problem.startswith("team/policy.yaml:6: ")
    assert secret not in problem


def test_unknown_team_and_provider_references():
    text = BASE.replace("team: platform", "team: payments").replace(
        "routes: [{provider: openai}]", "routes:\n      - provider: openai\n      - provider: azure"
    )
    problems = problems_of(text)
    assert "team/policy.yaml:18: keys[0].team: unknown team 'payments'; teams: ['platform']" in problems
    assert (
        "team/policy.yaml:11: models.gpt-5.5.routes[1].provider: "
        "unknown provider 'azure'; providers: ['local', 'openai']" in problems
    )
    assert len(problems) == 2


def test_unknown_org_reference():
    text = BASE.replace("platform: {org: acme}", "platform: {org: globex}")
    assert problems_of(text) == ["team/policy.yaml:13: teams.platform.org: unknown org 'globex'; orgs: ['acme']"]


def test_duplicate_key_names_and_hashes():
    text = BASE + "  - {name: alice, team: platform, hash: HASH}\n".replace("HASH", HASH)
    problems = problems_of(text)
    assert any(p.startswith("team/policy.yaml:18: keys[1].name: duplicate key name 'alice'") for p in problems)
    assert any(p.startswith("team/policy.yaml:18: keys[1].hash: same hash as keys[0]") for p in problems)


def test_alias_clash():
    text = BASE.replace(
        "    routes: [{provider: openai}]\n",
        "    routes: [{provider: openai}]\n  gpt-5.4:\n    routes: [{provider: local}]\n    aliases: [gpt-5.5]\n",
    )
    (problem,) = problems_of(text)
    assert "models.gpt-5.4.aliases[0]" in problem
    assert "'gpt-5.5'" in problem


def test_bad_hash_and_provider_kind():
    text = BASE.replace(HASH, "sk-cg-plaintextkey").replace("local: {kind: mock}", "local: {kind: mok}")
    problems = problems_of(text)
    assert any(p.startswith("team/policy.yaml:17: keys[0].hash: ") for p in problems)
    assert "sk-cg-plaintextkey" not in "\n".join(problems)
    assert any(p.startswith("team/policy.yaml:6: providers.local") for p in problems)


def test_missing_required_section_and_type_errors():
    text = BASE.replace("models:\n  gpt-5.5:\n    routes: [{provider: openai}]\n", "")
    assert problems_of(text) == ["team/policy.yaml:1: models: Field required"]


def test_yaml_syntax_error_line():
    text = BASE.replace("  platform: {org: acme}", "  platform: org: acme")
    (problem,) = problems_of(text)
    assert problem.startswith("team/policy.yaml:13: YAML syntax error: ")


def test_not_a_mapping():
    assert problems_of("- a\n- b\n")[0].startswith("team/policy.yaml:1: ")
    assert problems_of("")[0].startswith("team/policy.yaml:1: ")


def test_load_policy_unreadable(tmp_path):
    with pytest.raises(PolicyError, match="missing.yaml:0: cannot read policy"):
        load_policy(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(binary)


def test_check_exit_codes(tmp_path: Path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(policy_yaml())
    assert main(["check", str(good)]) == 0
    out, err = capsys.readouterr()
    assert "OK" in out and "5 keys" in out and "4 models" in out
    assert err == ""

    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "    modles: [x]\n")
    assert main(["check", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == f"{bad}:18: keys[0].modles: Extra inputs are not permitted"

    assert main(["check", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read policy" in capsys.readouterr().err


def test_example_policy_passes_check(capsys):
    example = resources.files("codexgate.policies").joinpath("example.yaml")
    assert main(["check", str(example)]) == 0


def test_prices_must_be_finite():
    # An infinite price would make every cost infinite: budgets useless, records without a number.
    text = BASE.replace(
        "routes: [{provider: openai}]",
        "routes: [{provider: openai}]\n    price: {input_per_mtok: .inf, output_per_mtok: 1}",
    )
    problems = problems_of(text)
    assert len(problems) == 1 and problems[0].startswith("team/policy.yaml:10: models.gpt-5.5.price.input_per_mtok: ")
    assert "finite" in problems[0]
