"""Executors: dependency order and failures (local), the same results and retries on Ray."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

import study_fixtures
from leukaug.arm.context import RunSettings
from leukaug.core.errors import ConfigError, TrainingError
from leukaug.core.layout import ArmFolder
from leukaug.study.executors import require, run_local, run_ray
from leukaug.study.jobs import ArmJob, ArmOutcome, write_error
from leukaug.study.plan import expand_arms
from leukaug.study.run import run_study
from leukaug.study.study_file import read_study_file
from study_fixtures import TINY_ARMS, write_tiny_study

ERROR_FILE = ArmFolder(Path()).error.name


@dataclass
class ScriptedJob(ArmJob):
    """An ArmJob that fails the arms in `fail` (TrainingError) and records what it ran."""

    fail: tuple[str, ...] = ()

    def run(self, arm, *, cache=None, reraise=None, callbacks=None) -> ArmOutcome:
        ran = self.out_dir / "ran.txt"
        with open(ran, "a", encoding="utf-8") as handle:
            handle.write(arm.arm_id + "\n")
        if arm.name in self.fail:
            return write_error(self.out_dir / "arms" / arm.arm_id, arm, TrainingError("nan loss"))
        return ArmOutcome(arm.arm_id, arm.name, "complete")


def tiny_arms(tmp_path: Path, seeds: tuple[int, ...] = (0, 1)):
    study = write_tiny_study(
        tmp_path, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", seeds=seeds
    )
    return expand_arms(read_study_file(study), tmp_path / "arms")


def scripted_job(tmp_path: Path, fail: tuple[str, ...] = ()) -> ScriptedJob:
    return ScriptedJob(
        tmp_path, pd.DataFrame({"split": []}), tmp_path / "cache", RunSettings(), fail=fail
    )


def test_local_runs_in_dependency_order_and_skips_arms_whose_source_failed(tmp_path: Path) -> None:
    arms = tiny_arms(tmp_path)
    done: list[str] = []
    outcomes = run_local(
        arms, scripted_job(tmp_path, fail=("custom_cnn-none-full",)), caches={},
        on_arm_done=lambda o: done.append(o.arm_id),
    )  # fmt: skip
    assert done == [arm.arm_id for arm in arms]
    by_id = {o.arm_id: o for o in outcomes}
    for seed in (0, 1):
        assert by_id[f"custom_cnn-none-full-s{seed}"].error_type == "TrainingError"
        assert by_id[f"custom_cnn-flip-full-s{seed}"].status == "complete"
        dependent = by_id[f"custom_cnn-flip-tune-s{seed}"]
        assert dependent.error_type == "DependencyFailed"
        record = json.loads((tmp_path / "arms" / dependent.arm_id / ERROR_FILE).read_text())
        assert "custom_cnn-none-full" in record["message"]
    ran = (tmp_path / "ran.txt").read_text().split()
    assert "custom_cnn-flip-tune-s0" not in ran


def test_unknown_executor_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'ray'"):
        require("rya")


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    # Workers unpickle test-defined jobs by value (the tests folder is not on their path).
    ray.cloudpickle.register_pickle_by_value(study_fixtures)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_waits_for_sources_and_records_failures(tmp_path: Path, local_ray: None) -> None:
    arms = tiny_arms(tmp_path)
    outcomes = run_ray(arms, scripted_job(tmp_path, fail=("custom_cnn-none-full",)), max_retries=0)
    assert [o.arm_id for o in outcomes] == [arm.arm_id for arm in arms]
    statuses = {o.arm_id: o.error_type or o.status for o in outcomes}
    assert statuses["custom_cnn-none-full-s1"] == "TrainingError"
    assert statuses["custom_cnn-flip-tune-s1"] == "DependencyFailed"
    assert statuses["custom_cnn-flip-full-s1"] == "complete"


@dataclass
class FlakyJob(ArmJob):
    """Fails each arm's first attempt with a RuntimeError (a lost GPU, say), then succeeds."""

    def run(self, arm, *, cache=None, reraise=None, callbacks=None) -> ArmOutcome:
        marker = self.out_dir / f"{arm.arm_id}.attempted"
        if not marker.exists():
            marker.write_text("1")
            error = RuntimeError("CUDA error: an illegal memory access was encountered")
            write_error(self.out_dir / "arms" / arm.arm_id, arm, error)
            if reraise is not None and reraise(error):
                raise error
        return ArmOutcome(arm.arm_id, arm.name, "complete")


@pytest.mark.slow
def test_ray_retries_a_failed_task(tmp_path: Path, local_ray: None) -> None:
    arms = tiny_arms(tmp_path, seeds=(0,))
    job = FlakyJob(tmp_path, pd.DataFrame({"split": []}), tmp_path / "cache", RunSettings())
    outcomes = run_ray(arms, job, max_retries=1)
    assert {o.status for o in outcomes} == {"complete"}
    assert len(list(tmp_path.glob("*.attempted"))) == len(arms)
    (tmp_path / "b").mkdir()
    once = FlakyJob(tmp_path / "b", job.manifest, job.cache_dir, RunSettings())
    no_retry = run_ray(arms[:1], once, max_retries=0)
    assert no_retry[0].failed and no_retry[0].error_type == "RuntimeError"


@pytest.mark.slow
def test_ray_gives_the_same_metrics_as_local(tmp_path: Path, local_ray: None) -> None:
    study = write_tiny_study(
        tmp_path, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", seeds=(0, 1)
    )
    config = read_study_file(study)
    # No thread count in the study file: both executors run every arm with the count the
    # study resolves once (this process's), so the numbers match to the bit.
    assert config.executor.threads is None
    local = run_study(config, tmp_path / "local", executor="local")
    on_ray = run_study(config, tmp_path / "ray", executor="ray")
    assert not local.failed and not on_ray.failed
    for seed in (0, 1):
        for name in TINY_ARMS:
            a = tmp_path / "local" / "arms" / f"{name}-s{seed}"
            b = tmp_path / "ray" / "arms" / f"{name}-s{seed}"
            execution = [json.loads((f / "arm.json").read_text())["execution"] for f in (a, b)]
            assert execution[0] == execution[1]
            assert json.loads((a / "metrics.json").read_text()) == json.loads(
                (b / "metrics.json").read_text()
            )
            pd.testing.assert_frame_equal(
                pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
            )


def test_an_interrupt_a_library_turned_into_another_error_stops_the_arm_unfailed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal inside `torch.save` surfaces as torch's "RuntimeError: unexpected pos" with
    the interrupt as its context (seen in CI): the arm is stopped, not failed (no error.json);
    the same error without an interrupt behind it is a failure."""
    from leukaug.arm import dispatch

    def torch_save_fails(*args, interrupted: bool, **kwargs):
        try:
            if interrupted:
                raise KeyboardInterrupt("SIGINT")
        finally:  # torch's zip writer: its __exit__ raises whatever happened inside
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")

    arm = tiny_arms(tmp_path)[0]
    job = scripted_job(tmp_path)
    monkeypatch.setattr(ArmJob, "cache", lambda self, size: None)
    monkeypatch.setattr(dispatch, "run_any_arm", partial(torch_save_fails, interrupted=True))
    with pytest.raises(KeyboardInterrupt):
        ArmJob.run(job, arm)
    assert not list(tmp_path.rglob(ERROR_FILE))
    monkeypatch.setattr(dispatch, "run_any_arm", partial(torch_save_fails, interrupted=False))
    assert ArmJob.run(job, arm).status == "failed"
    assert len(list(tmp_path.rglob(ERROR_FILE))) == 1
