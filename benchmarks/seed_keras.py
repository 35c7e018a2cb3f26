"""The seed's own pipeline beside leukaug, on the same images at the same size (issue 9, item 8).

    python benchmarks/seed_keras.py                      # 2 epochs of 160 images at 256 px
    python benchmarks/seed_keras.py --images 64 --epochs 2 --size 128   # smoke run

The seed trained its custom CNN with Keras: `ImageDataGenerator` (rescale 1/255, horizontal
and vertical flips, zoom 0.2, rotation 180 degrees) reading 450 x 450 BMP files from disk
every epoch through `flow_from_directory`, batch 16, Adam(1e-4, amsgrad). This script
writes such a folder, runs that (TensorFlow in its own interpreter, `--tf-python`, default
`.venv-tf/bin/python`: TensorFlow is not a leukaug dependency), then, in this process
after the Keras process has ended, trains leukaug's custom CNN on the same images at the
same size with the same augmentations (flip, rotate 180, zoom 0.2, applied to every
image), batch 16. Epoch time = the fastest epoch after the first (warm-up) of each.
leukaug's one-time cache build (decode + resize once) is reported separately.
Results go to benchmarks/results/seed_keras_<device>_<time>.json.

Set up TensorFlow once:
    python3.11 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu pillow scipy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
BATCH = 16  # the seed's batch size
LR = 1e-4


def seed_cnn(size: int):  # -> keras.Model (keras exists only in the worker)
    """The seed's 25-layer Keras model ('cnn_model_1'), SELU + lecun_uniform throughout."""
    from tensorflow import keras
    from tensorflow.keras import layers

    init = {"kernel_initializer": "lecun_uniform"}
    return keras.Sequential([
        keras.Input((size, size, 3)),
        layers.Conv2D(32, 3, **init), layers.Activation("selu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, **init), layers.Activation("selu"), layers.MaxPooling2D(3),
        layers.Conv2D(128, 3, **init), layers.Activation("selu"), layers.MaxPooling2D(3),
        layers.Conv2D(256, 3, **init), layers.Activation("selu"), layers.Dropout(0.6),
        layers.Flatten(),
        layers.Dense(512, **init), layers.Activation("selu"), layers.Dropout(0.8),
        layers.Dense(256, **init), layers.Activation("selu"), layers.Dropout(0.8),
        layers.Dense(128, **init), layers.Activation("selu"), layers.Dropout(0.7),
        layers.Dense(64, **init), layers.Dense(1, **init), layers.Activation("sigmoid"),
    ])  # fmt: skip


def keras_worker(folder: Path, size: int, epochs: int, out: Path) -> None:
    """The Keras half (runs under --tf-python): the seed's generator and fit loop."""
    import tensorflow as tf
    from tensorflow import keras
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    tf.random.set_seed(0)
    generator = ImageDataGenerator(
        rescale=1.0 / 255, horizontal_flip=True, vertical_flip=True, zoom_range=0.2,
        rotation_range=180,
    )  # fmt: skip
    flow = generator.flow_from_directory(
        folder, target_size=(size, size), batch_size=BATCH, class_mode="binary", seed=0
    )
    model = seed_cnn(size)
    model.compile(
        keras.optimizers.Adam(LR, amsgrad=True), loss="binary_crossentropy", metrics=["accuracy"]
    )

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    timer = EpochTimer()
    model.fit(flow, epochs=epochs, callbacks=[timer], verbose=0)
    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    record = {"epoch_s_all": timer.seconds, "tensorflow": tf.__version__,
              "keras": keras.__version__, "parameters": model.count_params(),
              "images": flow.samples, "threads": threads}  # fmt: skip
    out.write_text(json.dumps(record), encoding="utf-8")


def leukaug_epochs(folder: Path, size: int, epochs: int, cache_dir: Path) -> dict:
    """leukaug's half: cache once, then its training epochs on the same files."""
    import numpy as np
    import torch

    from leukaug.arm.batches import SplitImages, make_pipeline
    from leukaug.arm.loop import train_one_epoch
    from leukaug.arm.network import make_optimizer
    from leukaug.arm.spec import ArmSpec
    from leukaug.augment import AugmentationSpec, build_augmenter
    from leukaug.data.cache import load_or_build_cache
    from leukaug.data.read import read_dataset
    from leukaug.models import get_model, model_info

    manifest = read_dataset(folder, layout="folders", positive_class="all").manifest
    started = time.perf_counter()
    cache = load_or_build_cache(manifest, size, cache_dir)
    cache_seconds = time.perf_counter() - started
    labels = manifest["label"].to_numpy(dtype=np.int64)
    split = SplitImages(cache.images, np.asarray(cache.rows(list(manifest["image_id"]))), labels)
    torch.manual_seed(0)
    model = get_model("custom_cnn", image_size=size).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, ArmSpec(model="custom_cnn", lr=LR, batch_size=BATCH))
    info = model_info("custom_cnn")
    pipeline = make_pipeline(torch.device("cpu"), info.mean, info.std)
    specs = [AugmentationSpec("flip"), AugmentationSpec("rotate", {"degrees": 180.0}),
             AugmentationSpec("zoom", {"range": 0.2})]  # fmt: skip
    augmenter = build_augmenter(specs, p=1.0, mode="independent", image_size=size)
    seconds = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        train_one_epoch(model, optimizer, split, pipeline, epoch=epoch, seed=0, batch_size=BATCH,
                        weights=torch.ones(2), augmenter=augmenter)  # fmt: skip
        seconds.append(time.perf_counter() - started)
    return {"epoch_s_all": seconds, "cache_build_s": cache_seconds, "images": len(split),
            "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip


def write_folder(root: Path, n: int, raw_size: int, distinct: int = 8) -> None:
    """n raw-size BMPs in root/{all,hem}/, half ALL, half HEM: `distinct` synthetic cells
    per class (rendering one takes ~0.4 s), repeated under new names."""
    from PIL import Image

    from leukaug.data.synth import sample_cells

    images, labels = sample_cells(distinct, raw_size, seed=0)
    for label_dir in ("all", "hem"):
        (root / label_dir).mkdir(parents=True, exist_ok=True)
    for index in range(n):
        cell = index % len(labels)
        name = "all" if labels[cell] == 1 else "hem"
        Image.fromarray(images[cell]).save(root / name / f"{index:05d}.bmp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=2, help="the first is warm-up")
    parser.add_argument("--size", type=int, default=256, help="model input (the seed: 256)")
    parser.add_argument("--raw-size", type=int, default=450, help="BMP size on disk")
    parser.add_argument("--tf-python", type=Path, default=ROOT / ".venv-tf" / "bin" / "python")
    parser.add_argument("--keras-worker", nargs=2, type=Path, metavar=("FOLDER", "OUT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.images < BATCH:
        parser.error(f"need --epochs >= 2 (the first is warm-up) and --images >= {BATCH}")
    return args


def main() -> None:
    args = parse_args()
    if args.keras_worker:
        keras_worker(args.keras_worker[0], args.size, args.epochs, args.keras_worker[1])
        return
    if not args.tf_python.is_file():
        sys.exit(f"no TensorFlow interpreter at {args.tf_python}; see this script's docstring.")
    with tempfile.TemporaryDirectory(prefix="seed_keras_") as tmp:
        folder = Path(tmp) / "cells"
        write_folder(folder, args.images, args.raw_size)
        keras_out = Path(tmp) / "keras.json"
        command = [str(args.tf_python), __file__, "--keras-worker", str(folder), str(keras_out),
                   "--size", str(args.size), "--epochs", str(args.epochs)]  # fmt: skip
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(command, check=True, env=env)
        keras = json.loads(keras_out.read_text(encoding="utf-8"))
        ours = leukaug_epochs(folder, args.size, args.epochs, Path(tmp) / "cache")
    keras_epoch, ours_epoch = min(keras["epoch_s_all"][1:]), min(ours["epoch_s_all"][1:])
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "device": "cpu",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "images": args.images, "image_size": args.size, "raw_bmp_size": args.raw_size,
        "batch_size": BATCH, "epochs": args.epochs,
        "keras": keras, "leukaug": ours,
        "keras_epoch_s": keras_epoch, "leukaug_epoch_s": ours_epoch,
        "epoch_time_ratio_keras_over_leukaug": keras_epoch / ours_epoch,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"seed_keras_cpu_{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"Keras (seed) epoch {keras_epoch:.1f} s, leukaug epoch {ours_epoch:.1f} s "
        f"({args.images} images, {args.size} px): ratio {keras_epoch / ours_epoch:.2f}x; "
        f"leukaug cache build {ours['cache_build_s']:.1f} s once. -> {path}"
    )


if __name__ == "__main__":
    main()
