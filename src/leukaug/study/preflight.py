"""Checks made before any work starts (no data read, no cache built, nothing written), so a
run that cannot finish fails at once with the culprit named: the output folder, the device.

`preflight` runs every check of a study and lists every problem at once (issue 22): the
output and cache folders, the device, the data layout, weights files and cached ImageNet
weights, and the free disk for the image caches and checkpoints (estimated: images x
side^2 x 3 bytes per cache, about 16 bytes per model parameter per arm).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from leukaug.arm.kinds import ARM_KINDS, SINGLE, expand_regions
from leukaug.core import atomic
from leukaug.core.atomic import free_bytes, human_bytes
from leukaug.core.errors import ConfigError, LeukaugError
from leukaug.core.layout import ArmFolder
from leukaug.data.images import IMAGE_SUFFIXES
from leukaug.data.read import detect_layout
from leukaug.data.synth_config import SynthConfig
from leukaug.study.jobs import StudyArm
from leukaug.study.prepare import cache_root
from leukaug.study.study_file import StudyConfig


def check_output_folder(folder: str | Path, option: str = "--out") -> Path:
    """`folder` (absolute) if results can be written there: it is a folder or can be made
    one, and a file can be created in it (or in the nearest folder above that exists)."""
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{option} {folder} is a file, not a folder; choose a folder for {option}."
        )
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{option} {folder} cannot be created: {existing} is a file, not a folder; "
            f"choose another {option}."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):  # never a visible file (O_TMPFILE on Linux)
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        where = "" if existing == folder else f" ({existing}, where it would be created)"
        raise ConfigError(
            f"{option} {folder} is not writable{where}: {reason}. Choose a folder you can write "
            "to, or fix its permissions."
        ) from None
    return folder


def check_device(device: str, key: str = "study.device") -> None:
    """A named accelerator must exist on this machine ('auto' and 'cpu' always do)."""
    match = re.fullmatch(r"(cuda|mps)(?::(\d+))?", device)
    if match is None:
        return
    kind, index = match.group(1), match.group(2)
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                f"{key} = {device!r}, but this machine has no MPS (Apple GPU) device; "
                "use 'cpu' or 'auto'."
            )
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{key} = {device!r}, but this machine has no CUDA device (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            "use 'cpu' or 'auto'."
        )
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise ConfigError(
            f"{key} = {device!r}, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})."
        )


# --------------------------------------------------------------------------- the whole study

# Bytes written per model parameter by an arm, about: checkpoint.pt (float32 weights) and
# last.pt (weights and Adam's two moments); the largest arm's last.pt once more while it is
# rewritten (atomic writes hold the old and the new file for a moment).
CHECKPOINT_BYTES_PER_PARAMETER = 16
REWRITE_BYTES_PER_PARAMETER = 12
DISK_MARGIN = 1.1  # headroom over the estimate (logs, event files, the report)


def problem(check: Callable[[], object]) -> list[str]:
    """[] when `check()` passes, else its error message (a LeukaugError's, or an OS error's)."""
    try:
        check()
    except LeukaugError as error:
        return [str(error)]
    except OSError as error:
        return [f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")]
    return []


def data_problems(config: StudyConfig) -> list[str]:
    """The data source exists and has a layout leukaug reads (nothing is read but folder
    names); embedded synthetic data need nothing."""
    data = config.data
    if data.embedded:
        return []
    root = Path(data.source).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        return [f"data.source {root} {what}. Fix: set data.source to the data set's folder."]
    found: list[str] = []
    if data.labels_csv is not None:
        csv_path = Path(data.labels_csv).expanduser()
        csv_path = csv_path if csv_path.is_absolute() else root / csv_path
        if not csv_path.is_file():
            found.append(
                f"data.labels_csv {csv_path} does not exist. Fix: correct the path (relative "
                "paths are read from data.source)."
            )
    if data.layout == "auto":
        found += problem(lambda: detect_layout(root, data.positive_class, data.labels_csv))
    return found


def weights_problems(arms: Sequence[StudyArm]) -> list[str]:
    """Every arm's `weights_path` and `init_from` file exists, and every pretrained arm's
    ImageNet weights are cached (or downloaded now, unless offline)."""
    found: list[str] = []
    files: dict[tuple[str, str], str] = {}
    imagenet: dict[str, str] = {}
    for arm in arms:
        spec = arm.spec
        if spec.weights_path:
            files.setdefault(("weights_path", spec.weights_path), arm.arm_id)
        elif spec.pretrained:
            imagenet.setdefault(spec.model, arm.arm_id)
        if spec.init_from and arm.depends_on is None:  # an arm's own checkpoint comes later
            files.setdefault(("init_from", spec.init_from), arm.arm_id)
    for (key, name), arm_id in files.items():
        path = Path(name).expanduser()
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            found.append(f"arm {arm_id}: {key} {path} {what}. Fix: correct {key} in the study.")
        elif not os.access(path, os.R_OK):
            found.append(f"arm {arm_id}: {key} {path} is not readable. Fix: its permissions.")
    for model, arm_id in imagenet.items():
        found += [f"arm {arm_id}: {text}" for text in problem(lambda m=model: _imagenet(m))]
    return found


def _imagenet(model: str) -> Path:
    from leukaug.models.factory import imagenet_weights  # the model libraries: only if needed
    from leukaug.models.weights import fetch_imagenet

    weights = imagenet_weights(model)
    return weights.cached_path() or fetch_imagenet(weights)


def cache_bytes(config: StudyConfig, arms: Sequence[StudyArm], cache_dir: Path) -> int:
    """Bytes the image caches will take that are not built yet (images x side^2 x 3)."""
    count = _image_count(config)
    if count is None:
        return 0
    built = {
        (meta.get("size"), meta.get("n"))
        for meta in (atomic.read_json(p) for p in cache_dir.glob("*/meta.json"))
        if isinstance(meta, dict)
    }
    sizes = {arm.image_size for arm in arms}
    return sum(count * size * size * 3 for size in sizes if (size, count) not in built)


def _image_count(config: StudyConfig) -> int | None:
    """Images of the study's data: the embedded generator's count, or the files with an
    image suffix under data.source (an estimate: nothing is opened)."""
    if config.data.embedded:
        synth = SynthConfig(**config.data.synth)
        return (
            2
            * (synth.subjects_per_class + synth.test_subjects_per_class)
            * (synth.cells_per_subject)
        )
    root = Path(config.data.source).expanduser()
    if not root.is_dir():
        return None
    return sum(
        1
        for _, _, names in os.walk(root)
        for name in names
        if Path(name).suffix.lower() in IMAGE_SUFFIXES
    )


def checkpoint_bytes(arms: Sequence[StudyArm], arms_dir: Path) -> int:
    """Bytes the checkpoints of the arms still to run will take (estimated from the models'
    parameter counts)."""
    counts: dict[tuple[str, str, int], int] = {}
    total = largest = 0
    for arm in arms:
        kind = ARM_KINDS.get(arm.spec.kind)
        if not kind.cnn or ArmFolder(arms_dir / arm.arm_id).is_complete():
            continue  # a features arm writes no checkpoint
        key = (arm.spec.model, arm.spec.head, arm.image_size)
        if key not in counts:
            from leukaug.models.factory import model_parameter_count  # only for arms to run

            counts[key] = model_parameter_count(*key)
        networks = len(expand_regions(arm.spec.regions)) if arm.spec.kind != SINGLE else 1
        total += CHECKPOINT_BYTES_PER_PARAMETER * counts[key] * networks
        largest = max(largest, REWRITE_BYTES_PER_PARAMETER * counts[key])
    return total + largest


def disk_problems(
    config: StudyConfig, arms: Sequence[StudyArm], out_dir: Path, cache_dir: Path
) -> list[str]:
    """Enough free space for the caches still to build and the checkpoints (estimated)."""
    needs = {
        "the image caches (data.cache_dir)": (cache_dir, cache_bytes(config, arms, cache_dir)),
        "the arms' checkpoints (--out)": (out_dir, checkpoint_bytes(arms, out_dir / "arms")),
    }
    by_device: dict[int, tuple[Path, int, list[str]]] = {}
    for what, (folder, size) in needs.items():
        device = _device_of(folder)
        place, total, whats = by_device.get(device, (folder, 0, []))
        by_device[device] = (place, total + size, [*whats, what])
    found = []
    for folder, size, whats in by_device.values():
        free = free_bytes(folder)
        needed = int(size * DISK_MARGIN)
        if free is not None and needed > free:
            found.append(
                f"{folder} has {human_bytes(free)} free; {' and '.join(whats)} need about "
                f"{human_bytes(needed)} (estimated). Fix: free space there, or choose another "
                "--out / data.cache_dir."
            )
    return found


def _device_of(folder: Path) -> int:
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.stat().st_dev


def preflight(
    config: StudyConfig, arms: Sequence[StudyArm], out_dir: Path, *, device: bool = True
) -> None:
    """Everything that can be checked before any data are read or written, all at once:
    the output and cache folders are writable, the device exists (`device`), the data
    source has a layout, every weights file exists and pretrained weights are cached,
    and the disk has room. ConfigError listing every problem (exit status 2)."""
    cache_dir = cache_root(config)
    found = problem(lambda: check_output_folder(out_dir))
    found += problem(lambda: check_output_folder(cache_dir, "data.cache_dir"))
    if device:
        found += problem(lambda: check_device(config.study.device))
    found += data_problems(config)
    found += weights_problems(arms)
    if not found:  # the estimate needs readable folders
        found += disk_problems(config, arms, out_dir, cache_dir)
    if found:
        listed = "\n".join(f"  - {text}" for text in found)
        raise ConfigError(
            f"the study cannot run: {len(found)} problem(s), found before any data were read "
            f"or anything written:\n{listed}"
        )
