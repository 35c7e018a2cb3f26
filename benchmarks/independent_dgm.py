"""A second data-generating model for the verdict rule's calibration, independent of the analysis.

Written from the analysis's inputs alone (what `predictions.csv` holds: per test image its
id, subject, label and predicted P(ALL), for every arm and training seed), not from the
analysis code or its own simulation (`leukaug.stats.simulate`), and with the features that
simulation leaves out. One family is one study: a reference and `n_arms` arms, each trained
with the same seeds, scored on one test set of single-class subjects.

A trained run r = (row a, seed s) scores image i of subject k (label y = 1 for ALL, 0 for
HEM, sign = 2y - 1) with the logit

    bias_r + temperature_r * (sign * (strength_r + het_ak) / 2 + subject_k + run_subject_rk
                              + cell_i + run_cell_ri)

- strength_r = separation + effect_a + scale_a * run_sd * T3 / sqrt(3) + seed_s: the run's
  discrimination, with a heavy-tailed (Student t, 3 df, scaled to SD run_sd) training-run
  effect whose SD is multiplied by the row's own `scale_a` (an unstable reference or arm),
  and a small effect shared by every row trained with seed s (`seed_sd`, default 0: no
  shared seed effect to pair away);
- with probability `collapse` a run collapses to chance: its logits are noise unrelated to
  the label (a run that failed to learn, as tiny CNNs on few images now and then do);
- het_ak: subject-by-row heterogeneity (row a helps some patients more than others); every
  row draws its own, so null rows stay exchangeable on new patients;
- subject_k: how a patient's cells sit on the score (stain, preparation), shared by all runs;
- run_subject_rk: subject-by-run interaction: each run moves each patient's cells up or down
  by its own amount (so a run's errors cluster within patients);
- cell_i, run_cell_ri: how hard the cell is (shared), and one run's cell-level noise;
- bias_r, temperature_r: each run's calibration (they change the probabilities, not the
  ranking within a run).

Cells per subject are unequal (log-normal, 1 to 150); subjects per family are drawn per
family. A reference may have more seeds than the arms (`reference_seeds`; the arms use
the first of them). `auc_effect` converts a wanted gain in expected population AUC (over runs, with the
collapses) into `effect_a`, so power is stated in AUC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm
from scipy.stats import t as student_t


@dataclass(frozen=True)
class Dgm:
    """Parameters of one scenario (logit scale); see the module docstring."""

    n_arms: int = 9  # arms besides the reference
    min_subjects: int = 20
    max_subjects: int = 40
    cells_median: float = 15.0
    cells_sdlog: float = 0.8
    separation: float = 1.7  # a typical run's class separation: AUC about 0.80
    run_sd: float = 0.3
    run_df: float = 3.0
    seed_sd: float = 0.0
    collapse: float = 0.02
    heterogeneity_sd: float = 0.25
    subject_sd: float = 0.8
    run_subject_sd: float = 0.3
    cell_sd: float = 1.0
    run_cell_sd: float = 0.5
    bias_sd: float = 0.5
    temperature_sdlog: float = 0.3
    reference_scale: float = 1.0  # SD multiplier of the reference's training-run effect
    arm_scales: tuple[float, ...] = field(default_factory=tuple)  # per arm; missing: 1
    spread_variance: tuple[float, float] | None = None  # per-family random variance factors
    reference_seeds: int = 0  # more seeds for the reference than the arms' (0: the same)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def row_scales(self, rng: np.random.Generator) -> np.ndarray:
        """The run-SD multiplier of every row, reference first."""
        if self.spread_variance is not None:
            low, high = self.spread_variance
            variance = rng.permutation(np.linspace(low, high, self.n_arms + 1))
            return np.sqrt(variance)
        scales = np.ones(self.n_arms + 1)
        scales[0] = self.reference_scale
        scales[1 : 1 + len(self.arm_scales)] = self.arm_scales
        return scales

    def spread(self) -> float:
        """SD of the difference of two independent images' non-run terms (the AUC's scale)."""
        variance = self.subject_sd**2 + self.run_subject_sd**2
        variance += self.cell_sd**2 + self.run_cell_sd**2
        return math.sqrt(2 * variance + self.heterogeneity_sd**2 / 2)


def _t_draws(dgm: Dgm, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Student t draws scaled to SD 1 (df > 2)."""
    return rng.standard_t(dgm.run_df, shape) / math.sqrt(dgm.run_df / (dgm.run_df - 2))


def expected_auc(dgm: Dgm, effect: float) -> float:
    """Population AUC of a row with `effect`, averaged over its training runs (collapses too)."""
    scale = dgm.run_sd / math.sqrt(dgm.run_df / (dgm.run_df - 2))
    grid = np.linspace(-200.0, 200.0, 20_001)  # the t(3) tails beyond hold < 1e-6
    density = student_t.pdf(grid, dgm.run_df)
    auc = norm.cdf((dgm.separation + effect + scale * grid) / dgm.spread())
    learned = float(np.trapezoid(density * auc, grid) / np.trapezoid(density, grid))
    return (1 - dgm.collapse) * learned + dgm.collapse * 0.5


def auc_effect(dgm: Dgm, gain: float) -> float:
    """The `effect` that raises the expected population AUC by `gain`."""
    target = expected_auc(dgm, 0.0) + gain
    return float(brentq(lambda e: expected_auc(dgm, e) - target, 0.0, 10.0, xtol=1e-5))


def simulate_family(
    dgm: Dgm, effects: np.ndarray, n_seeds: int, rng: np.random.Generator
) -> list[dict[int, pd.DataFrame]]:
    """One study: per row (reference first), seed -> test predictions (image_id, subject,
    label, prob). `effects` holds each row's effect on the separation (reference: 0)."""
    n_rows = dgm.n_arms + 1
    effects = np.asarray(effects, dtype=float)
    if effects.shape != (n_rows,):
        raise ValueError(f"effects needs {n_rows} values (reference first), got {effects.shape}")
    n_subjects = int(rng.integers(dgm.min_subjects, dgm.max_subjects + 1))
    label_of_subject = np.zeros(n_subjects, dtype=int)
    label_of_subject[rng.permutation(n_subjects)[: (n_subjects + 1) // 2]] = 1
    cells = np.clip(
        np.rint(dgm.cells_median * np.exp(rng.normal(0, dgm.cells_sdlog, n_subjects))), 1, 150
    ).astype(int)
    subject = np.repeat(np.arange(n_subjects), cells)
    label = label_of_subject[subject]
    sign = 2.0 * label - 1.0
    n_images = len(label)
    n_runs = max(n_seeds, dgm.reference_seeds)  # the arms use the first n_seeds
    seeds = np.sort(rng.choice(1000, n_runs, replace=False))

    scales = dgm.row_scales(rng)
    run = dgm.run_sd * scales[:, None] * _t_draws(dgm, rng, (n_rows, n_runs))
    strength = dgm.separation + effects[:, None] + run + rng.normal(0, dgm.seed_sd, n_runs)
    het = rng.normal(0, dgm.heterogeneity_sd, (n_rows, n_subjects))
    subject_shift = rng.normal(0, dgm.subject_sd, n_subjects)
    cell = rng.normal(0, dgm.cell_sd, n_images)
    image_id = np.array([f"cell{i:05d}" for i in range(n_images)])
    subject_name = np.array([f"P{k:03d}" for k in range(n_subjects)])[subject]

    family: list[dict[int, pd.DataFrame]] = []
    for a in range(n_rows):
        runs: dict[int, pd.DataFrame] = {}
        for s, seed in enumerate(seeds if a == 0 else seeds[:n_seeds]):
            if rng.random() < dgm.collapse:
                score = rng.normal(0, 1, n_images)
            else:
                score = sign * (strength[a, s] + het[a, subject]) / 2
                score = score + subject_shift[subject] + cell
                score = score + rng.normal(0, dgm.run_subject_sd, n_subjects)[subject]
                score = score + rng.normal(0, dgm.run_cell_sd, n_images)
            logit = rng.normal(0, dgm.bias_sd) + math.exp(
                rng.normal(0, dgm.temperature_sdlog)
            ) * np.asarray(score)
            runs[int(seed)] = pd.DataFrame(
                {
                    "image_id": image_id,
                    "subject": subject_name,
                    "label": label,
                    "prob": 1 / (1 + np.exp(-logit)),
                }
            )
        family.append(runs)
    return family


SCENARIOS: dict[str, tuple[str, Dgm]] = {
    "equal": ("every row equally stable (SD x1)", Dgm()),
    "unstable_reference": (
        "the reference's training-run SD x3 (variance x9)",
        Dgm(reference_scale=3.0),
    ),
    "unstable_arm": ("one null arm's training-run SD x3 (variance x9)", Dgm(arm_scales=(3.0,))),
    "unstable_reference_9": (
        "the reference's run SD x3, trained with 9 seeds (sqrt(9) x the arms' 3)",
        Dgm(reference_scale=3.0, reference_seeds=9),
    ),
    "spread": (
        "run variance x1 to x3 over the 10 rows, in random order (reference included)",
        Dgm(spread_variance=(1.0, 3.0)),
    ),
}
