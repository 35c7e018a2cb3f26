"""Issue 18 item 5: the detectable effect and the seeds needed, from a pilot's variances."""

from __future__ import annotations

from pathlib import Path

import pytest

from leukaug.core.errors import DataError
from leukaug.stats.power import (
    PilotRow,
    contrast_df,
    detectable,
    pilot_variances,
    plan_lines,
    planned_detectable,
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
    for row in variances.rows.values():
        assert row.v_arm >= 0 and row.v_ref >= 0 and row.subject_total > 0
        assert row.prior_df_arm >= 0 and row.prior_df_ref >= 0
    parts = variances.rows["noise"]
    # more seeds and more test subjects always detect smaller effects
    assert standard_error(parts, 6, 6, 10) < standard_error(parts, 3, 3, 10)
    assert standard_error(parts, 3, 3, 40) < standard_error(parts, 3, 3, 10)
    assert standard_error(parts, 3, 9, 10) < standard_error(parts, 3, 3, 10)
    mde = planned_detectable(parts, 2, 3, 3, 10)
    needed = seeds_needed(parts, mde, 2, 10)
    assert needed is not None and needed <= 3
    assert seeds_needed(parts, 1e-6, 2, 10) is None  # beyond 30 seeds
    lines = plan_lines(variances, ["noise", "flip_rotate", "stain"], 3, 5, 20)
    assert "3 seed(s) per arm, 5 for the reference, 20 test subjects" in lines[0]
    assert any(line.startswith("  noise: detects |Δ auc| >= ") for line in lines)
    assert any("stain" in line and "pilot median" in line for line in lines)
    assert sum("Δ auc = " in line for line in lines) == 3


def test_the_plan_uses_the_df_the_verdict_would_use() -> None:
    """An unstable reference borrows no prior df: its contrast rests on about its own S - 1
    df, and the plan must not promise the power of K(S - 1) pooled df (issue 18 item 5: the
    demo's plan said 0.25 where its report said 0.37)."""
    moderated = PilotRow(0.001, 0.001, 0.0, prior_df_arm=10.0, prior_df_ref=10.0)
    unstable = PilotRow(0.001, 0.02, 0.0, prior_df_arm=10.0, prior_df_ref=0.0)
    assert contrast_df(moderated, 3, 3) == pytest.approx(24.0)  # (10 + 2) on each side
    assert 2.0 <= contrast_df(unstable, 3, 3) < 3.0  # the reference's 2 own df dominate
    assert contrast_df(unstable, 3, 9) > contrast_df(unstable, 3, 3)
    se = standard_error(unstable, 3, 3, 10)
    assert planned_detectable(unstable, 3, 3, 3, 10) > detectable(se, 3, 3 * 2)  # vs pooled df


def test_extra_reference_seeds_are_unpaired_in_the_plan_as_in_the_verdict() -> None:
    """A shared seed effect cancels in paired seeds only: 6 extra reference seeds add
    sigma_b^2 (1/3 - 1/9) to the variance, which can outweigh what they save."""
    paired = PilotRow(0.001, 0.001, 0.0)
    shared = paired._replace(var_seed_effect=0.01)
    assert standard_error(shared, 3, 3, 10) == pytest.approx(standard_error(paired, 3, 3, 10))
    expected = (0.001 / 3 + 0.001 / 9 + 0.01 * (1 / 3 - 1 / 9)) ** 0.5
    assert standard_error(shared, 3, 9, 10) == pytest.approx(expected)
    assert standard_error(shared, 3, 9, 10) > standard_error(shared, 3, 3, 10)
    assert standard_error(paired, 3, 9, 10) < standard_error(paired, 3, 3, 10)


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
    assert "power (from the pilot's variances on " in result.output  # the demo's metric
    assert "pilot median" in result.output  # the demo's arms are not the pilot's
    assert "seeds per arm needed" in result.output
    wrong = runner.invoke(app, ["run", "demo", "--out", str(tmp_path), "--variance-from", "x"])
    assert wrong.exit_code == 2 and "--variance-from needs --dry-run" in wrong.output
