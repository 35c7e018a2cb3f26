"""Issue 18 item 5: the detectable effect and the seeds needed, from a pilot's variances."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukaug.core.errors import DataError
from leukaug.stats.power import (
    detectable,
    pilot_variances,
    plan_lines,
    seeds_needed,
    standard_error,
)
from report_fixtures import make_study


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(
        tmp_path_factory.mktemp("pilot"),
        {"baseline": 0.3, "flip_rotate": 1.5, "noise": 0.35},
        seeds=(0, 1, 2),
        failed=(),
        n_subjects={"val": 4, "test": 10},
        images_per_subject=8,
    )


def test_pilot_variances_and_the_plan(pilot: Path) -> None:
    variances = pilot_variances(pilot)
    assert variances.metric == "auc" and variances.n_subjects == 10
    assert set(variances.rows) == {"flip_rotate", "noise"}
    for v_arm, v_ref, subjects in variances.rows.values():
        assert v_arm >= 0 and v_ref >= 0 and subjects > 0
    parts = variances.rows["noise"]
    # more seeds and more test subjects always detect smaller effects
    assert standard_error(parts, 6, 6, 10) < standard_error(parts, 3, 3, 10)
    assert standard_error(parts, 3, 3, 40) < standard_error(parts, 3, 3, 10)
    assert standard_error(parts, 3, 9, 10) < standard_error(parts, 3, 3, 10)
    mde = detectable(standard_error(parts, 3, 3, 10), 2, 3)
    needed = seeds_needed(parts, mde, 2, 10)
    assert needed is not None and needed <= 3
    assert seeds_needed(parts, 1e-6, 2, 10) is None  # beyond 30 seeds
    lines = plan_lines(variances, ["noise", "flip_rotate", "stain"], 3, 5, 20)
    assert "3 seed(s) per arm, 5 for the reference, 20 test subjects" in lines[0]
    assert any(line.startswith("  noise: detects |Δ auc| >= ") for line in lines)
    assert any("stain" in line and "pilot median" in line for line in lines)
    assert sum("Δ auc = " in line for line in lines) == 3


def test_a_pilot_without_repeated_seeds_says_what_it_needs(tmp_path: Path) -> None:
    single = make_study(
        tmp_path / "one", {"baseline": 0.3, "noise": 0.35}, failed=(), images_per_subject=6
    )
    with pytest.raises(DataError, match="at least 2 seeds"):
        pilot_variances(single)


def test_dry_run_prints_the_power_block(pilot: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from leukaug.cli import app

    runner = CliRunner()
    args = ["run", "demo", "--out", str(tmp_path / "out"), "--dry-run"]
    without = runner.invoke(app, args)
    assert without.exit_code == 0, without.output
    assert "power: no pilot" in without.output and "--variance-from" in without.output
    result = runner.invoke(app, [*args, "--variance-from", str(pilot)])
    assert result.exit_code == 0, result.output
    assert "power (from the pilot's variances on auc" in result.output
    assert "pilot median" in result.output  # the demo's arms are not the pilot's
    assert "seeds per arm needed" in result.output
    wrong = runner.invoke(app, ["run", "demo", "--out", str(tmp_path), "--variance-from", "x"])
    assert wrong.exit_code == 2 and "--variance-from needs --dry-run" in wrong.output
