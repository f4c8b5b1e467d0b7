"""One `mitm_config.yaml`: the top-level file of the checkout is the one `codexgate up` reads (the
package's `codexgate/mitm_config.yaml` is a link to it, copied as a file into a built package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from codexgate import cli

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_reads_the_top_level_mitm_config() -> None:
    packaged = Path(str(resources.files("codexgate").joinpath("mitm_config.yaml")))
    assert packaged.resolve() == (ROOT / "mitm_config.yaml").resolve()
    assert cli.mitm_config() == yaml.safe_load((ROOT / "mitm_config.yaml").read_text(encoding="utf-8"))
