"""An arm folder's life: checked (complete? the same config?), started (`arm.json` running),
finished (predictions, metrics, `arm.json` complete) and read back (`ArmResult`).
Every arm kind goes through these, so every kind leaves the same folder.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from leukaug import __version__
from leukaug.arm.batches import resolve_device
from leukaug.arm.callbacks import HISTORY_COLUMNS
from leukaug.arm.determinism import execution_record
from leukaug.arm.spec import ArmSpec
from leukaug.core import atomic
from leukaug.core.errors import ConfigError, StorageError, masked_interrupt
from leukaug.core.layout import STATUS_COMPLETE, STATUS_INTERRUPTED, STATUS_RUNNING, ArmFolder
from leukaug.stats.metrics import arm_metrics

PREDICTION_SPLITS = ("val", "test")
log = logging.getLogger(__name__)


@dataclass
class ArmResult:
    """What `run_arm` leaves behind, read back from the arm folder."""

    arm_id: str
    name: str
    out_dir: Path
    config_hash: str
    history: pd.DataFrame
    predictions: pd.DataFrame
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # True: the folder was already complete, nothing ran


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "leukaug": __version__}


def now() -> str:
    """The UTC time stamp of `arm.json`'s `started_at` / `finished_at`."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_folder(
    spec: ArmSpec, folder: ArmFolder, arm_id: str, name: str
) -> tuple[dict[str, Any] | None, ArmResult | None]:
    """The folder's previous `arm.json` and, when it is complete, its result (skipped).

    A folder holding another configuration -> ConfigError (the study decides `--force`)."""
    config_hash = spec.config_hash()
    previous = folder.read_info()
    if previous is None:
        return None, None
    if previous.get("config_hash") != config_hash:
        raise ConfigError(
            f"{folder.path} holds arm {previous.get('arm_id')!r} with config hash "
            f"{previous.get('config_hash')!r}, not {config_hash!r}; use a new folder, or --force to replace it."
        )
    if folder.is_complete():
        return previous, load_result(folder, arm_id, name, config_hash, skipped=True)
    return previous, None


def running_record(
    spec: ArmSpec, arm_id: str, name: str, device: str, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """`arm.json` of an arm being run (`status` running; `started_at` kept on resume)."""
    return {
        "arm_id": arm_id,
        "name": name,
        "seed": spec.seed,
        "spec": spec.to_dict(),
        "config_hash": spec.config_hash(),
        "status": STATUS_RUNNING,
        "started_at": (previous or {}).get("started_at") or now(),
        "finished_at": None,
        "device": device,
        "execution": execution_record(),  # CPU threads, CUDA determinism (results depend on them)
        "versions": _versions(),
    }


def load_result(
    folder: ArmFolder, arm_id: str, name: str, config_hash: str, skipped: bool
) -> ArmResult:
    """An arm folder's result, read back."""
    return ArmResult(
        arm_id=arm_id,
        name=name,
        out_dir=folder.path,
        config_hash=config_hash,
        history=(
            pd.read_csv(folder.history)
            if folder.history.is_file()
            else pd.DataFrame(columns=HISTORY_COLUMNS)
        ),
        predictions=pd.read_csv(folder.predictions, dtype={"image_id": str, "subject": str}),
        metrics=atomic.read_json(folder.metrics) or {},
        skipped=skipped,
    )


def start_arm(
    spec: ArmSpec, folder: ArmFolder, arm_id: str, name: str, device: str
) -> tuple[dict[str, Any] | None, ArmResult | None]:
    """The arm.json to write (None when the folder is already complete: then its result)."""
    previous, finished = check_folder(spec, folder, arm_id, name)
    if finished is not None:
        return None, finished
    arm_json = running_record(spec, arm_id, name, str(resolve_device(device)), previous)
    atomic.write_json(folder.arm_json, arm_json)
    return arm_json, None


def finish_arm(
    folder: ArmFolder,
    arm_json: dict[str, Any],
    predictions: pd.DataFrame,
    history: pd.DataFrame,
    extra: dict[str, Any],
) -> ArmResult:
    """Write predictions, metrics, history and the completed arm.json; return the result."""
    atomic.write_csv(folder.predictions, predictions)
    if not history.empty:
        atomic.write_csv(folder.history, history)
    metrics = arm_metrics(predictions) if len(predictions) else {}
    atomic.write_json(folder.metrics, metrics)
    done = arm_json | extra | {"status": STATUS_COMPLETE, "finished_at": now()}
    atomic.write_json(folder.arm_json, done)
    return ArmResult(
        arm_json["arm_id"], arm_json["name"], folder.path, arm_json["config_hash"],
        history, predictions, metrics, skipped=False,
    )  # fmt: skip


def prediction_frame(split_manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """`predictions.csv`'s rows of one split in manifest order, without `prob` yet."""
    part = split_manifest[split_manifest["split"] == split]
    return pd.DataFrame(
        {
            "split": split,
            "image_id": part["image_id"].to_numpy(),
            "subject": part["subject"].to_numpy(),
            "label": part["label"].to_numpy(dtype=np.int64),
        }
    )


def mark_interrupted(arm_dir: Path, reason: str) -> None:
    """Set a `running` arm (and its running member arms) to `interrupted`: resumable, not
    left looking alive. Best effort: on a disk too full for arm.json it stays `running`,
    which resumes the same way."""
    for path in (arm_dir / "arm.json", *sorted(arm_dir.glob("*/*/arm.json"))):
        info = atomic.read_json(path)
        if isinstance(info, dict) and info.get("status") == STATUS_RUNNING:
            stopped = {"status": STATUS_INTERRUPTED, "interrupted": {"reason": reason, "at": now()}}
            with contextlib.suppress(StorageError):
                atomic.write_json(path, info | stopped)


@contextlib.contextmanager
def interrupted_on_storage_error(arm_dir: str | Path) -> Iterator[None]:
    """Run an arm; a `StorageError` (full disk, read-only folder) marks it interrupted and
    goes on up: the rerun after the fix resumes from `last.pt`."""
    try:
        yield
    except StorageError as error:
        mark_interrupted(Path(arm_dir), str(error))
        raise


# --------------------------------------------------------------------------- optional steps

OPTIONAL_FAILURES = "optional_failures"  # arm.json: [{"step", "error", "at"}]


def failure_record(step: str, error: BaseException) -> dict[str, str]:
    """One `optional_failures` entry: the step, the error's type and first line, the time."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return {"step": step, "error": f"{type(error).__name__}: {text}".rstrip(": "), "at": now()}


def record_optional_failures(
    folder: ArmFolder, steps: tuple[str, ...], failures: list[dict[str, str]]
) -> None:
    """Replace arm.json's entries for `steps` with `failures` (none: the steps succeeded)."""
    info = folder.read_info()
    if not isinstance(info, dict):
        return
    kept = [f for f in info.get(OPTIONAL_FAILURES, []) if f.get("step") not in steps]
    entries = kept + failures
    if entries == info.get(OPTIONAL_FAILURES, []):
        return
    updated = {k: v for k, v in info.items() if k != OPTIONAL_FAILURES}
    atomic.write_json(folder.arm_json, updated | ({OPTIONAL_FAILURES: entries} if entries else {}))


def run_optional(folder: ArmFolder, step: str, action: Callable[[], object]) -> bool:
    """Run an optional step of a complete arm (Grad-CAMs): its failure is logged and
    recorded in arm.json's `optional_failures`, and the arm stays complete. A full disk
    (`StorageError`) is no optional failure: it stops the run. True when it succeeded."""
    try:
        action()
    except StorageError:
        raise
    except Exception as error:
        if (interrupt := masked_interrupt(error)) is not None:
            raise interrupt from None
        log.warning("%s: the optional step %r failed (%s); the arm is complete.", folder.path,
                    step, failure_record(step, error)["error"])  # fmt: skip
        record_optional_failures(folder, (step,), [failure_record(step, error)])
        return False
    record_optional_failures(folder, (step,), [])
    return True
