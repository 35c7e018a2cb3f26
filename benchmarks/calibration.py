"""Calibration and power of the verdict rule by simulation (issue 8, item 6).

    python benchmarks/calibration.py --separation 0.75 --workers 4   # 500 null families per level
    python benchmarks/calibration.py --separation 0.75 --unstable-factor 2 --effects 0.4 --no-old-rule
    python benchmarks/calibration.py --seeds 5 --families 200 --no-old-rule
    python benchmarks/calibration.py --quick                          # smoke test

Each family is one simulated study: a reference and 9 arms, 3 seeds (`--seeds`), 16-28 test subjects
(half ALL, half HEM, drawn per family), 15-45 images per subject, predictions from the
generative model in `leukaug.stats.simulate` (subject effects, subject-by-augmentation
heterogeneity SD 0 / 0.3 / 0.6 on the logit scale, shared and arm-specific training-run
effects, cell noise; `--unstable-factor` multiplies the last null arm's training-run SD).
Every family goes through the code path that writes verdicts.csv (`compare_arm` for each arm,
then `decide_verdicts`, Holm over the 9 arms), once per seed-variance rule of
`leukaug.stats.pooling` ("pooled_net" is the rule in use; "own" is the unpooled
t on S - 1 df), all on the same simulated families.

Reported per heterogeneity level and rule:
- null (all 10 arms exchangeable): the family-wise false-verdict rate, i.e. the share of
  families with at least one "helps" or "hurts"; and, for contrast, the old rule's (seed 0,
  image-level DeLong with Holm);
- power (arm 1 truly better by `effect` on the logit separation, 8 null arms): the share of
  families in which arm 1 is called "helps", with the false-verdict rate among the 8 nulls.
The population AUCs (reference, and its gain) are computed once from 200,000 simulated subjects.

Results go to benchmarks/results/calibration_<tag>_<time>.json (calibration_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.stats import beta

from leukaug.core.atomic import write_json
from leukaug.stats.classical import fast_auc
from leukaug.stats.pooling import DEFAULT_SEED_VARIANCE, SEED_VARIANCES
from leukaug.stats.simulate import SimulationModel, run_family, simulate_logits

RESULTS = Path(__file__).parent / "results"
HETEROGENEITY = (0.0, 0.3, 0.6)
N_ARMS = 9
SUBJECTS = (16, 28)
NO_DIFFERENCE = "no detectable difference"


def _families(task: tuple) -> dict[str, int]:
    """Run `n` families at one (heterogeneity, effect) cell; counts of the outcomes per rule."""
    heterogeneity, effect, n, seed, metric, n_seeds, separation, unstable, old_rule = task
    rng = np.random.default_rng(seed)
    effects = np.zeros(N_ARMS + 1)
    effects[1] = effect
    counts = {"families": 0, "old_any_false": 0}
    for rule in SEED_VARIANCES:
        counts.update({f"{rule}_any_false": 0, f"{rule}_helps": 0, f"{rule}_wrong_sign": 0})
    first_null = 0 if effect == 0 else 1  # index among the 9 arms; arm 1 carries the effect
    for _ in range(n):
        n_subjects = int(rng.integers(SUBJECTS[0], SUBJECTS[1] + 1))
        model = SimulationModel(
            n_subjects=n_subjects,
            heterogeneity_sd=heterogeneity,
            separation=separation,
            unstable_arm_factor=unstable,
        )
        outcome = run_family(model, effects, n_seeds, rng, metric, with_old_rule=old_rule)
        counts["families"] += 1
        counts["old_any_false"] += int(outcome.old_rejected[first_null:].any())
        for rule, verdicts in outcome.rule_verdicts.items():
            counts[f"{rule}_any_false"] += int((verdicts[first_null:] != NO_DIFFERENCE).any())
            if effect != 0:
                counts[f"{rule}_helps"] += int(verdicts[0] == "helps")
                counts[f"{rule}_wrong_sign"] += int(verdicts[0] == "hurts")
    return counts


def population_auc(
    effect: float, heterogeneity: float, separation: float, n_subjects: int = 200_000
) -> tuple[float, float]:
    """Population AUC of the reference and of an arm with `effect` (one image per subject)."""
    model = SimulationModel(
        n_subjects=n_subjects,
        min_images=1,
        max_images=1,
        heterogeneity_sd=heterogeneity,
        separation=separation,
    )
    logits, y, _ = simulate_logits(model, np.array([0.0, effect]), 8, np.random.default_rng(1))
    aucs = np.array([[fast_auc(y, logits[a, s]) for s in range(8)] for a in range(2)])
    return float(aucs[0].mean()), float(aucs[1].mean())


def upper_bound(successes: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate."""
    return 1.0 if successes == n else float(beta.ppf(level, successes + 1, n - successes))


def run(
    n_null: int,
    n_power: int,
    effects: list[float],
    levels: list[float],
    *,
    n_seeds: int,
    separation: float,
    workers: int,
    metric: str,
    unstable: float = 1.0,
    old_rule: bool = True,
) -> dict:
    chunk = 25
    tasks, keys = [], []
    for heterogeneity in levels:
        for effect, n in [(0.0, n_null)] + [(e, n_power) for e in effects]:
            for start in range(0, n, chunk):
                seed = [int(10 * heterogeneity), int(100 * effect), start]
                size = min(chunk, n - start)
                tasks.append(
                    (
                        heterogeneity,
                        effect,
                        size,
                        seed,
                        metric,
                        n_seeds,
                        separation,
                        unstable,
                        old_rule,
                    )
                )
                keys.append((heterogeneity, effect))
    totals: dict[tuple[float, float], dict[str, int]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for key, counts in zip(keys, pool.map(_families, tasks), strict=True):
            cell = totals.setdefault(key, dict.fromkeys(counts, 0))
            for name, value in counts.items():
                cell[name] += value
    rows = []
    for (heterogeneity, effect), counts in totals.items():
        n = counts["families"]
        row = {
            "heterogeneity_sd": heterogeneity,
            "effect_logit": effect,
            "families": n,
            "old_rule_false_verdict_rate": (
                counts["old_any_false"] / n if old_rule and effect == 0 else None
            ),
        }
        for rule in SEED_VARIANCES:
            row[f"{rule}_false_verdict_rate"] = counts[f"{rule}_any_false"] / n
            row[f"{rule}_false_verdict_rate_upper95"] = upper_bound(counts[f"{rule}_any_false"], n)
            if effect != 0:
                row[f"{rule}_power"] = counts[f"{rule}_helps"] / n
                row[f"{rule}_wrong_sign_rate"] = counts[f"{rule}_wrong_sign"] / n
        if effect != 0:
            reference_auc, arm_auc = population_auc(effect, heterogeneity, separation)
            row["reference_auc"] = reference_auc
            row["auc_gain"] = arm_auc - reference_auc
        rows.append(row)
    return {
        "metric": metric,
        "n_seeds": n_seeds,
        "separation": separation,
        "unstable_arm_factor": unstable,
        "rule_in_use": DEFAULT_SEED_VARIANCE,
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(
        f"primary metric: {result['metric']}; {N_ARMS} arms + reference, "
        f"{result['n_seeds']} seeds, separation {result['separation']:g}, "
        f"last arm's seed SD x{result['unstable_arm_factor']:g}"
    )
    rules = "  ".join(f"{rule:>17}" for rule in SEED_VARIANCES)
    print(
        f"hetero SD  effect  ref AUC  AUC gain  families  old rule  false-verdict / power: {rules}"
    )
    for row in result["rows"]:
        reference = f"{row['reference_auc']:.3f}" if "reference_auc" in row else "    -"
        gain = f"{row['auc_gain']:+.3f}" if "auc_gain" in row else "     -"
        old = row["old_rule_false_verdict_rate"]
        cells = "  ".join(
            f"{row[f'{rule}_false_verdict_rate']:.3f} / "
            + (f"{row[f'{rule}_power']:.3f}" if f"{rule}_power" in row else "    -")
            + "    "
            for rule in SEED_VARIANCES
        )
        print(
            f"{row['heterogeneity_sd']:9.1f}  {row['effect_logit']:6.2f}  {reference:>7}  {gain:>8}  "
            f"{row['families']:8d}  {'-' if old is None else f'{old:.3f}':>8}  {cells}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 null / 25 power families per cell")
    parser.add_argument("--families", type=int, default=500, help="null families per level")
    parser.add_argument("--power-families", type=int, default=100, help="families per effect")
    parser.add_argument("--effects", type=float, nargs="+", default=[0.2, 0.4, 0.75])
    parser.add_argument("--heterogeneity", type=float, nargs="+", default=list(HETEROGENEITY))
    parser.add_argument("--seeds", type=int, default=3, help="training runs per arm")
    parser.add_argument("--separation", type=float, default=SimulationModel.separation)
    parser.add_argument("--metric", default="auc")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--unstable-factor", type=float, default=1.0, help="the last null arm's seed SD multiplier"
    )
    parser.add_argument(
        "--no-old-rule", action="store_true", help="skip the image-level rule (faster)"
    )
    args = parser.parse_args()
    n_null, n_power = (50, 25) if args.quick else (args.families, args.power_families)
    start = time.perf_counter()
    result = run(
        n_null,
        n_power,
        args.effects,
        args.heterogeneity,
        n_seeds=args.seeds,
        separation=args.separation,
        workers=args.workers,
        metric=args.metric,
        unstable=args.unstable_factor,
        old_rule=not args.no_old_rule,
    )
    result.update(
        {
            "seconds": time.perf_counter() - start,
            "workers": args.workers,
            "quick": args.quick,
            "model": SimulationModel(separation=args.separation).to_dict(),
            "subjects_per_family": list(SUBJECTS),
            "load_average": os.getloadavg(),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        }
    )
    print_table(result)
    print(f"{result['seconds']:.0f} s with {args.workers} workers")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    tag = f"{args.metric}_{args.seeds}seeds_separation{args.separation:g}"
    if args.unstable_factor != 1:
        tag += f"_unstable{args.unstable_factor:g}"
    name = "calibration_quick.json" if args.quick else f"calibration_{tag}_{stamp}.json"
    write_json(RESULTS / name, json.loads(json.dumps(result)))


if __name__ == "__main__":
    main()
