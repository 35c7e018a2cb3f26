"""A whole study: config -> plan -> data -> executor -> report.

`plan.expand_arms` turns a `StudyConfig` into arms; `study_data.prepare_data` reads or
generates the data, splits it and builds one image cache per image size; `run_study`
applies the resume rules (`plan`), writes the resolved `study.toml`, `dataset.json` and the
report's Figures 1-2, runs the arms through an executor and builds the report.
Progress reaches the caller only through callbacks (`on_start`, `on_arm_done` and the
per-epoch / per-batch `TrainingCallbacks`); messages go to `logging`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukaug import __version__
from leukaug.arm.determinism import resolve_threads
from leukaug.arm.loop import TrainingCallbacks
from leukaug.core import atomic
from leukaug.core.layout import StudyFolder
from leukaug.core.lock import folder_lock
from leukaug.report import build_report
from leukaug.study import executors
from leukaug.study.jobs import ArmJob, ArmOutcome, StudyArm
from leukaug.study.plan import (
    check_data_unchanged,
    check_resume,
    expand_arms,
    reset_arms,
    with_sanity_baseline,
)
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

    `on_start(n_arms)` is called once the arms are known, `on_arm_done(outcome)` after
    each arm, and `callbacks` per epoch and per batch of every arm (see `train.fit`).
    `arms_per_device` overrides `[executor] arms_per_device` (local executor).
    """
    out_dir = Path(out_dir).resolve()
    folder = StudyFolder(out_dir)
    executor = executor or config.executor.kind
    executors.require(executor)
    config = with_sanity_baseline(with_device(config, device))  # the features arm on user data
    threads = resolve_threads(config.executor.threads, folder.study_toml)  # recorded below
    run_settings = {"threads": threads}
    if arms_per_device is not None:
        run_settings["arms_per_device"] = arms_per_device
    config = config.model_copy(update={"executor": config.executor.model_copy(update=run_settings)})
    arms = expand_arms(config, folder.arms_dir)
    remote = executor == "ray" and bool(ray_address or config.executor.address)
    preflight(config, arms, out_dir, device=not remote)  # every problem at once, before any work
    with folder_lock(out_dir, "study folder"):  # one run per study folder
        restart = check_resume(arms, out_dir, force=force)

        data = prepare_data(config, [arm.image_size for arm in arms])
        if check_data_unchanged(out_dir, data.info, force=force):
            restart = {arm.arm_id for arm in arms}
        reset_arms(out_dir, restart)
        out_dir.mkdir(parents=True, exist_ok=True)
        folder.remove_interrupted_writes()
        write_study_file(folder.study_toml, resolved_config(config, data, executor), source)
        atomic.write_json(folder.dataset_json, data.info)
        augmentations = dict.fromkeys(spec for arm in arms for spec in arm.spec.augmentations)
        render_figures(data, list(augmentations), folder)

        if on_start is not None:
            on_start(len(arms))
        execution = {
            "threads": config.executor.threads,
            "deterministic": config.executor.deterministic,
        }
        execution["checkpoint_interval_s"] = config.executor.checkpoint_interval_s
        tracking = config.tracking
        job = ArmJob(
            out_dir, data.manifest, data.cache_dir, data.crop, config.study.device, **execution,
            tensorboard=tracking.tensorboard, mlflow_uri=tracking.mlflow_uri,
            fold_manifests=data.folds,
            background_check=config.study.background_check,
        )  # fmt: skip
        outcomes = executors.run_arms(
            executor,
            arms,
            job,
            caches=data.caches,
            settings=config.executor,
            address=ray_address,
            on_arm_done=on_arm_done,
            callbacks=callbacks,
        )
        report: dict[str, Path] = {}
        if any(not o.failed for o in outcomes):
            report = build_report(out_dir, baseline=report_baseline(config, arms, outcomes))
        else:
            log.warning("No arm finished, so there is no report.")
        return StudyResult(out_dir, outcomes, report)


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
