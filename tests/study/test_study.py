"""A whole study: arms from the config, data, resume rules, failures, CLI, SIGKILL recovery."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import torch

from leukaug.arm import dispatch as dispatch_module
from leukaug.cli.study_commands import DEMO_STUDY, packaged_study
from leukaug.core.errors import ConfigError, TrainingError
from leukaug.core.layout import ArmFolder, StudyFolder
from leukaug.study.plan import expand_arms
from leukaug.study.run import report_inputs, run_study
from leukaug.study.study_file import parse_study, read_study_file
from study_fixtures import TINY_ARMS, write_tiny_study

ERROR_FILE = ArmFolder(Path()).error.name

ROOT = Path(__file__).resolve().parents[2]


def tiny(tmp_path: Path, **settings) -> Path:
    return write_tiny_study(
        tmp_path, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", **settings
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(study file, study folder) of the tiny study, run once for the module."""
    folder = tmp_path_factory.mktemp("finished")
    study = tiny(folder)
    result = run_study(read_study_file(study), folder / "out")
    if result.failed:
        raise RuntimeError(f"the tiny study failed: {result.failed}")
    return study, folder / "out"


def fresh_run(tmp_path: Path) -> tuple[Path, Path]:
    """A finished tiny study of this test's own (a moved study folder is another config:
    dependent arms name their source checkpoint by absolute path)."""
    study = tiny(tmp_path)
    run_study(read_study_file(study), tmp_path / "out")
    return study, tmp_path / "out"


# --------------------------------------------------------------------------- arms


def test_paper_study_expands_to_the_papers_arms(tmp_path: Path) -> None:
    arms = expand_arms(read_study_file(ROOT / "studies" / "paper.toml"), tmp_path / "arms")
    names = [arm.name for arm in arms]
    assert len(set(names)) == 11 and len(arms) == 11 * 3  # 3 seeds; + the unaugmented transfer arm
    pretrain = names.index("custom_cnn-none-pretrain")
    for arm in arms:
        if arm.name.endswith("-transfer"):
            assert arm.depends_on == f"custom_cnn-none-pretrain-s{arm.spec.seed}"
            assert names.index(arm.name) > pretrain
            assert arm.spec.init_from == str(tmp_path / "arms" / arm.depends_on / "checkpoint.pt")
            assert (arm.spec.regime, arm.spec.freeze_first) == ("freeze_first", 19)
    sizes = {arm.spec.model: arm.image_size for arm in arms}
    assert sizes == {"custom_cnn": 256, "inception_v3": 128, "resnet50": 128}
    weighted = [a for a in arms if a.name.endswith("-weighted")]
    assert {a.spec.class_weighting for a in weighted} == {"balanced"}


def test_arms_of_every_seed_are_independent(tmp_path: Path) -> None:
    config = read_study_file(ROOT / "studies" / "demo.toml")
    arms = expand_arms(config, tmp_path)
    assert len(arms) == len(config.augmentations) * len(config.study.seeds)
    assert len(config.study.seeds) >= 2
    assert len({arm.spec.config_hash() for arm in arms}) == len(arms)


BASE = """
[models.custom_cnn]
[training]
image_size = 72
[augmentations]
none = []
[regimes.full]
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[regimes.t]\ninit_from = 'custom_cnn-none-ful'\n", "Did you mean 'custom_cnn-none-full'"),
        ("[regimes.t]\ninit_from = 'custom_cnn-none-t'\n", "cannot start from itself"),
        (
            "[regimes.a]\ninit_from = 'custom_cnn-none-b'\n[regimes.b]\ninit_from = 'custom_cnn-none-a'\n",
            "cycle",
        ),
        ("[study]\nbaseline = 'custom_cnn-nune-full'\n", "Did you mean 'custom_cnn-none-full'"),
        (
            "[models.resnet18]\n[regimes.f]\nkind = 'freeze_first'\nfreeze_first = 3\n",
            "custom_cnn, custom_resnet and timm",
        ),
    ],
)
def test_impossible_arms_fail_before_anything_runs(
    tmp_path: Path, extra: str, message: str
) -> None:
    config = parse_study(tomllib.loads(BASE + extra))
    with pytest.raises(ConfigError, match=message):
        expand_arms(config, tmp_path)


def test_init_from_must_be_the_same_model(tmp_path: Path) -> None:
    text = BASE + "[models.resnet18]\n[regimes.t]\ninit_from = 'resnet18-none-full'\n"
    with pytest.raises(ConfigError, match="cannot start from 'resnet18-none-full'"):
        expand_arms(parse_study(tomllib.loads(text)), tmp_path)


# --------------------------------------------------------------------------- a run


def test_study_folder_holds_every_output(finished: tuple[Path, Path]) -> None:
    _, out = finished
    for name in TINY_ARMS:
        folder = out / "arms" / f"{name}-s0"
        info = json.loads((folder / "arm.json").read_text())
        assert info["status"] == "complete" and info["name"] == name
        for file in ("history.csv", "predictions.csv", "metrics.json", "checkpoint.pt", "last.pt"):
            assert (folder / file).is_file()
    for file in ("report.html", "summary.md", "metrics.csv", "comparisons.csv"):
        assert (out / file).is_file()
    for figure in ("sample_cells.png", "augmented_cells.png"):
        assert (out / "figures" / figure).stat().st_size > 1000


def test_resolved_study_file_reloads_to_the_same_study(finished: tuple[Path, Path]) -> None:
    study, out = finished
    resolved = read_study_file(out / "study.toml")
    original = read_study_file(study)
    skip = {"data": True, "executor": {"threads"}}  # threads: filled in with the count run
    assert resolved.model_dump(exclude=skip) == original.model_dump(exclude=skip)
    assert resolved.executor.threads == torch.get_num_threads()
    assert Path(resolved.data.dir).is_absolute() and resolved.data.synth == original.data.synth


def test_dataset_json_counts_every_image(finished: tuple[Path, Path]) -> None:
    _, out = finished
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["synthetic"] is True and dataset["split"]["strategy"] == "subject"
    predictions = pd.read_csv(out / "arms" / f"{TINY_ARMS[0]}-s0" / "predictions.csv")
    for split in ("val", "test"):
        counted = sum(c["images"] for c in dataset["counts"][split].values())
        assert counted == (predictions["split"] == split).sum()


def test_dependent_arm_starts_from_its_source_checkpoint(finished: tuple[Path, Path]) -> None:
    _, out = finished
    info = json.loads((out / "arms" / "custom_cnn-flip-tune-s0" / "arm.json").read_text())
    assert info["spec"]["init_from"] == str(
        out / "arms" / "custom_cnn-none-full-s0" / "checkpoint.pt"
    )


def test_a_second_run_skips_finished_arms(finished: tuple[Path, Path]) -> None:
    study, out = finished
    before = {p: p.stat().st_mtime_ns for p in (out / "arms").rglob("*.pt")}
    result = run_study(read_study_file(study), out)
    assert [o.status for o in result.outcomes] == ["skipped"] * len(TINY_ARMS)
    assert before == {p: p.stat().st_mtime_ns for p in (out / "arms").rglob("*.pt")}


def test_changed_arm_config_is_an_error_unless_forced(tmp_path: Path) -> None:
    _, out = fresh_run(tmp_path)
    changed = tiny(tmp_path, lr=1e-3, name="changed.toml")
    with pytest.raises(ConfigError, match=r"another configuration.*--force"):
        run_study(read_study_file(changed), out)
    (out / "arms" / "custom_cnn-none-full-s9").mkdir()  # an arm removed from the study
    result = run_study(read_study_file(changed), out, force=True)
    assert {o.status for o in result.outcomes} == {"complete"}
    assert not (out / "arms" / "custom_cnn-none-full-s9").exists()
    info = json.loads((out / "arms" / "custom_cnn-flip-tune-s0" / "arm.json").read_text())
    assert info["spec"]["lr"] == pytest.approx(1e-3)


def test_arm_folders_of_another_study_are_an_error_unless_forced(
    finished: tuple[Path, Path],
) -> None:
    study, out = finished
    stray = out / "arms" / "resnet18-none-full-s0"
    stray.mkdir()
    try:
        with pytest.raises(ConfigError, match="does not have: resnet18-none-full-s0"):
            run_study(read_study_file(study), out)
    finally:
        stray.rmdir()


def test_changed_split_is_an_error_unless_forced(tmp_path: Path) -> None:
    _, out = fresh_run(tmp_path)
    resplit = tiny(tmp_path, split_seed=1, name="resplit.toml")
    with pytest.raises(ConfigError, match="another data set or split"):
        run_study(read_study_file(resplit), out)
    result = run_study(read_study_file(resplit), out, force=True)
    assert {o.status for o in result.outcomes} == {"complete"}


def test_failing_arm_is_recorded_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run_arm = dispatch_module.run_any_arm

    def nan_in_first_arm(spec, *args, **kwargs):
        if kwargs["context"].arm_id == "custom_cnn-none-full-s0":
            raise TrainingError("non-finite training loss (nan) at epoch 1, batch 1")
        return real_run_arm(spec, *args, **kwargs)

    monkeypatch.setattr(dispatch_module, "run_any_arm", nan_in_first_arm)
    study = tiny(tmp_path)
    out = tmp_path / "out"
    result = run_study(read_study_file(study), out)
    monkeypatch.undo()
    assert [o.status for o in result.outcomes] == ["failed", "complete", "failed"]
    assert (out / "report.html").is_file()  # against another baseline, listing the failures

    failed = json.loads((out / "arms" / "custom_cnn-none-full-s0" / ERROR_FILE).read_text())
    assert failed["error_type"] == "TrainingError" and "nan" in failed["message"]
    assert "Traceback" in failed["traceback"]
    dependent = json.loads((out / "arms" / "custom_cnn-flip-tune-s0" / ERROR_FILE).read_text())
    assert dependent["error_type"] == "DependencyFailed"
    assert (out / "arms" / "custom_cnn-flip-full-s0" / "predictions.csv").is_file()

    result = run_study(read_study_file(study), out)  # a re-run retries the failed arms
    assert [o.status for o in result.outcomes] == ["complete", "skipped", "complete"]
    assert not list((out / "arms").rglob(ERROR_FILE))


def test_failed_arm_is_listed_in_the_report_and_exit_status_is_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run_arm = dispatch_module.run_any_arm

    def oom_in_flip(spec, *args, **kwargs):
        if kwargs["context"].arm_id == "custom_cnn-flip-full-s0":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run_arm(spec, *args, **kwargs)

    monkeypatch.setattr(dispatch_module, "run_any_arm", oom_in_flip)
    study = tiny(tmp_path)
    status = run_cli(["run", str(study), "--out", str(tmp_path / "out")], monkeypatch)
    assert status == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "custom_cnn-flip-full-s0" in summary and "OutOfMemoryError" in summary


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run `leukaug ARGS` in this process (so monkeypatches apply); return the exit status."""
    from leukaug.cli import main

    monkeypatch.setattr(sys, "argv", ["leukaug", *args])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_bad_study_file_exits_with_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = tmp_path / "bad.toml"
    study.write_text("[models.custom_cnn]\n[training]\nepocs = 3\n")
    assert run_cli(["run", str(study), "--out", str(tmp_path / "out")], monkeypatch) == 2
    assert "Did you mean 'epochs'?" in capsys.readouterr().err


def test_demo_study_ships_inside_the_package() -> None:
    path = packaged_study(DEMO_STUDY)
    assert path.is_file()
    config = read_study_file(path)
    assert config.data.embedded and config.data.split == "subject"
    assert len(config.study.seeds) >= 2
    ops = {op.name for arm in config.augmentations.values() for op in arm.ops}
    assert {"flip_rotate", "noise", "stain"} <= ops


# --------------------------------------------------------------------------- SIGKILL


def parse_every_result(out: Path) -> None:
    """Every visible JSON, CSV and checkpoint in the study folder parses (none half-written);
    temporary files of interrupted writes are hidden (.name.*.tmp), so no reader takes them."""
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            assert path.name.startswith("."), path
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)


def leukaug_run(study: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "leukaug", "run", str(study), "--out", str(out)]


@pytest.mark.slow
def test_sigkill_mid_arm_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    study = tiny(tmp_path, epochs=3, cells=10)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
    subprocess.run(leukaug_run(study, clean_out), check=True, env=env, capture_output=True)

    process = subprocess.Popen(
        leukaug_run(study, killed_out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    history = killed_out / "arms" / f"{TINY_ARMS[1]}-s0" / "history.csv"
    deadline = time.monotonic() + 120
    killed_mid_arm = False
    while time.monotonic() < deadline and process.poll() is None:
        if history.is_file() and len(pd.read_csv(history)) >= 1:
            process.send_signal(signal.SIGKILL)
            killed_mid_arm = not (history.parent / "predictions.csv").exists()
            break
        parse_every_result(killed_out) if killed_out.exists() else None
        time.sleep(0.02)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    assert killed_mid_arm, "the arm finished before it could be killed; give it more epochs"
    parse_every_result(killed_out)

    subprocess.run(leukaug_run(study, killed_out), check=True, env=env, capture_output=True)
    for name in TINY_ARMS:
        killed, clean = killed_out / "arms" / f"{name}-s0", clean_out / "arms" / f"{name}-s0"
        assert json.loads((killed / "metrics.json").read_text()) == json.loads(
            (clean / "metrics.json").read_text()
        )
        pd.testing.assert_frame_equal(
            pd.read_csv(killed / "predictions.csv"), pd.read_csv(clean / "predictions.csv")
        )
        columns = ["epoch", "train_loss", "val_loss", "val_accuracy"]
        pd.testing.assert_frame_equal(
            pd.read_csv(killed / "history.csv")[columns],
            pd.read_csv(clean / "history.csv")[columns],
        )
    parse_every_result(killed_out)
    assert not list(killed_out.rglob("*.tmp")), "stray temporary files were not cleaned up"


# --------------------------------------------------------------------------- rerun, signals


def test_a_finished_study_reruns_without_training_or_rebuilding_the_report(
    finished: tuple[Path, Path],
) -> None:
    study, out = finished
    # the report as this version builds it, from the study.toml the command writes
    run_study(read_study_file(study), out, source=str(study))
    report = out / "report.html"
    before = report.stat().st_mtime_ns
    completed = subprocess.run(
        leukaug_run(study, out), capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stderr
    text = " ".join(completed.stdout.split())
    assert f"{len(TINY_ARMS)} of {len(TINY_ARMS)} arms complete; nothing to run" in text
    assert f"Report: {report}" in text and "Verdicts" in text
    assert " epoch " not in completed.stdout + completed.stderr  # no replayed epoch lines
    assert "arm(s) to run" not in completed.stdout + completed.stderr
    assert report.stat().st_mtime_ns == before  # unchanged inputs: the report is kept


def test_every_file_the_report_reads_is_in_its_fingerprint(tmp_path: Path) -> None:
    """A rerun keeps the report only while its inputs are unchanged: a background check or
    Grad-CAM overlay written (or rewritten) after the report was built must rebuild it."""
    folder = StudyFolder(tmp_path)
    arm = folder.arm("a-s0")
    arm.path.mkdir(parents=True)
    read = [arm.arm_json, arm.history, arm.predictions, arm.metrics, arm.error, arm.cam_csv,
            arm.cam_overlays, arm.background_check_csv, folder.study_toml, folder.dataset_json]  # fmt: skip
    for path in read:
        path.write_text("first")
    stamps = {report_inputs(folder, "none")}
    for path in read:
        path.write_text(f"changed {path.name}")
        stamps.add(report_inputs(folder, "none"))
    assert len(stamps) == len(read) + 1
    assert report_inputs(folder, "other") not in stamps


def test_a_finished_study_reruns_without_loading_the_training_stack(
    finished: tuple[Path, Path],
) -> None:
    """Issue 20 item 2: a rerun imported timm, torchvision's models, grad-cam and matplotlib
    (about 3 of its 11 s on the demo) to train nothing. Nothing of them loads now."""
    study, out = finished
    run_study(read_study_file(study), out, source=str(study))  # the report as built now
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from leukaug.study.run import run_study\n"
        "from leukaug.study.study_file import read_study_file\n"
        f"result = run_study(read_study_file({str(study)!r}), Path({str(out)!r}), "
        f"source={str(study)!r})\n"
        "assert not result.failed and result.outcomes\n"
        "heavy = ('timm', 'torchvision.models', 'pytorch_grad_cam', 'matplotlib', 'kornia')\n"
        "print('LOADED=' + ','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED=\n" in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("signum, at_once", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_a_signal_stops_the_study_with_one_line_on_how_to_resume(
    tmp_path: Path, signum: signal.Signals, at_once: int
) -> None:
    study = tiny(tmp_path, epochs=3, cells=10)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [*leukaug_run(study, out), "--set", f"executor.arms_per_device={at_once}"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    history = out / "arms" / f"{TINY_ARMS[1]}-s0" / "history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if history.is_file() and len(pd.read_csv(history)) >= 1:
            process.send_signal(signum)
            break
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if "Stopped by" in line]
    assert len(lines) == 1, stderr
    name = signal.Signals(signum).name
    assert re.search(rf"Stopped by {name}: (\d arm\(s\) finished in this run, )?\d arm", lines[0])
    assert "Run the same command to resume" in lines[0] and str(out) in lines[0]
    parse_every_result(out)
    # a worker process ended mid-write may leave a hidden .tmp (never read; a rerun removes
    # it, parse_every_result checked it is hidden) and its arm's .lock file, which the kernel
    # released when the worker ended (core.lock: flock); every lock is free
    for lock_file in out.rglob(".lock"):
        with lock_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while one is held
    if at_once == 1:
        assert not list(out.rglob(".lock"))  # in-process: every lock cleaned up
        assert not list(out.rglob("*.tmp"))  # in-process: every write finished or cleaned up
    assert not list(out.rglob("error.json"))  # an interrupted arm is not a failed one
    assert json.loads((history.parent / "arm.json").read_text())["status"] == "running"
