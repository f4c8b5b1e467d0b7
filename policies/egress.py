"""The egress section of the policy: where the proxy listener may tunnel to.

The proxy listener serves Codex *and* every command Codex's shell tool runs (they inherit
`HTTPS_PROXY`). It forwards governed and guard hosts (intercepted) and, besides them, only
destinations this section allows. Addresses that are not globally routable (loopback, private,
link-local and cloud metadata, CGNAT, unique-local IPv6, …) are refused after name resolution
unless an `allow` entry names them as an IP address or network: a host *name* can be made to
resolve anywhere, so no name pattern ever opens an internal address.

Entry syntax: `HOST[:PORT]` where HOST is a host name pattern (`*` and `?` wildcards,
`*.example.com` also matches `example.com`'s subdomains only), an IP address or a CIDR network
(`10.1.0.0/16`, `[fd00::1]:8443`); PORT is a number or `*`. Without a port an entry covers the
web ports 443 and 80.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
from typing import Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]  # noqa: UP007  (used at runtime)
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]  # noqa: UP007

WEB_PORTS = frozenset({443, 80})

# Package registries and git hosts, so that the commands Codex's shell tool runs (pip, npm,
# cargo, go, gem, mvn, dotnet, git over HTTPS) keep working through the proxy. `defaults: false`
# drops them.
DEFAULT_ALLOW = (
    # Python
    "pypi.org", "files.pythonhosted.org",
    # JavaScript
    "registry.npmjs.org", "registry.yarnpkg.com",
    # Rust
    "crates.io", "index.crates.io", "static.crates.io", "static.rust-lang.org",
    # Go
    "proxy.golang.org", "sum.golang.org",
    # Ruby, Java, .NET
    "rubygems.org", "index.rubygems.org", "repo.maven.apache.org", "repo1.maven.org", "api.nuget.org",
    # git hosts
    "github.com", "api.github.com", "codeload.github.com", "*.githubusercontent.com", "gitlab.com", "bitbucket.org",
)  # fmt: skip

# The IPv6 prefix that embeds an IPv4 address (NAT64): judged by the address it carries.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclasses.dataclass(frozen=True)
class Rule:
    text: str
    ports: frozenset[int] | None  # None: any port
    name: str | None = None  # a host name pattern, lower case
    network: IPNetwork | None = None

    def port_matches(self, port: int) -> bool:
        return self.ports is None or port in self.ports

    def matches_name(self, host: str, port: int) -> bool:
        if self.name is None or not self.port_matches(port):
            return False
        if self.name == "*":
            return True
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and fnmatch.fnmatchcase(host, self.name)
        return fnmatch.fnmatchcase(host, self.name)

    def matches_address(self, address: IPAddress, port: int) -> bool:
        return self.network is not None and self.port_matches(port) and address in self.network


def parse_rule(text: str) -> Rule:
    """One allow/deny entry; ValueError says what is wrong with it."""
    entry = text.strip().lower()
    if not entry:
        raise ValueError("empty egress entry")
    host, ports = entry, None
    if entry.startswith("["):  # [v6]:port
        closing = entry.find("]")
        if closing < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = entry[1:closing], entry[closing + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            ports = rest[1:]
    elif entry.count(":") == 1:
        host, ports = entry.split(":")
    port_set: frozenset[int] | None
    if ports is None:
        port_set = WEB_PORTS
    elif ports == "*":
        port_set = None
    elif ports.isdigit() and 0 < int(ports) < 65536:
        port_set = frozenset({int(ports)})
    else:
        raise ValueError(f"{text!r}: port must be a number from 1 to 65535 or '*'")
    try:
        return Rule(text, port_set, network=ipaddress.ip_network(host, strict=False))
    except ValueError:
        pass
    if ":" in host or "/" in host:
        raise ValueError(f"{text!r}: not a host name pattern, IP address or CIDR network")
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-.*?_")
    if not set(host) <= allowed:
        raise ValueError(f"{text!r}: a host pattern may hold letters, digits, '-', '.', '_', '*' and '?'")
    return Rule(text, port_set, name=host.rstrip("."))


def is_internal(address: IPAddress) -> bool:
    """Not globally routable: loopback, private, link-local (cloud metadata), CGNAT, unique-local,
    multicast, reserved, unspecified — and IPv4 addresses wrapped in IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_internal(address.ipv4_mapped)
        if address in _NAT64:
            return is_internal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return not address.is_global or address.is_multicast


def parse_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str  # fixed reasons: metrics label
    detail: str  # for the client and the log


ALLOWED = Verdict(True, "allowed", "")


class Egress(BaseModel):
    """Where the proxy listener may tunnel to, besides governed and guard hosts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: bool = Field(default=True, description="also allow the built-in package-registry and git-host list")
    allow: list[str] = Field(default_factory=list, description="HOST[:PORT] patterns, IP addresses, CIDR networks")
    deny: list[str] = Field(default_factory=list, description="refused even when an allow entry matches")

    @field_validator("allow", "deny")
    @classmethod
    def _entries(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_rule(value)
        return values

    def rules(self) -> EgressRules:
        allow = [parse_rule(value) for value in (*(DEFAULT_ALLOW if self.defaults else ()), *self.allow)]
        return EgressRules(tuple(allow), tuple(parse_rule(value) for value in self.deny))


@dataclasses.dataclass(frozen=True)
class EgressRules:
    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]

    def check_destination(self, host: str, port: int) -> Verdict:
        """Before resolution: is this host (name or address) and port allowed at all?"""
        host = host.lower().rstrip(".")
        address = parse_address(host)
        if address is not None:
            return self.check_address(address, port, host)
        if any(rule.matches_name(host, port) for rule in self.deny):
            return Verdict(False, "denied", f"{host}:{port} is denied by the gateway's egress policy")
        if any(rule.matches_name(host, port) for rule in self.allow):
            return ALLOWED
        return Verdict(
            False, "not_allowed", f"{host}:{port} is not in the gateway's egress allow list (gateway.egress.allow)"
        )

    def check_address(self, address: IPAddress, port: int, name: str) -> Verdict:
        """An address a destination resolved to (or was given as): deny entries, then internal
        addresses only when an allow entry names them as address or network."""
        shown = f"{name} ({address})" if name != str(address) else str(address)
        if any(rule.matches_address(address, port) for rule in self.deny):
            return Verdict(False, "denied", f"{shown}:{port} is denied by the gateway's egress policy")
        if any(rule.matches_address(address, port) for rule in self.allow):
            return ALLOWED
        if is_internal(address):
            return Verdict(
                False, "internal_address",
                f"{shown}:{port} is an internal address (loopback, private, link-local or metadata); "
                "the gateway does not tunnel there",
            )  # fmt: skip
        if name == str(address) and not any(rule.name == "*" and rule.port_matches(port) for rule in self.allow):
            return Verdict(False, "not_allowed", f"{shown}:{port} is not in the gateway's egress allow list")
        return ALLOWED
