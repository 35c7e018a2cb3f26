"""Attacks on leukaug through weights and checkpoint files,
as a hostile or careless user would make them (issue 13).

Every test here is one attack, named after it, on tiny data; each must end in a
`LeukaugError` naming the culprit (exit status 2 through the CLI), never a traceback,
a silent acceptance or a hang. The fixtures at the top build the attack material and are
meant to be reused by new tests.
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cli_tools import output, run_cli, squeeze, train_args
from leukaug.arm.context import ArmContext, RunSettings
from leukaug.core.errors import DataError
from leukaug.data.cache import load_or_build_cache
from leukaug.data.read import read_dataset


def not_weights(kind: str, path: Path) -> Path:
    """A file given as weights that is none: text, a truncated checkpoint, a pickled object."""
    import pickle

    import torch

    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(64, 64)}}, path)
        path.write_bytes(path.read_bytes()[:700])
    else:  # an object the safe loader must refuse (the pickles of issue 13 run code)
        path.write_bytes(pickle.dumps(collections.OrderedDict(w=Path("/etc/passwd"))))
    return path


@pytest.mark.parametrize("kind", ["text", "truncated", "pickled_object"])
def test_init_from_a_file_that_is_not_weights(
    kind: str, tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    bad = not_weights(kind, tmp_path / "weights [v2].pt")
    out = tmp_path / "arm"
    status = run_cli(
        monkeypatch, *train_args(tiny_cnmc, out, tmp_path / "cache", "--init-from", str(bad))
    )
    _, err = output(capsys)
    assert status == 2 and f"notaweightsfile:{squeeze(bad)}" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert not (out / "arm.json").exists()


def test_init_from_not_weights_in_a_study_arm_error_json(
    tiny_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    from leukaug.arm.spec import ArmSpec
    from leukaug.data.split import split_manifest
    from leukaug.study.jobs import ArmJob, StudyArm

    manifest = split_manifest(tiny_manifest, strategy="image")
    bad = not_weights("pickled_object", tmp_path / "source.pt")
    spec = ArmSpec(model="resnet18", image_size=32, epochs=1, init_from=str(bad))
    job = ArmJob(tmp_path / "study", manifest, tmp_path / "cache", RunSettings("cpu", threads=1))
    outcome = job.run(StudyArm("a-s0", "a", spec, 32))
    error = (tmp_path / "study" / "arms" / "a-s0" / "error.json").read_text()
    assert outcome.failed and f"not a weights file: {bad}" in outcome.message
    assert "weights_only" not in error and "not a weights file" in error


# Item 11: a damaged resume file (last.pt, checkpoint.pt) is set aside, named in the log
# and in arm.json, and the arm restarts from its last good state: never the same failure again.
FAULT_ARM_SIZE = 72


@pytest.fixture(scope="module")
def fault_arm(tmp_path_factory: pytest.TempPathFactory, tiny_cnmc: Path):
    """(spec, manifest, cache, clean run's folder): a tiny two-epoch arm run once, uninterrupted."""
    from leukaug.arm.single import run_arm
    from leukaug.arm.spec import ArmSpec
    from leukaug.data.split import split_manifest

    manifest = split_manifest(read_dataset(tiny_cnmc).manifest, "subject", val_fraction=0.3)
    cache = load_or_build_cache(manifest, FAULT_ARM_SIZE, tmp_path_factory.mktemp("cache"))
    spec = ArmSpec(model="custom_cnn", image_size=FAULT_ARM_SIZE, epochs=2, batch_size=8, lr=1e-3)
    clean = tmp_path_factory.mktemp("clean") / "arm"
    run_arm(spec, manifest, cache, ArmContext(clean, "arm", "arm", RunSettings(device="cpu")))
    return spec, manifest, cache, clean


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["last.pt", "checkpoint.pt"])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_resume_file_is_set_aside_and_the_arm_restarts(
    fault_arm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, damaged: str, damage: str
) -> None:
    from leukaug.arm import loop as train
    from leukaug.arm.single import run_arm

    spec, manifest, cache, clean = fault_arm
    arm_dir = tmp_path / "arm"
    original = train.train_one_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_arm(spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu")))
    monkeypatch.setattr(train, "train_one_epoch", original)
    path = arm_dir / damaged
    path.write_bytes(
        path.read_bytes()[: len(path.read_bytes()) // 2] if damage == "truncated" else b""
    )

    with caplog.at_level("WARNING", logger="leukaug"):
        run_arm(spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu")))
    moved = list(arm_dir.glob(f"{damaged}.damaged-*"))
    assert len(moved) == 1 and str(path) in caplog.text and str(moved[0]) in caplog.text
    info = json.loads((arm_dir / "arm.json").read_text())
    assert info["status"] == "complete"
    assert [(r["path"], r["moved_to"]) for r in info["damaged_files"]] == [
        (str(path), str(moved[0]))
    ]
    for name in ("predictions.csv", "metrics.json"):  # restarted: the uninterrupted result
        assert (arm_dir / name).read_bytes() == (clean / name).read_bytes(), name
    run_arm(
        spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu"))
    )  # no loop


def test_a_damaged_checkpoint_of_a_finished_arm_is_named_by_predict(
    fault_arm, tmp_path: Path
) -> None:
    from leukaug.trained.loader import load_trained_arm

    *_, clean = fault_arm
    arm_dir = tmp_path / "arm"
    shutil.copytree(clean, arm_dir)
    checkpoint = arm_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(DataError) as error:
        load_trained_arm(arm_dir)
    assert f"{checkpoint} is damaged" in str(error.value) and "rerun the arm" in str(error.value)


# ============================================================ issue 22: code in a weights file


class _Payload:
    """Unpickled by an unsafe loader, this creates `marker` (the attack's visible effect)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A torch file whose unpickling would run code: a checkpoint-like dict with a payload."""
    import torch

    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "payload": _Payload(marker)}, path)
    return path


def assert_refused(message: str, path: Path, marker: Path) -> None:
    text = squeeze(message)
    assert squeeze(f"{path} refused: it holds code, not only weights") in text
    assert "weights_only" not in message and "damaged" not in message
    assert "rerun the arm" not in message and "Traceback" not in message
    assert not marker.exists()  # nothing ran


def malicious_arm(clean: Path, tmp_path: Path, name: str = "checkpoint.pt") -> tuple[Path, Path]:
    arm_dir = tmp_path / "arm"
    shutil.copytree(clean, arm_dir)
    marker = tmp_path / "PWNED"
    malicious_checkpoint(arm_dir / name, marker)
    return arm_dir, marker


@pytest.mark.parametrize("command", ["predict", "export"])
def test_predict_and_export_refuse_a_checkpoint_that_holds_code(
    command: str, fault_arm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 22 items 3 and 6: PyTorch's hint to set weights_only=False was passed on, and
    the file was called damaged ("rerun the arm")."""
    *_, clean = fault_arm
    arm_dir, marker = malicious_arm(clean, tmp_path)
    images = fault_arm[1]["path"].iloc[0]
    args = (
        [command, str(arm_dir), str(images), "--out", str(tmp_path / "p.csv")]
        if command == "predict"
        else [command, str(arm_dir), "--format", "pt2", "--out", str(tmp_path / "m.pt2")]
    )
    status = run_cli(monkeypatch, *args)
    err = capsys.readouterr().err
    assert status == 2
    assert_refused(err, arm_dir / "checkpoint.pt", marker)
    assert (arm_dir / "checkpoint.pt").is_file()  # not set aside: the user must look at it


def test_init_from_a_file_that_holds_code_is_refused(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    marker = tmp_path / "PWNED"
    bad = malicious_checkpoint(tmp_path / "source.pt", marker)
    out = tmp_path / "arm"
    status = run_cli(
        monkeypatch, *train_args(tiny_cnmc, out, tmp_path / "cache", "--init-from", str(bad))
    )
    err = capsys.readouterr().err
    assert status == 2 and "notaweightsfile" in squeeze(err)
    assert_refused(err, bad, marker)
    assert not out.exists() or not (out / "arm.json").exists()


def test_resume_refuses_a_last_pt_that_holds_code(fault_arm, tmp_path: Path) -> None:
    """A planted last.pt is refused by name, not set aside as damaged and retrained over."""
    from leukaug.arm.single import run_arm
    from leukaug.models.safe_load import RefusedFileError

    spec, manifest, cache, clean = fault_arm
    arm_dir, marker = malicious_arm(clean, tmp_path, "last.pt")
    info = json.loads((arm_dir / "arm.json").read_text())
    (arm_dir / "arm.json").write_text(json.dumps(info | {"status": "running"}))
    with pytest.raises(RefusedFileError) as error:
        run_arm(spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu")))
    assert_refused(str(error.value), arm_dir / "last.pt", marker)
    assert not list(arm_dir.glob("*.damaged-*"))


def test_weights_path_that_holds_code_is_refused(tmp_path: Path) -> None:
    from leukaug.models.safe_load import RefusedFileError
    from leukaug.models.weights import load_state_dict

    marker = tmp_path / "PWNED"
    bad = malicious_checkpoint(tmp_path / "weights.pth", marker)
    with pytest.raises(RefusedFileError) as error:
        load_state_dict(bad)
    assert_refused(str(error.value), bad, marker)


# ================================================================ issue 22: a full disk


@pytest.mark.parametrize("failing_save", [1, 3])  # checkpoint.pt of epoch 1; last.pt of epoch 2
def test_a_full_disk_leaves_the_arm_interrupted_and_the_rerun_resumes_byte_identically(
    failing_save: int, fault_arm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 1: an ENOSPC was a traceback and left the arm `running`."""
    import errno

    import torch

    from leukaug.arm import checkpoints
    from leukaug.arm.dispatch import run_any_arm
    from leukaug.core.errors import StorageError

    spec, manifest, cache, clean = fault_arm
    arm_dir = tmp_path / "arm"
    saves = []
    real_save = torch.save

    def disk_fills(obj, handle, *args, **kwargs):
        saves.append(handle)
        if len(saves) == failing_save:
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", disk_fills)
    with pytest.raises(StorageError) as error:
        run_any_arm(
            spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu"))
        )
    monkeypatch.undo()
    assert f"{arm_dir} has" in str(error.value) and "free space there" in str(error.value)
    info = json.loads((arm_dir / "arm.json").read_text())
    assert info["status"] == "interrupted" and "No space left" in info["interrupted"]["reason"]
    assert not list(arm_dir.glob(".*.tmp"))  # nothing half-written

    run_any_arm(spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu")))
    assert json.loads((arm_dir / "arm.json").read_text())["status"] == "complete"
    for name in ("predictions.csv", "metrics.json"):
        assert (arm_dir / name).read_bytes() == (clean / name).read_bytes(), name


# ======================================================= issue 22: optional steps of an arm


def test_grad_cams_of_an_arm_without_test_cells_are_skipped(fault_arm, tmp_path: Path) -> None:
    """`write_cams` crashed on an empty test split ("cannot reshape array of size 0")."""
    import pandas as pd

    from leukaug.core.layout import ArmFolder
    from leukaug.trained.arm_cams import write_cams

    _, _, cache, clean = fault_arm
    arm_dir = tmp_path / "arm"
    shutil.copytree(clean, arm_dir)
    predictions = pd.read_csv(arm_dir / "predictions.csv", dtype={"image_id": str})
    predictions[predictions["split"] != "test"].to_csv(arm_dir / "predictions.csv", index=False)
    assert write_cams(ArmFolder(arm_dir), cache, "cpu") is None
    assert not (arm_dir / "cam.csv").exists()


def test_a_failing_tracker_is_recorded_and_the_arm_completes(
    fault_arm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leukaug.arm import tracking
    from leukaug.arm.single import run_arm

    def unreachable(*args, **kwargs):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(tracking.TensorBoardTracker, "on_end", unreachable)
    spec, manifest, cache, clean = fault_arm
    arm_dir = tmp_path / "arm"
    run_arm(spec, manifest, cache, ArmContext(arm_dir, "arm", "arm", RunSettings(device="cpu", tensorboard=True)))  # fmt: skip
    info = json.loads((arm_dir / "arm.json").read_text())
    assert info["status"] == "complete"
    assert info["optional_failures"][0]["step"] == "tracking (TensorBoard)"
    assert "ConnectionError: tracking server unreachable" in info["optional_failures"][0]["error"]
    for name in ("predictions.csv", "metrics.json"):
        assert (arm_dir / name).read_bytes() == (clean / name).read_bytes(), name
