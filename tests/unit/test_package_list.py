"""Every Python package of the source tree ships in the wheel: pyproject.toml lists packages by
name (the tree maps addons/, providers/, policies/ under codexgate.), so a new one — a provider
family's package, say — must be added there, or an installed gateway cannot import it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_package_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found: set[str] = set()
    for name, directory in setuptools["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / directory)
            found.add(".".join([name, *relative.parts]))
    assert found <= listed, f"missing from pyproject.toml's [tool.setuptools] packages: {sorted(found - listed)}"
