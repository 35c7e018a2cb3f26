"""A synthetic C-NMC-like data set: single white blood cells, ALL blasts vs HEM lymphocytes.

Every image is one segmented cell centred on black, rendered with a Beer-Lambert stain
model (optical density of a nuclear stain and a cytoplasmic stain). The two classes differ
in morphology, not in overall colour:

- ALL (blast): larger nucleus-to-cytoplasm ratio, irregular or cleft nuclear contour,
  fine chromatin, visible (lighter) nucleoli.
- HEM (lymphocyte): smaller, rounder nucleus with denser, coarse chromatin.

The denser HEM nucleus balances the smaller HEM nuclear area, so the mean colour of an
image says little about its class; per-subject stain, brightness, focus and noise (a batch
effect) say much more. Test subjects are disjoint from training subjects and their stain
varies more widely, a domain shift that stain/colour augmentation can address; optionally
(`test_stain_shift`) all test subjects also come from one batch whose stains have another
hue, a systematic shift beyond the training subjects' range (or a share of them,
`test_stain_shift_fraction`: a test set from two batches). Random
orientation and position jitter make flips and rotations label-preserving.

THE DATA ARE SYNTHETIC: results on them say nothing about real leukaemia.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from leukaug import LABEL_ALL, LABEL_HEM
from leukaug.core.errors import ConfigError
from leukaug.data.synth_config import (
    MARKER_FILE,
    TEST_STAIN_SPREAD,
    TRAIN_STAIN_SPREAD,
    SynthConfig,
)

TEST_FOLDER = "C-NMC_test_prelim_phase_data"
TEST_LABELS_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
N_FOLDS = 3  # C-NMC ships its training data in fold_0, fold_1, fold_2

# Stain optical density per unit concentration for R, G, B. Jenner-Giemsa-like: the
# nuclear stain absorbs red and green (purple nucleus), the cytoplasmic stain mostly red
# (pale blue cytoplasm).
NUCLEAR_STAIN = np.array([0.62, 0.80, 0.30], dtype=np.float32)
CYTOPLASM_STAIN = np.array([0.55, 0.32, 0.12], dtype=np.float32)

# Direction of `test_stain_shift` on the log stain vectors (R, G, B): both stains absorb
# more red and less blue, a bluer batch, which HED stain jitter can cover.
STAIN_SHIFT_DIRECTION = np.array([1.0, 0.0, -1.0])


@dataclass(frozen=True)
class Subject:
    """One synthetic patient: its class, name and stain/acquisition batch effect."""

    name: str  # "57" for ALL, "H57" for HEM (the token after UID_ in C-NMC file names)
    label: int
    split: str  # "train" or "test"
    fold: int  # -1 for test subjects
    n_cells: int
    stain_nuclear: np.ndarray
    stain_cytoplasm: np.ndarray
    concentration: float  # staining intensity (saturation)
    brightness: float  # illumination
    blur_sigma: float  # focus, in units of 1/450 of the image (scaled to the size)
    noise_sigma: float  # sensor noise, grey levels
    phenotype_offset: float  # how typical this subject's cells are of its class


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return yy, xx


def _smooth_field(rng: np.random.Generator, grains: int, size: int) -> np.ndarray:
    """Zero-mean, unit-ish random texture with about `grains` blobs across the image."""
    grains = max(2, min(grains, size))
    coarse = rng.standard_normal((grains, grains)).astype(np.float32)
    field = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(field)


def _contour(direction: np.ndarray, harmonics: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """1 + sum_k a_k cos(k * angle + phase_k), k = 2, 3, ...: a wobbly closed outline.

    `direction` is the unit complex number exp(i * angle) per pixel; powers of it give the
    harmonics without any trigonometry on the grid.
    """
    out = np.ones(direction.shape, dtype=np.float32)
    power = direction * direction
    for amplitude, phase in zip(harmonics, phases, strict=True):
        out += np.float32(amplitude) * (power * np.complex64(np.exp(1j * phase))).real
        power = power * direction
    return out


def _direction(dx: np.ndarray, dy: np.ndarray, r: np.ndarray, orientation: float) -> np.ndarray:
    """exp(i * (angle - orientation)) per pixel, as complex64."""
    unit = (dx + 1j * dy).astype(np.complex64) / np.maximum(r, 1e-6)
    return unit * np.complex64(np.exp(-1j * orientation))


def _soft_inside(radius: np.ndarray, boundary: np.ndarray, edge: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip((radius - boundary) / edge, -30, 30)))


def _phenotype(rng: np.random.Generator, label: int, difficulty: float, offset: float) -> float:
    """0 = prototypical HEM lymphocyte, 1 = prototypical ALL blast; classes overlap with difficulty."""
    centre = 0.5 + (0.5 if label == LABEL_ALL else -0.5) * (1.0 - difficulty)
    spread = 0.06 + 0.12 * difficulty
    return float(centre + offset + rng.normal(0.0, spread))


def render_cell(
    rng: np.random.Generator, label: int, subject: Subject, size: int, difficulty: float
) -> np.ndarray:
    """Render one cell as uint8 (size, size, 3); all randomness comes from `rng`."""
    yy, xx = _grid(size)
    z = _phenotype(rng, label, difficulty, subject.phenotype_offset)

    def trait() -> float:  # each trait follows the phenotype with its own jitter
        return float(np.clip(z + rng.normal(0.0, 0.08), 0.0, 1.0))

    pixel = 2.0 / size  # one pixel in grid units
    edge = 0.8 * pixel

    # Cell body: orientation, position jitter, size, slightly wobbly outline.
    orientation = rng.uniform(0.0, 2.0 * np.pi)
    cx, cy = (float(v) for v in rng.uniform(-0.06, 0.06, size=2))
    cell_radius = rng.uniform(0.58, 0.80) + 0.03 * trait()
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    cell_shape = _contour(
        _direction(dx, dy, r, orientation),
        rng.normal(0, [0.06, 0.025, 0.015]),
        rng.uniform(0, 2 * np.pi, 3),
    )
    cell_mask = _soft_inside(r, cell_radius * cell_shape, edge)

    # Nucleus: N:C ratio, eccentric position, irregular outline and a cleft for blasts.
    nc_ratio = 0.52 + 0.34 * trait() + rng.normal(0.0, 0.02)
    nucleus_radius = nc_ratio * cell_radius
    shift = (cell_radius - nucleus_radius) * rng.uniform(0.0, 0.7)
    nx = cx + shift * float(np.cos(orientation))
    ny = cy + shift * float(np.sin(orientation))
    ndx, ndy = xx - nx, yy - ny
    nr = np.hypot(ndx, ndy)
    ndirection = _direction(ndx, ndy, nr, orientation)
    irregular = 0.015 + 0.07 * trait()
    ovality = np.array([0.04, 0.0, 0.0, 0.0])
    nucleus_shape = _contour(
        ndirection, rng.normal(0, irregular, 4) + ovality, rng.uniform(0, 2 * np.pi, 4)
    )
    cleft_depth = 0.35 * max(0.0, trait() - 0.35) * rng.uniform(0.5, 1.5)
    cleft_angle = rng.uniform(0, 2 * np.pi)
    # A von Mises bump in angle (width about 0.18 rad) cut into the outline.
    cos_from_cleft = (ndirection * np.complex64(np.exp(-1j * cleft_angle))).real
    nucleus_shape = nucleus_shape - np.float32(cleft_depth) * np.exp(
        (cos_from_cleft - 1.0) / 0.0324
    )
    nucleus_mask = _soft_inside(nr, nucleus_radius * nucleus_shape, edge) * cell_mask

    # Chromatin: fine and light in blasts, coarse, clumped and dense in lymphocytes.
    fineness = trait()
    grains = round(10 + 40 * fineness)
    # tanh sharpens coarse texture into clumps; fine texture stays soft.
    chromatin = np.tanh((1.0 + 2.0 * (1.0 - fineness)) * _smooth_field(rng, grains, size))
    chromatin_amplitude = 0.42 - 0.28 * fineness
    # Denser HEM chromatin balances the smaller HEM nucleus: mean colour carries little signal.
    nuclear_density = (1.40 - 0.70 * trait()) * (1.0 + chromatin_amplitude * chromatin)

    # Nucleoli: lighter round spots inside blast nuclei.
    n_nucleoli = rng.poisson(2.5 * max(0.0, trait() - 0.3))
    for _ in range(min(n_nucleoli, 4)):
        angle = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.0, 0.55) * nucleus_radius
        sx, sy = nx + dist * float(np.cos(angle)), ny + dist * float(np.sin(angle))
        spot_sigma = nucleus_radius * rng.uniform(0.07, 0.12)
        spot = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * spot_sigma**2))
        nuclear_density = nuclear_density * (1.0 - 0.6 * spot)

    cytoplasm_density = 0.42 * (1.0 + 0.08 * _smooth_field(rng, 12, size))

    # Beer-Lambert composition of the two stains, then the subject's illumination.
    concentration = subject.concentration * rng.uniform(0.95, 1.05)
    nuclear_od = (nucleus_mask * nuclear_density)[..., None] * subject.stain_nuclear
    cyto_od = ((cell_mask - nucleus_mask) * cytoplasm_density)[..., None] * subject.stain_cytoplasm
    intensity = 255.0 * subject.brightness * np.exp(-concentration * (nuclear_od + cyto_od))
    rgb = intensity * cell_mask[..., None]

    blur = subject.blur_sigma * size / 450.0
    if blur > 0.3:
        rgb = ndimage.gaussian_filter(rgb, sigma=(blur, blur, 0), mode="constant")
    noise = rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(subject.noise_sigma)
    rgb = rgb + noise * cell_mask[..., None]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- subjects


def _make_subject(
    rng: np.random.Generator,
    name: str,
    label: int,
    split: str,
    fold: int,
    n_cells: int,
    test_stain_spread: float = TEST_STAIN_SPREAD,
    stain_shift: float = 0.0,
) -> Subject:
    spread = test_stain_spread if split == "test" else TRAIN_STAIN_SPREAD
    shift = stain_shift * STAIN_SHIFT_DIRECTION
    return Subject(
        name=name,
        label=label,
        split=split,
        fold=fold,
        n_cells=n_cells,
        stain_nuclear=(NUCLEAR_STAIN * np.exp(rng.normal(0, spread, 3) + shift)).astype(np.float32),
        stain_cytoplasm=(CYTOPLASM_STAIN * np.exp(rng.normal(0, spread, 3) + shift)).astype(
            np.float32
        ),
        concentration=float(np.exp(rng.normal(0, spread))),
        brightness=float(np.clip(np.exp(rng.normal(-0.05, spread / 2)), 0.6, 1.0)),
        blur_sigma=float(rng.uniform(0.5, 3.0)),
        noise_sigma=float(rng.uniform(1.0, 5.0)),
        phenotype_offset=float(rng.normal(0, 0.04)),
    )


def make_subjects(config: SynthConfig) -> list[Subject]:
    """Training subjects (spread over 3 folds) and disjoint test subjects, ALL then HEM."""
    subjects = []
    number = 1
    for split, per_class in (
        ("train", config.subjects_per_class),
        ("test", config.test_subjects_per_class),
    ):
        for label in (LABEL_ALL, LABEL_HEM):
            for index in range(per_class):
                rng = np.random.default_rng([config.seed, 1, number])
                base = config.cells_per_subject * (2 if label == LABEL_ALL else 1)
                n_cells = max(1, round(base * rng.uniform(0.75, 1.25)))
                name = f"{number}" if label == LABEL_ALL else f"H{number}"
                fold = index % N_FOLDS if split == "train" else -1
                subjects.append(
                    _make_subject(
                        rng,
                        name,
                        label,
                        split,
                        fold,
                        n_cells,
                        config.test_stain_spread,
                        config.test_stain_shift if config.shifted(split, index) else 0.0,
                    )
                )
                number += 1
    return subjects


def _cell_names(subject: Subject) -> list[str]:
    """C-NMC style names UID_<subject>_<image>_<cell>_<all|hem>.bmp; up to 3 cells per image."""
    suffix = "all" if subject.label == LABEL_ALL else "hem"
    return [
        f"UID_{subject.name}_{i // 3 + 1}_{i % 3 + 1}_{suffix}.bmp" for i in range(subject.n_cells)
    ]


def _cell_rng(config: SynthConfig, subject_index: int, cell_index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, 2, subject_index, cell_index])


def _save_bmp(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, format="BMP")


# --------------------------------------------------------------------------- public API


def generate(
    out_dir: str | Path,
    config: SynthConfig = SynthConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a synthetic data set in the exact Kaggle C-NMC layout under `out_dir`.

    `out_dir/training_data/fold_{0,1,2}/{all,hem}/UID_*.bmp`,
    `out_dir/validation_data/C-NMC_test_prelim_phase_data/{1..N}.bmp` (shuffled across
    subjects) and `..._labels.csv` (`Patient_ID,new_names,labels`, numeric order, 1 = ALL),
    plus the `SYNTHETIC_DATA.txt` marker. Same config -> same bytes. Returns a summary.

    Atomic as a whole: files go to a hidden sibling folder that is renamed onto `out_dir`
    at the end, so a crash never leaves a partial data set. An existing `out_dir` must be
    empty or an earlier synthetic data set (which is replaced).
    """
    config.validate()
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER_FILE).is_file():
        raise ConfigError(
            f"{out} exists and is not a synthetic data set; refusing to overwrite it. "
            "Fix: choose a new --out folder, or empty this one."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        summary = _write_dataset(tmp, config, progress)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _write_dataset(
    out: Path, config: SynthConfig, progress: Callable[[int, int], None] | None
) -> dict:
    subjects = make_subjects(config)
    total = sum(s.n_cells for s in subjects)
    done = 0
    test_cells: list[tuple[int, int, str, int]] = []  # (subject index, cell index, name, label)
    for subject_index, subject in enumerate(subjects):
        names = _cell_names(subject)
        if subject.split == "test":
            test_cells += [(subject_index, i, n, subject.label) for i, n in enumerate(names)]
            continue
        folder = (
            out
            / "training_data"
            / f"fold_{subject.fold}"
            / ("all" if subject.label == LABEL_ALL else "hem")
        )
        folder.mkdir(parents=True, exist_ok=True)
        for cell_index, name in enumerate(names):
            rng = _cell_rng(config, subject_index, cell_index)
            _save_bmp(
                render_cell(rng, subject.label, subject, config.size, config.difficulty),
                folder / name,
            )
            done += 1
            if progress:
                progress(done, total)

    order = np.random.default_rng([config.seed, 3]).permutation(len(test_cells))
    rows = []
    test_folder = out / "validation_data" / TEST_FOLDER
    test_folder.mkdir(parents=True, exist_ok=True)
    for number, position in enumerate(order, start=1):
        subject_index, cell_index, name, label = test_cells[position]
        rng = _cell_rng(config, subject_index, cell_index)
        _save_bmp(
            render_cell(rng, label, subjects[subject_index], config.size, config.difficulty),
            test_folder / f"{number}.bmp",
        )
        rows.append({"Patient_ID": name, "new_names": f"{number}.bmp", "labels": label})
        done += 1
        if progress:
            progress(done, total)
    pd.DataFrame(rows).to_csv(out / "validation_data" / TEST_LABELS_CSV, index=False)

    summary = _summary(config, subjects)
    (out / MARKER_FILE).write_text(_marker_text(config, summary), encoding="utf-8")
    record = {"config": asdict(config), "summary": summary}
    (out / "synthetic_config.json").write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return summary


def _summary(config: SynthConfig, subjects: list[Subject]) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for s in subjects:
        key = f"{s.split}_{'all' if s.label == LABEL_ALL else 'hem'}"
        entry = counts.setdefault(key, {"subjects": 0, "images": 0})
        entry["subjects"] += 1
        entry["images"] += s.n_cells
    return {"images": sum(s.n_cells for s in subjects), "counts": counts}


def _marker_text(config: SynthConfig, summary: dict) -> str:
    lines = [
        "SYNTHETIC DATA - generated by `leukaug synth`.",
        "",
        "These images are rendered by a program (leukaug.data.synth) to imitate the layout and",
        "broad look of the C-NMC 2019 data set. They are NOT images of real blood cells, and",
        "results obtained on them say nothing about real leukaemia.",
        "",
        f"config: {asdict(config)}",
        f"images: {summary['images']}",
    ]
    return "\n".join(lines) + "\n"


def sample_cells(
    n_per_class: int, size: int, seed: int = 0, difficulty: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Render `n_per_class` ALL then HEM cells without writing files (previews, figures).

    Returns uint8 images (N, size, size, 3) and int labels (N,), ALL = 1 first.
    Each cell comes from its own training-like subject so the batch effect is visible.
    """
    images, labels = [], []
    for label in (LABEL_ALL, LABEL_HEM):
        for index in range(n_per_class):
            rng = np.random.default_rng([seed, 4, label, index])
            subject = _make_subject(rng, f"{index}", label, "train", 0, 1)
            images.append(render_cell(rng, label, subject, size, difficulty))
            labels.append(label)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def render_split(config: SynthConfig, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one split in memory: images (N,H,W,3) uint8, labels, subject names (for tests, benchmarks)."""
    config.validate()
    images, labels, names = [], [], []
    for subject_index, subject in enumerate(make_subjects(config)):
        if subject.split != split:
            continue
        for cell_index in range(subject.n_cells):
            rng = _cell_rng(config, subject_index, cell_index)
            images.append(render_cell(rng, subject.label, subject, config.size, config.difficulty))
            labels.append(subject.label)
            names.append(subject.name)
    return np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(names)
