"""Speed of a whole study (issue 5, section 5).

    python benchmarks/study.py                      # `leukaug demo` from scratch, in a temp folder
    python benchmarks/study.py --paper-gpu          # studies/paper.toml on a GPU, C-NMC-sized data

Default: runs the demo exactly as `leukaug demo` does (data generated from scratch, image
cache, every arm, figures, report) in this process and reports its wall time, from process
start, and the share spent outside model compute. Model compute is the time from each
training forward pass to the end of its optimiser step, plus each inference forward pass
(hooks on the model and a global optimiser-step hook; exact on CPU, where ops are
synchronous). Everything else (interpreter and imports, data generation, image cache,
batch assembly, augmentation, metrics, checkpoints, figures, report) is overhead. Goals:
wall time <= 10 min and overhead < 10% on the 2-core CPU.

Per arm it also reports the bytes it wrote (`/proc/self/io` write calls while it ran; with
one arm at a time) and its checkpoint files: `last.pt` + `checkpoint.pt` on disk beside the
trainable parameters plus optimiser state (read from `last.pt`), whose ratio issue 9 wants
<= 2 for frozen-backbone arms. `--arms-per-device K` runs K arms at once (local executor,
one process per arm; the model clock then sees no arm and bytes written are not per arm).
Progress: a plain line per epoch when the output is not a terminal (`leukaug run`'s display).

`--paper-gpu`: studies/paper.toml at the paper's image sizes (custom CNN 256 px,
InceptionV3 and ResNet50 128 px) on synthetic data of C-NMC's size (10,692 training images
in the training folds, 80% of their subjects for training and 20% for validation, and 1,782
test images, all at 450 px). The data are generated with one process per CPU core (same bytes as
`leukaug.data.synth.generate`), and ImageNet weights are not loaded (the machine may be
offline; the compute is the same). Reports data generation, image cache, each arm and the
report separately. `--scale 0.1` runs a tenth of the data as a smoke test.

Results go to benchmarks/results/study_<mode>_<device>_<time>.json.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before the heavy imports: they count as overhead

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from leukaug.arm import single as arm  # noqa: E402
from leukaug.cli.progress import arm_display  # noqa: E402
from leukaug.cli.study_commands import DEMO_STUDY, packaged_study  # noqa: E402
from leukaug.study import prepare as study_data  # noqa: E402
from leukaug.study import run as study  # noqa: E402
from leukaug.study.study_file import read_study_file  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class ModelClock:
    """Accumulates the seconds spent in model compute (see the module docstring)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.train_start: float | None = None
        self.eval_start: float | None = None

    def _sync(self, device: torch.device | None) -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    def attach(self, model: torch.nn.Module) -> torch.nn.Module:
        def before(module, args) -> None:
            device = args[0].device if args and isinstance(args[0], torch.Tensor) else None
            self._sync(device)
            if module.training:
                self.train_start = time.perf_counter()
            else:
                self.eval_start = time.perf_counter()

        def after(module, args, output) -> None:
            if not module.training and self.eval_start is not None:
                self._sync(output.device if isinstance(output, torch.Tensor) else None)
                self.seconds += time.perf_counter() - self.eval_start
                self.eval_start = None

        model.register_forward_pre_hook(before)
        model.register_forward_hook(after)
        return model

    def optimizer_step_done(self, optimizer, args, kwargs) -> None:
        if self.train_start is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self.train_start
            self.train_start = None


@contextlib.contextmanager
def timed(module: Any, name: str, totals: dict[str, float], key: str) -> Iterator[None]:
    """Replace module.name by a wrapper that adds its run time to totals[key]."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - started

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def written_bytes() -> int | None:
    """Bytes this process has passed to write calls so far (Linux), else None."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tensor_bytes(tensors: Any) -> int:
    """Bytes of every tensor in a (nested) dict / list."""
    if isinstance(tensors, torch.Tensor):
        return tensors.numel() * tensors.element_size()
    if isinstance(tensors, dict):
        return sum(tensor_bytes(v) for v in tensors.values())
    if isinstance(tensors, list | tuple):
        return sum(tensor_bytes(v) for v in tensors)
    return 0


def checkpoint_figures(arm_dir: Path) -> dict[str, Any]:
    """Checkpoint bytes on disk against trainable parameters + optimiser state (issue 9)."""
    files = {name: arm_dir / name for name in ("last.pt", "checkpoint.pt")}
    if not all(path.is_file() for path in files.values()):
        return {}
    last = torch.load(files["last.pt"], map_location="cpu", weights_only=True)
    states = last["optimizer"]["state"].values()
    # every optimiser state entry holds tensors shaped like its parameter: the largest is one
    trainable = sum(max((tensor_bytes(t) for t in st.values()), default=0) for st in states)
    needed = trainable + tensor_bytes(last["optimizer"])
    on_disk = sum(path.stat().st_size for path in files.values())
    return {
        "checkpoint_bytes_on_disk": on_disk,
        "trainable_parameter_bytes": trainable,
        "trainable_plus_optimiser_bytes": needed,
        "ratio_on_disk": on_disk / needed if needed else None,
        "arm_folder_bytes": sum(p.stat().st_size for p in arm_dir.rglob("*") if p.is_file()),
        "frozen_parameters": len(last.get("frozen", {}).get("keys", [])),
    }


class ArmRecorder:
    """Per finished arm: status, time, unix end time, bytes written and checkpoint figures."""

    def __init__(self, out_dir: Path, then=None) -> None:
        self.out_dir = out_dir
        self.then = then
        self.arms: list[dict[str, Any]] = []
        self.wchar = written_bytes()

    def __call__(self, outcome) -> None:
        wchar = written_bytes()
        record = {"arm_id": outcome.arm_id, "status": outcome.status, "seconds": outcome.seconds}
        record["finished_unix"] = time.time()
        if wchar is not None and self.wchar is not None:
            record["bytes_written"] = wchar - self.wchar
        self.wchar = wchar
        record |= checkpoint_figures(self.out_dir / "arms" / outcome.arm_id)
        self.arms.append(record)
        if self.then is not None:
            self.then(outcome)


def instrumented_run(
    config,
    out_dir: Path,
    device: str | None,
    clock: ModelClock,
    totals: dict[str, float],
    arms_per_device: int | None = None,
):
    """run_study with the model clock attached, the stages timed and each arm recorded;
    returns (result, arm records)."""
    original_build = arm.build_model

    def build_and_clock(*args, **kwargs):
        return clock.attach(original_build(*args, **kwargs))

    hook = register_optimizer_step_post_hook(clock.optimizer_step_done)
    with contextlib.ExitStack() as stack:
        stack.enter_context(timed(study_data, "ensure_embedded_data", totals, "data generation"))
        stack.enter_context(timed(study_data, "load_or_build_cache", totals, "image cache"))
        stack.enter_context(timed(study, "render_figures", totals, "figures 1-2"))
        stack.enter_context(timed(study, "build_report", totals, "report"))
        arm.build_model = build_and_clock
        display = stack.enter_context(arm_display(Console(), study=True))
        recorder = ArmRecorder(out_dir, then=display.on_arm_done)
        try:
            result = study.run_study(
                config,
                out_dir,
                device=device,
                arms_per_device=arms_per_device,
                on_start=display.on_start,
                on_arm_done=recorder,
                callbacks=display.callbacks,
            )
        finally:
            arm.build_model = original_build
            hook.remove()
    for outcome in result.failed:
        print(
            f"arm {outcome.arm_id} failed: {outcome.error_type}: {outcome.message}", file=sys.stderr
        )
    return result, recorder.arms


def demo_benchmark(device: str | None, arms_per_device: int | None = None) -> dict[str, Any]:
    clock, totals = ModelClock(), {}
    with tempfile.TemporaryDirectory(prefix="leukaug-bench-") as work:
        os.chdir(work)  # the demo's data and cache go to ./data and ./.cache, as for a user
        config = read_study_file(packaged_study(DEMO_STUDY))
        started = time.perf_counter()
        out = Path(work) / "runs" / "demo"
        _, arms = instrumented_run(config, out, device, clock, totals, arms_per_device)
        finished = time.perf_counter()
    wall = finished - PROCESS_START
    at_once = arms_per_device or config.executor.arms_per_device or 1
    # Arms in worker processes (the demo runs two at once) train out of the model clock's
    # reach: the split is measured only with --arms-per-device 1.
    compute = clock.seconds if at_once == 1 else None
    overhead = wall - compute if compute is not None else None
    return {
        "mode": "demo",
        "wall_seconds_from_process_start": wall,
        "startup_and_imports_seconds": started - PROCESS_START,
        "model_compute_seconds": compute,
        "overhead_seconds": overhead,
        "overhead_share": overhead / wall if overhead is not None else None,
        "stages_seconds": totals,
        "arms_per_device": at_once,
        "arms": arms,
        "goals": {"wall_seconds": 600, "overhead_share": 0.10},
    }


# --------------------------------------------------------------------------- paper on a GPU


def _render_shard(args: tuple[str, dict[str, Any], int, int]) -> None:
    """Write the data set as `synth.generate` does, but render and save only every
    `workers`-th cell; all shards together write exactly the files of one generate call.
    (Reaches into `synth._write_dataset`: a benchmark shortcut, not an API.)"""
    from leukaug.data import synth

    root, settings, shard, workers = args
    calls = {"render": 0}
    render_cell, save_bmp = synth.render_cell, synth._save_bmp

    def render(*render_args):
        index = calls["render"]
        calls["render"] += 1
        return render_cell(*render_args) if index % workers == shard else None

    def save(image, path) -> None:
        if image is not None:
            save_bmp(image, path)

    synth.render_cell, synth._save_bmp = render, save
    try:
        synth._write_dataset(Path(root), synth.SynthConfig(**settings), None)
    finally:
        synth.render_cell, synth._save_bmp = render_cell, save_bmp


def generate_parallel(root: Path, settings: dict[str, Any], workers: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_render_shard, [(str(root), settings, k, workers) for k in range(workers)])


def paper_benchmark(
    device: str | None,
    scale: float,
    work: Path,
    epochs: int | None = None,
    arms_per_device: int | None = None,
    seeds: int | None = None,
) -> dict[str, Any]:
    config = read_study_file(Path(__file__).resolve().parents[1] / "studies" / "paper.toml")
    synth_settings = dict(config.data.synth)
    synth_settings["cells_per_subject"] = max(2, round(synth_settings["cells_per_subject"] * scale))
    models = {
        label: entry.model_copy(update={"pretrained": False})
        for label, entry in config.models.items()
    }
    data = config.data.model_copy(
        update={
            "synth": synth_settings,
            "dir": str(work / "data"),
            "cache_dir": str(work / "cache"),
        }
    )
    config = config.model_copy(update={"models": models, "data": data})
    if seeds is not None:  # the goals: one seed in 5 minutes, three in 12
        section = config.study.model_copy(update={"seeds": list(range(seeds))})
        config = config.model_copy(update={"study": section})
    if epochs is not None:  # smoke tests: every arm, regime overrides included, runs `epochs`
        regimes = {
            label: regime.model_copy(update={"training": None})
            for label, regime in config.regimes.items()
        }
        training = config.training.model_copy(update={"epochs": epochs})
        config = config.model_copy(update={"regimes": regimes, "training": training})

    totals: dict[str, float] = {}
    started = time.perf_counter()
    generate_parallel(Path(data.dir), synth_settings, os.cpu_count() or 1)
    totals["data generation (parallel)"] = time.perf_counter() - started
    clock = ModelClock()
    result, arms = instrumented_run(config, work / "paper", device, clock, totals, arms_per_device)
    wall = time.perf_counter() - started
    return {
        "mode": "paper-gpu",
        "scale": scale,
        "epochs_override": epochs,
        "seeds": list(config.study.seeds),
        "synth": synth_settings,
        "wall_seconds": wall,
        "model_compute_seconds": clock.seconds,
        "stages_seconds": totals,
        "arms_per_device": arms_per_device,
        "arms": arms,
        "failed": [o.arm_id for o in result.failed],
    }


# --------------------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paper-gpu", action="store_true", help="time studies/paper.toml")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of C-NMC's size")
    parser.add_argument("--epochs", type=int, default=None, help="override every arm's epochs")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, ...")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and results")
    parser.add_argument("--arms-per-device", type=int, default=None, help="arms run at once")
    parser.add_argument("--seeds", type=int, default=None, help="paper: seeds 0..N-1")
    parser.add_argument("--output", type=Path, default=None, help="the JSON (default: results/)")
    args = parser.parse_args(argv)

    run: Callable[[], dict[str, Any]]
    if args.paper_gpu:
        work = args.work or Path(tempfile.mkdtemp(prefix="leukaug-paper-"))
        run = lambda: paper_benchmark(  # noqa: E731
            args.device, args.scale, work, args.epochs, args.arms_per_device, args.seeds
        )
    else:
        run = lambda: demo_benchmark(args.device, args.arms_per_device)  # noqa: E731
    result = run() | {"machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = args.output or RESULTS / f"study_{result['mode']}_{device}_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "arms"}, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
