"""Shortcut checks (issue 19, item 6): how well the cell mask finds the cell on black and on a
smear, how fast, and what the background check reports for models that do and do not use
the background.

    python benchmarks/shortcuts.py                     # masks + three trained arms (CPU, minutes)
    python benchmarks/shortcuts.py --masks-only
    python benchmarks/shortcuts.py --real ../shared/real-cells/cnmc-samples

Masks: synthetic cells (`data.synth.sample_cells`) and, with `--real`, the real C-NMC cells of
a folder (decoded and resized as the cache does), each on black and painted onto a synthetic
smear (`data.smear.on_smear`: pale pink background, red cells); intersection over union with
the true cell (its non-black pixels), the share found, milliseconds per image.

Background check: three data sets from one synthetic C-NMC tree (subject-level split), the
same network (`timm:resnet10t` from scratch) and the `features` arm trained on each:
- shortcut: one identical cell everywhere, the smear's tint is the label;
- confounded: the synthetic cells (which carry their class), and the tint is the label too;
- honest: the synthetic cells, the tint drawn at random (independent of the label).
Per arm: test AUC, and its drop with the background replaced (median colour, black).

Results go to benchmarks/results/shortcuts_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from leukaug.arm.context import ArmContext, RunSettings
from leukaug.arm.dispatch import run_any_arm
from leukaug.arm.spec import ArmSpec
from leukaug.core.layout import ArmFolder
from leukaug.data import load_or_build_cache, read_dataset, split_manifest
from leukaug.data.cache import prepare_image
from leukaug.data.cell_mask import find_cells
from leukaug.data.images import is_image_file, open_rgb
from leukaug.data.smear import on_smear
from leukaug.data.synth import SynthConfig, generate, sample_cells
from leukaug.trained.arm_background import write_background_check

RESULTS = Path(__file__).parent / "results"
ALL_TINT, HEM_TINT = (236, 196, 210), (244, 236, 240)


def mask_quality(cells: np.ndarray, seed: int = 0) -> dict[str, dict[str, float]]:
    """IoU with the true cell, share found and ms per image, on black and on a smear."""
    truth = cells.max(axis=-1) > 10
    smear, _ = on_smear(cells, seed=seed)
    out = {}
    for name, images in (("black", cells), ("smear", smear)):
        start = time.perf_counter()
        found = find_cells(images)
        seconds = time.perf_counter() - start
        union = (found.masks | truth).sum(axis=(1, 2))
        iou = (found.masks & truth).sum(axis=(1, 2)) / np.maximum(union, 1)
        out[name] = {
            "images": len(images),
            "found": float(found.found.mean()),
            "iou_mean": float(iou[found.found].mean()) if found.found.any() else float("nan"),
            "iou_min": float(iou[found.found].min()) if found.found.any() else float("nan"),
            "ms_per_image": 1000 * seconds / len(images),
        }
    return out


def real_cells(folder: Path, size: int) -> np.ndarray:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    return np.stack([prepare_image(open_rgb(p)[0], size) for p in paths])


def painted_tree(manifest: pd.DataFrame, variant: str, size: int, out: Path) -> pd.DataFrame:
    """The manifest's cells repainted onto smears for one variant (module doc)."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    same = sample_cells(1, size, seed=2)[0][:1]
    rows = []
    for index, row in enumerate(manifest.itertuples(index=False)):
        cell = same if variant == "shortcut" else prepare_image(open_rgb(row.path)[0], size)[None]
        if variant == "honest":
            tint = ALL_TINT if rng.random() < 0.5 else HEM_TINT
        else:
            tint = ALL_TINT if row.label == 1 else HEM_TINT
        path = out / f"{index}.png"
        Image.fromarray(on_smear(cell, seed=index, background=tint)[0][0]).save(path)
        rows.append(row._replace(path=str(path)))
    return pd.DataFrame(rows)


def check_arms(work: Path, size: int, epochs: int) -> list[dict[str, object]]:
    root = work / "C-NMC_Leukemia"
    generate(root, SynthConfig(size=size, subjects_per_class=6, test_subjects_per_class=3,
                               cells_per_subject=12, seed=0))  # fmt: skip
    manifest = read_dataset(root).manifest
    rows = []
    for variant in ("shortcut", "confounded", "honest"):
        painted = painted_tree(manifest, variant, size, work / variant)
        split = split_manifest(painted, "subject", val_fraction=0.25, seed=0)
        cache = load_or_build_cache(split, size, work / "cache")
        specs = {
            "timm:resnet10t": ArmSpec(
                model="timm:resnet10t", image_size=size, epochs=epochs, batch_size=16, lr=1e-3
            ),
            "features": ArmSpec(model="features_gbm", kind="features", image_size=size),
        }
        for label, spec in specs.items():
            folder = ArmFolder(work / "arms" / f"{variant}-{label.replace(':', '_')}")
            started = time.perf_counter()
            run_any_arm(spec, split, cache, ArmContext(folder.path, folder.path.name, folder.path.name, RunSettings(device="cpu")))  # fmt: skip
            trained = time.perf_counter() - started
            started = time.perf_counter()
            table = write_background_check(folder, spec, split, cache, device="cpu")
            checked = time.perf_counter() - started
            drops = dict(zip(table["fill"], table["drop"], strict=True))
            changed = dict(zip(table["fill"], table["changed"], strict=True))
            rows.append({
                "data": variant, "arm": label, "test_cells": int(table["cells"].iloc[0]),
                "auc": float(table["auc_original"].iloc[0]),
                "drop_median": float(drops["median"]), "drop_black": float(drops["black"]),
                "changed_median": float(changed["median"]),
                "changed_black": float(changed["black"]),
                "train_s": trained, "check_s": checked,
            })  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=None, help="a folder of real cells on black")
    parser.add_argument("--masks-only", action="store_true")
    parser.add_argument("--size", type=int, default=64, help="image side of the trained arms")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    result: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "masks": {},
    }
    for size in (96, 256):
        cells = sample_cells(25, size, seed=1)[0]
        result["masks"][f"synthetic_{size}px"] = mask_quality(cells)  # type: ignore[index]
        if args.real is not None:
            real = real_cells(args.real, size)
            result["masks"][f"real_{size}px"] = mask_quality(real)  # type: ignore[index]
    print(json.dumps(result["masks"], indent=1), flush=True)
    if not args.masks_only:
        with tempfile.TemporaryDirectory() as work:
            result["background_check"] = check_arms(Path(work), args.size, args.epochs)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"shortcuts_{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
