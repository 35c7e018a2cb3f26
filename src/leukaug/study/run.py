"""A whole study in three steps: `prepare` -> `execute` -> `report`.

1. `prepare` checks the output folder and the device, locks the study folder, plans the
   arms and applies the resume rules (`plan.plan_study`), reads or generates the data, splits
   them and opens one image cache per image size (`prepare.prepare_data`), and writes the
   resolved `study.toml` and `dataset.json`.
2. `execute` reads the arms an earlier run completed from their folders (nothing runs for
   them) and runs the others through an executor (`executors.run_arms` -> `jobs.ArmJob`).
3. `report` draws Figures 1-2 and builds the report from what the arms left
   (`report.build_report`), unless nothing changed since the report was last built.

`run_study` is the three in a row. Progress reaches the caller only through callbacks
(`on_start`, `on_arm_done` and the per-epoch / per-batch `TrainingCallbacks`); messages
go to `logging`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukaug import __version__
from leukaug.arm.callbacks import TrainingCallbacks
from leukaug.arm.determinism import resolve_threads
from leukaug.core import atomic
from leukaug.core.layout import StudyFolder
from leukaug.core.lock import folder_lock
from leukaug.study import executors
from leukaug.study.jobs import ArmJob, ArmOutcome, StudyArm, run_settings
from leukaug.study.plan import plan_study, with_sanity_baseline
from leukaug.study.preflight import preflight
from leukaug.study.prepare import PreparedData, prepare_data, render_figures
from leukaug.study.study_file import StudyConfig, dump_toml, parse_study

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    out_dir: Path
    outcomes: list[ArmOutcome]
    report: dict[str, Path]  # build_report's paths ("report", "summary", ...); empty: no report

    @property
    def failed(self) -> list[ArmOutcome]:
        return [o for o in self.outcomes if o.failed]


def resolved_config(
    config: StudyConfig, data: PreparedData | None, executor: str
) -> dict[str, Any]:
    """The config as run: defaults filled in, data paths absolute, the executor used."""
    resolved = config.to_dict()
    if data is not None:
        if config.data.embedded:
            resolved["data"]["dir"] = data.info["root"]
        else:
            resolved["data"]["source"] = data.info["root"]
        resolved["data"]["cache_dir"] = str(data.cache_dir)
    resolved["executor"]["kind"] = executor
    return resolved


def write_study_file(path: Path, resolved: dict[str, Any], source: str | None) -> None:
    header = [
        f"# Resolved study, written by leukaug {__version__}"
        + (f" from {_comment_text(source)}" if source else "")
        + ".",
        "# Running `leukaug run` on this file into the same folder resumes the study.",
        "",
    ]
    atomic.write_text(path, "\n".join(header) + "\n" + dump_toml(resolved))


def _comment_text(text: str) -> str:
    """`text` fit for a TOML comment: control characters (a path or a --set value may hold
    them) written as escapes, so the resolved study.toml always reads back."""
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", lambda c: f"\\x{ord(c.group()):02x}", text)


def with_device(config: StudyConfig, device: str | None) -> StudyConfig:
    """`config` with another study.device, checked like the study file's own."""
    if device is None:
        return config
    return parse_study(
        config.to_dict() | {"study": config.study.model_dump() | {"device": device}}, "--device"
    )


@dataclass
class PreparedStudy:
    """A study ready to run (`prepare`): the config as run, its locked folder, its arms in
    dependency order, its data, and the job that runs one arm."""

    config: StudyConfig
    folder: StudyFolder
    arms: list[StudyArm]
    data: PreparedData
    job: ArmJob
    executor: str
    ray_address: str | None = None


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    arms_per_device: int | None = None,
    source: str | None = None,
    on_start: Callable[[int], None] | None = None,
    on_arm_done: Callable[[ArmOutcome], None] | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> StudyResult:
    """Run (or resume) every arm of `config` into `out_dir`, then build the report.

    `on_start(n_arms)` is called with the number of arms this run trains (not when every
    arm was complete already), `on_arm_done(outcome)` after each of them, and `callbacks`
    per epoch and per batch of every arm (see `arm.loop.fit`). `arms_per_device`
    overrides `[executor] arms_per_device` (local executor); `source` names where the
    config came from in the resolved study.toml.
    """
    with prepare(
        config, out_dir, force=force, executor=executor, ray_address=ray_address,
        device=device, arms_per_device=arms_per_device, source=source,
    ) as study:  # fmt: skip
        outcomes = execute(study, on_start=on_start, on_arm_done=on_arm_done, callbacks=callbacks)
        return StudyResult(study.folder.path, outcomes, report(study, outcomes))


@contextlib.contextmanager
def prepare(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    arms_per_device: int | None = None,
    source: str | None = None,
) -> Iterator[PreparedStudy]:
    """Step 1: everything before training (see the module doc). The study folder stays
    locked until the block ends; nothing is written before the checks passed."""
    folder = StudyFolder(Path(out_dir).resolve())
    executor = executor or config.executor.kind
    executors.require(executor)
    config = settled_config(config, folder, device, arms_per_device)
    plan = plan_study(config, folder, force=force)
    remote = executor == "ray" and bool(ray_address or config.executor.address)
    preflight(config, plan.arms, folder.path, device=not remote)  # every problem at once
    with folder_lock(folder.path, "study folder"):  # one run per study folder
        plan.check_folder()
        data = prepare_data(config, plan.image_sizes)
        plan.settle(data.info)
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.remove_interrupted_writes()
        write_study_file(folder.study_toml, resolved_config(config, data, executor), source)
        atomic.write_json(folder.dataset_json, data.info)
        job = ArmJob(
            folder.path, data.manifest, data.cache_dir, run_settings(config, data.crop),
            fold_manifests=data.folds, background_check=config.study.background_check,
        )  # fmt: skip
        yield PreparedStudy(config, folder, plan.arms, data, job, executor, ray_address)


def settled_config(
    config: StudyConfig, folder: StudyFolder, device: str | None, arms_per_device: int | None
) -> StudyConfig:
    """The config as run: `--device`, the sanity baseline arm (on user data),
    `arms_per_device` and the thread count filled in (a resumed study keeps the count it
    recorded in its folder's study.toml)."""
    config = with_sanity_baseline(with_device(config, device))  # the features arm on user data
    settings: dict[str, Any] = {
        "threads": resolve_threads(config.executor.threads, folder.study_toml)
    }
    if arms_per_device is not None:
        settings["arms_per_device"] = arms_per_device
    return config.model_copy(update={"executor": config.executor.model_copy(update=settings)})


def execute(
    study: PreparedStudy,
    *,
    on_start: Callable[[int], None] | None = None,
    on_arm_done: Callable[[ArmOutcome], None] | None = None,
    callbacks: TrainingCallbacks | None = None,
) -> list[ArmOutcome]:
    """Step 2: the outcome of every arm, in the study's order. Arms an earlier run completed
    are read from their folders; the others run through the study's executor."""
    outcomes = {arm.arm_id: study.job.finished(arm) for arm in study.arms}
    pending = [arm for arm in study.arms if outcomes[arm.arm_id] is None]
    if pending:
        if on_start is not None:
            on_start(len(pending))
        ran = executors.run_arms(
            study.executor,
            pending,
            study.job,
            caches=study.data.caches,
            settings=study.config.executor,
            address=study.ray_address,
            on_arm_done=on_arm_done,
            callbacks=callbacks,
        )
        outcomes |= {outcome.arm_id: outcome for outcome in ran}
    return [outcome for outcome in outcomes.values() if outcome is not None]


def report(study: PreparedStudy, outcomes: Sequence[ArmOutcome]) -> dict[str, Path]:
    """Step 3: Figures 1-2 and the report (their paths; empty when no arm finished). A
    report built from the same arm files, data and settings is kept as it is."""
    if all(outcome.failed for outcome in outcomes):
        log.warning("No arm finished, so there is no report.")
        return {}
    baseline = report_baseline(study.config, study.arms, outcomes)
    stamp = report_inputs(study.folder, baseline)
    record = atomic.read_json(study.folder.report_inputs) or {}
    paths = {key: Path(path) for key, path in (record.get("paths") or {}).items()}
    if record.get("inputs") == stamp and paths and all(p.is_file() for p in paths.values()):
        log.info("The report is up to date: %s", paths.get("report"))
        return paths
    augmentations = dict.fromkeys(spec for arm in study.arms for spec in arm.spec.augmentations)
    from leukaug.report import build_report  # the report's stack loads only to rebuild it

    render_figures(study.data, list(augmentations), study.folder)
    paths = build_report(study.folder.path, baseline=baseline)
    atomic.write_json(
        study.folder.report_inputs,
        {"inputs": stamp, "paths": {key: str(path) for key, path in paths.items()}},
    )
    return paths


def report_inputs(folder: StudyFolder, baseline: str | None) -> str:
    """A fingerprint of everything the report is built from: the resolved study file, the
    data's facts, every arm's record, history, predictions, metrics, Grad-CAMs (table and
    overlays), background check and error, the baseline and leukaug's version."""
    digest = hashlib.sha256(json.dumps([__version__, baseline]).encode())
    files = [folder.study_toml, folder.dataset_json]
    for arm in folder.arm_folders():
        files += [arm.arm_json, arm.history, arm.predictions, arm.metrics, arm.error]
        files += [arm.cam_csv, arm.cam_overlays, arm.background_check_csv]
    for path in files:
        digest.update(str(path.relative_to(folder.path)).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"-")
        digest.update(b"\0")
    return digest.hexdigest()


def report_baseline(
    config: StudyConfig, arms: Sequence[StudyArm], outcomes: Sequence[ArmOutcome]
) -> str | None:
    """The configured baseline if one of its seeds finished; otherwise the report's default
    (the first unaugmented arm), or else the first finished arm, with a warning. A baseline
    that names an augmentation (not an arm) goes to the report as it is."""
    finished = [o.name for o in outcomes if not o.failed]
    wanted = config.study.baseline
    if wanted is None or wanted in finished or wanted in config.augmentations:
        return wanted
    by_name = {arm.name: arm for arm in arms}
    fallback = next((n for n in finished if not by_name[n].spec.augmentations), finished[0])
    log.warning(
        "The baseline arm %r failed; the report compares against %r instead.", wanted, fallback
    )
    return fallback
