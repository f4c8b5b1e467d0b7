"""Guardrails: detectors for secrets and personal data in what a client sends to the model.

Pure (no mitmproxy): `addons/guardrails.py` applies the result to a flow.

- `GuardrailSettings` is the policy's `guardrails:` section: which built-in detectors run,
  custom regexes, the default action and per-team actions (`action_for`).
- `scan(body, detectors)` walks only the text the user controls that goes to the model
  (`texts`) and returns `Finding`s: rule, JSON location, offsets. A finding never holds the
  matched text, so nothing built from findings (log lines, error messages, headers, audit
  records) can leak it.
- `redact(body, findings)` returns a new body with each finding replaced by
  `[REDACTED:<rule>]`; `redact_text(text, detectors)` does the same for one string.

Detectors: anything with a `name` and `scan(text) -> list[(start, end)]` (the `Detector`
protocol). Built-ins are regexes compiled once per settings object (`settings.detectors_compiled()`),
some with a validator (Luhn for card numbers). External services plug in the same way; see
`addons/guardrails.py` for registering them on the addon (including `async def scan`).

Speed: Codex re-sends the whole conversation (~40 KB) every turn. A cold scan of the real body
takes ~0.3 ms on one core; with a `ScanCache` (results per text) a re-sent conversation costs
~0.03 ms plus the new texts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

Action = Literal["redact", "block", "log"]
Span = tuple[int, int]
PathPart = str | int
RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


@runtime_checkable
class Detector(Protocol):
    """Finds spans in one string. `name` is the rule name reported in findings.

    `scan` returns half-open `(start, end)` character offsets into `text`. The addon also
    accepts detectors whose `scan` is `async def` (for external services)."""

    @property
    def name(self) -> str: ...

    def scan(self, text: str) -> list[Span]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RegexDetector:
    """A compiled regex; `group` selects the part of a match that is the secret, and
    `validate` (given that part) drops matches that only look like one (Luhn, ...).

    Optional cheap pre-checks, for patterns the regex engine cannot search fast (no literal
    start): `hints`, substrings of which one must occur; `digit_shape`, a bytes pattern that must
    match the text's UTF-8 with every digit turned into "0" (a literal the engine skips to)."""

    name: str
    pattern: re.Pattern[str]
    group: int = 0
    validate: Callable[[str], bool] | None = None
    hints: tuple[str, ...] = ()
    digit_shape: re.Pattern[bytes] | None = None

    def scan(self, text: str) -> list[Span]:
        if self.hints and not any(hint in text for hint in self.hints):
            return []
        if self.digit_shape is not None and not self.digit_shape.search(digit_shape(text)):
            return []
        spans = []
        for match in self.pattern.finditer(text):
            start, end = match.span(self.group)
            if start < 0 or start == end:
                continue
            if self.validate is not None and not self.validate(text[start:end]):
                continue
            spans.append((start, end))
        return spans


_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


_last_shape: tuple[str, bytes] = ("", b"")


def digit_shape(text: str) -> bytes:
    """`text` as UTF-8 with every ASCII digit turned into "0". The last result is kept: the
    digit detectors ask for the same text one after the other."""
    global _last_shape
    last = _last_shape
    if last[0] is text:
        return last[1]
    shape = text.encode("utf-8", "surrogatepass").translate(_TO_ZERO)
    _last_shape = (text, shape)
    return shape


# ---------------------------------------------------------------- built-in detectors


def luhn_ok(candidate: str) -> bool:
    digits = [ord(c) - 48 for c in candidate if "0" <= c <= "9"]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card_issuer_ok(digits: str) -> bool:
    """Issuer prefixes of the card networks in use (Visa, Mastercard, Amex, Discover, JCB,
    Diners, UnionPay, Maestro): rules out timestamps and ids that happen to pass Luhn."""
    two, three, four = int(digits[:2]), int(digits[:3]), int(digits[:4])
    return (
        digits[0] == "4"
        or 51 <= two <= 55
        or 2221 <= four <= 2720
        or two in (34, 35, 36, 37, 38, 39, 50, 56, 57, 58, 62, 65, 67)
        or four == 6011
        or 644 <= three <= 649
        or 300 <= three <= 305
    )


def card_number_ok(candidate: str) -> bool:
    digits = "".join(c for c in candidate if "0" <= c <= "9")
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    if len({c for c in candidate if not "0" <= c <= "9"}) > 1:  # "4111 1111-1111 1111": not a card
        return False
    return _card_issuer_ok(digits) and luhn_ok(digits)


def _phone_ok(candidate: str) -> bool:
    digits = [c for c in candidate if "0" <= c <= "9"]
    return 8 <= len(digits) <= 15 and len(set(digits)) > 1


_PLACEHOLDER_PASSWORDS = frozenset(
    {"password", "pass", "passwd", "pwd", "secret", "token", "changeme", "xxx", "redacted"}
)


def _has_key_material(candidate: str) -> bool:
    return re.search(r"[A-Za-z0-9+/]{40}", candidate) is not None


def _real_password(candidate: str) -> bool:
    """Not a placeholder: `[password]`, `<password>`, `${DB_PASSWORD}`, `****`, `password`."""
    if candidate[0] in "[<{$%*" or set(candidate) <= {"*", "x", "X", "."}:
        return False
    return candidate.lower() not in _PLACEHOLDER_PASSWORDS


def _has_digit(candidate: str) -> bool:
    return any("0" <= c <= "9" for c in candidate)


_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
# Image names like "icon@2x.png" look like addresses; nothing else is excluded.
_NOT_EMAIL_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "avif"})


@dataclasses.dataclass(frozen=True, slots=True)
class EmailDetector:
    """Email addresses, found from their "@" (rare in text) rather than by a regex that would
    try every letter. Not: URL credentials (`https://user@host`, `ssh://git@host/...`),
    scp-style git remotes (`git@github.com:org/repo`), image names (`icon@2x.png`). Addresses in
    URL paths and queries (`/users/jane@example.com`, `?email=...`) are personal data and count."""

    name: str = "email"
    domain: re.Pattern[str] = dataclasses.field(
        default_factory=lambda: re.compile(
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![A-Za-z0-9-]|:[A-Za-z0-9_/~.-])"
        )
    )
    url_userinfo: re.Pattern[str] = dataclasses.field(default_factory=lambda: re.compile(r"://[^\s/@]*$"))

    def scan(self, text: str) -> list[Span]:
        spans: list[Span] = []
        at = text.find("@")
        while at != -1:
            start = at
            while start > 0 and at - start < 65 and text[start - 1] in _LOCAL_CHARS:
                start -= 1
            while start < at and not text[start].isalnum():
                start += 1
            if 0 < at - start <= 64 and (start == 0 or text[start - 1] not in _LOCAL_CHARS):
                domain = self.domain.match(text, at + 1)
                if (
                    domain is not None
                    and domain.group(1).lower() not in _NOT_EMAIL_TLDS
                    and not self.url_userinfo.search(text, max(0, start - 256), start)
                ):
                    spans.append((start, domain.end()))
            at = text.find("@", at + 1)
        return spans


# Each pattern starts with a literal and checks what comes before it with a lookbehind placed
# after that literal: the regex engine skips to the literal at C speed, whereas a pattern that
# starts with a lookbehind or a class is tried at every position (ten times slower on the 40 KB
# Codex body). (name, options of RegexDetector, patterns as source: `builtin_detectors` compiles
# them); a name may have several patterns.
_REGEX_BUILTINS: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        # Long-term (AKIA) and temporary (ASIA) access key ids, STS bearer (ABIA), context (ACCA).
        # Not the unique ids of users, roles and policies (AIDA, AROA, ANPA...): they are not secret.
        "aws_access_key_id",
        # AWS's documentation example ids (AKIAIOSFODNN7EXAMPLE, ...) end in EXAMPLE: not secrets.
        {
            "pattern": r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
            "validate": lambda candidate: not candidate.endswith("EXAMPLE"),
        },
    ),
    (
        # Only in context (`aws_secret_access_key = ...`, `AWS_SECRET_ACCESS_KEY: "..."`, also
        # JSON-escaped inside function_call arguments): a bare 40-character base64 string is common.
        "aws_secret_access_key",
        {
            "pattern": r"(?i:aws_?secret(?:_?access)?_?key)\\?[\"']?\s*[:=]\s*\\?[\"']?"
            r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
            "group": 1,
            "hints": ("ecret", "ECRET"),
        },
    ),
    (
        "github_token",
        {
            "pattern": r"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})"
            r"(?![A-Za-z0-9_])"
        },
    ),
    ("anthropic_api_key", {"pattern": r"sk-ant-(?<![A-Za-z0-9_-]sk-ant-)[A-Za-z0-9_-]{20,}"}),
    (
        # OpenAI (sk-..., sk-proj-..., sk-svcacct-...) and other sk- keys; a digit is required so
        # that words like "sk-learn-compatible-estimator-wrapper" are not keys.
        "openai_api_key",
        {"pattern": r"sk-(?<![A-Za-z0-9_-]sk-)(?!ant-)[A-Za-z0-9_-]{20,}", "validate": _has_digit},
    ),
    ("google_api_key", {"pattern": r"AIza(?<![A-Za-z0-9_-]AIza)[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"}),
    (
        "slack_token",
        {"pattern": r"x(?<![A-Za-z0-9-]x)(?:ox[abposr]-[A-Za-z0-9-]{10,}|app-[0-9]-[A-Za-z0-9-]{10,})"},
    ),
    ("slack_token", {"pattern": r"hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"}),
    (
        # Up to its END line (at most 16 KB on, no other BEGIN in between), or, unterminated
        # (truncated tool output), to the end of its base64 lines (also JSON-escaped: "\\n"). A
        # marker without key material ("-----BEGIN PRIVATE KEY-----...", "<key bytes>") is not a key.
        "private_key",
        {
            "pattern": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:"
            r"(?:(?!-----BEGIN )[\s\S]){0,16384}?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
            r"|(?:\s|\\[rn])*[A-Za-z0-9+/=]{40,}(?:(?:\r?\n|\\r?\\n)[A-Za-z0-9+/=]+(?=\r?\n|\\[rn]|[\"']|$))*)",
            "validate": _has_key_material,
        },
    ),
    (
        # The password in a URL (`postgres://app:hunter2@db/prod`); the user name is left alone.
        "url_password",
        {
            "pattern": r"://(?<=[A-Za-z0-9+.-]://)[^\s/:@\\\"'<>]{1,256}:([^\s/@\\\"'<>]{1,256})@(?=[A-Za-z0-9\[])",
            "group": 1,
            "validate": _real_password,
        },
    ),
    (
        "jwt",
        {
            "pattern": r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
            r"(?![A-Za-z0-9_-])"
        },
    ),
    (
        # E.164 (+ and 8–15 digits, separators allowed) and national formats with separators:
        # (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, 020 7946 0958, 06 12 34 56 78.
        # Bare digit runs, dates, versions and IP addresses do not match.
        "phone_number",
        {
            "pattern": r"[+(0-9](?<![\w.+/-].)(?:"
            r"(?<=\+)[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){1,5}[ .-]?[0-9]{2,4}"
            r"|(?<=\()[0-9]{3}\) ?[0-9]{3}[ .-][0-9]{4}"
            r"|(?<=[0-9])[0-9]{2}([.-])[0-9]{3}\1[0-9]{4}"
            r"|(?<=[0-9])[0-9]{2} [0-9]{3} [0-9]{4}"
            r"|(?<=0)[0-9]{2,4} [0-9]{3,4} [0-9]{3,4}"
            # French style pairs; not inside a hex dump ("7f 45 4c 46 02 01 01 00")
            r"|(?<=0)(?<![0-9A-Fa-f]{2} 0)[1-9](?: [0-9]{2}){4}(?! [0-9A-Fa-f]{2}(?![\w]))"
            r"|(?<=0)[1-9](?:\.[0-9]{2}){4}"
            r")(?![\w-]|[.:/][0-9])",
            "validate": _phone_ok,
            # at least 8 digits, at most two separators between two of them
            "digit_shape": rb"0(?:[ .()+-]{0,2}0){7}",
        },
    ),
    (
        # 13–19 digits as cards are written: unbroken, in groups of four (the last shorter), or
        # 4-6-5 / 4-6-4 (Amex, Diners), one kind of separator (space or dash). The issuer prefix
        # and the Luhn check must hold.
        "credit_card",
        {
            "pattern": r"[0-9](?<![\w.-][0-9])[0-9]{3}(?:"
            r"[0-9]{9,15}"
            r"|([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,4}(?:\1[0-9]{1,3})?"
            r"|([ -])[0-9]{6}\2[0-9]{4,5}"
            r")(?![\w]|[.-][0-9])",
            "validate": card_number_ok,
            "digit_shape": rb"0000(?:0{9}|[ -]0000[ -]0000[ -]0|[ -]000000[ -]0000)",
        },
    ),
)

BUILTIN_DETECTORS: tuple[str, ...] = (
    "aws_access_key_id",
    "aws_secret_access_key",
    "github_token",
    "anthropic_api_key",
    "openai_api_key",
    "google_api_key",
    "slack_token",
    "private_key",
    "url_password",
    "jwt",
    "email",
    "phone_number",
    "credit_card",
)


def builtin_detectors(names: Iterable[str] | None = None) -> list[Detector]:
    """Compiles the named built-ins (all of them by default), in the order of `names`."""
    wanted = list(BUILTIN_DETECTORS if names is None else names)
    unknown = [name for name in wanted if name not in BUILTIN_DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {', '.join(unknown)}; built-in: {', '.join(BUILTIN_DETECTORS)}")
    detectors: list[Detector] = []
    for name in wanted:
        if name == "email":
            detectors.append(EmailDetector())
        for spec_name, spec in _REGEX_BUILTINS:
            if spec_name == name:
                options = dict(spec)
                if "digit_shape" in options:
                    options["digit_shape"] = re.compile(options["digit_shape"])
                detectors.append(RegexDetector(name, re.compile(options.pop("pattern")), **options))
    return detectors


# ---------------------------------------------------------------- settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomRule(_Strict):
    """A regex of the organisation's own (internal hostnames, project code names, ...).

    `action` overrides the team's action for this rule's findings."""

    name: str = Field(pattern=RULE_NAME_PATTERN, max_length=64)
    pattern: str = Field(min_length=1)
    action: Action | None = None

    @model_validator(mode="after")
    def _compiles(self) -> CustomRule:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"custom rule {self.name!r}: pattern does not compile: {exc}") from None
        return self


class GuardrailSettings(_Strict):
    detectors: list[str] = Field(default_factory=lambda: list(BUILTIN_DETECTORS))
    custom: list[CustomRule] = Field(default_factory=list)
    action: Action = "log"
    team_actions: dict[str, Action] = Field(default_factory=dict)
    audit_content: bool = Field(
        default=False, description="the audit log may record request content, redacted by these detectors"
    )

    _compiled: list[Detector] | None = PrivateAttr(default=None)

    @field_validator("detectors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in BUILTIN_DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {', '.join(unknown)}; built-in: {', '.join(BUILTIN_DETECTORS)}")
        if len(set(value)) != len(value):
            raise ValueError("a detector is listed twice")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> GuardrailSettings:
        seen = set(BUILTIN_DETECTORS)
        for rule in self.custom:
            if rule.name in seen:
                raise ValueError(f"custom rule {rule.name!r}: the name is taken (by a built-in or another rule)")
            seen.add(rule.name)
        return self

    def detectors_compiled(self) -> list[Detector]:
        """The enabled built-ins and the custom rules, compiled on first use, once per settings object."""
        if self._compiled is None:
            compiled = builtin_detectors(self.detectors)
            compiled += [RegexDetector(rule.name, re.compile(rule.pattern)) for rule in self.custom]
            self._compiled = compiled
        return self._compiled

    def rule_actions(self) -> dict[str, Action]:
        """Actions fixed per rule (custom rules with `action`), overriding the team's."""
        return {rule.name: rule.action for rule in self.custom if rule.action is not None}


def action_for(settings: GuardrailSettings, team: str | None) -> Action:
    """The action for a team's findings: its entry in `team_actions`, else the default."""
    if team is not None and team in settings.team_actions:
        return settings.team_actions[team]
    return settings.action


# ---------------------------------------------------------------- scanning


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """One detection: which rule, where (JSON path in the body, character offsets in that
    string). Deliberately without the matched text."""

    rule: str
    path: tuple[PathPart, ...]
    start: int
    end: int

    @property
    def location(self) -> str:
        return format_path(self.path)

    def describe(self) -> str:
        return f"{self.rule} at {self.location} (characters {self.start}-{self.end})"


def format_path(path: Sequence[PathPart]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _content_texts(content: Any, path: tuple[PathPart, ...]) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    """A message's content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        yield path, content
    elif isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield (*path, i, "text"), text
            elif isinstance(part, str):
                yield (*path, i), part


# Responses input items and the fields of theirs that carry user-controlled text.
_ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "message": ("content",),
    "function_call_output": ("output",),
    "custom_tool_call_output": ("output",),
    "function_call": ("arguments",),
    "custom_tool_call": ("input",),
}


def texts(body: dict[str, Any]) -> Iterator[tuple[tuple[PathPart, ...], str]]:
    """(path, text) of every string in `body` the client controls and the model reads.

    Responses: `instructions`; `input` (a string, or items: message content text parts,
    function_call `arguments`, custom_tool_call `input`, function_call_output and
    custom_tool_call_output `output`). Chat Completions: `messages[*].content` and the
    arguments of replayed assistant `tool_calls`. Never tool schemas, model, metadata,
    reasoning (encrypted) or ids."""
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        yield ("instructions",), instructions
    items = body.get("input")
    if isinstance(items, str):
        yield ("input",), items
    elif isinstance(items, list):
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message" if "role" in item else None)
            for field in _ITEM_FIELDS.get(kind, ()) if isinstance(kind, str) else ():
                value = item.get(field)
                if field == "content" or field == "output":
                    yield from _content_texts(value, ("input", i, field))
                elif isinstance(value, str):
                    yield ("input", i, field), value
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            yield from _content_texts(message.get("content"), ("messages", i, "content"))
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for j, call in enumerate(calls):
                    function = call.get("function") if isinstance(call, dict) else None
                    arguments = function.get("arguments") if isinstance(function, dict) else None
                    if isinstance(arguments, str):
                        yield ("messages", i, "tool_calls", j, "function", "arguments"), arguments


def scan_text(text: str, detectors: Iterable[Detector]) -> list[tuple[str, int, int]]:
    """(rule, start, end) of every detection in one string, in order, overlaps removed: the
    earliest wins, then the longest, then the detector listed first."""
    hits = []
    names = []
    for index, detector in enumerate(detectors):
        names.append(detector.name)
        for start, end in detector.scan(text):
            hits.append((start, -end, index))
    hits.sort()
    kept: list[tuple[str, int, int]] = []
    last_end = -1
    for start, neg_end, index in hits:
        if start >= last_end:
            kept.append((names[index], start, -neg_end))
            last_end = -neg_end
    return kept


class ScanCache:
    """`scan_text` results by text, for one detector set: Codex re-sends the whole conversation
    every turn, so all but the newest texts of a request were scanned before.

    Keyed by the text's length and Python hash (64-bit SipHash, keyed per process), so the
    cache holds no content. Texts shorter than `min_length` are scanned each time (cheap, and
    they would crowd the cache). When full, the oldest entries go. Build a new cache whenever
    the detectors change."""

    def __init__(self, max_entries: int = 4096, min_length: int = 64) -> None:
        self.max_entries = max_entries
        self.min_length = min_length
        self._results: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
        self.hits = 0
        self.misses = 0

    def scan_text(self, text: str, detectors: Sequence[Detector]) -> list[tuple[str, int, int]]:
        if len(text) < self.min_length:
            return scan_text(text, detectors)
        key = (len(text), hash(text))
        found = self._results.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        found = scan_text(text, detectors)
        if len(self._results) >= self.max_entries:
            for old in list(self._results)[: self.max_entries // 4]:
                del self._results[old]
        self._results[key] = found
        return found


def scan(body: dict[str, Any], detectors: Iterable[Detector], cache: ScanCache | None = None) -> list[Finding]:
    """Every finding in the user-controlled text of a request body (see `texts`).

    `cache` (optional) remembers the results per text for the same `detectors`."""
    detectors = list(detectors)
    findings = []
    for path, text in texts(body):
        spans = cache.scan_text(text, detectors) if cache is not None else scan_text(text, detectors)
        for rule, start, end in spans:
            findings.append(Finding(rule, path, start, end))
    return findings


def marker(rule: str) -> str:
    return f"[REDACTED:{rule}]"


def _redact_spans(text: str, spans: Iterable[tuple[str, int, int]]) -> str:
    pieces = []
    position = 0
    for rule, start, end in sorted(spans, key=lambda span: span[1]):
        if start < position:  # overlapping: already covered by the previous marker
            continue
        pieces.append(text[position:start])
        pieces.append(marker(rule))
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def redact_text(text: str, detectors: Iterable[Detector]) -> str:
    """`text` with every detection replaced by `[REDACTED:<rule>]` (for the audit log's content)."""
    return _redact_spans(text, scan_text(text, detectors))


def redact(body: dict[str, Any], findings: Iterable[Finding]) -> dict[str, Any]:
    """A new body with each finding replaced by `[REDACTED:<rule>]`; `body` is left as it was.

    Only the containers on the way to a redacted string are copied; the rest is shared."""
    by_path: dict[tuple[PathPart, ...], list[tuple[str, int, int]]] = {}
    for finding in findings:
        by_path.setdefault(finding.path, []).append((finding.rule, finding.start, finding.end))
    result = dict(body)
    copied: set[int] = {id(result)}
    for path, spans in by_path.items():
        container: Any = result
        for part in path[:-1]:
            child = container[part]
            if id(child) not in copied:
                child = dict(child) if isinstance(child, dict) else list(child)
                container[part] = child
                copied.add(id(child))
            container = child
        last = path[-1]
        container[last] = _redact_spans(container[last], spans)
    return result


def decide(findings: Iterable[Finding], settings: GuardrailSettings, team: str | None) -> dict[Action, list[Finding]]:
    """The findings grouped by the action they call for: the rule's own action, else the team's."""
    team_action = action_for(settings, team)
    fixed = settings.rule_actions()
    grouped: dict[Action, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(fixed.get(finding.rule, team_action), []).append(finding)
    return grouped


def rule_names(findings: Iterable[Finding]) -> list[str]:
    """The distinct rule names, in order of first appearance."""
    return list(dict.fromkeys(finding.rule for finding in findings))
