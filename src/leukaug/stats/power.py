"""Plan before training: what a planned study can detect, from a pilot's variances.

A pilot (a finished or partial study of the same model and data) gives, for each comparison
with its reference on the primary metric, the two variances a verdict rests on
(`leukaug.stats.moderation`, `leukaug.stats.compare`):

- each row's own training-run variance (arm and reference, moderated toward the family);
- the test-subject variance of the difference, scaled to the planned test subjects
  (var_subjects x pilot subjects / planned subjects).

For S arm seeds and S_0 reference seeds the planned standard error is
se = sqrt(sigma_a^2 / S + sigma_0^2 / S_0 + sigma_b^2 (1/S - 1/S_0) + var_subjects')
(sigma_b^2: the seed effect the rows share, which extra reference seeds cannot pair), and
the detectable effect with 80% power at the family's strictest step is
(t_{1 - alpha / 2m} + t_{0.8}) x se (Bonferroni's first step, a little conservative beside
the max-t) on the df the verdict itself would use: the Welch-Satterthwaite df of the arm's
and the reference's parts, each row on its own S - 1 (S_0 - 1) df plus the prior df its
moderation gave it in the pilot (an unstable row, which borrows nothing, keeps only its
own; `leukaug.stats.moderation`). A comparison of the plan whose arm the pilot lacks gets
the pilot's median variances. The seeds needed for an effect is the smallest S (reference
seeds S_0 = S, or the planned ratio) whose detectable effect is at most that effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.stats import t as student_t

from leukaug.core.errors import DataError
from leukaug.stats.compare import Comparison, compare_arm
from leukaug.stats.family import primary_metric, seed_predictions, study_threshold
from leukaug.stats.moderation import moderate_family, satterthwaite
from leukaug.stats.pairs import plan_references
from leukaug.stats.primary_metrics import get_metric
from leukaug.stats.study_results import load_study_results

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 30
NEEDS = (
    "no pilot: to plan seeds and test subjects, give --variance-from a finished or partial "
    "study of the same model and data (at least 2 seeds of each arm and of its reference, "
    "with test predictions): the detectable effect needs each arm's run-to-run variance and "
    "the test-subject variance of the primary metric, which only trained runs can give."
)


class PilotRow(NamedTuple):
    """One pilot comparison: each row's run variance, the subject variance x subjects, and
    the prior df each row's moderation added to its own."""

    v_arm: float
    v_ref: float
    subject_total: float
    prior_df_arm: float = 0.0
    prior_df_ref: float = 0.0
    var_seed_effect: float = 0.0  # the seed effect both rows share (unpaired for extra seeds)


@dataclass(frozen=True)
class PilotVariances:
    """Per pilot comparison (arm name -> (arm run var, reference run var, subject var x
    subjects)), with the pilot's metric and subjects."""

    metric: str
    n_subjects: int
    rows: dict[str, PilotRow]

    def typical(self) -> PilotRow:
        values = np.array(list(self.rows.values()))
        return PilotRow(*(float(v) for v in np.median(values, axis=0)))


def pilot_variances(pilot_dir: str | Path, metric: str | None = None) -> PilotVariances:
    """The variances of a pilot study's comparisons (DataError naming what is missing)."""
    study = load_study_results(pilot_dir)
    metric = metric or primary_metric(study)
    plan = plan_references(study)
    comparisons: list[tuple[str, str, Comparison]] = []
    threshold = study_threshold(study) if get_metric(metric).thresholded else None
    for pair in plan.pairs:
        try:
            arm = seed_predictions(study, pair.arm, threshold)
            reference = seed_predictions(study, pair.reference, threshold)
        except DataError:  # no validation split to choose a run's threshold
            continue
        if len(arm) < 2 or not set(arm) <= set(reference):
            continue
        if any(frame.empty for frame in (*arm.values(), *reference.values())):
            continue
        comparisons.append((pair.arm, pair.reference, compare_arm(arm, reference, metric)))
    if not comparisons:
        raise DataError(
            f"{pilot_dir}: no comparison with at least 2 seeds of an arm and its reference and "
            "test predictions; " + NEEDS.removeprefix("no pilot: ")
        )
    _, diagnostics = moderate_family(comparisons)
    rows = {}
    for (arm, _, comparison), extra in zip(comparisons, diagnostics, strict=True):
        v_arm, v_ref = extra["var_run_arm"], extra["var_run_reference"]
        subject_total = comparison.var_subjects * comparison.n_subjects
        if not math.isfinite(v_arm):  # a table of one arm: its own paired variance, halved
            v_arm = v_ref = comparison.var_seeds * comparison.n_seeds / 2
            rows[arm] = PilotRow(v_arm, v_ref, subject_total)
            continue
        own_ref = len(comparison.reference_seeds or comparison.seeds) - 1
        rows[arm] = PilotRow(
            v_arm,
            v_ref,
            subject_total,
            max(extra["df_run_arm"] - (comparison.n_seeds - 1), 0.0),
            max(extra["df_run_reference"] - own_ref, 0.0),
            max(extra["var_seed_effect"], 0.0),
        )
    n_subjects = max(c.n_subjects for _, _, c in comparisons)
    return PilotVariances(metric, n_subjects, rows)


def standard_error(
    parts: PilotRow | tuple[float, ...], seeds: int, reference_seeds: int, subjects: int
) -> float:
    """The planned contrast's SE; reference seeds beyond the arm's are unpaired, so the seed
    effect the rows share adds sigma_b^2 (1/S - 1/S_0), as in the verdict."""
    v_arm, v_ref, subject_total = parts[:3]
    seed_effect = parts[5] if len(parts) > 5 else 0.0
    unpaired = seed_effect * max(1 / seeds - 1 / reference_seeds, 0.0)
    return math.sqrt(v_arm / seeds + v_ref / reference_seeds + unpaired + subject_total / subjects)


def contrast_df(parts: PilotRow, seeds: int, reference_seeds: int) -> float:
    """The df of the planned contrast, as the verdict computes it (module doc)."""
    arm = (parts.v_arm / seeds, max(parts.prior_df_arm + seeds - 1, 1.0))
    reference = (parts.v_ref / reference_seeds, max(parts.prior_df_ref + reference_seeds - 1, 1.0))
    df = satterthwaite([arm, reference])
    return max(df if math.isfinite(df) else arm[1] + reference[1], 1.0)


def detectable(se: float, family: int, df: float, alpha: float = ALPHA) -> float:
    """Smallest |effect| found with 80% power at the strictest step of `family` tests."""
    df = max(df, 1.0)
    return float((student_t.isf(alpha / (2 * family), df) + student_t.ppf(POWER, df)) * se)


def planned_detectable(
    parts: PilotRow, family: int, seeds: int, reference_seeds: int, subjects: int
) -> float:
    """The detectable effect of one planned comparison (module doc)."""
    se = standard_error(parts, seeds, reference_seeds, subjects)
    return detectable(se, family, contrast_df(parts, seeds, reference_seeds))


def seeds_needed(
    parts: PilotRow,
    effect: float,
    family: int,
    subjects: int,
    reference_ratio: float = 1.0,
) -> int | None:
    """Fewest arm seeds (reference seeds: ratio x as many) that detect `effect`; None: > 30."""
    for seeds in range(2, MAX_SEEDS + 1):
        reference_seeds = max(seeds, round(reference_ratio * seeds))
        if planned_detectable(parts, family, seeds, reference_seeds, subjects) <= effect:
            return seeds
    return None


def plan_lines(
    pilot: PilotVariances,
    comparisons: list[str],
    seeds: int,
    reference_seeds: int,
    subjects: int,
    effects: tuple[float, ...] = (0.02, 0.05, 0.10),
) -> list[str]:
    """The dry run's power block: per planned comparison the detectable effect, then seeds needed."""
    family = max(len(comparisons), 1)
    lines = [
        f"power (from the pilot's variances on {pilot.metric}, {pilot.n_subjects} test subjects): "
        f"{seeds} seed(s) per arm, {reference_seeds} for the reference, {subjects} test "
        f"subjects, {family} comparison(s):"
    ]
    if seeds < 2:
        lines.append(
            "  1 seed per arm: no verdict can generalise over training runs; plan >= 3 seeds."
        )
    for arm in comparisons:
        parts = pilot.rows.get(arm)
        source = "" if parts is not None else " (pilot median: the pilot lacks this arm)"
        parts = parts if parts is not None else pilot.typical()
        mde = planned_detectable(parts, family, max(seeds, 1), max(reference_seeds, 1), subjects)
        lines.append(f"  {arm}: detects |Δ {pilot.metric}| >= {mde:.3f} with 80% power{source}")
    typical, hardest = pilot.typical(), max(pilot.rows.values(), key=lambda p: p[0] + p[1])
    ratio = reference_seeds / max(seeds, 1)
    lines.append("  seeds per arm needed (typical / least stable comparison):")
    for effect in effects:
        needed = [
            seeds_needed(parts, effect, family, subjects, ratio) for parts in (typical, hardest)
        ]
        text = " / ".join(str(n) if n is not None else f"> {MAX_SEEDS}" for n in needed)
        lines.append(f"    Δ {pilot.metric} = {effect:.2f}: {text}")
    return lines
