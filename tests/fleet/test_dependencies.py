"""The runtime dependencies are declared: every third-party module the gateway's code imports
belongs to a distribution that [project].dependencies pulls in (so `pip install .` gives a working
`codexgate`), and requirements.lock (what `./dev up` installs) pins all of them, without the test
and lint tools, which live in requirements-dev.lock."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_CODE = ("codexgate", "addons", "providers", "policies")
TEST_TOOLS = {
    "pytest", "pytest-timeout", "openai", "anthropic", "google-genai", "ruff", "mypy", "types-pyyaml",
    "kubernetes-validate", "check-jsonschema", "import-linter",
}  # fmt: skip


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for folder in RUNTIME_CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "codexgate"}


def _closure(roots: list[str]) -> set[str]:
    """Distribution names `roots` install, markers evaluated for this interpreter."""
    seen: set[str] = set()
    stack = [Requirement(r) for r in roots]
    while stack:
        requirement = stack.pop()
        name = _name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.distribution(requirement.name).requires or []:
            dependency = Requirement(text)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                stack.append(dependency)
    return seen


def _declared() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _lock(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {_name(line.split("==")[0]) for line in lines if line and not line.startswith(("#", "-r"))}


def test_every_imported_module_comes_from_a_declared_dependency() -> None:
    installed = _closure(_declared())
    providers = metadata.packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in _imported_modules()
        if not {_name(d) for d in providers.get(module, [])} & installed
    }
    assert not undeclared, f"imported but not pulled in by [project].dependencies: {undeclared}"


def test_runtime_lock_pins_exactly_the_runtime_closure_and_dev_lock_the_rest() -> None:
    runtime = _closure(_declared())
    assert _lock("requirements.lock") == runtime
    dev = _lock("requirements-dev.lock")
    assert not dev & runtime, "the dev lock repeats runtime pins (it includes requirements.lock)"
    assert {_name(t) for t in TEST_TOOLS} <= dev
    assert (ROOT / "requirements-dev.lock").read_text().splitlines()[1] == "-r requirements.lock"
