"""Training loop: class weights, one input scale, order-preserving evaluation, freezing,
NaN handling, bit-reproducibility and resume. Stand-in models keep it fast on CPU."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console
from torch import nn

from leukaug import LABEL_ALL, LABEL_HEM
from leukaug.arm import loop as train
from leukaug.arm import network
from leukaug.arm import single as arm_module
from leukaug.arm.batches import (
    SplitImages,
    fetch,
    make_pipeline,
    place_store,
    prepare,
    resolve_device,
)
from leukaug.arm.context import ArmContext, RunSettings
from leukaug.arm.loop import (
    EpochRecord,
    TrainingCallbacks,
    class_weights,
    evaluate,
    fit,
    train_one_epoch,
)
from leukaug.arm.network import make_optimizer
from leukaug.arm.spec import ArmSpec
from leukaug.augment import AugmentationSpec
from leukaug.cli.progress import LogLines, ProgressBars, training_progress
from leukaug.core.errors import ConfigError, TrainingError
from leukaug.core.layout import ArmFolder
from leukaug.data import load_or_build_cache, read_dataset, split_manifest
from leukaug.study.jobs import ArmOutcome

SIZE = 16
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
CPU = torch.device("cpu")


def toy_split(n: int = 24, seed: int = 0) -> SplitImages:
    """ALL images bright, HEM images dark, each with its own brightness (row i -> level)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 != 0).astype(np.int64)  # 2:1 ALL:HEM like C-NMC
    levels = np.where(labels == 1, 150, 60) + rng.integers(0, 40, n)
    noise = rng.integers(0, 20, (n, SIZE, SIZE, 3))
    store = (levels[:, None, None, None] + noise).astype(np.uint8)
    return SplitImages(store, np.arange(n, dtype=np.int64), labels)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_setup(seed: int = 0, lr: float = 1e-2):
    torch.manual_seed(seed)
    model = TinyNet()
    optimizer = make_optimizer(model, ArmSpec(model="tiny", lr=lr))
    return model, optimizer, make_pipeline(CPU, MEAN, STD)


def test_balanced_class_weights_favour_the_minority_class():
    labels = np.array([LABEL_ALL] * 8 + [LABEL_HEM] * 2)
    weights = class_weights(labels, "balanced")
    assert weights[LABEL_HEM] > weights[LABEL_ALL]  # the seed inverted this
    assert weights.tolist() == pytest.approx([10 / 4, 10 / 16])  # n / (2 n_class)
    assert class_weights(labels, "none").tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError):
        class_weights(labels, "inverse")


def test_loss_weights_are_applied_per_sample_by_label(monkeypatch):
    data = toy_split(12)
    model, optimizer, pipeline = tiny_setup()
    seen = {}
    original = torch.nn.functional.binary_cross_entropy_with_logits

    def spy(logits, labels, weight=None, **kw):
        seen["pairs"] = list(zip(labels.tolist(), weight.tolist(), strict=True))
        return original(logits, labels, weight=weight, **kw)

    monkeypatch.setattr(train.F, "binary_cross_entropy_with_logits", spy)
    weights = class_weights(data.labels)
    train_one_epoch(
        model, optimizer, data, pipeline, epoch=1, seed=0, batch_size=12, weights=weights
    )
    for label, weight in seen["pairs"]:
        assert weight == pytest.approx(float(weights[int(label)]))


def test_fit_learns_a_separable_toy_problem(tmp_path):
    data = toy_split(48)
    model, optimizer, pipeline = tiny_setup(lr=3e-2)
    history = fit(model, optimizer, data, toy_split(24, seed=1), pipeline, tmp_path, epochs=6, seed=0,
                  batch_size=8, weights=class_weights(data.labels))  # fmt: skip
    assert list(history.columns) == list(train.HISTORY_COLUMNS)
    assert history["val_accuracy"].iloc[-1] >= 0.9
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "last.pt").exists()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == int(history["val_loss"].idxmin()) + 1


class Recorder(nn.Module):
    """Records every input it sees; the logit is the mean input."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return (x.mean(dim=(1, 2, 3)) * self.scale).unsqueeze(1)


def test_training_and_evaluation_see_the_same_normalised_inputs():
    data = toy_split(10)
    model = Recorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    pipeline = make_pipeline(CPU, MEAN, STD)
    train_one_epoch(
        model, optimizer, data, pipeline, epoch=1, seed=0, batch_size=4, weights=torch.ones(2)
    )
    seen_in_training = torch.cat(model.inputs)
    model.inputs.clear()
    evaluate(model, data, pipeline, batch_size=3)
    seen_in_eval = torch.cat(model.inputs)
    key = lambda batch: sorted(batch.sum(dim=(1, 2, 3)).tolist())  # noqa: E731
    assert key(seen_in_training) == key(seen_in_eval)  # same images, same scale
    expected = (
        torch.from_numpy(data.store[0]).permute(2, 0, 1).float() / 255 - pipeline.mean[0]
    ) / pipeline.std[0]
    assert torch.allclose(seen_in_eval[0], expected)  # [0, 1] then mean/std, never [0, 255]


def test_augmentation_runs_only_in_training():
    data = toy_split(8)
    calls = []

    def augmenter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append(len(images))
        return images.flip(3)

    model, optimizer, pipeline = tiny_setup()
    train_one_epoch(model, optimizer, data, pipeline, epoch=1, seed=0, batch_size=4, weights=torch.ones(2),
                    augmenter=augmenter)  # fmt: skip
    assert sum(calls) == len(data)
    evaluate(model, data, pipeline, batch_size=4, tta=True)
    assert sum(calls) == len(data)


def test_evaluation_keeps_the_order_of_the_data():
    n = 20
    levels = np.random.default_rng(3).permutation(np.arange(n) * 10 + 5)
    store = np.broadcast_to(levels[:, None, None, None], (n, SIZE, SIZE, 3)).astype(np.uint8)
    data = SplitImages(store, np.arange(n), (levels > 100).astype(np.int64))
    model = Recorder()
    prob = evaluate(model, data, make_pipeline(CPU, MEAN, STD), batch_size=6)["prob"]
    # P(ALL) increases with brightness: a shuffled evaluation would break the rank match.
    assert (np.argsort(prob) == np.argsort(levels)).all()


def test_tta_averages_the_eight_dihedral_views():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = train.dihedral_views(x)
    assert len(views) == 8 and len({tuple(v.flatten().tolist()) for v in views}) == 8
    data = toy_split(6)
    model, _, pipeline = tiny_setup()
    model.head[2].weight.data.fill_(0.3)
    plain = evaluate(model, data, pipeline, batch_size=4)["prob"]
    averaged = evaluate(model, data, pipeline, batch_size=4, tta=True)["prob"]
    # TinyNet pools globally; its 3x3 conv still sees rotated images differently, but not by much.
    assert np.allclose(plain, averaged, atol=0.05) and not np.array_equal(plain, averaged)


class NaNAfter(nn.Module):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.calls, self.seen = calls, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += 1
        out = x.mean(dim=(1, 2, 3), keepdim=True)[:, :, 0] * self.weight
        return out * float("nan") if self.seen == self.calls else out


def test_non_finite_loss_names_epoch_and_batch():
    model = NaNAfter(calls=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(TrainingError, match="epoch 2, batch 3"):
        train_one_epoch(model, optimizer, toy_split(20), make_pipeline(CPU, MEAN, STD), epoch=2, seed=0,
                        batch_size=4, weights=torch.ones(2))  # fmt: skip


def test_frozen_parameters_stay_bit_identical(tmp_path):
    data = toy_split(24)
    torch.manual_seed(0)
    model = TinyNet()
    for param in model.features.parameters():
        param.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = make_optimizer(model, ArmSpec(model="tiny", lr=1e-2, weight_decay=0.1))
    fit(model, optimizer, data, toy_split(6, seed=1), make_pipeline(CPU, MEAN, STD), tmp_path, epochs=2,
        seed=0, batch_size=8, weights=class_weights(data.labels))  # fmt: skip
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith("features"):  # weights and the frozen BN's running statistics
            assert torch.equal(value, after[key]), key
    assert not torch.equal(before["head.2.weight"], after["head.2.weight"])


def test_no_trainable_parameter_is_an_error():
    model = TinyNet().requires_grad_(False)
    with pytest.raises(TrainingError, match="no trainable"):
        make_optimizer(model, ArmSpec(model="tiny", regime="freeze_backbone"))


def _fit_once(out_dir, epochs: int = 3) -> tuple[pd.DataFrame, dict]:
    data = toy_split(24)
    model, optimizer, pipeline = tiny_setup()

    def augmenter(images, generator):  # random per-sample noise: exercises the seeded stream
        return images + 0.05 * torch.randn(images.shape, generator=generator)

    history = fit(model, optimizer, data, toy_split(9, seed=1), pipeline, out_dir, epochs=epochs, seed=7,
                  batch_size=5, weights=class_weights(data.labels), augmenter=augmenter)  # fmt: skip
    return history, model.state_dict()


def test_same_seed_gives_bit_identical_training(tmp_path):
    history_a, state_a = _fit_once(tmp_path / "a")
    history_b, state_b = _fit_once(tmp_path / "b")
    pd.testing.assert_frame_equal(
        history_a.drop(columns="seconds"), history_b.drop(columns="seconds")
    )
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def crash_in_epoch_3(monkeypatch) -> object:
    """Make epoch 3 of the next training raise KeyboardInterrupt (a crash); returns the
    original `train_one_epoch` so the test can restore it."""
    original = train.train_one_epoch

    def crashing(*args, **kwargs):
        if kwargs["epoch"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crashing)
    return original


def test_interrupted_fit_resumes_to_the_same_result(tmp_path, monkeypatch):
    history_full, state_full = _fit_once(tmp_path / "full")
    original = crash_in_epoch_3(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _fit_once(tmp_path / "resumed")
    assert len(pd.read_csv(tmp_path / "resumed" / "history.csv")) == 2
    monkeypatch.setattr(train, "train_one_epoch", original)
    torch.manual_seed(12345)  # a different process state must not matter
    history_resumed, state_resumed = _fit_once(tmp_path / "resumed")
    pd.testing.assert_frame_equal(
        history_full.drop(columns="seconds"), history_resumed.drop(columns="seconds")
    )
    assert all(torch.equal(state_full[k], state_resumed[k]) for k in state_full)
    best_full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    best_resumed = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert best_full["epoch"] == best_resumed["epoch"]
    assert all(
        torch.equal(best_full["model"][k], best_resumed["model"][k]) for k in best_full["model"]
    )


def test_early_stopping_on_validation_loss(tmp_path):
    data = toy_split(24)
    model, optimizer, pipeline = tiny_setup(lr=0.5)  # a large step: validation loss soon rises
    history = fit(model, optimizer, data, toy_split(9, seed=1), pipeline, tmp_path, epochs=30, seed=0,
                  batch_size=8, weights=class_weights(data.labels), early_stopping_patience=2)  # fmt: skip
    best = int(history["val_loss"].idxmin()) + 1
    assert len(history) == best + 2 < 30


def test_prepare_scales_uint8_to_unit_range_before_normalising():
    pipeline = make_pipeline(CPU, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.equal(prepare(images, pipeline), torch.ones(1, 3, 2, 2))


def test_arm_spec_hash_is_stable_and_sensitive():
    spec = ArmSpec(model="custom_cnn", epochs=2)
    assert spec.config_hash() == ArmSpec(model="custom_cnn", epochs=2).config_hash()
    assert spec.config_hash() != ArmSpec(model="custom_cnn", epochs=3).config_hash()
    assert ArmSpec.from_dict(spec.to_dict()) == spec
    rotated = ArmSpec(
        model="custom_cnn", augmentations=[AugmentationSpec("rotate", {"degrees": 90})]
    )
    assert ArmSpec.from_dict(rotated.to_dict()) == rotated
    assert rotated.config_hash() != ArmSpec(model="custom_cnn").config_hash()


@pytest.mark.parametrize(
    "bad",
    [{"regime": "freeze"}, {"class_weighting": "inverse"}, {"optimizer": "rmsprop"}, {"epochs": 0},
     {"lr": float("nan")}, {"aug_p": 1.5}, {"early_stopping_patience": 0}],
)  # fmt: skip
def test_arm_spec_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        ArmSpec(model="custom_cnn", **bad)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- run_arm on the tiny synthetic C-NMC tree (custom_cnn at its 72 px minimum) ---------

ARM_SIZE = 72
PAPER_AUGS = ("flip", "rotate", "blur", "noise")


@pytest.fixture(scope="module")
def arm_data(tmp_path_factory, tiny_cnmc):
    manifest = split_manifest(read_dataset(tiny_cnmc).manifest, "subject", val_fraction=0.3, seed=0)
    cache = load_or_build_cache(manifest, ARM_SIZE, tmp_path_factory.mktemp("cache"))
    return manifest, cache


def tiny_arm(**overrides) -> ArmSpec:
    settings = {"model": "custom_cnn", "image_size": ARM_SIZE, "epochs": 2, "batch_size": 8, "lr": 1e-3,
                "augmentations": tuple(AugmentationSpec(n) for n in PAPER_AUGS), "aug_p": 0.5}  # fmt: skip
    return ArmSpec(**(settings | overrides))


def run(spec, arm_data, out_dir):
    manifest, cache = arm_data
    context = ArmContext(out_dir, out_dir.name, "tiny", RunSettings(device="cpu"))
    return arm_module.run_arm(spec, manifest, cache, context)


def test_run_arm_writes_a_complete_arm_folder(arm_data, tmp_path):
    manifest, _ = arm_data
    result = run(tiny_arm(), arm_data, tmp_path / "arm")
    folder = tmp_path / "arm"
    assert all(path.exists() for path in ArmFolder(folder).result_files())
    arm = json.loads((folder / "arm.json").read_text())
    assert arm["status"] == "complete" and arm["config_hash"] == tiny_arm().config_hash()
    assert arm["spec"]["augmentations"] == [{"name": n, "params": {}} for n in PAPER_AUGS]
    assert {"arm_id", "name", "seed", "started_at", "finished_at", "device", "versions"} <= set(arm)
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == list(train.HISTORY_COLUMNS)
    assert history["epoch"].tolist() == [1, 2]
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"image_id": str, "subject": str})
    assert list(predictions.columns) == ["split", "image_id", "subject", "label", "prob"]
    in_order = [manifest.loc[manifest["split"] == s, "image_id"] for s in ("val", "test")]
    assert predictions["image_id"].tolist() == pd.concat(in_order).tolist()  # manifest order
    truth = manifest.set_index("image_id").loc[predictions["image_id"]]
    assert (predictions["label"].to_numpy() == truth["label"].to_numpy()).all()  # joined by id
    assert (predictions["subject"].to_numpy() == truth["subject"].to_numpy()).all()
    assert predictions["prob"].between(0, 1).all()
    assert set(json.loads((folder / "metrics.json").read_text())["splits"]) == {"val", "test"}
    best = torch.load(folder / "checkpoint.pt", weights_only=True)
    last = torch.load(folder / "last.pt", weights_only=True)
    assert best["epoch"] == int(history["val_loss"].idxmin()) + 1 and last["epoch"] == 2
    assert result.predictions["prob"].tolist() == pytest.approx(predictions["prob"].tolist())


def test_run_arm_same_seed_gives_bit_identical_predictions(arm_data, tmp_path):
    run(tiny_arm(), arm_data, tmp_path / "a")
    run(tiny_arm(), arm_data, tmp_path / "b")
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (
        tmp_path / "b" / "predictions.csv"
    ).read_bytes()
    run(tiny_arm(seed=1), arm_data, tmp_path / "c")
    assert (tmp_path / "a" / "predictions.csv").read_bytes() != (
        tmp_path / "c" / "predictions.csv"
    ).read_bytes()


def test_run_arm_resumes_an_interrupted_run_to_the_same_result(arm_data, tmp_path, monkeypatch):
    spec = tiny_arm(epochs=3)
    run(spec, arm_data, tmp_path / "full")
    original = crash_in_epoch_3(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(spec, arm_data, tmp_path / "resumed")
    assert '"status": "running"' in (tmp_path / "resumed" / "arm.json").read_text()
    monkeypatch.setattr(train, "train_one_epoch", original)
    result = run(spec, arm_data, tmp_path / "resumed")
    assert not result.skipped
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "full" / name).read_bytes() == (
            tmp_path / "resumed" / name
        ).read_bytes(), name
    full, resumed = (
        pd.read_csv(tmp_path / d / "history.csv").drop(columns="seconds")
        for d in ("full", "resumed")
    )
    pd.testing.assert_frame_equal(full, resumed)


def test_run_arm_returns_at_once_when_complete_and_refuses_another_config(
    arm_data, tmp_path, monkeypatch
):
    spec = tiny_arm(epochs=1)
    first = run(spec, arm_data, tmp_path / "arm")

    def must_not_train(*args, **kwargs):
        raise AssertionError("a complete arm was trained again")

    monkeypatch.setattr(arm_module, "fit", must_not_train)
    again = run(spec, arm_data, tmp_path / "arm")
    assert again.skipped and again.config_hash == first.config_hash
    pd.testing.assert_frame_equal(again.predictions, first.predictions, check_exact=False)
    with pytest.raises(ConfigError, match="config hash"):
        run(tiny_arm(epochs=2), arm_data, tmp_path / "arm")


def test_run_arm_freeze_first_from_a_checkpoint(arm_data, tmp_path):
    source = run(tiny_arm(epochs=1), arm_data, tmp_path / "source")
    init = tmp_path / "source" / "checkpoint.pt"
    spec = tiny_arm(epochs=1, regime="freeze_first", freeze_first=19, init_from=str(init))
    run(spec, arm_data, tmp_path / "tuned")
    start = torch.load(init, weights_only=True)["model"]
    slim = torch.load(tmp_path / "tuned" / "last.pt", weights_only=True)["model"]
    assert min(int(key.split(".")[1]) for key in slim) >= 19  # frozen layers are not stored
    model = network.build_model(spec, ARM_SIZE)
    network.load_arm_weights(model, tmp_path / "tuned")  # rebuilt from init_from, hash-checked
    tuned = model.state_dict()
    for key, value in start.items():
        index = int(key.split(".")[1])  # layers.<keras index>.weight
        if index < 19:
            assert torch.equal(value, tuned[key]), key  # frozen: bit-identical
        else:
            assert not torch.equal(value, tuned[key]), key  # Dense128 onward trained
    assert source.config_hash != spec.config_hash()


def test_run_arm_rejects_a_cache_of_the_wrong_size(arm_data, tmp_path):
    with pytest.raises(ConfigError, match="size=96"):
        run(tiny_arm(image_size=96), arm_data, tmp_path / "arm")


def test_init_from_a_mismatched_checkpoint_is_a_config_error(tmp_path):
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not fit"):
        network.build_model(tiny_arm(init_from=str(tmp_path / "other.pt")), ARM_SIZE)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_batches_match_cpu_batches():
    data = toy_split(10)
    cuda = torch.device("cuda")
    on_gpu = SplitImages(place_store(data.store, cuda), data.rows, data.labels)
    assert isinstance(on_gpu.store, torch.Tensor) and on_gpu.store.is_cuda
    positions = np.array([1, 4, 7])
    for split in (on_gpu, data):  # resident cache, and pinned host batches
        images, labels = fetch(split, positions, make_pipeline(cuda, MEAN, STD))
        x = prepare(images, make_pipeline(cuda, MEAN, STD)).cpu()
        expected = prepare(
            fetch(data, positions, make_pipeline(CPU, MEAN, STD))[0], make_pipeline(CPU, MEAN, STD)
        )
        assert torch.allclose(x, expected, atol=1e-6) and labels.is_cuda


@needs_cuda
def test_run_arm_on_cuda(arm_data, tmp_path):
    manifest, cache = arm_data
    result = arm_module.run_arm(
        tiny_arm(tta=True),
        manifest,
        cache,
        ArmContext(tmp_path / "arm", "arm", "tiny", RunSettings(device="cuda")),
    )
    assert np.isfinite(result.predictions["prob"]).all()
    assert json.loads((tmp_path / "arm" / "arm.json").read_text())["device"].startswith("cuda")


def test_fit_reports_progress(tmp_path):
    data = toy_split(20)
    model, optimizer, pipeline = tiny_setup()
    seen = []
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    progress = training_progress(console)
    bars = ProgressBars(console, progress)
    original_update = progress.update

    def update(task, **fields):
        seen.append(fields)
        original_update(task, **fields)

    progress.update = update
    with progress:
        fit(model, optimizer, data, toy_split(6, seed=1), pipeline, tmp_path, epochs=1, seed=0,
            batch_size=2, weights=torch.ones(2), callbacks=bars.callbacks, label="arm-1")  # fmt: skip
    assert seen[-1]["completed"] == len(data) and seen[-1]["batch"] == 10
    assert np.isfinite(seen[-1]["loss"]) and seen[-1]["ips"] > 0
    bars.on_arm_done(ArmOutcome("arm-1", "tiny", "complete"))
    assert not progress.tasks  # removed when done


def test_fit_hands_each_epoch_to_on_epoch_as_its_history_row(tmp_path):
    data = toy_split(12)
    model, optimizer, pipeline = tiny_setup()
    records: list[EpochRecord] = []
    callbacks = TrainingCallbacks(on_epoch=records.append)
    history = fit(model, optimizer, data, toy_split(6, seed=1), pipeline, tmp_path, epochs=2,
                  seed=0, batch_size=4, weights=torch.ones(2), callbacks=callbacks, label="arm-1")  # fmt: skip
    assert [(r.label, r.epoch, r.epochs) for r in records] == [("arm-1", 1, 2), ("arm-1", 2, 2)]
    assert [r.val_loss for r in records] == list(history["val_loss"])
    assert [r.history_row() for r in records] == history.to_dict("records")
    assert records[0].eta_seconds == pytest.approx(records[0].seconds)
    assert records[-1].eta_seconds == 0 and records[-1].images_per_second > 0


def test_plain_log_lines_give_one_timestamped_line_per_epoch_and_arm():
    lines: list[str] = []
    log = LogLines(lines.append)
    row = {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.7, "val_loss": 0.6,
           "val_accuracy": 0.65, "lr": 1e-4, "seconds": 10.0}  # fmt: skip
    log.callbacks.on_epoch(EpochRecord.from_history_row(row, "arm-1", epochs=5, n_train=200))
    log.on_arm_done(ArmOutcome("arm-1", "tiny", "complete", seconds=50.0))
    assert len(lines) == 2
    assert lines[0].split(" ", 1)[1] == (
        "arm-1 epoch 2/5 train_loss 0.5000 val_loss 0.6000 val_acc 0.650 20.0 img/s ETA 0:00:30"
    )
    assert lines[1].endswith("done arm-1  50 s") and lines[1][:4].isdigit()


def test_validation_loss_is_the_class_weighted_training_loss():
    data = toy_split(12)
    model, _, pipeline = tiny_setup()
    weights = torch.tensor([3.0, 0.5])
    plain = evaluate(model, data, pipeline, batch_size=4)
    weighted = evaluate(model, data, pipeline, batch_size=4, weights=weights)
    prob = np.clip(plain["prob"], 1e-12, 1 - 1e-12)
    per_sample = -(data.labels * np.log(prob) + (1 - data.labels) * np.log1p(-prob))
    assert weighted["loss"] == pytest.approx(np.mean(per_sample * weights.numpy()[data.labels]))
    assert plain["loss"] == pytest.approx(np.mean(per_sample))


def test_a_last_training_batch_of_one_joins_the_one_before_for_batch_norm() -> None:
    """17 training cells at batch size 8 left one cell for the last batch, and a model with
    batch normalisation crashed on it ("Expected more than 1 value per channel")."""
    from leukaug.arm.batches import training_bounds
    from leukaug.arm.loop import has_batch_norm

    assert training_bounds(17, 8) == [(0, 8), (8, 16), (16, 17)]  # unchanged without BN
    assert training_bounds(17, 8, no_single_last=True) == [(0, 8), (8, 17)]
    assert training_bounds(18, 8, no_single_last=True) == [(0, 8), (8, 16), (16, 18)]
    assert training_bounds(1, 8, no_single_last=True) == [(0, 1)]
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert has_batch_norm(bn.train()) and not has_batch_norm(bn.eval())
    assert not has_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3)).train())
    for start, end in training_bounds(17, 8, no_single_last=True):
        bn.train()(torch.rand(end - start, 3, 8, 8))  # would raise on a batch of one
