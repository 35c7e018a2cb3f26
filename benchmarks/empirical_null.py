"""An empirical null from real training runs, for the verdict rule's calibration (issue 18, item 4).

    python benchmarks/empirical_null.py train            # the pool: ~60 tiny runs, in the background
    python benchmarks/empirical_null.py collect          # the pool again from the study folder
    python benchmarks/empirical_null.py show             # per arm: test AUC spread, pairing

The null arms differ from their reference by nothing but their own random draws. The
reference trains with flips and rotations (`flip_rotate`); each null arm trains with the
same flips and rotations and an exact identity, Gaussian noise of SD 0 (images + 0 * noise,
clamped to [0, 1], which they already are), placed before or after `flip_rotate`, in the
"together" or "independent" mode. The identity draws its own random numbers from the
augmentation stream, so every arm sees other flips and rotations than the reference while
sharing its seed's initialisation, data order and dropout (the seed pairing), and every
arm's augmentation draws have the same distribution: no arm can be better in expectation.
(Flips alone against no augmentation would not be a null: even on flip-invariant cells they
change what the network learns.)

`train` runs the study below with the real pipeline (`leukaug run`: synthetic cells,
timm's `test_resnet`, a small ResNet of 0.37 M weights, from scratch at 32 px, 5
epochs, one thread per arm, two arms at a time) for 12 seeds, then keeps the test
predictions of every run in
benchmarks/results/empirical_null_predictions.csv.gz (columns arm, seed, image_id,
subject, label, prob). `seed_subsets` picks seed subsets of that pool: each is one study of
the reference and the null arms with those seeds, for `benchmarks/calibration.py`. The
families share runs (there are only 12 / 3 = 4 disjoint 3-seed families), so their
false-verdict rate has a wider uncertainty than a binomial interval over families says.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from leukaug.core.atomic import write_json

RESULTS = Path(__file__).parent / "results"
POOL = RESULTS / "empirical_null_predictions.csv.gz"
POOL_RECORD = RESULTS / "empirical_null_pool.json"
REFERENCE = "tiny-flip_rotate-full"
POOL_SEEDS = 12

STUDY = """\
[study]
name = "empirical_null"
description = "Null arms: flip_rotate with an identity (noise of SD 0) that shifts the augmentation stream."
seeds = {seeds}
baseline = "flip_rotate"
primary_metric = "auc"
device = "cpu"

[data]
source = "embedded"
split = "subject"
val_fraction = 0.2

[data.synth]
size = 32
subjects_per_class = 6
test_subjects_per_class = 15
cells_per_subject = 12
seed = 0
difficulty = 0.3

[training]
image_size = 32
epochs = 5
batch_size = 16
optimizer = "adam"
lr = 3e-3
aug_p = 0.5

[models.tiny]
model = "timm:test_resnet"
pretrained = false

[augmentations]
flip_rotate = ["flip_rotate"]
before = {{ ops = [{{ name = "noise", std = 0.0 }}, "flip_rotate"] }}
before_independent = {{ ops = [{{ name = "noise", std = 0.0 }}, "flip_rotate"], mode = "independent" }}
after = {{ ops = ["flip_rotate", {{ name = "noise", std = 0.0 }}] }}
after_independent = {{ ops = ["flip_rotate", {{ name = "noise", std = 0.0 }}], mode = "independent" }}

[regimes.full]
kind = "full"

[executor]
kind = "local"
threads = 1
arms_per_device = 2
"""


def train(out: Path, n_seeds: int) -> None:
    """Run the study with the real CLI into `out` and keep the pool's test predictions."""
    out.mkdir(parents=True, exist_ok=True)
    study = out / "empirical_null.toml"
    study.write_text(STUDY.format(seeds=list(range(n_seeds))), encoding="utf-8")
    start, cpu = time.perf_counter(), os.times()
    command = [sys.executable, "-m", "leukaug", "run", str(study), "--out", str(out / "study")]
    subprocess.run([*command, "--cache-dir", str(out / "cache")], check=True)
    used = os.times()
    runs = collect(out / "study")
    write_json(
        POOL_RECORD,
        {
            "study": STUDY.format(seeds=list(range(n_seeds))),
            "runs": runs,
            "wall_seconds": time.perf_counter() - start,
            "cpu_seconds_children": (used.children_user + used.children_system)
            - (cpu.children_user + cpu.children_system),
            "load_average_after": os.getloadavg(),
        },
    )


def collect(study_dir: Path) -> int:
    """Keep the test predictions of every finished run of the study in `POOL`; the count."""
    frames = []
    for arm_dir in sorted((study_dir / "arms").iterdir()):
        if not (arm_dir / "predictions.csv").exists():
            continue
        name, _, seed = arm_dir.name.rpartition("-s")
        predictions = pd.read_csv(arm_dir / "predictions.csv")
        test = predictions.loc[predictions["split"] == "test"].drop(columns="split")
        frames.append(test.assign(arm=name, seed=int(seed)))
    pool = pd.concat(frames, ignore_index=True)
    columns = ["arm", "seed", "image_id", "subject", "label", "prob"]
    with tempfile.NamedTemporaryFile(dir=RESULTS, suffix=".csv.gz", delete=False) as handle:
        temporary = Path(handle.name)
    pool[columns].to_csv(temporary, index=False, compression="gzip")
    temporary.chmod(0o644)
    os.replace(temporary, POOL)
    return len(frames)


def load_pool(path: Path = POOL) -> dict[str, dict[int, pd.DataFrame]]:
    """arm -> seed -> test predictions (image_id, subject, label, prob); reference first."""
    if not path.exists():
        raise SystemExit(
            f"{path} is missing: run `python benchmarks/empirical_null.py train` first "
            "(about 60 tiny training runs)."
        )
    pool = pd.read_csv(path, dtype={"image_id": str, "subject": str})
    arms = [REFERENCE, *sorted(set(pool["arm"]) - {REFERENCE})]
    return {
        arm: {
            int(seed): frame.drop(columns=["arm", "seed"]).reset_index(drop=True)
            for seed, frame in pool.loc[pool["arm"] == arm].groupby("seed")
        }
        for arm in arms
    }


def seed_subsets(
    seeds: Sequence[int], n_seeds: int, n_families: int, rng: np.random.Generator
) -> list[tuple[int, ...]]:
    """`n_families` distinct subsets of `n_seeds` of the pool's seeds: every subset when
    there are at most that many, else a random sample of them (without repeats)."""
    subsets = list(itertools.combinations(sorted(seeds), n_seeds))
    if len(subsets) <= n_families:
        return subsets
    return [subsets[i] for i in sorted(rng.choice(len(subsets), n_families, replace=False))]


def pool_summary(pool: dict[str, dict[int, pd.DataFrame]]) -> pd.DataFrame:
    """Per row of the pool: test AUC over seeds (mean, SD) and, for the null arms, the
    correlation of a seed's arm and reference AUC (what pairing by seed can cancel) and the
    SD of the per-seed difference."""
    from leukaug.stats.classical import fast_auc

    auc = pd.DataFrame(
        {
            arm: {s: fast_auc(f["label"].to_numpy(), f["prob"].to_numpy()) for s, f in runs.items()}
            for arm, runs in pool.items()
        }
    )
    reference = auc[REFERENCE]
    return pd.DataFrame(
        {
            "mean_auc": auc.mean(),
            "sd_auc": auc.std(ddof=1),
            "min_auc": auc.min(),
            "pairing_correlation": auc.corrwith(reference),
            "sd_difference": auc.sub(reference, axis=0).std(ddof=1),
        }
    )


def show() -> None:
    pool = load_pool()
    print(pool_summary(pool).round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["train", "collect", "show"])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "empirical_null")
    parser.add_argument("--seeds", type=int, default=POOL_SEEDS)
    args = parser.parse_args()
    if args.action == "train":
        train(args.out, args.seeds)
    elif args.action == "collect":  # again from a finished (or resumed) study folder
        print(f"{collect(args.out / 'study')} runs -> {POOL}")
    else:
        show()


if __name__ == "__main__":
    main()
