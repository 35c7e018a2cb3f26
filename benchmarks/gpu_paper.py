"""Issue 9's measurement in one go: the paper's study at C-NMC size on one GPU, GPU
utilisation sampled in the background, then `train_throughput.py`; one JSON.

    python benchmarks/gpu_paper.py --wheels wheels/ --out $OUT/gpu_paper.json
    python benchmarks/gpu_paper.py --scale 0.02 --epochs 1 --device cpu   # smoke test on a CPU

Steps (each timed; a failing step is recorded and the rest still run):
  1. `--wheels DIR`: install every wheel in DIR offline (`pip install --no-index
     --find-links DIR DIR/*.whl`), for machines that have PyTorch but not leukaug's other
     dependencies (kornia, pydantic, timm, typer, ...). leukaug itself runs from `src/`.
  2. `benchmarks/study.py --paper-gpu` (studies/paper.toml on synthetic data of C-NMC's size,
     `--scale` of it) in a child process, while `nvidia-smi` samples utilisation and memory
     every `--sample-ms`; the samples inside each arm's training window give the mean GPU
     utilisation during training (goal >= 70%).
  3. `benchmarks/train_throughput.py --device DEVICE` (pipeline efficiency, goal >= 0.95).
The JSON holds the machine, each step's result and log tail, the utilisation summary and
the issue's goals beside the measured figures. Without `nvidia-smi` (a CPU run) the
utilisation is recorded as unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GOALS = {
    "study_wall_seconds": {1: 300, 3: 720},  # by seeds: C-NMC size on one H100
    "mean_gpu_utilisation_during_training": 70.0,  # percent
    "pipeline_efficiency": 0.95,
}
LOG_TAIL = 4000  # characters of each step's output kept in the JSON


class GpuSampler:
    """`nvidia-smi` in loop mode in the background; each line stamped on arrival."""

    QUERY = "utilization.gpu,memory.used"

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.samples: list[tuple[float, float, float]] = []  # (unix time, util %, MiB)
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        binary = shutil.which("nvidia-smi")
        if binary is None:
            self.error = "nvidia-smi not found"
            return
        command = [binary, f"--query-gpu={self.QUERY}", "--format=csv,noheader,nounits"]
        command += [f"-lms={self.interval_ms}", "--id=0"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stream = self.process.stdout if self.process is not None else None
        for line in stream or ():
            try:
                util, memory = (float(v) for v in line.strip().split(","))
            except ValueError:
                continue
            self.samples.append((time.time(), util, memory))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)

    def summary(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        """Mean utilisation overall and inside `windows` ((start, end) unix times)."""
        if not self.samples:
            return {"available": False, "reason": self.error or "no samples"}
        inside = [u for t, u, _ in self.samples if any(a <= t <= b for a, b in windows)]
        return {
            "available": True,
            "interval_ms": self.interval_ms,
            "samples": len(self.samples),
            "mean_utilisation": statistics.fmean(u for _, u, _ in self.samples),
            "training_samples": len(inside),
            "mean_utilisation_during_training": statistics.fmean(inside) if inside else None,
            "peak_memory_mib": max(m for _, _, m in self.samples),
            "series": [[round(t, 2), u, m] for t, u, m in self.samples],
        }


def run_step(name: str, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one step as a child process; its output streams through and its tail is kept."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    for line in process.stdout or ():
        print(line, end="", flush=True)
        lines.append(line)
    returncode = process.wait()
    return {
        "command": command,
        "returncode": returncode,
        "seconds": time.perf_counter() - started,
        "log_tail": "".join(lines)[-LOG_TAIL:],
    }


def install_wheels(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        return {"returncode": 1, "log_tail": f"no *.whl in {folder}", "wheels": []}
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(folder)]
    result = run_step("install wheels", [*pip, *wheels], env)
    return result | {"wheels": [Path(w).name for w in wheels]}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def training_windows(study: dict[str, Any] | None) -> list[tuple[float, float]]:
    """(start, end) unix times of each arm that ran, from the study benchmark's arm records."""
    if not study:
        return []
    return [
        (arm["finished_unix"] - arm["seconds"], arm["finished_unix"])
        for arm in study.get("arms", [])
        if arm.get("status") == "complete" and "finished_unix" in arm
    ]


def verdicts(
    study: dict[str, Any] | None, gpu: dict[str, Any], throughput: dict | None, seeds: int
) -> dict:
    """Each goal of issue 9 beside the measured figure (None: not measured in this run)."""
    wall = study.get("wall_seconds") if study else None
    util = gpu.get("mean_utilisation_during_training")
    efficiency = {}
    for section in ("a", "d"):
        found = (throughput or {}).get("sections", {}).get(section, {})
        if "efficiency" in found:
            efficiency[f"section {section}"] = found["efficiency"]
        for model, row in found.items():
            if isinstance(row, dict) and "efficiency" in row:
                efficiency[f"section {section} {model}"] = row["efficiency"]
    return {
        "study_wall_seconds": {"measured": wall, "goal": GOALS["study_wall_seconds"].get(seeds)},
        "mean_gpu_utilisation_during_training": {
            "measured": util,
            "goal": GOALS["mean_gpu_utilisation_during_training"],
        },
        "pipeline_efficiency": {"measured": efficiency, "goal": GOALS["pipeline_efficiency"]},
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        info["gpu"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=None, help="folder of wheels to install")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of C-NMC's size")
    parser.add_argument("--epochs", type=int, default=None, help="override every arm's epochs")
    parser.add_argument("--device", default="cuda", help="cuda (default), cpu, auto")
    parser.add_argument("--arms-per-device", type=int, default=None, help="arms run at once")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (goal: 1 in 5 min)")
    parser.add_argument("--sample-ms", type=int, default=500, help="nvidia-smi sampling period")
    parser.add_argument(
        "--throughput-args",
        default=None,
        help="arguments for train_throughput.py (default: --device DEVICE; on CPU: --quick "
        "--sections a)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and the study")
    parser.add_argument("--out", type=Path, default=None, help="the JSON (default: results/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work = args.work or Path(tempfile.mkdtemp(prefix="leukaug-gpu-paper-"))
    result: dict[str, Any] = {"created": stamp, "machine": machine()}
    result["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.wheels is not None:
        result["install"] = install_wheels(args.wheels, env)

    study_json = work / "study.json"
    command = [sys.executable, "benchmarks/study.py", "--paper-gpu", "--scale", str(args.scale)]
    command += ["--device", args.device, "--work", str(work), "--output", str(study_json)]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    if args.arms_per_device is not None:
        command += ["--arms-per-device", str(args.arms_per_device)]
    command += ["--seeds", str(args.seeds)]
    sampler = GpuSampler(args.sample_ms)
    sampler.start()
    try:
        result["study_run"] = run_step("paper study", command, env)
    finally:
        sampler.stop()
    study = read_json(study_json)
    result["study"] = study
    result["gpu"] = sampler.summary(training_windows(study))

    throughput = None
    if not args.skip_throughput:
        cpu = args.device == "cpu"
        extra = args.throughput_args or ("--quick --sections a" if cpu else "")
        out = work / "throughput.json"
        command = [sys.executable, "benchmarks/train_throughput.py", "--device", args.device]
        command += [*extra.split(), "--out", str(out)]
        result["throughput_run"] = run_step("train throughput", command, env)
        throughput = read_json(out)
        result["throughput"] = throughput
    result["goals"] = verdicts(study, result["gpu"], throughput, args.seeds)

    device = "cpu" if args.device == "cpu" else "cuda"
    path = args.out or RESULTS / f"gpu_paper_{device}_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["goals"], indent=2))
    print(f"written to {path}")
    steps = [result.get(k, {}) for k in ("install", "study_run", "throughput_run")]
    return 1 if any(step.get("returncode") for step in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
