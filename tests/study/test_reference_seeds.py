"""Issue 18: `[study] reference_seeds` (more seeds for the reference arms) and
`[study] threshold`, end to end through `leukaug run --dry-run`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from leukaug.cli import app
from leukaug.core.errors import LeukaugError


def _dry_run(tmp_path: Path, *sets: str):
    args = ["run", "demo", "--out", str(tmp_path / "out"), "--dry-run", "--json"]
    return CliRunner().invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])


def test_reference_seeds_add_runs_of_the_reference_only(tmp_path: Path) -> None:
    result = _dry_run(tmp_path, "seeds=[0,1]", "reference_seeds=[0,1,2,3]", "epochs=1")
    assert result.exit_code == 0, result.output
    arms = json.loads(result.stdout)["arms"]
    seeds = {}
    for arm in arms:
        seeds.setdefault(arm["name"], set()).add(arm["seed"])
    assert seeds.pop("custom_cnn-none-full") == {0, 1, 2, 3}
    assert all(found == {0, 1} for found in seeds.values()) and len(seeds) == 3


def test_reference_seeds_must_cover_the_seeds_and_threshold_is_checked(tmp_path: Path) -> None:
    # a LeukaugError, which `main` turns into exit status 2
    missing = _dry_run(tmp_path, "seeds=[0,1]", "reference_seeds=[1,2,3]")
    assert isinstance(missing.exception, LeukaugError)
    assert "must include every seed" in str(missing.exception)
    bad = _dry_run(tmp_path, "study.threshold=1.5")
    assert isinstance(bad.exception, LeukaugError) and "threshold" in str(bad.exception)
    assert _dry_run(tmp_path, "study.threshold=0.5", "seeds=[0]").exit_code == 0
