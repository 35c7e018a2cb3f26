"""Training throughput of leukaug, measured side by side in one run (issue 3, section 4).

    python benchmarks/train_throughput.py                    # full run on the best device
    python benchmarks/train_throughput.py --quick            # smoke version (about a minute)
    python benchmarks/train_throughput.py --device cuda --sections a,b,d

Sections (all on synthetic uint8 data generated here; no data set on disk needed):
  a  pipeline efficiency: img/s of the full training step (memmap cache fetch + the paper's
     flip, rotate, blur, noise at p = 0.33 + model step) / img/s of the model step alone
     on a ready tensor. Goal >= 0.95.
  b  against a standard PyTorch pipeline (torchvision ImageFolder over BMP files decoded
     every epoch + transforms.v2 doing the same augmentations + DataLoader, 2 workers,
     plain NCHW float32 model step): epoch-time ratio. Goal >= 1.5x on CPU.
  c  (CPU) custom CNN at 256 px: training FLOP/s (torch.utils.flop_counter) as a share of
     the measured fp32 matmul FLOP/s, for a straightforward step and leukaug's step, with
     the numerics compared. Goal >= 30%.
  d  (GPU) custom_cnn at 256 px and resnet50 at 224 px, img/s with bf16 autocast +
     channels_last (model step alone and the full pipeline).
The results go to benchmarks/results/train_throughput_<device>_<time>.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from leukaug.arm.batches import SplitImages, make_pipeline, place_store, prepare, resolve_device
from leukaug.arm.loop import train_one_epoch, train_step
from leukaug.arm.network import make_optimizer
from leukaug.arm.spec import ArmSpec
from leukaug.augment import AugmentationSpec, build_augmenter
from leukaug.models import get_model, model_info

RESULTS = Path(__file__).parent / "results"
PAPER_AUGS = ("flip", "rotate", "blur", "noise")
PAPER_P = 0.33
RAW_SIZE = 450  # C-NMC images are 450 x 450 BMP


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_cache(n: int, size: int, folder: Path, seed: int = 0) -> tuple[np.memmap, np.ndarray]:
    """A uint8 (n, size, size, 3) memmap like leukaug's image cache, and 2:1 ALL:HEM labels."""
    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(
        folder / f"cache_{size}.npy", "w+", np.uint8, (n, size, size, 3)
    )
    for start in range(0, n, 64):
        images[start : start + 64] = rng.integers(
            0, 256, images[start : start + 64].shape, np.uint8
        )
    images.flush()
    labels = (np.arange(n) % 3 != 0).astype(np.int64)
    return np.load(folder / f"cache_{size}.npy", mmap_mode="r"), labels


def build(model_name: str, size: int, device: torch.device, batch_size: int):
    torch.manual_seed(0)
    model = get_model(model_name, image_size=size).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, ArmSpec(model=model_name, batch_size=batch_size))
    info = model_info(model_name)
    return model, optimizer, make_pipeline(device, info.mean, info.std)


def paper_augmenter(size: int):
    return build_augmenter(
        [AugmentationSpec(name) for name in PAPER_AUGS], p=PAPER_P, image_size=size
    )


def model_step_rate(model, optimizer, pipeline, batch_size: int, steps: int, size: int) -> float:
    """img/s of forward + loss + backward + optimiser step on a ready, normalised tensor."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (batch_size, size, size, 3), dtype=torch.uint8, generator=generator
    )
    x = prepare(images.to(pipeline.device).permute(0, 3, 1, 2), pipeline)
    labels = (torch.arange(batch_size, device=pipeline.device) % 3 != 0).float()
    weights = torch.ones(2, device=pipeline.device)
    model.train()
    synchronize(pipeline.device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x, labels, weights, pipeline)
    synchronize(pipeline.device)
    return steps * batch_size / (time.perf_counter() - started)


def pipeline_rate(
    model, optimizer, pipeline, split: SplitImages, batch_size: int, augmenter, epoch: int
) -> float:
    """img/s of leukaug's training epoch (fetch from the cache, augment, normalise, step)."""
    synchronize(pipeline.device)
    started = time.perf_counter()
    train_one_epoch(model, optimizer, split, pipeline, epoch=epoch, seed=0, batch_size=batch_size,
                    weights=torch.ones(2), augmenter=augmenter)  # fmt: skip
    synchronize(pipeline.device)
    return len(split) / (time.perf_counter() - started)


def section_pipeline_efficiency(args, device: torch.device, folder: Path) -> dict:
    size, batch = args.image_size, args.batch_size
    n = batch * args.steps
    images, labels = synthetic_cache(n, size, folder)
    model, optimizer, pipeline = build(args.model, size, device, batch)
    split = SplitImages(place_store(images, device), np.arange(n), labels)
    augmenter = paper_augmenter(size)
    model_step_rate(model, optimizer, pipeline, batch, 1, size)  # warm-up
    pipeline_rate(model, optimizer, pipeline, split, batch, augmenter, epoch=0)
    model_only, full, no_aug = [], [], []
    for repeat in range(args.repeats):  # interleaved, so drifting load hits all alike
        model_only.append(model_step_rate(model, optimizer, pipeline, batch, args.steps, size))
        full.append(
            pipeline_rate(model, optimizer, pipeline, split, batch, augmenter, epoch=repeat + 1)
        )
        # The same pipeline without augmentation: separates the augmentations' own cost
        # from the batch assembly's.
        no_aug.append(
            pipeline_rate(model, optimizer, pipeline, split, batch, None, epoch=repeat + 1)
        )
    return {
        "model": args.model, "image_size": size, "batch_size": batch, "images_per_epoch": n,
        "augmentations": list(PAPER_AUGS), "p": PAPER_P,
        "model_step_img_s": max(model_only), "full_step_img_s": max(full),
        "model_step_img_s_all": model_only, "full_step_img_s_all": full,
        "efficiency": max(full) / max(model_only), "goal": 0.95,
        "no_augmentation_img_s": max(no_aug), "no_augmentation_img_s_all": no_aug,
        "efficiency_without_augmentation": max(no_aug) / max(model_only),
    }  # fmt: skip


def write_bmp_folder(images: np.ndarray, labels: np.ndarray, root: Path, raw_size: int) -> None:
    """ImageFolder layout root/{all,hem}/i.bmp at the raw C-NMC size."""
    for label_dir in ("all", "hem"):
        (root / label_dir).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        picture = Image.fromarray(np.ascontiguousarray(image)).resize(
            (raw_size, raw_size), Image.NEAREST
        )
        picture.save(root / ("all" if label else "hem") / f"{index:05d}.bmp")


def standard_loader(
    root: Path, size: int, batch_size: int, mean, std, device: torch.device, workers: int
):
    """What a standard PyTorch user writes: ImageFolder + transforms.v2 + DataLoader."""
    from torchvision import datasets
    from torchvision.transforms import v2

    augment = v2.RandomApply(
        [
            v2.RandomChoice([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0),
                             v2.Compose([v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)])]),
            v2.RandomRotation(180),
            v2.GaussianBlur(21, sigma=3.5),
            v2.GaussianNoise(0.0, 0.1),
        ],
        p=PAPER_P,
    )  # fmt: skip
    transform = v2.Compose([
        v2.ToImage(), v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True),
        augment, v2.Normalize(mean, std),
    ])  # fmt: skip
    dataset = datasets.ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip


def standard_epoch(loader, model, optimizer, device: torch.device) -> float:
    started = time.perf_counter()
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device).float()
        y = 1.0 - y  # ImageFolder sorts 'all' (0) before 'hem' (1); ALL is the positive class
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
        loss.backward()
        optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def section_standard_pipeline(args, device: torch.device, folder: Path) -> dict:
    size, batch = args.image_size, args.batch_size
    n = batch * args.steps
    images, labels = synthetic_cache(n, size, folder, seed=1)
    root = folder / "imagefolder"
    write_bmp_folder(images, labels, root, args.raw_size)
    info = model_info(args.model)

    torch.manual_seed(0)
    plain_model = get_model(args.model, image_size=size).to(device)
    plain_optimizer = torch.optim.Adam(plain_model.parameters(), lr=1e-4, amsgrad=True)
    loader = standard_loader(root, size, batch, info.mean, info.std, device, args.workers)

    cache_started = time.perf_counter()  # leukaug decodes and resizes once, into its cache
    decoded = np.stack([
        np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR))
        for path in sorted(root.glob("*/*.bmp"))
    ])  # fmt: skip
    cache_seconds = time.perf_counter() - cache_started
    model, optimizer, pipeline = build(args.model, size, device, batch)
    split = SplitImages(place_store(images, device), np.arange(n), labels)
    augmenter = paper_augmenter(size)

    standard_epoch(loader, plain_model, plain_optimizer, device)  # warm-up (starts the workers)
    pipeline_rate(model, optimizer, pipeline, split, batch, augmenter, epoch=0)
    standard, ours = [], []
    for repeat in range(args.repeats):
        standard.append(standard_epoch(loader, plain_model, plain_optimizer, device))
        ours.append(
            n / pipeline_rate(model, optimizer, pipeline, split, batch, augmenter, epoch=repeat + 1)
        )
    return {
        "model": args.model, "image_size": size, "raw_bmp_size": args.raw_size, "batch_size": batch,
        "images_per_epoch": n, "workers": args.workers,
        "standard_epoch_s": min(standard), "leukaug_epoch_s": min(ours),
        "standard_epoch_s_all": standard, "leukaug_epoch_s_all": ours,
        "speedup": min(standard) / min(ours), "goal": 1.5,
        "leukaug_one_time_cache_build_s": cache_seconds, "cache_images": len(decoded),
    }  # fmt: skip


def matmul_flops(device: torch.device, n: int, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 matmul FLOP/s: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


def step_flops(model, optimizer, x, labels, pipeline) -> int:
    with FlopCounterMode(display=False) as counter:
        train_step(model, optimizer, x, labels, torch.ones(2), pipeline)
    return counter.get_total_flops()


def timed_steps(step: Callable[[], None], steps: int) -> float:
    step()  # warm-up
    durations = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def cpu_variant(name: str, size: int, batch: int, channels_last: bool, fused: bool, compiled: bool):
    torch.manual_seed(0)
    model = get_model(name, image_size=size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, amsgrad=True, fused=fused)
    forward = torch.compile(model) if compiled else model
    pipeline = make_pipeline(
        torch.device("cpu"), (0.0,) * 3, (1.0,) * 3, channels_last=channels_last
    )
    return model, forward, optimizer, pipeline


def section_compute_efficiency(args) -> dict:
    """Custom CNN training FLOP/s on CPU as a share of fp32 matmul FLOP/s."""
    size = args.flops_image_size
    peak = matmul_flops(torch.device("cpu"), args.matmul_size)
    variants = [("straightforward (NCHW, Adam for-loop)", False, False, False, args.batch_size),
                ("channels_last", True, False, False, args.batch_size),
                ("channels_last + fused Adam (leukaug)", True, True, False, args.batch_size),
                ("channels_last + fused Adam, batch 32", True, True, False, 32)]  # fmt: skip
    if args.compile:
        variants.append(
            ("channels_last + fused Adam + torch.compile", True, True, True, args.batch_size)
        )
    rows, reference = [], None
    for label, channels_last, fused, compiled, batch in variants:
        model, forward, optimizer, pipeline = cpu_variant(
            "custom_cnn", size, batch, channels_last, fused, compiled
        )
        generator = torch.Generator().manual_seed(batch)  # the same batch for every variant
        images = torch.randint(
            0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator
        )
        x = prepare(images, pipeline)
        labels = (torch.arange(batch) % 3 != 0).float()
        model.eval()  # no dropout: the numerics check compares deterministic steps
        with torch.no_grad():
            before = forward(x[:4]).reshape(-1)
        flops = step_flops(forward, optimizer, x, labels, pipeline)
        with torch.no_grad():
            after = forward(x[:4]).reshape(-1)
        model.train()
        step = functools.partial(train_step, forward, optimizer, x, labels, torch.ones(2), pipeline)
        seconds = timed_steps(step, args.steps_c)
        row = {"variant": label, "batch_size": batch, "flops_per_step": flops, "step_s": seconds,
               "img_s": batch / seconds, "flop_s": flops / seconds, "share_of_matmul": flops / seconds / peak,
               "logits_before": before.tolist(), "logits_after_one_step": after.tolist()}  # fmt: skip
        if batch == args.batch_size:
            if reference is None:
                reference = row
            row["max_abs_diff_vs_straightforward"] = float(
                np.max(
                    np.abs(
                        np.subtract(
                            row["logits_after_one_step"], reference["logits_after_one_step"]
                        )
                    )
                )
            )
        rows.append(row)
    peak_after = matmul_flops(torch.device("cpu"), args.matmul_size)
    return {"image_size": size, "matmul_size": args.matmul_size, "matmul_flop_s": max(peak, peak_after),
            "matmul_flop_s_before_after": [peak, peak_after], "threads": torch.get_num_threads(),
            "variants": rows, "goal": 0.30}  # fmt: skip


def section_gpu(args, device: torch.device, folder: Path) -> dict:
    """img/s with bf16 autocast + channels_last: model step alone and the full pipeline."""
    out = {}
    for name, size in (("custom_cnn", 256), ("resnet50", 224)):
        batch = args.gpu_batch_size
        n = batch * args.steps
        images, labels = synthetic_cache(n, size, folder, seed=2)
        model, optimizer, pipeline = build(name, size, device, batch)
        split = SplitImages(place_store(images, device), np.arange(n), labels)
        augmenter = paper_augmenter(size)
        model_step_rate(model, optimizer, pipeline, batch, 3, size)
        pipeline_rate(model, optimizer, pipeline, split, batch, augmenter, epoch=0)
        model_only = max(
            model_step_rate(model, optimizer, pipeline, batch, args.steps, size)
            for _ in range(args.repeats)
        )
        full = max(
            pipeline_rate(model, optimizer, pipeline, split, batch, augmenter, epoch=r + 1)
            for r in range(args.repeats)
        )
        out[name] = {"image_size": size, "batch_size": batch, "autocast": str(pipeline.autocast_dtype),
                     "channels_last": True, "model_step_img_s": model_only, "full_step_img_s": full,
                     "efficiency": full / model_only}  # fmt: skip
        del model, optimizer, split
        torch.cuda.empty_cache()
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test, not a measurement"
    )
    parser.add_argument(
        "--sections",
        default=None,
        help="comma-separated of a,b,c,d (default: a,b,c on CPU; a,b,d on GPU)",
    )
    parser.add_argument("--model", default="custom_cnn", help="model for sections a and b")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--flops-image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="the paper's batch size")
    parser.add_argument("--gpu-batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="batches per measured epoch")
    parser.add_argument(
        "--steps-c", type=int, default=None, help="timed steps per variant in section c"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--raw-size", type=int, default=RAW_SIZE)
    parser.add_argument("--matmul-size", type=int, default=None)
    parser.add_argument(
        "--compile", action="store_true", help="also try torch.compile in section c"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quick = args.quick
    cuda = resolve_device(args.device).type == "cuda"
    # GPU steps take milliseconds: more of them, so the per-epoch set-up does not dominate.
    args.steps = args.steps or (2 if quick else 50 if cuda else 10)
    args.steps_c = args.steps_c or (2 if quick else 5)
    args.repeats = args.repeats or (1 if quick else 3)
    args.matmul_size = args.matmul_size or (1024 if quick else 2048)
    return args


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    default = "a,b,d" if device.type == "cuda" else "a,b,c"
    sections = (args.sections or default).split(",")
    results: dict = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "cpus_allowed": len(os.sched_getaffinity(0)), "cpus_total": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "sections": {},
    }  # fmt: skip
    runners = {
        "a": lambda folder: section_pipeline_efficiency(args, device, folder),
        "b": lambda folder: section_standard_pipeline(args, device, folder),
        "c": lambda folder: section_compute_efficiency(args),
        "d": lambda folder: (
            section_gpu(args, device, folder) if device.type == "cuda" else {"skipped": "no GPU"}
        ),
    }
    for section in sections:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="leukaug-bench-") as folder:
            results["sections"][section] = runners[section](Path(folder))
        results["sections"][section]["section_seconds"] = time.perf_counter() - started
        print(section, json.dumps(summary(section, results["sections"][section])), flush=True)
    out = (
        args.out
        or RESULTS / f"train_throughput_{device.type}_{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def summary(section: str, result: dict) -> dict:
    """The headline figures of a section, for the console."""
    keys = {"a": ("model_step_img_s", "full_step_img_s", "efficiency", "efficiency_without_augmentation"),
            "b": ("standard_epoch_s", "leukaug_epoch_s", "speedup", "leukaug_one_time_cache_build_s"),
            "c": ("matmul_flop_s",), "d": ()}  # fmt: skip
    out = {key: result[key] for key in keys[section] if key in result}
    if section == "c":
        out["variants"] = {
            row["variant"]: round(row["share_of_matmul"], 3) for row in result["variants"]
        }
        out["img_s"] = {row["variant"]: round(row["img_s"], 2) for row in result["variants"]}
    if section == "d":
        out = {name: {k: v for k, v in row.items() if k.endswith("img_s") or k == "efficiency"}
               for name, row in result.items() if isinstance(row, dict)}  # fmt: skip
    return out


if __name__ == "__main__":
    main()
