"""The `bagged_regions` arm kind: the seed paper's future work, networks that each see one
region of the cell (the four quadrants, the nucleus-centred crop, the perimeter ring),
resized to the arm's image size, each trained independently as a single arm in
`members/<region>/` with its own seed derived from the arm's; their P(ALL) are averaged
(`stacker = "mean"`) or combined by a logistic regression fitted on the validation split
only (`stacker = "logistic"`; its validation probabilities are then in-sample).
`history.csv` is the members' mean per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from leukaug.arm.batches import stream_seed
from leukaug.arm.callbacks import HISTORY_COLUMNS
from leukaug.arm.context import ArmContext
from leukaug.arm.kinds import SINGLE, expand_regions
from leukaug.arm.lifecycle import (
    PREDICTION_SPLITS,
    ArmResult,
    finish_arm,
    prediction_frame,
    start_arm,
)
from leukaug.arm.single import run_arm
from leukaug.arm.spec import ArmSpec
from leukaug.core.errors import DataError
from leukaug.core.layout import ArmFolder
from leukaug.data.cache import ImageCache
from leukaug.data.regions import bag_probabilities, fit_stacker, region_images

MEMBER_STREAM = 3  # batches.stream_seed stream of a bagged member's seed (0-2: per epoch)


MEMBERS_DIR = "members"


REGION_BATCH = 256  # cells resized at a time


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
    spec: ArmSpec, split_manifest: pd.DataFrame, cache: ImageCache, context: ArmContext
) -> ArmResult:
    """One single-network member per region in `members/<region>/`, combined (see the module doc)."""
    folder = ArmFolder(context.out_dir)
    arm_id = context.arm_id
    arm_json, done = start_arm(spec, folder, arm_id, context.name, context.device)
    if done is not None:
        return done
    regions = expand_regions(spec.regions)
    members: dict[str, ArmResult] = {}
    records = []
    for index, region in enumerate(regions):
        member = replace(spec, kind=SINGLE, regions=(), stacker="mean")
        member = replace(member, seed=member_seed(spec.seed, index))
        members[region] = run_arm(
            member,
            split_manifest,
            region_cache(cache, region),
            context.member(f"{MEMBERS_DIR}/{region}"),
        )
        records.append({"region": region, "seed": member.seed, "config_hash": member.config_hash()})
    splits = []
    for split in PREDICTION_SPLITS:
        frame = prediction_frame(split_manifest, split)
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
    history = member_history([result.history for result in members.values()])
    return finish_arm(folder, arm_json, combined, history, {"members": records})


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
