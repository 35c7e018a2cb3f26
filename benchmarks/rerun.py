"""How long `leukaug run demo` takes on a finished copy of the demo (issue 20.2: under 5 s,
no replayed epoch lines, "N of N arms complete", the results table and the report path).

    .venv/bin/python benchmarks/rerun.py [--study-dir DIR [--full]] [--repeat 3] [--json]

Without --study-dir, the demo is first trained once into a temporary folder with one
epoch per arm (`--set training.epochs=1`: the rerun does not depend on how long the arms
trained, and every arm, Grad-CAM and the report are there as after a full demo); with
--study-dir DIR --full, DIR is a finished `leukaug demo` as it comes (no --set). Each
rerun is a fresh `leukaug run demo` process with the same options (after one untimed rerun,
which rebuilds the report if the folder came from another leukaug version), timed from its
start to its exit (interpreter start and imports included); the load average before and after
is recorded, since other processes on a shared machine slow every figure alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIONS = ["--set", "training.epochs=1"]
GOAL_SECONDS = 5.0


def leukaug(*args: str) -> list[str]:
    return [sys.executable, "-m", "leukaug", *args]


def rerun(study_dir: Path, cache_dir: Path, options: list[str]) -> dict[str, object]:
    """One timed rerun: seconds, exit status, and what it printed."""
    command = leukaug("run", "demo", "--out", str(study_dir), "--cache-dir", str(cache_dir))
    started = time.perf_counter()
    done = subprocess.run([*command, *options], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    output = " ".join((done.stdout + done.stderr).split())
    complete = re.search(r"(\d+) of (\d+) arms complete", output)
    return {
        "seconds": seconds,
        "status": done.returncode,
        "all_complete": bool(complete) and complete[1] == complete[2],
        "arms": int(complete[2]) if complete else None,
        "epoch_lines": output.count(" epoch "),
        "report_path": f"Report: {study_dir / 'report.html'}" in output,
        "verdicts_table": "Verdicts" in output,
    }


def import_seconds() -> float:
    """`python -c "import torch"`: the floor of any command that trains (a reference)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-dir", type=Path, help="a finished demo (trained with --set "
                        "training.epochs=1); default: train one into a temporary folder")  # fmt: skip
    parser.add_argument("--full", action="store_true", help="--study-dir is a finished "
                        "`leukaug demo` as it comes (rerun without --set)")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, help="image caches and the demo's data")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.full and args.study_dir is None:
        parser.error("--full needs --study-dir (a finished `leukaug demo`)")
    options = [] if args.full else OPTIONS
    with tempfile.TemporaryDirectory(prefix="leukaug-rerun-") as work:
        study_dir = args.study_dir or Path(work) / "demo"
        cache_dir = args.cache_dir or Path(work) / "cache"
        if args.study_dir is None:
            command = leukaug("-q", "run", "demo", "--out", str(study_dir))
            subprocess.run([*command, "--cache-dir", str(cache_dir), *OPTIONS], check=True)
        subprocess.run(  # untimed: a folder from another version gets this version's report
            [*leukaug("-q", "run", "demo", "--out", str(study_dir), "--cache-dir", str(cache_dir)),
             *options], check=True, capture_output=True,
        )  # fmt: skip
        load_before = os.getloadavg()
        runs = [
            rerun(study_dir.resolve(), cache_dir.resolve(), options) for _ in range(args.repeat)
        ]
        torch_import = import_seconds()
        load_after = os.getloadavg()
    seconds = [run["seconds"] for run in runs]
    result = {
        "median_seconds": statistics.median(seconds),
        "min_seconds": min(seconds),
        "goal_seconds": GOAL_SECONDS,
        "import_torch_seconds": torch_import,
        "load_average_before_after": [load_before[0], load_after[0]],
        "cpus": os.cpu_count(),
        "runs": runs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"finished demo rerun: median {result['median_seconds']:.1f} s, min "
          f"{result['min_seconds']:.1f} s over {args.repeat} runs (goal < {GOAL_SECONDS:.0f} s); "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} CPUs; "
          f"`import torch` alone {torch_import:.1f} s at the same load")  # fmt: skip
    for run in runs:
        print("  " + ", ".join(f"{key} {value}" for key, value in run.items()))


if __name__ == "__main__":
    main()
