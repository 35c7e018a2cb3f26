"""Smoke test of benchmarks/calibration.py: every scenario runs end to end on a few families."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def calibration():
    sys.path.insert(0, str(BENCHMARKS))
    yield importlib.import_module("calibration")
    sys.path.remove(str(BENCHMARKS))


def test_every_scenario_runs(calibration):
    names = [name for name in calibration.SCENARIOS if name != "power"]
    for name in names:
        cell = calibration.run_cell(name, 3, 2, workers=1)
        assert cell["families"] == 2
        for result in cell["rules"].values():
            assert 0 <= result["false_verdict_rate"] <= 1
            low, high = result["false_verdict_ci95"]
            assert low <= result["false_verdict_rate"] <= high


def test_power_scenario_reports_each_gain(calibration):
    cell = calibration.run_cell("power", 3, 1, workers=1)
    for result in cell["rules"].values():
        assert set(result["power"]) == {"+0.05", "+0.10", "+0.15"}
        assert len(result["arm_false_rates_unadjusted"]) == 6


def test_independent_dgm_effect_raises_the_auc(calibration):
    dgm = calibration.independent_dgm.Dgm()
    effect = calibration.independent_dgm.auc_effect(dgm, 0.10)
    expected_auc = calibration.independent_dgm.expected_auc
    assert expected_auc(dgm, effect) - expected_auc(dgm, 0.0) == pytest.approx(0.10, abs=1e-4)


def test_unstable_reference_is_more_variable(calibration):
    """The scenario does what it says: the reference's per-seed AUC varies more than an arm's."""
    from leukaug.stats.classical import fast_auc

    dgm = calibration.independent_dgm.SCENARIOS["unstable_reference"][1]
    rng = np.random.default_rng(0)
    spread = np.zeros(2)
    for _ in range(30):
        family = calibration.independent_dgm.simulate_family(dgm, np.zeros(10), 4, rng)
        for i, row in enumerate((family[0], family[1])):
            aucs = [fast_auc(f["label"].to_numpy(), f["prob"].to_numpy()) for f in row.values()]
            spread[i] += np.var(aucs, ddof=1)
    assert spread[0] > 2 * spread[1]  # x9 on the run term; test noise and collapses equal


def test_clopper_pearson_interval(calibration):
    low, high = calibration.interval(10, 200)
    assert low == pytest.approx(0.0243, abs=5e-4)
    assert high == pytest.approx(0.0901, abs=5e-4)
    assert calibration.interval(0, 50)[0] == 0.0
