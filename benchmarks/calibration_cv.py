"""Calibration of the cross-validation verdict rule by simulation (issue 19, item 3).

    python benchmarks/calibration_cv.py --fold-arm-sd 0.15    # 500 null families per scenario
    python benchmarks/calibration_cv.py --no-null --effects 0.4 0.75 --families 100   # power
    python benchmarks/calibration_cv.py --folds 10 --seeds 5
    python benchmarks/calibration_cv.py --quick               # smoke test

Each family is one simulated cross-validated study: a reference and 9 arms, 3 seeds, K = 5
folds (`--folds`), 20-40 subjects (half ALL, half HEM, drawn per family) with 15-45 images
each, split into K subject-level folds stratified by class. Every arm x seed x fold is one
trained model; image i of subject j (held out in fold k) scored by arm a, seed s has the logit

    sign * (separation + fold_k + run_sk + run_ask + hetero_aj)
        + shift_k + offset_ask + subject_j + cell_i + noise_aski

with sign = +1 for ALL and -1 for HEM and independent normal terms:

- fold_k, shift_k: how good fold k's training set is, and its intercept (class balance of the
  training part): shared by every arm and seed of fold k, so the fold contrasts of one study
  are correlated (the dependence Bates, Hastie & Tibshirani 2023 describe);
- run_sk: a training-run effect shared by every arm of seed s on fold k (same split, same data
  order); run_ask and offset_ask: the arm's own training-run luck on that fold, in
  separation and in intercept (fold models calibrated differently: pooling them mixes
  intercepts, which lowers the pooled AUC below the per-fold AUCs);
- hetero_aj: subject-by-augmentation heterogeneity (each arm draws its own);
- subject_j, cell_i: how hard the patient and the cell are, shared by all arms;
  noise_aski: cell-level noise of one trained model.

All 10 arms are exchangeable (the null), and the false-verdict rate is the share of families
with at least one "helps" or "hurts". Each family goes through the rule the report applies
(`leukaug.stats.cross_validation`): per arm and seed the K folds' test predictions pooled out
of fold (each image predicted once, by the model that did not train on it), then
`compare_arm` against the reference (seed-paired, subject-clustered) and `decide_verdicts`
(its default seed-variance rule and multiplicity adjustment over the 9 arms, as the report
applies them). Scenarios vary the subject heterogeneity and the fold-level terms;
`--fold-arm-sd` adds a fold-by-arm interaction fixed across seeds (an augmentation that helps
on one training set and hurts on another) as a sensitivity check: the rule's verdicts are
about this data set's training sets (as the hold-out rule's are about its one training set),
so such an interaction is a real, data-set-specific difference rather than noise. The goal
(as for the hold-out rule): a rate <= 0.05 with the upper end of its two-sided 95%
Clopper-Pearson interval <= 0.08.

Results go to benchmarks/results/calibration_cv_<time>.json (calibration_cv_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta
from sklearn.metrics import roc_auc_score

from leukaug.core.atomic import write_json
from leukaug.stats import compare_arm, decide_verdicts

RESULTS = Path(__file__).parent / "results"
N_ARMS = 9
NO_DIFFERENCE = "no detectable difference"
ALPHA = 0.05


@dataclass(frozen=True)
class FoldModel:
    """Parameters of the fold-structured generative model (logit scale; module docstring)."""

    folds: int = 5
    min_subjects: int = 20
    max_subjects: int = 40
    min_images: int = 15
    max_images: int = 45
    separation: float = 1.5
    subject_sd: float = 0.8
    heterogeneity_sd: float = 0.0
    fold_sd: float = 0.2
    fold_shift_sd: float = 0.3
    seed_sd: float = 0.2
    seed_arm_sd: float = 0.15
    offset_sd: float = 0.2
    fold_arm_sd: float = 0.0
    cell_sd: float = 1.0
    run_cell_sd: float = 0.5


SCENARIOS = {
    "base": FoldModel(),
    "heterogeneous subjects (SD 0.6)": FoldModel(heterogeneity_sd=0.6),
    "strong fold effects (x2.5)": FoldModel(fold_sd=0.5, fold_shift_sd=0.75),
    "unstable fold models (run SD x2)": FoldModel(seed_arm_sd=0.3, offset_sd=0.4),
}


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold per subject, dealt round-robin within each class after a shuffle."""
    fold = np.empty(len(labels), dtype=int)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        fold[members] = np.arange(len(members)) % folds
    return fold


def simulate_pooled(
    model: FoldModel, effects: np.ndarray, n_seeds: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold logits (arms x seeds x images): each image scored by the model of its
    arm, seed and test fold (arm a's separation raised by effects[a]); and labels and
    subject index per image."""
    n_arms = len(effects)
    n_subjects = int(rng.integers(model.min_subjects, model.max_subjects + 1))
    subject_label = np.arange(n_subjects) % 2
    subject_fold = stratified_folds(subject_label, model.folds, rng)
    images = rng.integers(model.min_images, model.max_images + 1, n_subjects)
    subject = np.repeat(np.arange(n_subjects), images)
    y, fold = subject_label[subject], subject_fold[subject]
    sign = 2.0 * y - 1.0
    k, n_images = model.folds, len(y)
    fold_strength = rng.normal(0, model.fold_sd, k)[fold]
    fold_shift = rng.normal(0, model.fold_shift_sd, k)[fold]
    run = rng.normal(0, model.seed_sd, (1, n_seeds, k))[:, :, fold]
    run_arm = rng.normal(0, model.seed_arm_sd, (n_arms, n_seeds, k))[:, :, fold]
    offset = rng.normal(0, model.offset_sd, (n_arms, n_seeds, k))[:, :, fold]
    fold_arm = rng.normal(0, model.fold_arm_sd, (n_arms, 1, k))[:, :, fold]
    hetero = rng.normal(0, model.heterogeneity_sd, (n_arms, 1, n_subjects))[:, :, subject]
    shift = rng.normal(0, model.subject_sd, n_subjects)[subject]
    cell = rng.normal(0, model.cell_sd, n_images)
    noise = rng.normal(0, model.run_cell_sd, (n_arms, n_seeds, n_images))
    strength = model.separation + np.asarray(effects)[:, None, None] + fold_strength
    strength = strength + run + run_arm + fold_arm + hetero
    logits = sign * strength + fold_shift + offset + shift + cell + noise
    return logits, y, subject


def family_verdicts(
    model: FoldModel, effect: float, n_seeds: int, rng: np.random.Generator, metric: str
) -> np.ndarray:
    """The verdicts of one family (9 arms against the reference; arm 1 better by `effect`
    on the logit separation, the others null), decided as the report decides them."""
    effects = np.zeros(N_ARMS + 1)
    effects[1] = effect
    logits, y, subject = simulate_pooled(model, effects, n_seeds, rng)
    prob = 1.0 / (1.0 + np.exp(-logits))
    image_id = np.array([f"img{i:05d}" for i in range(len(y))])
    subject_name = np.array([f"s{j:03d}" for j in range(subject.max() + 1)])[subject]
    by_arm = [
        {
            s: pd.DataFrame(
                {"image_id": image_id, "subject": subject_name, "label": y, "prob": prob[a, s]}
            )
            for s in range(n_seeds)
        }
        for a in range(N_ARMS + 1)
    ]
    rows = [
        (f"arm{a}", "reference", compare_arm(by_arm[a], by_arm[0], metric, alpha=ALPHA))
        for a in range(1, N_ARMS + 1)
    ]
    return decide_verdicts(rows, metric, ALPHA, detectable=False)["verdict"].to_numpy()


def _families(task: tuple) -> tuple[int, int]:
    """Among `n` families: those with a false verdict (a null arm called "helps" or
    "hurts"), and those in which arm 1, carrying `effect` (if not 0), is called "helps"."""
    model_dict, effect, n, seed, n_seeds, metric = task
    model, rng = FoldModel(**model_dict), np.random.default_rng(seed)
    first_null = 0 if effect == 0 else 1
    false, helps = 0, 0
    for _ in range(n):
        verdicts = family_verdicts(model, effect, n_seeds, rng, metric)
        false += int((verdicts[first_null:] != NO_DIFFERENCE).any())
        helps += int(effect != 0 and verdicts[0] == "helps")
    return false, helps


def interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a rate."""
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - tail, successes + 1, n - successes))
    return low, high


def population_auc(model: FoldModel, effect: float) -> tuple[float, float]:
    """Pooled out-of-fold AUC of the reference and of an arm better by `effect`, averaged
    over 200 simulated studies of 400 subjects (one image each)."""
    big = replace(model, min_subjects=400, max_subjects=400, min_images=1, max_images=1)
    rng = np.random.default_rng(1)
    aucs = []
    for _ in range(200):
        logits, y, _ = simulate_pooled(big, np.array([0.0, effect]), 1, rng)
        aucs.append([roc_auc_score(y, logits[a, 0]) for a in range(2)])
    reference, arm = np.mean(aucs, axis=0)
    return float(reference), float(arm)


def run(
    scenarios: dict[str, tuple[FoldModel, float]], n: int, n_seeds: int, workers: int, metric: str
) -> list[dict]:
    """Per scenario (model, effect of arm 1): families with a false verdict, and power."""
    chunk = 25
    tasks, keys = [], []
    for index, (name, (model, effect)) in enumerate(scenarios.items()):
        # one random stream per scenario, the same whichever scenarios run together
        stream = list(SCENARIOS).index(name) if name in SCENARIOS else 100 + index
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            tasks.append((asdict(model), effect, size, [19, stream, start], n_seeds, metric))
            keys.append(name)
    totals = {name: [0, 0] for name in scenarios}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for name, (false, helps) in zip(keys, pool.map(_families, tasks), strict=True):
            totals[name][0] += false
            totals[name][1] += helps
    rows = []
    for name, (model, effect) in scenarios.items():
        false, helps = totals[name]
        low, high = interval(false, n)
        row = {
            "scenario": name,
            "model": asdict(model),
            "effect_logit": effect,
            "families": n,
            "false_verdict_families": false,
            "false_verdict_rate": false / n,
            "ci95_low": low,
            "ci95_high": high,
            # the calibration goal, for null scenarios (with an effect: among the 8 null arms)
            "meets_goal": false / n <= 0.05 and high <= 0.08,
        }
        if effect != 0:
            reference_auc, arm_auc = population_auc(model, effect)
            row |= {
                "power": helps / n,
                "reference_auc": reference_auc,
                "auc_gain": arm_auc - reference_auc,
            }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 families per scenario")
    parser.add_argument("--families", type=int, default=500, help="families per scenario")
    parser.add_argument("--folds", type=int, default=FoldModel.folds)
    parser.add_argument("--seeds", type=int, default=3, help="training runs per arm and fold")
    parser.add_argument("--metric", default="auc")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--fold-arm-sd",
        type=float,
        default=0.0,
        help="add a scenario with a fold-by-arm interaction of this SD (sensitivity)",
    )
    parser.add_argument(
        "--effects",
        type=float,
        nargs="*",
        default=[],
        help="power: base scenarios with arm 1 better by these logit effects (8 null arms)",
    )
    parser.add_argument("--no-null", action="store_true", help="only the --effects scenarios")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help=f"null scenarios to run (default: all), of {', '.join(SCENARIOS)}",
    )
    args = parser.parse_args()
    n = 50 if args.quick else args.families
    scenarios: dict[str, tuple[FoldModel, float]] = {}
    if not args.no_null:
        chosen = SCENARIOS if args.only is None else {name: SCENARIOS[name] for name in args.only}
        scenarios = {name: (replace(m, folds=args.folds), 0.0) for name, m in chosen.items()}
        if args.fold_arm_sd > 0:
            model = replace(SCENARIOS["base"], folds=args.folds, fold_arm_sd=args.fold_arm_sd)
            scenarios[f"fold-by-arm interaction (SD {args.fold_arm_sd:g})"] = (model, 0.0)
    for effect in args.effects:
        scenarios[f"base, arm 1 better by {effect:g}"] = (
            replace(SCENARIOS["base"], folds=args.folds),
            effect,
        )
    start = time.perf_counter()
    rows = run(scenarios, n, args.seeds, args.workers, args.metric)
    seconds = time.perf_counter() - start
    print(
        f"cross-validation rule, primary metric {args.metric}: {N_ARMS} arms + reference, "
        f"{args.seeds} seeds, {args.folds} folds, decide_verdicts' defaults at {ALPHA}"
    )
    print(f"{'scenario':<36} {'families':>8}  false-verdict rate  [95% CI]         goal   power")
    for row in rows:
        goal = ("met" if row["meets_goal"] else "NOT met") if "power" not in row else ""
        power = (
            f"{row['power']:.3f} (ref AUC {row['reference_auc']:.3f}, gain {row['auc_gain']:+.3f})"
            if "power" in row
            else "-"
        )
        print(
            f"{row['scenario']:<36} {row['families']:8d}  {row['false_verdict_rate']:18.3f}  "
            f"[{row['ci95_low']:.3f}, {row['ci95_high']:.3f}]   {goal:<7}{power}"
        )
    print(f"{seconds:.0f} s with {args.workers} workers")
    result = {
        "metric": args.metric,
        "n_seeds": args.seeds,
        "folds": args.folds,
        "rows": rows,
        "seconds": seconds,
        "workers": args.workers,
        "quick": args.quick,
        "load_average": os.getloadavg(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = "calibration_cv_quick.json" if args.quick else f"calibration_cv_{stamp}.json"
    write_json(RESULTS / name, json.loads(json.dumps(result)))


if __name__ == "__main__":
    main()
