"""Calibration and power of the verdict rule, on three data-generating models (issue 18, item 4).

    python benchmarks/calibration.py --scenario all --workers 2     # every scenario, <= 15 min
    python benchmarks/calibration.py --scenario unstable_reference --families 400
    python benchmarks/calibration.py --scenario power --power-seeds 3 5
    python benchmarks/calibration.py --scenario all --quick          # smoke run, seconds

A family is one study: a reference and its arms, trained with the same seeds, scored on one
test set. Every family goes through `compare_arm` (the code that writes verdicts.csv, once
per arm) and then through each verdict rule (`RULES`) on the same comparisons.

Scenarios (`SCENARIOS`), null unless named "power":
- builtin: the analysis's own model, `leukaug.stats.simulate` (9 arms, 3 seeds, 16-28
  subjects, separation 0.75, no heterogeneity): the check of the model the rule assumes;
- equal, unstable_reference, unstable_arm, spread: `independent_dgm`, a model written
  without the analysis code (heavy-tailed t(3) run effects, collapsed runs, subject-by-run
  interaction, unequal cells per subject, no shared seed effect), 9 arms, 3 seeds, with the
  reference's or one arm's run SD x3, or every row's run variance x1 to x3;
  unstable_reference_9: the x3 reference trained with 9 seeds (the arms keep 3);
- empirical: real training runs (`empirical_null`: 4 null arms against their reference,
  12 seeds each, trained with leukaug); families are 3-seed subsets of that pool;
- power: `independent_dgm` (equal), 9 arms of which arms 1-3 raise the expected AUC by
  +0.05, +0.10 and +0.15, with 3, 5 and 8 seeds (`--power-seeds`).

Reported per scenario and rule: the family-wise false-verdict rate (share of families with
a "helps" or "hurts" among the null arms) with its exact (Clopper-Pearson) 95% interval, and
each null arm's unadjusted false rate (p < 0.05); goals: rate <= 0.05, interval's upper end
<= 0.08, every arm's rate <= 0.06. Power: share of families with "helps" for each effect.
Results go to benchmarks/results/calibration_<scenario>_<time>.json (calibration_quick.json
with --quick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import beta

sys.path.insert(0, str(Path(__file__).parent))

import empirical_null
import independent_dgm
from leukaug.core.atomic import write_json
from leukaug.stats.compare import Comparison, compare_arm
from leukaug.stats.simulate import SimulationModel, simulate_study
from leukaug.stats.verdicts import HELPS, NO_DIFFERENCE, decide_verdicts

RESULTS = Path(__file__).parent / "results"
ALPHA = 0.05
METRIC = "auc"
GOAL_RATE, GOAL_UPPER, GOAL_ARM = 0.05, 0.08, 0.06
POWER_GAINS = (0.05, 0.10, 0.15)
Rows = list[tuple[str, str, Comparison]]


# ------------------------------------------------------------------ verdict rules
def _rule(seed_variance: str, multiplicity: str) -> Callable[[Rows], pd.DataFrame]:
    def decide(rows: Rows) -> pd.DataFrame:
        return decide_verdicts(
            rows,
            METRIC,
            ALPHA,
            seed_variance=seed_variance,
            multiplicity=multiplicity,
            detectable=False,
        )

    return decide


# "current": the rule of issue 8 (arm x seed ANOVA residual pooled over the family, Holm);
# "new": issue 18's (each row's own run variance moderated toward the family, step-down
# max-t); "moderated_holm": the new variance with Holm, to tell the two parts apart.
RULES: dict[str, Callable[[Rows], pd.DataFrame]] = {
    "current": _rule("pooled_net", "holm"),
    "new": _rule("moderated", "maxt"),
    "moderated_holm": _rule("moderated", "holm"),
}


# ------------------------------------------------------------------ scenarios
Family = list[dict[int, pd.DataFrame]]  # per row, reference first: seed -> predictions


@dataclass(frozen=True)
class Scenario:
    """A scenario; its draw(rng, n_seeds, index, n_families) gives family `index` and every
    arm's true gain in AUC (0: a null arm)."""

    name: str
    description: str
    families: int  # default number of families
    seeds: tuple[int, ...] = (3,)


def _builtin(rng: np.random.Generator, n_seeds: int, *_: int) -> tuple[Family, np.ndarray]:
    model = SimulationModel(n_subjects=int(rng.integers(16, 29)), separation=0.75)
    return simulate_study(model, np.zeros(10), n_seeds, rng), np.zeros(9)


def _independent(name: str) -> Callable[..., tuple[Family, np.ndarray]]:
    dgm = independent_dgm.SCENARIOS[name][1]

    def draw(rng: np.random.Generator, n_seeds: int, *_: int) -> tuple[Family, np.ndarray]:
        effects = np.zeros(dgm.n_arms + 1)
        return independent_dgm.simulate_family(dgm, effects, n_seeds, rng), effects[1:]

    return draw


_POWER_EFFECTS: dict[float, float] = {}


def _power(rng: np.random.Generator, n_seeds: int, *_: int) -> tuple[Family, np.ndarray]:
    dgm = independent_dgm.SCENARIOS["equal"][1]
    if not _POWER_EFFECTS:
        _POWER_EFFECTS.update({g: independent_dgm.auc_effect(dgm, g) for g in POWER_GAINS})
    gains = np.zeros(dgm.n_arms)
    gains[: len(POWER_GAINS)] = POWER_GAINS
    effects = np.concatenate([[0.0], [_POWER_EFFECTS.get(g, 0.0) for g in gains]])
    return independent_dgm.simulate_family(dgm, effects, n_seeds, rng), gains


_POOL: dict[str, dict[int, pd.DataFrame]] = {}
# Default families per scenario: more where the rule is most likely to fail.
NULL_FAMILIES = {
    "equal": 200,
    "unstable_reference": 300,
    "unstable_reference_9": 200,
    "unstable_arm": 300,
    "spread": 200,
}


def _empirical(
    rng: np.random.Generator, n_seeds: int, index: int, n_total: int
) -> tuple[Family, np.ndarray]:
    """Family `index` of `n_total`: the pool's rows on one seed subset (the same subsets in
    every worker)."""
    if not _POOL:
        _POOL.update(empirical_null.load_pool())
    seeds = sorted(_POOL[empirical_null.REFERENCE])
    subsets = empirical_null.seed_subsets(seeds, n_seeds, n_total, np.random.default_rng(2026))
    family = [{s: runs[s] for s in subsets[index]} for runs in _POOL.values()]
    return family, np.zeros(len(family) - 1)


SCENARIOS: dict[str, tuple[Scenario, Callable[..., tuple[Family, np.ndarray]]]] = {
    "builtin": (
        Scenario("builtin", "leukaug.stats.simulate (the rule's own model), 9 null arms", 200),
        _builtin,
    ),
    **{
        name: (
            Scenario(name, f"independent DGM: {text}, 9 null arms", NULL_FAMILIES[name]),
            _independent(name),
        )
        for name, (text, _) in independent_dgm.SCENARIOS.items()
    },
    "empirical": (
        Scenario("empirical", "real training runs: 4 null arms, 3-seed subsets of 12", 220),
        _empirical,
    ),
    "power": (
        Scenario(
            "power", "independent DGM (equal): +0.05/+0.10/+0.15 AUC, 6 null arms", 60, (3, 5, 8)
        ),
        _power,
    ),
}


# ------------------------------------------------------------------ one chunk of families
def _chunk(task: tuple[str, int, int, int, int]) -> dict[str, np.ndarray | int]:
    """Families start..start+n of one (scenario, seeds) cell: counts per rule."""
    name, n_seeds, start, n, n_total = task
    draw = SCENARIOS[name][1]
    counts: dict[str, np.ndarray | int] = {"families": 0}
    for index in range(start, start + n):
        rng = np.random.default_rng([hash_name(name), n_seeds, index])
        family, gains = draw(rng, n_seeds, index, n_total)
        rows = [
            (f"arm{a}", "reference", compare_arm(family[a], family[0], METRIC, alpha=ALPHA))
            for a in range(1, len(family))
        ]
        null = gains == 0
        counts["families"] += 1
        for rule, decide in RULES.items():
            table = decide(rows)
            verdicts = table["verdict"].to_numpy()
            false = (verdicts != NO_DIFFERENCE) & null
            for key, value in {
                "any_false": np.array([false.any()], int),
                "arm_false_unadjusted": ((table["p_value"].to_numpy() < ALPHA) & null).astype(int),
                "helps": (verdicts == HELPS).astype(int),
                "wrong_sign": ((verdicts != NO_DIFFERENCE) & (verdicts != HELPS) & ~null).astype(
                    int
                ),
            }.items():
                counts[f"{rule}:{key}"] = counts.get(f"{rule}:{key}", 0) + value
        counts["gains"] = gains
    return counts


def hash_name(name: str) -> int:
    """A stable integer for a scenario name (Python's hash() is salted per process)."""
    return int.from_bytes(name.encode(), "little") % (2**32)


def interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a rate."""
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - tail, successes + 1, n - successes))
    return low, high


def run_cell(name: str, n_seeds: int, n_families: int, workers: int) -> dict:
    """Every family of one (scenario, seeds) cell, in chunks over `workers` processes."""
    size = max(1, min(25, math.ceil(n_families / max(workers, 1) / 2)))
    tasks = [
        (name, n_seeds, start, min(size, n_families - start), n_families)
        for start in range(0, n_families, size)
    ]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_chunk, tasks))
    else:
        parts = [_chunk(task) for task in tasks]
    total: dict = {"families": sum(int(p["families"]) for p in parts), "gains": parts[0]["gains"]}
    for key in parts[0]:
        if ":" in key:
            total[key] = sum(p[key] for p in parts)
    return summarise(name, n_seeds, total)


def summarise(name: str, n_seeds: int, total: dict) -> dict:
    n, gains = total["families"], np.asarray(total["gains"])
    null = gains == 0
    cell: dict = {"scenario": name, "n_seeds": n_seeds, "families": n, "rules": {}}
    for rule in RULES:
        any_false = int(total[f"{rule}:any_false"][0])
        low, high = interval(any_false, n)
        arm_rates = total[f"{rule}:arm_false_unadjusted"][null] / n
        result = {
            "false_verdict_rate": any_false / n,
            "false_verdict_ci95": [low, high],
            "arm_false_rates_unadjusted": arm_rates.round(4).tolist(),
            "max_arm_false_rate": float(arm_rates.max()),
            "worst_arm": int(np.flatnonzero(null)[arm_rates.argmax()] + 1),
        }
        result["meets_goals"] = bool(
            result["false_verdict_rate"] <= GOAL_RATE
            and high <= GOAL_UPPER
            and result["max_arm_false_rate"] <= GOAL_ARM
        )
        result["mean_arm_false_rate"] = float(arm_rates.mean())
        if (~null).any():  # a power cell: its few families do not judge calibration
            result["meets_goals"] = None
            result["power"] = {
                f"{g:+.2f}": total[f"{rule}:helps"][i] / n for i, g in enumerate(gains) if g
            }
            result["wrong_sign"] = {
                f"{g:+.2f}": total[f"{rule}:wrong_sign"][i] / n for i, g in enumerate(gains) if g
            }
        cell["rules"][rule] = result
    return cell


# ------------------------------------------------------------------ output
def print_tables(cells: Sequence[dict]) -> None:
    print(
        "scenario            seeds  families  rule            false-verdict rate [95% CI]  "
        "arm rate mean / max (arm)  goals"
    )
    verdict = {True: "met", False: "FAILED", None: "-"}
    for cell in cells:
        for rule, r in cell["rules"].items():
            low, high = r["false_verdict_ci95"]
            print(
                f"{cell['scenario']:18s}  {cell['n_seeds']:5d}  {cell['families']:8d}  {rule:14s}  "
                f"{r['false_verdict_rate']:.3f} [{low:.3f}, {high:.3f}]       "
                f"{r['mean_arm_false_rate']:.3f} / {r['max_arm_false_rate']:.3f} ({r['worst_arm']})"
                f"       {verdict[r['meets_goals']]}"
            )
    power = [cell for cell in cells if any("power" in r for r in cell["rules"].values())]
    if power:
        gains = list(next(iter(power[0]["rules"].values()))["power"])
        print("\npower (share of families with 'helps'), AUC gain " + " / ".join(gains))
        for cell in power:
            for rule, r in cell["rules"].items():
                values = " / ".join(f"{r['power'][g]:.2f}" for g in gains)
                print(
                    f"  {cell['n_seeds']} seeds  {cell['families']:4d} families  {rule:14s}  {values}"
                )


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", nargs="+", default=["all"], choices=["all", *SCENARIOS])
    parser.add_argument("--families", type=int, help="families per cell (default: per scenario)")
    parser.add_argument("--power-seeds", type=int, nargs="+", help="seed counts for power")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 families per cell (smoke run)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    names = list(SCENARIOS) if "all" in args.scenario else args.scenario
    start = time.perf_counter()
    cells = []
    for name in names:
        scenario = SCENARIOS[name][0]
        seeds = args.power_seeds if name == "power" and args.power_seeds else scenario.seeds
        for n_seeds in seeds:
            n = 4 if args.quick else args.families or scenario.families
            cells.append(run_cell(name, n_seeds, n, args.workers))
            print(f"[{time.perf_counter() - start:.0f} s] {name}, {n_seeds} seeds done", flush=True)
    seconds = time.perf_counter() - start
    used = os.times()
    cpu = used.user + used.system + used.children_user + used.children_system
    print_tables(cells)
    print(
        f"{seconds:.0f} s wall, {cpu:.0f} s CPU, {args.workers} workers, load average "
        f"{os.getloadavg()[0]:.1f}; rules: {', '.join(RULES)}"
    )
    if not args.no_save:
        record = {
            "scenarios": names,
            "cells": cells,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "workers": args.workers,
            "quick": args.quick,
            "rules": list(RULES),
            "dgm": {k: d.to_dict() for k, (_, d) in independent_dgm.SCENARIOS.items()},
            "load_average": os.getloadavg(),
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        }
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        tag = "all" if "all" in args.scenario else "_".join(names)
        name = "calibration_quick.json" if args.quick else f"calibration_{tag}_{stamp}.json"
        write_json(RESULTS / name, json.loads(json.dumps(record, default=_plain)))
    return cells


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    main()
