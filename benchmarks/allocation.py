"""What the seed pairing buys, and what more reference seeds would buy (issue 18, item 2).

    python benchmarks/allocation.py runs/demo        # a finished (or partial) study folder

For each comparison of the study on its primary metric (the verdicts.csv path): the
correlation of a seed's arm and reference values (`pairing_correlation`: what sharing the
seed's initialisation, data order and dropout stream buys), the arm's and the reference's
moderated run variances, and the standard error of the difference at the study's own
allocation, beside the same runs analysed unpaired (the seed effect not cancelled) and the
classical allocation of about sqrt(K) x as many reference seeds for K arms, at the same
total number of runs (from `leukaug.stats.power`). Results go to
benchmarks/results/allocation_<study>_<time>.json.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

from leukaug.core.atomic import write_json
from leukaug.stats.family import primary_metric, primary_verdicts
from leukaug.stats.pairs import plan_references
from leukaug.stats.power import PilotRow, standard_error
from leukaug.stats.study_results import load_study_results

RESULTS = Path(__file__).parent / "results"


def allocation_rows(study_dir: Path) -> list[dict[str, float | str]]:
    study = load_study_results(study_dir)
    verdicts = primary_verdicts(study, plan_references(study), primary_metric(study))
    k = len(verdicts)
    rows = []
    for row in verdicts.itertuples():
        seeds, reference_seeds = int(row.n_seeds), int(row.n_reference_seeds)
        subjects = float(row.se) ** 2 - float(row.var_run_arm) / seeds
        subjects -= float(row.var_run_reference) / reference_seeds
        parts = PilotRow(
            row.var_run_arm, row.var_run_reference, max(subjects, 0.0) * row.n_subjects
        )
        total = seeds * k + reference_seeds  # runs of the whole family
        classical_ref = max(round(math.sqrt(k) * total / (k + math.sqrt(k))), 1)
        classical_arm = max((total - classical_ref) // k, 2)
        unpaired = math.sqrt(row.se**2 + 2 * row.var_seed_effect / seeds)
        rows.append(
            {
                "arm": row.arm,
                "metric": row.metric,
                "pairing_correlation": row.pairing_correlation,
                "var_run_arm": row.var_run_arm,
                "var_run_reference": row.var_run_reference,
                "var_seed_effect": row.var_seed_effect,
                "seeds": seeds,
                "reference_seeds": reference_seeds,
                "se": row.se,
                "se_unpaired": unpaired,
                "classical_seeds": f"{classical_arm} per arm, {classical_ref} reference",
                "se_classical": standard_error(
                    parts, classical_arm, classical_ref, int(row.n_subjects)
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    args = parser.parse_args()
    rows = allocation_rows(args.study)
    print(
        f"{'arm':<32} {'pairing r':>9} {'var arm':>9} {'var ref':>9} {'se':>7} "
        f"{'unpaired':>8} {'classical':>9}  classical allocation"
    )
    for r in rows:
        print(
            f"{r['arm']:<32} {r['pairing_correlation']:>9.3f} {r['var_run_arm']:>9.2e} "
            f"{r['var_run_reference']:>9.2e} {r['se']:>7.4f} {r['se_unpaired']:>8.4f} "
            f"{r['se_classical']:>9.4f}  {r['classical_seeds']}"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"allocation_{args.study.name}_{stamp}.json"
    write_json(out, {"study": str(args.study), "python": sys.version.split()[0], "rows": rows})
    print(f"written: {out}")


if __name__ == "__main__":
    main()
