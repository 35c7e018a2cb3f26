"""What `[executor] deterministic = true` costs: training img/s with CUDA's deterministic
kernels off and on, side by side in one process (issue 13, item 16).

    python benchmarks/deterministic_cost.py                     # CUDA: custom_cnn 256 px, resnet50 224 px
    python benchmarks/deterministic_cost.py --device cpu --quick   # smoke run (the CPU is deterministic
                                                                   # either way: expect a ratio near 1)

Each model runs the model step alone (forward, class-weighted loss, backward, optimiser step
on a ready batch, bf16 autocast and channels_last on CUDA, as leukaug trains) with
`leukaug.arm.determinism.configure_deterministic(False)`, then `(True)`, then off again; the
cost is the on/off ratio of the medians. Results go to
benchmarks/results/deterministic_cost_<device>_<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from leukaug.arm.batches import resolve_device
from leukaug.arm.determinism import configure_deterministic
from train_throughput import build, model_step_rate  # benchmarks/ is the script's folder

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = (("custom_cnn", 256, 32), ("resnet50", 224, 32))


def measure(name: str, size: int, batch: int, device: torch.device, steps: int, repeats: int):
    """Median img/s with deterministic kernels off, on, off (interleaved repeats)."""
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for enabled in (False, True):  # warm-up: cuDNN picks (or autotunes) kernels per setting
        configure_deterministic(enabled)
        model, optimizer, pipeline = build(name, size, device, batch)
        model_step_rate(model, optimizer, pipeline, batch, 2, size)
    for _ in range(repeats):
        for key, enabled in (("off", False), ("on", True)):
            configure_deterministic(enabled)
            model, optimizer, pipeline = build(name, size, device, batch)
            rates[key].append(model_step_rate(model, optimizer, pipeline, batch, steps, size))
    configure_deterministic(False)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return {
        "model": name,
        "image_size": size,
        "batch_size": batch,
        "img_per_s_off": off,
        "img_per_s_on": on,
        "on_over_off": on / off,
        "runs": rates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    models = [("custom_cnn", 72, 8)] if args.quick else list(MODELS)
    steps, repeats = (2, 1) if args.quick else (20, 3)
    results = [measure(*model, device, steps, repeats) for model in models]
    report = {
        "benchmark": "deterministic_cost",
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "steps": steps,
        "repeats": repeats,
        "results": results,
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = args.output or RESULTS / f"deterministic_cost_{device.type}_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for row in results:
        print(
            f"{row['model']} {row['image_size']} px: {row['img_per_s_off']:.1f} img/s off, "
            f"{row['img_per_s_on']:.1f} on ({row['on_over_off']:.2f}x)"
        )
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
