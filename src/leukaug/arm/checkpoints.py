"""Checkpoint files: what resume and prediction need, no more; damaged files set aside.

- **Slim weights.** A checkpoint (`checkpoint.pt`, `last.pt`) stores the model's state
  without its frozen parameters: those come from the arm's initialisation (seeded init,
  pretrained weights, `init_from`), so a frozen-backbone arm writes its head, not the
  backbone. The checkpoint records which parameters were left out and a SHA-256 of them;
  loading it into a model checks that the model's frozen parameters are those ones.
- **When to save.** `SaveSchedule` decides after each epoch whether the resume state is
  written: every `interval_s` seconds at most (an epoch longer than that saves at its end),
  or by default ("auto") as often as keeps writing under 5% of the time, which on small CPU
  runs is every epoch.
- **Written atomically** (`torch_save`), read safely (`read_checkpoint`, `weights_only=True`);
  a file that holds code is refused (`models.safe_load.RefusedFileError`), not set aside.
- **Damaged files.** A `last.pt` or `checkpoint.pt` that does not load is renamed
  `<name>.damaged-<UTC time>`, logged with its path, and the arm restarts from its last
  good state (or from scratch); it never fails on the same file again and again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leukaug.core.atomic import atomic_path, os_errors_unwrapped
from leukaug.core.errors import ConfigError, DataError
from leukaug.core.layout import ArmFolder
from leukaug.models.safe_load import NotATorchFileError, safe_torch_load

log = logging.getLogger(__name__)

FROZEN_KEY = "frozen"  # {"keys": [...], "sha256": ...}: the parameters a slim checkpoint omits
DAMAGED_INFIX = ".damaged-"

# "auto" schedule: write when the time since the last save is at least this many times the
# last save's duration (writing then takes <= 1 / 20 = 5% of the run), and at least every
# AUTO_MAX_INTERVAL_S so an interruption loses little.
AUTO_COST_FACTOR = 20.0
AUTO_MAX_INTERVAL_S = 300.0


# --------------------------------------------------------------------------- slim weights


def frozen_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict names of the parameters that do not train (`requires_grad` False)."""
    named = model.named_parameters(remove_duplicate=False)
    return tuple(sorted(name for name, parameter in named if not parameter.requires_grad))


def frozen_digest(model: nn.Module, keys: tuple[str, ...]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the parameters `keys`."""
    state = model.state_dict()
    digest = hashlib.sha256()
    for key in keys:
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@dataclass(frozen=True)
class FrozenWeights:
    """Which parameters a slim checkpoint leaves out, and the hash of their values."""

    keys: tuple[str, ...]
    sha256: str

    @classmethod
    def of(cls, model: nn.Module) -> FrozenWeights:
        keys = frozen_keys(model)
        return cls(keys, frozen_digest(model, keys))

    def record(self) -> dict[str, Any]:
        """The checkpoint entry (torch.load(weights_only=True)-safe)."""
        return {"keys": list(self.keys), "sha256": self.sha256}


def slim_state(model: nn.Module, frozen: FrozenWeights) -> dict[str, torch.Tensor]:
    """CPU copies of the model's state without the frozen parameters (buffers included)."""
    skip = set(frozen.keys)
    return {
        key: value.detach().to("cpu", copy=True)
        for key, value in model.state_dict().items()
        if key not in skip
    }


def weights_entry(model: nn.Module, frozen: FrozenWeights) -> dict[str, Any]:
    """The `model` and `frozen` entries of a slim checkpoint."""
    return {"model": slim_state(model, frozen), FROZEN_KEY: frozen.record()}


def is_slim(saved: dict[str, Any]) -> bool:
    """True when the checkpoint leaves frozen parameters out (they must be rebuilt)."""
    record = saved.get(FROZEN_KEY)
    return isinstance(record, dict) and bool(record.get("keys"))


def load_weights(
    model: nn.Module,
    saved: dict[str, Any],
    path: Path,
    frozen: FrozenWeights | None = None,
) -> None:
    """Load a checkpoint's weights into `model` (same structure and regime as in training).

    A slim checkpoint needs the model's frozen parameters to be the ones it was trained
    with: checked against the recorded hash (`frozen`: the model's, when already computed).
    A checkpoint without a `frozen` entry (written before slim checkpoints) loads whole.
    BatchNorm `num_batches_tracked` counters may be absent (frozen BatchNorms have none).
    """
    record = saved.get(FROZEN_KEY) or {"keys": []}
    expected = tuple(sorted(record["keys"]))
    if expected:
        frozen = frozen if frozen is not None else FrozenWeights.of(model)
        if frozen.keys != expected:
            raise DataError(
                f"{path} was saved with {len(expected)} frozen parameters, the model has "
                f"{len(frozen.keys)}: it was built with another regime or model. Fix: load it "
                "into the model its arm.json describes (leukaug.arm.load_arm_weights)."
            )
        if frozen.sha256 != record.get("sha256"):
            raise DataError(
                f"{path}: the model's frozen weights are not those it was trained with "
                f"(sha256 {frozen.sha256[:12]}, recorded {str(record.get('sha256'))[:12]}); "
                "its pretrained weights or init_from file changed. Fix: restore them, or "
                "retrain the arm."
            )
    try:
        result = model.load_state_dict(saved["model"], strict=False)
    except RuntimeError as error:
        raise DataError(f"{path} does not fit the model: {error}") from None
    mismatched = [
        key
        for key in (*set(result.missing_keys).difference(expected), *result.unexpected_keys)
        if not key.endswith("num_batches_tracked")
    ]
    if mismatched:
        raise DataError(
            f"{path} does not fit the model: missing or unexpected keys {sorted(mismatched)[:5]}"
            f"{' ...' if len(mismatched) > 5 else ''}."
        )


# --------------------------------------------------------------------------- damaged files


class DamagedCheckpointError(DataError):
    """A checkpoint file exists but does not load (truncated, corrupt, not a checkpoint)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} is damaged ({reason}). Fix: rerun the arm (its study or `leukaug train`): "
            "a damaged file is set aside and the arm restarts from its last good state."
        )
        self.path = path
        self.reason = reason


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors in `obj` (nested dicts, lists, tuples): about a file's size."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def torch_save(path: str | os.PathLike[str], obj: Any) -> None:
    """`torch.save` atomically: the file is either the old one or the complete new one."""
    path = Path(path)
    # Through a Python file a full disk is an OSError (ENOSPC), which atomic_path turns into
    # a StorageError naming the folder (a path makes torch's C++ writer say "unexpected pos").
    with (
        atomic_path(path, tensor_bytes(obj)) as tmp,
        open(tmp, "wb") as handle,
        os_errors_unwrapped(),
    ):
        torch.save(obj, handle)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's dict, loaded with `weights_only=True` (`models.safe_load`).

    Raises FileNotFoundError when it does not exist, `RefusedFileError` when it holds code
    (refused, never "damaged": it is not set aside and retried, the user must remove it),
    and `DamagedCheckpointError` (a DataError naming the file) when it does not load or
    holds no `model` state dict. Other OS errors (permissions) propagate.
    """
    path = Path(path)
    try:
        saved = safe_torch_load(path)
    except NotATorchFileError as error:
        raise DamagedCheckpointError(path, error.reason) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise DamagedCheckpointError(path, "no 'model' state dict")
    return saved


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged file to `<name>.damaged-<UTC time>` (kept for inspection); log it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}{DAMAGED_INFIX}{stamp}")
    os.replace(path, target)
    log.warning("%s is damaged (%s); set aside as %s.", path, reason, target)
    return target


def set_aside_damaged(folder: ArmFolder) -> list[dict[str, str]]:
    """Set aside the arm's `last.pt` / `checkpoint.pt` if they do not load.

    Returns one record per file set aside (`path`, `moved_to`, `reason`, `at`), for arm.json.
    """
    records = []
    for path in (folder.last, folder.checkpoint):
        try:
            read_checkpoint(path)
        except FileNotFoundError:
            continue
        except DamagedCheckpointError as error:
            moved = set_aside(path, error.reason)
            at = datetime.now(UTC).isoformat(timespec="seconds")
            records.append(
                {"path": str(path), "moved_to": str(moved), "reason": error.reason, "at": at}
            )
    return records


def resume_state(folder: ArmFolder, config_hash: str) -> dict[str, Any] | None:
    """`last.pt`'s resume state, or None to start from scratch.

    Damaged files are set aside first. The resume state is used only with a best
    checkpoint at least as recent as its `best_epoch` (the two are written in that order);
    otherwise the run restarts from scratch, which gives the same result. A `last.pt` of
    another configuration is a ConfigError.
    """
    set_aside_damaged(folder)
    try:
        saved = read_checkpoint(folder.last)
    except FileNotFoundError:
        return None
    if saved.get("config_hash", "") != config_hash:
        raise ConfigError(
            f"{folder.last} belongs to another configuration (hash {saved.get('config_hash')!r}, "
            f"expected {config_hash!r}); delete the folder or train into a new one."
        )
    best_epoch = int(saved.get("best_epoch", 0))
    if best_epoch > 0:
        try:
            best = read_checkpoint(folder.checkpoint)
        except (FileNotFoundError, DamagedCheckpointError):
            best = {}
        if int(best.get("epoch", -1)) < best_epoch:
            log.warning(
                "%s has no best checkpoint of epoch %d; %s restarts from scratch.",
                folder.checkpoint,
                best_epoch,
                folder.path,
            )
            return None
    return saved


# --------------------------------------------------------------------------- when to save


def check_interval(interval_s: float | None) -> float | None:
    """Validate a resume-state interval (None = auto); ConfigError otherwise."""
    if interval_s is not None and not (math.isfinite(interval_s) and interval_s >= 0):
        raise ConfigError(
            f"checkpoint_interval_s must be a number of seconds >= 0 (0: every epoch) or "
            f"unset (auto), got {interval_s!r}."
        )
    return interval_s


@dataclass
class SaveSchedule:
    """Whether the resume state is due after an epoch.

    `interval_s` seconds: at most that often (an epoch that took longer saves at its end;
    0 = every epoch). None ("auto"): when the time since the last save is at least
    AUTO_COST_FACTOR times the last save's duration, capped at AUTO_MAX_INTERVAL_S; the
    first epoch always saves. Saving is measured from the end of the previous save.
    """

    interval_s: float | None = None
    last_save: float = field(default_factory=time.perf_counter)
    last_cost: float = 0.0

    def __post_init__(self) -> None:
        check_interval(self.interval_s)

    def due(self, now: float | None = None) -> bool:
        elapsed = (time.perf_counter() if now is None else now) - self.last_save
        if self.interval_s is None:
            return elapsed >= min(AUTO_COST_FACTOR * self.last_cost, AUTO_MAX_INTERVAL_S)
        return elapsed >= self.interval_s

    def saved(self, started: float, finished: float) -> None:
        """Record a save that ran from `started` to `finished` (perf_counter seconds)."""
        self.last_save = finished
        self.last_cost = finished - started
