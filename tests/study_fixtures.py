"""Tiny study files for the study, executor and resume tests (seconds per arm on a CPU).

The custom CNN needs at least 72 px; ~50 synthetic images and 1-2 epochs keep an arm at a
few seconds. Data and image caches live under the test's temporary folder.
"""

from __future__ import annotations

from pathlib import Path

TINY_STUDY = """
[study]
name = "tiny"
seeds = {seeds}
baseline = "custom_cnn-none-full"
device = "cpu"

[data]
dir = "{data_dir}"
cache_dir = "{cache_dir}"
split_seed = {split_seed}

[data.synth]
size = 72
subjects_per_class = 3
test_subjects_per_class = 2
cells_per_subject = {cells}

[training]
image_size = 72
epochs = {epochs}
batch_size = 16
lr = {lr}

[models.custom_cnn]

[augmentations]
none = []
flip = ["flip"]

[regimes.full]

[regimes.tune]
kind = "freeze_first"
freeze_first = 19
init_from = "custom_cnn-none-full"

[[experiments]]
augmentations = ["none", "flip"]
regimes = ["full"]

[[experiments]]
augmentations = ["flip"]
regimes = ["tune"]

[executor]
num_cpus = 1
max_retries = 1
"""

# The arms of TINY_STUDY for one seed, in run order.
TINY_ARMS = ("custom_cnn-none-full", "custom_cnn-flip-full", "custom_cnn-flip-tune")


def write_tiny_study(
    folder: Path,
    *,
    data_dir: Path,
    cache_dir: Path,
    seeds: tuple[int, ...] = (0,),
    epochs: int = 1,
    lr: float = 3e-4,
    cells: int = 4,
    split_seed: int = 0,
    name: str = "tiny.toml",
) -> Path:
    """Write TINY_STUDY with the given settings into `folder`; return its path."""
    text = TINY_STUDY.format(
        seeds=list(seeds),
        data_dir=data_dir,
        cache_dir=cache_dir,
        epochs=epochs,
        lr=lr,
        cells=cells,
        split_seed=split_seed,
    )
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
