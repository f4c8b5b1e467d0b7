"""Reading a policy file: YAML → validated Policy → an index the addons look things up in.

Every error names the file, the line and the field, because the person reading it is
reviewing a pull request or looking at a gateway log, not a Python traceback.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from codexgate.policies.egress import EgressRules
from codexgate.policies.schema import ModelEntry, ModelRoute, Policy, Provider, VirtualKey

Loc = tuple[str | int, ...]


class PolicyError(Exception):
    """A policy that cannot be used; `problems` are complete `file:line: field: message` lines."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class CompiledPolicy:
    """A validated policy plus the lookups a request needs, built once per load."""

    policy: Policy
    path: str
    mtime_ns: int
    keys_by_hash: dict[str, VirtualKey]
    models_by_name: dict[str, tuple[str, ModelEntry]]  # name or alias -> (canonical name, entry)
    intercept_hosts: frozenset[str]  # "host" (any port) or "host:port"
    guard_hosts: frozenset[str]
    egress: EgressRules | None = None  # gateway.egress, compiled
    # (key name, model) -> reachable providers: asked on every admission, fixed for this policy.
    _reachable: dict[tuple[str, str], list[str]] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    _allowed: dict[str, frozenset[str] | None] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # provider name -> its provider family, made on first use (`codexgate.providers.registry.family_of`):
    # what a family keeps between requests (access tokens) lives and dies with this load. Any: the
    # policies layer knows no provider.
    families: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # Per-request lookups the addons build once per load (same lifetime as `families`, so a reload
    # drops them): (model, key name) -> failover candidate groups (`addons/failover.py`); price
    # sources of (provider, model, upstream model) (`addons/limits.py`). Any: no addon types here.
    candidate_groups: dict[tuple[str, str | None], Any] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    prices: dict[tuple[str, str, str], Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # (key name, requested model) -> the canonical model, for a pair `addons/admit.py` admitted
    # (model known, allowed for the key and its team, a provider reachable): fixed for this policy.
    admitted_models: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def lookup_model(self, requested: str) -> tuple[str, ModelEntry] | None:
        return self.models_by_name.get(requested)

    def should_intercept(self, host: str, port: int) -> bool:
        return self.is_governed_host(host, port) or self.is_guard_host(host)

    def is_guard_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.guard_hosts or any(host.endswith("." + guarded) for guarded in self.guard_hosts)

    def is_governed_host(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        return f"{host}:{port}" in self.intercept_hosts or host in self.intercept_hosts

    def allowed_providers(self, key: VirtualKey) -> frozenset[str] | None:
        """The providers a key may reach: its own list narrowed by its team's (None: any)."""
        if key.name in self._allowed:
            return self._allowed[key.name]
        team = self.policy.teams.get(key.team)
        lists = [names for names in (key.providers, team.providers if team else None) if names is not None]
        allowed = None
        for names in lists:
            allowed = frozenset(names) if allowed is None else allowed & frozenset(names)
        self._allowed[key.name] = allowed
        return allowed

    def key_allows_model(self, key: VirtualKey, *names: str) -> bool:
        """The key's model patterns and its team's both admit one of `names` (name, alias)."""
        team = self.policy.teams.get(key.team)
        return any(key.allows_model(name) for name in names) and (
            team is None or any(team.allows_model(name) for name in names)
        )

    def reachable_providers(self, key: VirtualKey, model: str) -> list[str]:
        """The providers of a model's routes and fallbacks' routes that the key may reach, in order."""
        cached = self._reachable.get((key.name, model))
        if cached is not None:
            return cached
        allowed = self.allowed_providers(key)
        entry = self.policy.models[model]
        found: list[str] = []
        for name in [model, *entry.fallbacks]:
            for route in self.policy.models[name].routes:
                if (allowed is None or route.provider in allowed) and route.provider not in found:
                    found.append(route.provider)
        self._reachable[(key.name, model)] = found
        return found


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    return yaml


def _line_of(document: Any, loc: Loc) -> int | None:
    """The 1-based line of the deepest node of `loc` that exists in the parsed document."""
    node = document
    line: int | None = None
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    if line is None and isinstance(document, CommentedMap):
        line = document.lc.line + 1
    return line


def _field_path(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _cross_references(policy: Policy) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for team_name, team in policy.teams.items():
        if policy.orgs and team.org not in policy.orgs:
            problems.append((("teams", team_name, "org"), f"unknown org {team.org!r}; orgs: {sorted(policy.orgs)}"))
    seen_names: dict[str, int] = {}
    seen_hashes: dict[str, int] = {}
    for index, key in enumerate(policy.keys):
        if key.team not in policy.teams:
            problems.append((("keys", index, "team"), f"unknown team {key.team!r}; teams: {sorted(policy.teams)}"))
        if key.name in seen_names:
            problems.append(
                (("keys", index, "name"), f"duplicate key name {key.name!r} (also keys[{seen_names[key.name]}])")
            )
        seen_names.setdefault(key.name, index)
        team = policy.teams.get(key.team)
        for provider_index, provider in enumerate(key.providers or ()):
            if provider not in policy.providers:
                problems.append(
                    (("keys", index, "providers", provider_index),
                     f"unknown provider {provider!r}; providers: {sorted(policy.providers)}")
                )  # fmt: skip
            elif team is not None and team.providers is not None and provider not in team.providers:
                problems.append(
                    (("keys", index, "providers", provider_index),
                     f"provider {provider!r} is not allowed for team {key.team} ({', '.join(team.providers)}); "
                     "a key may only narrow its team's providers")
                )  # fmt: skip
        if key.hash in seen_hashes:
            problems.append((("keys", index, "hash"), f"same hash as keys[{seen_hashes[key.hash]}]"))
        seen_hashes.setdefault(key.hash, index)
    for team_name, team in policy.teams.items():
        for provider_index, provider in enumerate(team.providers or ()):
            if provider not in policy.providers:
                problems.append(
                    (("teams", team_name, "providers", provider_index),
                     f"unknown provider {provider!r}; providers: {sorted(policy.providers)}")
                )  # fmt: skip
    if policy.guardrails is not None:
        for team in policy.guardrails.team_actions:
            if team not in policy.teams:
                problems.append(
                    (("guardrails", "team_actions", team), f"unknown team {team!r}; teams: {sorted(policy.teams)}")
                )
    names: dict[str, str] = {}
    for model_name, entry in policy.models.items():
        for route_index, route in enumerate(entry.routes):
            if route.provider not in policy.providers:
                problems.append(
                    (
                        ("models", model_name, "routes", route_index, "provider"),
                        f"unknown provider {route.provider!r}; providers: {sorted(policy.providers)}",
                    )
                )
        for fallback_index, fallback in enumerate(entry.fallbacks):
            if fallback not in policy.models or fallback == model_name:
                problems.append(
                    (
                        ("models", model_name, "fallbacks", fallback_index),
                        f"fallback {fallback!r} is not another model of this policy",
                    )
                )
        for alias_index, alias in enumerate([model_name, *entry.aliases]):
            if alias in names and names[alias] != model_name:
                loc: Loc = ("models", model_name, "aliases", alias_index - 1) if alias_index else ("models", model_name)
                problems.append((loc, f"model name {alias!r} is already used by {names[alias]!r}"))
            names.setdefault(alias, model_name)
    return problems


# The `kind:` values of the policy schema's provider settings models (one per provider family).
PROVIDER_KINDS = tuple(
    typing.get_args(model.model_fields["kind"].annotation)[0] for model in typing.get_args(typing.get_args(Provider)[0])
)


def _provider_url(provider: object) -> str | None:
    for attribute in ("url", "endpoint", "base_url"):
        value = getattr(provider, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _host_entries(policy: Policy) -> frozenset[str]:
    hosts = {host.lower() for host in policy.gateway.intercept_hosts}
    for provider in policy.providers.values():
        base_url = _provider_url(provider)
        if base_url:
            parts = urlsplit(base_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            hosts.add(f"{(parts.hostname or '').lower()}:{port}")
    return frozenset(hosts)


def parse_policy(text: str, path: str = "<policy>", mtime_ns: int = 0) -> CompiledPolicy:
    try:
        document = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        problem = str(exc.problem or "invalid YAML")
        # ruamel quotes the values of a duplicate key; one of them may be a pasted secret.
        problem = problem.split(" with value ", 1)[0]
        raise PolicyError([f"{path}:{line}: YAML syntax error: {problem}"]) from None
    if not isinstance(document, CommentedMap):
        raise PolicyError([f"{path}:1: the policy must be a YAML mapping (providers, models, teams, keys)"])
    try:
        policy = Policy.model_validate(_plain(document))
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            # pydantic names the union member of a discriminated union: drop it from the path.
            if len(loc) >= 3 and loc[0] == "providers" and loc[2] in PROVIDER_KINDS:
                loc = loc[:2] + loc[3:]
            problems.append(f"{path}:{_line_of(document, loc)}: {_field_path(loc)}: {error['msg']}")
        raise PolicyError(problems) from None
    cross = _cross_references(policy)
    if cross:
        raise PolicyError([f"{path}:{_line_of(document, loc)}: {_field_path(loc)}: {msg}" for loc, msg in cross])
    models_by_name: dict[str, tuple[str, ModelEntry]] = {}
    for name, entry in policy.models.items():
        for alias in [name, *entry.aliases]:
            models_by_name[alias] = (name, entry)
    return CompiledPolicy(
        policy=policy,
        path=path,
        mtime_ns=mtime_ns,
        keys_by_hash={key.hash: key for key in policy.keys},
        models_by_name=models_by_name,
        intercept_hosts=_host_entries(policy),
        guard_hosts=frozenset(host.lower() for host in policy.gateway.guard_hosts),
        egress=policy.gateway.egress.rules(),
    )


def load_policy(path: str | os.PathLike[str]) -> CompiledPolicy:
    file = Path(path)
    try:
        stat = file.stat()
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{file}:0: cannot read policy: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise PolicyError([f"{file}:0: policy is not UTF-8 text"]) from None
    return parse_policy(text, str(file), stat.st_mtime_ns)


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers → plain dicts/lists, so pydantic sees ordinary data."""
    if isinstance(node, dict):
        return {str(key) if not isinstance(key, str) else key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def upstream_model(route: ModelRoute, canonical_name: str) -> str:
    return route.model or canonical_name


def unreachable_key_problems(compiled: CompiledPolicy) -> list[str]:
    """`codexgate check`: keys that can reach no model at all, because every route of every model
    their patterns allow goes to a provider they (or their team) may not use."""
    try:
        document = _yaml().load(Path(compiled.path).read_text(encoding="utf-8"))
    except (OSError, MarkedYAMLError, UnicodeDecodeError):
        document = None
    problems = []
    policy = compiled.policy
    for index, key in enumerate(policy.keys):
        allowed_models = [name for name in policy.models if compiled.key_allows_model(key, name)]
        if any(compiled.reachable_providers(key, name) for name in allowed_models):
            continue
        providers = compiled.allowed_providers(key)
        reach = ", ".join(sorted(providers)) if providers is not None else "any"
        why = (
            f"its models ({', '.join(allowed_models)}) are served only by providers it may not use (allowed: {reach})"
            if allowed_models
            else "no model of this policy matches its (and its team's) model patterns"
        )
        loc: Loc = ("keys", index, "providers") if key.providers is not None else ("keys", index)
        line = _line_of(document, loc) if document is not None else "?"
        problems.append(f"{compiled.path}:{line}: {_field_path(loc)}: key {key.name} can reach no model: {why}")
    return problems
