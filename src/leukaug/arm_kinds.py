"""Arm kinds: how one arm turns its spec into the ordinary arm folder.

`ARM_KINDS` maps `ArmSpec.kind` to an `ArmKind` whose `run` has `arm.run_arm`'s signature
and writes the same folder (`arm.json`, `predictions.csv` with the standard columns,
`metrics.json`), so the plan, the executors, the statistics and the report treat every kind
alike. Adding a kind is one entry here (or one module that registers itself).

- `single`: one network (`arm.run_arm`), then Grad-CAM on up to `CAM_CELLS` test cells:
  `cam.csv` (the CAM's share on the cell per cell) and `cam_overlays.png`.
- `bagged_regions`: the seed paper's future work, networks that each see one region of the
  cell (`regions`: the four quadrants, the nucleus-centred crop, the perimeter ring),
  resized to the arm's image size, each trained independently as a `single` arm in
  `members/<region>/` with its own seed derived from the arm's; their P(ALL) are averaged
  (`stacker = "mean"`) or combined by a logistic regression fitted on the validation split
  only (`stacker = "logistic"`; its validation probabilities are then in-sample).
  `history.csv` is the members' mean per epoch; `cam.csv` the members' rows.
- `features`: no CNN. Morphology, colour and GLCM texture features of the cached uint8
  cells (`leukaug.features`) and a class-balanced gradient-boosted classifier fitted on the
  training split. It is not early-stopped on the validation split (scikit-learn's "auto"
  rule holds out 10% of the training cells only above 10,000 of them); the validation split
  is predicted like any arm's, for the threshold the report chooses there. With
  augmentations, the training set is every cell plus one augmented copy of it (the arm's
  augmenter, seeded by the arm's seed), so "does augmentation help" has an answer here too.
  CNN settings (epochs, optimiser, regime, init_from) do not apply and are refused where
  they would be silently ignored.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from leukaug import atomic
from leukaug.arm import ArmResult, ArmSpec, check_folder, now, run_arm, running_record
from leukaug.augment import build_augmenter
from leukaug.batches import AUGMENT_STREAM, resolve_device, stream_seed
from leukaug.data.cache import ImageCache
from leukaug.errors import ConfigError, DataError, unknown_name_message
from leukaug.explain import (
    TARGET_LAYERS,
    explain_images,
    load_trained_arm,
    overlay_png,
    target_layer,
)
from leukaug.features import cell_features, fit_feature_classifier, predict_probabilities
from leukaug.layout import STATUS_COMPLETE, ArmFolder
from leukaug.metrics import arm_metrics, predicted_all
from leukaug.regions import QUADRANTS, REGIONS, bag_probabilities, fit_stacker, region_images
from leukaug.registry import Registry
from leukaug.train import HISTORY_COLUMNS, TrainingCallbacks

log = logging.getLogger(__name__)

SINGLE = "single"
FEATURES_MODEL = "features_gbm"  # the model name of a `features` arm
REGION_GROUPS = {"quadrants": QUADRANTS}  # a name that stands for several regions
PREDICTION_SPLITS = ("val", "test")
MEMBER_STREAM = 3  # batches.stream_seed stream of a bagged member's seed (0-2: per epoch)
MEMBERS_DIR = "members"
CAM_CELLS = 64  # test cells explained per arm (a bounded, cheap sample)
CAM_GROUP_CELLS = CAM_CELLS // 4  # per (class, correct) group
# A CAM needs a map of some size: at small inputs (the custom CNN's last convolution is 1 x 1
# at 72 px) the deepest convolution whose output is at least this many pixels a side is used.
MIN_CAM_SIDE = 4
OVERLAY_COLUMNS = 6  # cells per group row in cam_overlays.png
REGION_BATCH = 256  # cells resized at a time


class ArmRunner(Protocol):
    """`arm.run_arm`'s signature (`options`: its further keywords): train and evaluate one
    arm into its folder."""

    def __call__(
        self,
        spec: ArmSpec,
        split_manifest: pd.DataFrame,
        cache: ImageCache,
        out_dir: str | Path,
        *,
        arm_id: str,
        name: str,
        device: str = "auto",
        callbacks: TrainingCallbacks | None = None,
        **options: Any,
    ) -> ArmResult: ...


@dataclass(frozen=True)
class ArmKind:
    """One way to run an arm. `model`: the one model name of a kind that trains no network
    (its arms' `model`); None: the arm's model is a network of the model registry."""

    run: ArmRunner
    summary: str
    model: str | None = None

    @property
    def cnn(self) -> bool:
        """Trains networks: image size, regimes and Grad-CAM apply."""
        return self.model is None


ARM_KINDS: Registry[ArmKind] = Registry("arm kind")


# --------------------------------------------------------------------------- checks


def expand_regions(regions: Sequence[str]) -> tuple[str, ...]:
    """Region names with `quadrants` spelled out; unknown or repeated names -> ConfigError."""
    expanded: list[str] = []
    for region in regions:
        if region not in REGIONS and region not in REGION_GROUPS:
            raise ConfigError(unknown_name_message("region", region, [*REGIONS, *REGION_GROUPS]))
        expanded += REGION_GROUPS.get(region, (region,))
    repeated = sorted({r for r in expanded if expanded.count(r) > 1})
    if repeated:
        raise ConfigError(f"regions {list(regions)} name {', '.join(repeated)} more than once.")
    return tuple(expanded)


def check_kind_options(kind: str, model: str, regions: Sequence[str], stacker: str) -> None:
    """The options of a kind that the study file sets on a model (`kind`, `regions`, `stacker`)."""
    entry = ARM_KINDS.get(kind)
    if kind == "bagged_regions":
        if not regions:
            raise ConfigError(
                "kind = 'bagged_regions' needs regions, e.g. regions = "
                '["quadrants", "nucleus", "perimeter"].'
            )
        expand_regions(regions)
    elif regions:
        raise ConfigError(f"regions only apply to kind = 'bagged_regions', not {kind!r}.")
    elif stacker != "mean":
        raise ConfigError(f"stacker only applies to kind = 'bagged_regions', not {kind!r}.")
    if entry.model is not None and model != entry.model:
        raise ConfigError(
            f"kind = {kind!r} trains no network: its model is {entry.model!r}, not {model!r}."
        )


def check_spec(spec: ArmSpec) -> None:
    """What a kind needs of a whole spec (beyond `check_kind_options`); ConfigError otherwise."""
    check_kind_options(spec.kind, spec.model, spec.regions, spec.stacker)
    if ARM_KINDS.get(spec.kind).cnn:
        return
    if spec.image_size is None:
        raise ConfigError(
            f"kind = {spec.kind!r} needs an image size (training.image_size or the model's "
            "image_size): its features are measured on the cached cells at that size."
        )
    ignored = {  # network settings a classifier of features cannot honour
        "regime": (spec.regime, "full"),
        "init_from": (spec.init_from, None),
        "pretrained": (spec.pretrained, False),
        "class_weighting": (spec.class_weighting, "balanced"),  # it always balances
    }
    for key, (value, allowed) in ignored.items():
        if value != allowed:
            raise ConfigError(
                f"kind = {spec.kind!r} trains no network, so {key} = {value!r} would be "
                f"ignored; use {allowed!r} (the study's default)."
            )


# --------------------------------------------------------------------------- shared


def _start(
    spec: ArmSpec, folder: ArmFolder, arm_id: str, name: str, device: str
) -> tuple[dict[str, Any] | None, ArmResult | None]:
    """The arm.json to write (None when the folder is already complete: then its result)."""
    previous, finished = check_folder(spec, folder, arm_id, name)
    if finished is not None:
        return None, finished
    arm_json = running_record(spec, arm_id, name, str(resolve_device(device)), previous)
    atomic.write_json(folder.arm_json, arm_json)
    return arm_json, None


def _finish(
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


def _prediction_frame(split_manifest: pd.DataFrame, split: str) -> pd.DataFrame:
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


# --------------------------------------------------------------------------- Grad-CAM


def cam_cells(predictions: pd.DataFrame, per_group: int = CAM_GROUP_CELLS) -> pd.DataFrame:
    """Up to `per_group` test cells of each (class, correct) group, ALL first, by image_id."""
    test = predictions[predictions["split"] == "test"].sort_values("image_id")
    test = test.assign(correct=predicted_all(test["prob"].to_numpy()) == test["label"].to_numpy())
    groups = [
        test[(test["label"] == label) & (test["correct"] == correct)].head(per_group)
        for label in (1, 0)
        for correct in (True, False)
    ]
    return pd.concat(groups, ignore_index=True)


def cam_layer(model: nn.Module, image_size: int) -> tuple[str, nn.Module]:
    """(name, module) Grad-CAM weighs: the family's `target_layer`, unless its map is smaller
    than `MIN_CAM_SIDE` a side; then the module run last whose output map is not (a block
    or stage output, since a container's output is recorded after its children's)."""
    target = target_layer(model)
    names = {module: name for name, module in model.named_modules()}
    sides: list[tuple[nn.Module, int]] = []

    def record(module: nn.Module, _: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            sides.append((module, min(output.shape[-2:])))

    hooks = [module.register_forward_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=_device_of(model)))
    finally:
        for hook in hooks:
            hook.remove()
    if dict(sides).get(target, 0) < MIN_CAM_SIDE:
        large = [module for module, side in sides if side >= MIN_CAM_SIDE]
        target = large[-1] if large else target
    return names.get(target, type(target).__name__), target


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def write_cams(folder: ArmFolder, cache: ImageCache, device: str = "auto") -> pd.DataFrame | None:
    """Grad-CAM of a complete single-network arm on up to `CAM_CELLS` test cells: `cam.csv`
    (image_id, label, prob, correct, foreground_share, layer) and `cam_overlays.png`. None (and a
    log line) for a model family Grad-CAM cannot explain."""
    trained = load_trained_arm(folder.path)
    if not any(isinstance(trained.model, family) for family in TARGET_LAYERS):
        log.warning("%s: no Grad-CAM layer for %s; no cam.csv", folder.path, trained.model_name)
        return None
    predictions = pd.read_csv(folder.predictions, dtype={"image_id": str, "subject": str})
    cells = cam_cells(predictions)
    images = np.asarray(cache.images[cache.rows(list(cells["image_id"]))])
    model = trained.model.to(resolve_device(device))
    layer_name, layer = cam_layer(model, trained.image_size)
    explanation = explain_images(model, images, trained.mean, trained.std, layer=layer)
    table = cells[["image_id", "label", "prob", "correct"]].assign(
        foreground_share=explanation.foreground_share, layer=layer_name
    )
    atomic.write_csv(folder.cam_csv, table)
    _save_overlays(folder.cam_overlays, table, images, explanation.cams)
    return table


def _save_overlays(path: Path, table: pd.DataFrame, images: np.ndarray, cams: np.ndarray) -> None:
    """One row per (class, correct) group of up to `OVERLAY_COLUMNS` cell | CAM pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(1, True), (1, False), (0, True), (0, False)]
    fig, axes = plt.subplots(
        len(groups), OVERLAY_COLUMNS, figsize=(1.9 * OVERLAY_COLUMNS, 1.1 * len(groups) + 0.4),
        squeeze=False,
    )  # fmt: skip
    for row, (label, correct) in enumerate(groups):
        indices = np.flatnonzero(
            (table["label"].to_numpy() == label) & (table["correct"].to_numpy() == correct)
        )[:OVERLAY_COLUMNS]
        title = f"{'ALL' if label else 'HEM'}, {'correct' if correct else 'wrong'}"
        axes[row, 0].set_title(title if len(indices) else f"{title}: none", fontsize=7, loc="left")
        for column, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if column < len(indices):
                index = indices[column]
                pair = Image.open(io.BytesIO(overlay_png(images[index], cams[index])))
                ax.imshow(np.asarray(pair))
                share = table["foreground_share"].iloc[index]
                ax.text(0.5, -0.12, f"P(ALL) {table['prob'].iloc[index]:.2f}, on cell {share:.2f}",
                        transform=ax.transAxes, ha="center", va="top", fontsize=5)  # fmt: skip
    fig.tight_layout()
    atomic.save_figure(path, fig, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- kinds


def run_single(
    spec: ArmSpec,
    split_manifest: pd.DataFrame,
    cache: ImageCache,
    out_dir: str | Path,
    *,
    arm_id: str,
    name: str,
    device: str = "auto",
    callbacks: TrainingCallbacks | None = None,
    **options: Any,
) -> ArmResult:
    """`arm.run_arm`, then the arm's Grad-CAMs (also for an arm completed earlier without them)."""
    result = run_arm(
        spec, split_manifest, cache, out_dir,
        arm_id=arm_id, name=name, device=device, callbacks=callbacks, **options,
    )  # fmt: skip
    folder = ArmFolder(Path(out_dir))
    if not folder.cam_csv.is_file():
        write_cams(folder, cache, device)
    return result


def member_seed(seed: int, index: int) -> int:
    """The seed of a bagged arm's `index`-th member (independent streams per member)."""
    return stream_seed(seed, index, MEMBER_STREAM)


def region_cache(cache: ImageCache, region: str) -> ImageCache:
    """An in-memory cache of one region of every cell, resized to the cache's size."""
    size = cache.size
    parts = []
    for start in range(0, len(cache.images), REGION_BATCH):
        crops = region_images(np.asarray(cache.images[start : start + REGION_BATCH]), region)
        if crops.shape[1:3] != (size, size):
            tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
            tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
            crops = tensor.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        parts.append(crops)
    images = np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)
    images.setflags(write=False)
    return ImageCache(
        images,
        list(cache.image_ids),
        size,
        cache.crop,
        f"{cache.fingerprint}-{region}",
        cache.path / region,
    )


def member_history(histories: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The members' mean per epoch (seconds: their sum), in `history.csv`'s columns."""
    frames = [h for h in histories if not h.empty]
    if not frames:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    joined = pd.concat(frames, ignore_index=True)[HISTORY_COLUMNS]
    means = joined.groupby("epoch", as_index=False).mean()
    means["seconds"] = joined.groupby("epoch")["seconds"].sum().to_numpy()
    return means[HISTORY_COLUMNS]


def run_bagged_regions(
    spec: ArmSpec,
    split_manifest: pd.DataFrame,
    cache: ImageCache,
    out_dir: str | Path,
    *,
    arm_id: str,
    name: str,
    device: str = "auto",
    callbacks: TrainingCallbacks | None = None,
    **options: Any,
) -> ArmResult:
    """One `single` member per region in `members/<region>/`, combined (see the module doc)."""
    folder = ArmFolder(Path(out_dir))
    arm_json, done = _start(spec, folder, arm_id, name, device)
    if done is not None:
        return done
    regions = expand_regions(spec.regions)
    members: dict[str, ArmResult] = {}
    records = []
    for index, region in enumerate(regions):
        member = replace(spec, kind=SINGLE, regions=(), stacker="mean")
        member = replace(member, seed=member_seed(spec.seed, index))
        member_dir = folder.path / MEMBERS_DIR / region
        members[region] = run_single(
            member, split_manifest, region_cache(cache, region), member_dir,
            arm_id=f"{arm_id}/{region}", name=f"{name}/{region}", device=device, callbacks=callbacks,
            **options,
        )  # fmt: skip
        records.append({"region": region, "seed": member.seed, "config_hash": member.config_hash()})
    splits = []
    for split in PREDICTION_SPLITS:
        frame = _prediction_frame(split_manifest, split)
        probs = {}
        for region, result in members.items():
            part = result.predictions[result.predictions["split"] == split]
            if list(part["image_id"]) != list(frame["image_id"]):
                raise DataError(
                    f"member {region!r} of arm {arm_id!r} predicted other {split} images than the "
                    f"manifest holds; delete {folder.path / MEMBERS_DIR / region} and run again."
                )
            probs[region] = part["prob"].to_numpy()
        splits.append((frame, probs))
    combined = combine_members(spec, splits)
    cams = [
        pd.read_csv(ArmFolder(result.out_dir).cam_csv, dtype={"image_id": str}).assign(
            member=region
        )
        for region, result in members.items()
        if ArmFolder(result.out_dir).cam_csv.is_file()
    ]
    if cams:
        atomic.write_csv(folder.cam_csv, pd.concat(cams, ignore_index=True))
    history = member_history([result.history for result in members.values()])
    return _finish(folder, arm_json, combined, history, {"members": records})


def combine_members(
    spec: ArmSpec, splits: Sequence[tuple[pd.DataFrame, dict[str, np.ndarray]]]
) -> pd.DataFrame:
    """The bagged predictions of every split: the members' mean, or the stacker fitted on val."""
    stacker = None
    if spec.stacker == "logistic":
        val_frame, val_probs = splits[PREDICTION_SPLITS.index("val")]
        stacker = fit_stacker(val_probs, val_frame["label"].to_numpy(), seed=spec.seed)
    frames = []
    for frame, probs in splits:
        if len(frame) == 0:
            frames.append(frame.assign(prob=np.zeros(0)))
            continue
        prob = stacker.predict(probs) if stacker is not None else bag_probabilities(probs)
        frames.append(frame.assign(prob=prob))
    return pd.concat(frames, ignore_index=True)


def _split_cells(split_manifest: pd.DataFrame, cache: ImageCache, split: str) -> np.ndarray:
    part = split_manifest[split_manifest["split"] == split]
    return np.asarray(cache.images[cache.rows(list(part["image_id"]))])


def augmented_copies(spec: ArmSpec, images: np.ndarray) -> np.ndarray:
    """One copy of every cell through the arm's augmenter, seeded by the arm's seed."""
    augmenter = build_augmenter(
        list(spec.augmentations), p=spec.aug_p, mode=spec.aug_mode, image_size=images.shape[1]
    )
    generator = torch.Generator().manual_seed(stream_seed(spec.seed, 0, AUGMENT_STREAM))
    copies = []
    for start in range(0, len(images), spec.batch_size):
        batch = torch.from_numpy(images[start : start + spec.batch_size]).permute(0, 3, 1, 2)
        out = augmenter(batch.float() / 255.0, generator)
        copies.append((out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(copies) if copies else images[:0]


def run_features(
    spec: ArmSpec,
    split_manifest: pd.DataFrame,
    cache: ImageCache,
    out_dir: str | Path,
    *,
    arm_id: str,
    name: str,
    device: str = "auto",
    callbacks: TrainingCallbacks | None = None,
    **options: Any,
) -> ArmResult:
    """Cell features and a gradient-boosted classifier (see the module doc); the device,
    callbacks and `run_arm`'s options (model card, trackers) do not apply: scikit-learn on
    the CPU, no epochs, no checkpoint."""
    folder = ArmFolder(Path(out_dir))
    check_spec(spec)
    if cache.size != spec.image_size:
        raise ConfigError(
            f"the cache holds {cache.size} px images but arm {arm_id!r} needs {spec.image_size} px."
        )
    arm_json, done = _start(spec, folder, arm_id, name, device="cpu")
    if done is not None:
        return done
    train = split_manifest[split_manifest["split"] == "train"]
    images = _split_cells(split_manifest, cache, "train")
    labels = train["label"].to_numpy(dtype=np.int64)
    if spec.augmentations:
        images = np.concatenate([images, augmented_copies(spec, images)])
        labels = np.concatenate([labels, labels])
    classifier = fit_feature_classifier(cell_features(images), labels, seed=spec.seed)
    frames = []
    for split in PREDICTION_SPLITS:
        frame = _prediction_frame(split_manifest, split)
        cells = _split_cells(split_manifest, cache, split)
        prob = predict_probabilities(classifier, cell_features(cells)) if len(cells) else []
        frames.append(frame.assign(prob=np.asarray(prob, dtype=np.float64)))
    extra = {"classifier": {"name": type(classifier).__name__, "n_iter": int(classifier.n_iter_),
             "training_cells": len(labels)}}  # fmt: skip
    predictions = pd.concat(frames, ignore_index=True)
    return _finish(folder, arm_json, predictions, pd.DataFrame(columns=HISTORY_COLUMNS), extra)


ARM_KINDS.add(SINGLE, ArmKind(run_single, "one network (the default)"))
ARM_KINDS.add("bagged_regions", ArmKind(run_bagged_regions, "one network per cell region, bagged"))
ARM_KINDS.add(
    "features", ArmKind(run_features, "cell features + gradient boosting", model=FEATURES_MODEL)
)


def run_any_arm(
    spec: ArmSpec,
    split_manifest: pd.DataFrame,
    cache: ImageCache,
    out_dir: str | Path,
    *,
    arm_id: str,
    name: str,
    device: str = "auto",
    callbacks: TrainingCallbacks | None = None,
    **options: Any,
) -> ArmResult:
    """Run one arm of any kind (`spec.kind`) into `out_dir`; `options` are `run_arm`'s
    further keywords (crop, trackers), passed to every network the kind trains."""
    runner: Callable[..., ArmResult] = ARM_KINDS.get(spec.kind).run
    return runner(
        spec, split_manifest, cache, out_dir,
        arm_id=arm_id, name=name, device=device, callbacks=callbacks, **options,
    )  # fmt: skip
