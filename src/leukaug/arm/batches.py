"""Batch assembly from the uint8 image cache, the same for training and evaluation.

rows of the cache -> uint8 tensor on the device -> float in [0, 1] -> augment (training
only) -> normalise with the model's mean/std. Decoding and resizing happened once, when
the cache was built, so an epoch costs a gather and a few element-wise operations.
On CUDA the whole cache is copied to the GPU when it fits; otherwise batches travel
through pinned host memory with non-blocking copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from leukaug.core.errors import ConfigError

# What `training_batches` calls to augment a float batch (an `augment.Augmenter` is one).
AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# Share of the free GPU memory the uint8 cache may take before batches stay on the host.
GPU_CACHE_SHARE = 0.4
# Images augmented per call on CUDA (several batches at once; see `training_batches`).
GPU_PREP_IMAGES = 256
# Bytes per host-to-GPU copy while the cache is moved to the GPU (bounds the pinned buffer).
GPU_COPY_CHUNK_BYTES = 256 << 20

# Random stream ids of `stream_seed`: each draws from its own seed per (seed, epoch).
ORDER_STREAM = 0  # the epoch's training order
AUGMENT_STREAM = 1  # the augmentation parameters
DROPOUT_STREAM = 2  # torch's global generator (dropout)


@dataclass(frozen=True)
class Pipeline:
    """How batches reach the model on one device (normalisation, layout, precision)."""

    device: torch.device
    mean: torch.Tensor  # (1, 3, 1, 1) float32 on `device`
    std: torch.Tensor
    channels_last: bool
    autocast_dtype: torch.dtype | None  # None: float32 everywhere
    normalise: bool = True  # False when mean = 0 and std = 1: (x - 0) / 1 == x, two passes saved


@dataclass(frozen=True)
class SplitImages:
    """The images of one split: rows of a uint8 (N, H, W, 3) store, in manifest order."""

    store: np.ndarray | torch.Tensor  # the cache's memmap, or a copy on the device
    rows: np.ndarray  # int64 row of each sample in `store`
    labels: np.ndarray  # int64 0/1 per sample

    def __len__(self) -> int:
        return len(self.rows)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'."
        )
    return resolved


def make_pipeline(
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels_last: bool = True,
    mixed_precision: bool = True,
) -> Pipeline:
    """Defaults: channels_last everywhere (the cache is NHWC already), bf16 autocast on CUDA
    where supported; CPU stays in float32 so results are bit-reproducible."""
    autocast_dtype = None
    if mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
        autocast_dtype = torch.bfloat16
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    normalise = tuple(mean) != (0.0, 0.0, 0.0) or tuple(std) != (1.0, 1.0, 1.0)
    return Pipeline(device, mean_t, std_t, channels_last, autocast_dtype, normalise)


def place_store(images: np.ndarray, device: torch.device) -> np.ndarray | torch.Tensor:
    """The cache as seen by the batches: a uint8 copy on the GPU when it fits, else the memmap."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.nbytes > GPU_CACHE_SHARE * free:
        return images
    store = torch.empty(images.shape, dtype=torch.uint8, device=device)
    chunk = max(1, GPU_COPY_CHUNK_BYTES // max(1, images[0].nbytes))
    for start in range(0, len(images), chunk):
        block = torch.from_numpy(np.array(images[start : start + chunk]))  # a writable copy
        store[start : start + chunk].copy_(block)
    return store


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of epoch `epoch`: a permutation that depends only on (seed, epoch)."""
    generator = torch.Generator().manual_seed(stream_seed(seed, epoch, ORDER_STREAM))
    return torch.randperm(n, generator=generator).numpy()


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent 63-bit seeds per (seed, epoch, stream), so a resumed epoch replays exactly."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(2, np.uint64)[0] >> 1)


def fetch(
    split: SplitImages, positions: np.ndarray, pipeline: Pipeline
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, 3, H, W) images (channels_last strides) and float labels, on the device."""
    rows = split.rows[positions]
    device = pipeline.device
    if isinstance(split.store, torch.Tensor):
        index = torch.from_numpy(rows).to(split.store.device, non_blocking=True)
        images = split.store.index_select(0, index)
    else:
        images = torch.from_numpy(np.take(split.store, rows, axis=0))
        if device.type == "cuda":
            images = images.pin_memory().to(device, non_blocking=True)
    labels = torch.from_numpy(split.labels[positions]).to(device, torch.float32, non_blocking=True)
    return images.permute(0, 3, 1, 2), labels


def prepare(
    images: torch.Tensor,
    pipeline: Pipeline,
    augmenter: AugmentFn | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 -> float [0, 1] -> augment (when given) -> (x - mean) / std, in the model's layout.

    Training, validation and test all pass through here, so every split sees one input scale.
    """
    x = images.float().div_(255.0)
    if augmenter is not None:
        if generator is None:
            raise ValueError("an augmenter needs a seeded torch.Generator")
        x = augmenter(x, generator)
    if pipeline.normalise:
        x = (x - pipeline.mean) / pipeline.std
    layout = torch.channels_last if pipeline.channels_last else torch.contiguous_format
    return x.contiguous(memory_format=layout)


def batch_starts(n: int, batch_size: int) -> range:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return range(0, n, batch_size)


def training_bounds(
    n: int, batch_size: int, *, no_single_last: bool = False
) -> list[tuple[int, int]]:
    """(start, end) of each training batch of `n` samples. `no_single_last`: a last batch of
    one sample joins the batch before it (batch normalisation cannot train on one sample:
    PyTorch raises "Expected more than 1 value per channel")."""
    bounds = [(start, min(start + batch_size, n)) for start in batch_starts(n, batch_size)]
    if no_single_last and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def training_batches(
    split: SplitImages,
    order: np.ndarray,
    batch_size: int,
    pipeline: Pipeline,
    augmenter: AugmentFn | None = None,
    generator: torch.Generator | None = None,
    *,
    no_single_last: bool = False,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(number of samples, model input, labels) per batch of `order`, each batch sorted by row.

    One background thread assembles the next batches (fetch, augment, normalise) while the
    caller trains; torch kernels release the GIL, so the two overlap. On CUDA it prepares
    `prep_group` batches per call (one kernel launch serves many images: a small model's
    step takes milliseconds there) on a side stream, so a synchronising call inside an
    augmentation waits for the batch's own kernels, never for the training step. Batches
    are made strictly in order from one generator: the result does not depend on timing.
    """
    side = torch.cuda.Stream(pipeline.device) if pipeline.device.type == "cuda" else None
    bounds = training_bounds(len(order), batch_size, no_single_last=no_single_last)
    group = prep_group(batch_size, pipeline.device)
    chunks = [bounds[i : i + group] for i in range(0, len(bounds), group)]

    def make(
        chunk: list[tuple[int, int]],
    ) -> tuple[list[tuple[int, torch.Tensor, torch.Tensor]], torch.cuda.Event | None]:
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            batches = [np.sort(order[start:end]) for start, end in chunk]
            images, labels = fetch(split, np.concatenate(batches), pipeline)
            x = prepare(images, pipeline, augmenter, generator)
            sizes = [len(positions) for positions in batches]
            ready = side.record_event() if side is not None else None
        return list(zip(sizes, x.split(sizes), labels.split(sizes), strict=True)), ready

    if not chunks:
        return
    # The preparation thread runs its torch ops with the caller's explicit thread count
    # (OpenMP keeps one count per thread; left alone, a new thread takes the process's
    # default, MKL's physical cores), so prepared batches never depend on the machine.
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(
        1, "leukaug-batches", initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        pending = pool.submit(make, chunks[0])
        for following in [*chunks[1:], None]:
            batches, ready = pending.result()
            if following is not None:
                pending = pool.submit(make, following)
            if ready is not None:  # the training stream waits for them and keeps their memory
                main = torch.cuda.current_stream(pipeline.device)
                main.wait_event(ready)
                for _, x, labels in batches:
                    x.record_stream(main)
                    labels.record_stream(main)
            yield from batches


def prep_group(batch_size: int, device: torch.device) -> int:
    """Batches prepared per call: 1 on CPU (the model step dominates), about
    GPU_PREP_IMAGES images per call on CUDA."""
    return 1 if device.type != "cuda" else max(1, GPU_PREP_IMAGES // batch_size)
