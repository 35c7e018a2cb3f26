"""How long an arm's training and evaluation take per image on this machine and device,
measured with a few steps on random images (`step_seconds`), for the dry run's estimate.

The steps use the arm's model, head, regime, image size, batch size and optimiser, with
random initial weights (no ImageNet download) and without augmentation, so they measure
the network's cost, which dominates on every device leukaug was timed on (BENCHMARKS.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from leukaug.arm.batches import make_pipeline, resolve_device
from leukaug.arm.loop import train_step
from leukaug.arm.network import build_model, make_optimizer
from leukaug.arm.spec import ArmSpec
from leukaug.models import model_info

WARMUP_STEPS = 2  # the first steps allocate and pick kernels: not timed
MIN_STEPS, MAX_STEPS = 2, 20
MIN_SECONDS = 1.0  # steps are timed until this long has passed (at least MIN_STEPS)


@dataclass(frozen=True)
class StepTiming:
    """Seconds per image of one training step (forward, backward, update) and of one
    evaluation pass (forward only), measured on `device`."""

    train: float
    evaluate: float
    device: str


def step_seconds(spec: ArmSpec, device: str = "auto", threads: int | None = None) -> StepTiming:
    """Time training steps and evaluation passes of one batch of the arm's size on
    `device` (`MIN_STEPS` to `MAX_STEPS` of each, about `MIN_SECONDS`, after
    `WARMUP_STEPS`), with `threads` CPU threads (None: the process's count)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(spec, resolve_device(device))
    finally:
        torch.set_num_threads(before)


def _measure(spec: ArmSpec, device: torch.device) -> StepTiming:
    spec = replace(spec, pretrained=False, weights_path=None, init_from=None)
    size = spec.resolved_image_size
    info = model_info(spec.model)
    pipeline = make_pipeline(device, info.mean, info.std)
    model = build_model(spec, size).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, spec)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((spec.batch_size, 3, size, size), generator=generator).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    labels = (torch.arange(spec.batch_size) % 2).float().to(device)
    weights = torch.ones(2, device=device)

    def timed(step: Callable[[], object]) -> float:
        for _ in range(WARMUP_STEPS):
            step()
        _synchronise(device)
        started, steps = time.perf_counter(), 0
        while steps < MIN_STEPS or (
            steps < MAX_STEPS and time.perf_counter() - started < MIN_SECONDS
        ):
            step()
            _synchronise(device)
            steps += 1
        return (time.perf_counter() - started) / (steps * spec.batch_size)

    model.train()
    train = timed(lambda: train_step(model, optimizer, x, labels, weights, pipeline))
    model.eval()
    with torch.no_grad():
        evaluate = timed(lambda: model(x))
    return StepTiming(train, evaluate, str(device))


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
