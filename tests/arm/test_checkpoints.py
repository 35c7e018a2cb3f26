"""Checkpoints cost what resume needs: slim weights checked by hash, the save schedule,
damaged files set aside; arms of a frozen backbone resume bit-identically."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from leukaug.arm import checkpoints
from leukaug.arm import loop as train
from leukaug.arm.checkpoints import (
    AUTO_COST_FACTOR,
    DamagedCheckpointError,
    FrozenWeights,
    SaveSchedule,
    load_weights,
    read_checkpoint,
    resume_state,
    set_aside_damaged,
    weights_entry,
)
from leukaug.arm.context import ArmContext, RunSettings
from leukaug.arm.network import build_model, load_arm_weights
from leukaug.arm.single import run_arm
from leukaug.arm.spec import ArmSpec
from leukaug.augment import AugmentationSpec
from leukaug.core.errors import ConfigError, DataError
from leukaug.core.layout import ArmFolder
from leukaug.data import load_or_build_cache, read_dataset, split_manifest
from leukaug.trained import explain, loader


class TwoPart(nn.Module):
    """A backbone (with a BatchNorm) and a head; `frozen` freezes the backbone."""

    def __init__(self, frozen: bool = True, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16))
        self.head = nn.Linear(16, 1)
        self.backbone.requires_grad_(not frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


# --------------------------------------------------------------------------- slim weights


def test_a_slim_checkpoint_leaves_out_exactly_the_frozen_parameters() -> None:
    model = TwoPart()
    frozen = FrozenWeights.of(model)
    assert frozen.keys == ("backbone.0.bias", "backbone.0.weight", "backbone.1.bias",
                           "backbone.1.weight")  # fmt: skip
    saved = weights_entry(model, frozen)
    assert set(saved["model"]) == set(model.state_dict()) - set(frozen.keys)
    assert "backbone.1.running_mean" in saved["model"]  # buffers are kept
    assert checkpoints.is_slim(saved)
    assert not checkpoints.is_slim(
        weights_entry(TwoPart(frozen=False), FrozenWeights.of(TwoPart(frozen=False)))
    )


def test_a_slim_checkpoint_restores_the_trained_model_from_its_initialisation() -> None:
    trained = TwoPart()
    frozen = FrozenWeights.of(trained)
    with torch.no_grad():
        trained.head.weight.add_(1.0)
        trained.backbone[1].running_mean.add_(0.5)
    saved = weights_entry(trained, frozen)
    rebuilt = TwoPart()  # the same initialisation: the frozen part is identical
    load_weights(rebuilt, saved, "x.pt")
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in rebuilt.state_dict().items())


def test_frozen_weights_that_changed_are_refused_by_hash() -> None:
    saved = weights_entry(TwoPart(seed=0), FrozenWeights.of(TwoPart(seed=0)))
    with pytest.raises(DataError, match=r"x\.pt: the model's frozen weights are not those"):
        load_weights(TwoPart(seed=1), saved, "x.pt")
    with pytest.raises(DataError, match="another regime"):
        load_weights(TwoPart(frozen=False), saved, "x.pt")


def test_a_full_checkpoint_of_an_older_version_still_loads_strictly() -> None:
    source = TwoPart(seed=3)
    target = TwoPart(seed=4)
    load_weights(target, {"model": source.state_dict()}, "old.pt")
    assert torch.equal(target.backbone[0].weight, source.backbone[0].weight)
    with pytest.raises(DataError, match="missing or unexpected keys"):
        load_weights(target, {"model": {"head.weight": source.head.weight}}, "old.pt")


# --------------------------------------------------------------------------- schedule


def test_auto_schedule_saves_the_first_epoch_then_keeps_writing_under_five_percent() -> None:
    schedule = SaveSchedule(None, last_save=0.0)
    assert schedule.due(now=0.001)  # nothing saved yet: the first epoch writes
    schedule.saved(started=1.0, finished=2.0)  # a 1 s write
    assert not schedule.due(now=2.0 + AUTO_COST_FACTOR * 1.0 - 0.1)
    assert schedule.due(now=2.0 + AUTO_COST_FACTOR * 1.0)
    schedule.saved(started=10.0, finished=10.001)  # small writes (CPU runs): every epoch
    assert schedule.due(now=10.1)


def test_a_fixed_interval_writes_at_most_that_often() -> None:
    schedule = SaveSchedule(30.0, last_save=0.0)
    assert not schedule.due(now=29.0)
    assert schedule.due(now=31.0)  # an epoch longer than the interval saves at its end
    assert SaveSchedule(0.0, last_save=5.0).due(now=5.0)
    with pytest.raises(ConfigError, match="checkpoint_interval_s"):
        SaveSchedule(-1.0)


# --------------------------------------------------------------------------- damaged files


def _save(path, epoch: int, **extra) -> None:
    torch.save({"model": {"w": torch.ones(3)}, "epoch": epoch, **extra}, path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not a checkpoint"])
def test_an_unreadable_checkpoint_is_a_data_error_naming_the_file(tmp_path, damage) -> None:
    path = tmp_path / "last.pt"
    _save(path, 1)
    data = path.read_bytes()
    contents = {
        "truncated": data[: len(data) // 2],
        "garbage": b"not a pickle at all" * 10,
        "empty": b"",
    }
    if damage == "not a checkpoint":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(contents[damage])
    with pytest.raises(DamagedCheckpointError, match=re.escape(str(path))):
        read_checkpoint(path)


def test_damaged_files_are_set_aside_and_reported(tmp_path) -> None:
    folder = ArmFolder(tmp_path)
    _save(folder.checkpoint, 1)
    _save(folder.last, 2)
    folder.last.write_bytes(folder.last.read_bytes()[:100])
    records = set_aside_damaged(folder)
    assert [r["path"] for r in records] == [str(folder.last)]
    moved = list(tmp_path.glob("last.pt.damaged-*"))
    assert [str(p) for p in moved] == [records[0]["moved_to"]] and not folder.last.exists()
    assert folder.checkpoint.is_file()  # the good file stays
    assert set_aside_damaged(folder) == []


def test_resume_needs_a_best_checkpoint_as_recent_as_its_best_epoch(tmp_path) -> None:
    folder = ArmFolder(tmp_path)
    assert resume_state(folder, "h") is None  # nothing yet
    _save(folder.last, 4, config_hash="h", best_epoch=3)
    _save(folder.checkpoint, 3)
    assert resume_state(folder, "h")["epoch"] == 4
    _save(folder.checkpoint, 2)  # older than the best epoch last.pt remembers: start over
    assert resume_state(folder, "h") is None
    folder.checkpoint.write_bytes(b"broken")
    assert resume_state(folder, "h") is None
    assert list(tmp_path.glob("checkpoint.pt.damaged-*"))
    with pytest.raises(ConfigError, match="another configuration"):
        resume_state(folder, "other")


# --------------------------------------------------------------------------- arms

ARM_SIZE = 72


@pytest.fixture(scope="module")
def arm_data(tmp_path_factory, tiny_cnmc):
    manifest = split_manifest(read_dataset(tiny_cnmc).manifest, "subject", val_fraction=0.3, seed=0)
    cache = load_or_build_cache(manifest, ARM_SIZE, tmp_path_factory.mktemp("cache"))
    return manifest, cache


def frozen_arm(**overrides) -> ArmSpec:
    """The custom CNN with its backbone frozen: 65 of its 692,545 parameters train."""
    settings = {"model": "custom_cnn", "image_size": ARM_SIZE, "epochs": 3, "batch_size": 8,
                "lr": 1e-2, "regime": "freeze_backbone", "aug_p": 0.5,
                "augmentations": (AugmentationSpec("flip"), AugmentationSpec("noise"))}  # fmt: skip
    return ArmSpec(**(settings | overrides))


def run(spec, arm_data, out_dir, **settings):
    manifest, cache = arm_data
    context = ArmContext(out_dir, out_dir.name, "tiny", RunSettings(device="cpu", **settings))
    return run_arm(spec, manifest, cache, context)


def crash_in_epoch(monkeypatch, epoch: int):
    original = train.train_one_epoch

    def crashing(*args, **kwargs):
        if kwargs["epoch"] == epoch:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crashing)
    return original


def test_a_frozen_backbone_arm_writes_its_head_and_resumes_bit_identically(
    arm_data, tmp_path, monkeypatch
):
    spec = frozen_arm()
    run(spec, arm_data, tmp_path / "full")
    original = crash_in_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):  # every epoch saves: the automatic schedule is timed
        run(spec, arm_data, tmp_path / "resumed", checkpoint_interval_s=0.0)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(train, "train_one_epoch", original)
    run(spec, arm_data, tmp_path / "resumed")
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()

    model = build_model(spec, ARM_SIZE)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not trainable & set(checkpoints.frozen_keys(model))
    full_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    for file in ("last.pt", "checkpoint.pt"):
        saved = torch.load(tmp_path / "full" / file, weights_only=True)
        assert set(saved["model"]) == trainable  # the head (layers.23) only
        assert (tmp_path / "full" / file).stat().st_size < full_bytes / 20


def test_every_reader_rebuilds_a_slim_checkpoint_to_the_trained_model(arm_data, tmp_path):
    spec = frozen_arm(epochs=1)
    run(spec, arm_data, tmp_path / "arm")
    reference = build_model(spec, ARM_SIZE)
    load_arm_weights(reference, tmp_path / "arm")
    expected = reference.state_dict()
    for loaded in (
        loader.load_trained_arm(tmp_path / "arm").model,
        explain.load_trained_arm(tmp_path / "arm").model,
    ):
        assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    trained_head = torch.load(tmp_path / "arm" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(expected["layers.23.weight"], trained_head["layers.23.weight"])
    # a later arm may start from it (init_from): it gets the whole trained model
    tuned = run(ArmSpec(model="custom_cnn", image_size=ARM_SIZE, epochs=1, batch_size=8,
                        init_from=str(tmp_path / "arm" / "checkpoint.pt")), arm_data, tmp_path / "tuned")  # fmt: skip
    assert not tuned.skipped and len(tuned.predictions)


def test_frozen_weights_that_no_longer_match_the_initialisation_are_refused(arm_data, tmp_path):
    source = run(frozen_arm(epochs=1, regime="full"), arm_data, tmp_path / "source")
    init = tmp_path / "start.pt"
    shutil.copy(source.out_dir / "checkpoint.pt", init)
    run(frozen_arm(epochs=1, init_from=str(init)), arm_data, tmp_path / "arm")
    saved = torch.load(init, weights_only=True)
    saved["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in saved["model"].items()}
    torch.save(saved, init)  # the arm's starting weights changed after it trained
    spec = frozen_arm(epochs=1, init_from=str(init))
    with pytest.raises(DataError, match="frozen weights are not those"):
        load_arm_weights(
            build_model(ArmSpec.from_dict({**spec.to_dict(), "init_from": None}), ARM_SIZE),
            tmp_path / "arm",
        )


def test_a_resume_interval_skips_saves_but_the_result_is_the_same(arm_data, tmp_path, monkeypatch):
    spec = frozen_arm(epochs=3)
    saves = []
    original_save = train.checkpoints.torch_save
    monkeypatch.setattr(
        train.checkpoints,
        "torch_save",
        lambda path, obj: (saves.append(Path(path).name), original_save(path, obj)),
    )
    run(spec, arm_data, tmp_path / "every", checkpoint_interval_s=0.0)
    assert saves.count("last.pt") == 3
    saves.clear()
    run(spec, arm_data, tmp_path / "once", checkpoint_interval_s=3600.0)
    assert saves.count("last.pt") == 1  # the end of training always saves
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "every" / name).read_bytes() == (tmp_path / "once" / name).read_bytes()
