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
