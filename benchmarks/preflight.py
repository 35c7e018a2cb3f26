"""What the study preflight (leukaug.study.preflight) costs before a study starts.

    .venv/bin/python benchmarks/preflight.py [--repeat 5]

Times `preflight()` on the packaged studies (arms expanded as `leukaug run` does), into a
fresh output folder, ImageNet weights offline and not cached (their problems are listed,
as a real run would: the check itself is what is timed). Prints the median and minimum
seconds per study, the number of arms, the problems found, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from leukaug.core.errors import ConfigError
from leukaug.study.packaged import packaged_study
from leukaug.study.plan import expand_arms
from leukaug.study.preflight import preflight
from leukaug.study.study_file import read_study_file

STUDIES = ("demo", "paper", "extended")


def time_study(name: str, repeat: int, folder: Path) -> tuple[float, float, int, int]:
    config = read_study_file(packaged_study(name))
    out = folder / name
    arms = expand_arms(config, out / "arms")
    seconds, problems = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            preflight(config, arms, out)
        except ConfigError as error:
            problems = str(error).count("\n  - ")
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), min(seconds), len(arms), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCH_HOME"] = str(Path(tmp) / "torch-home")
        os.environ["LEUKAUG_OFFLINE"] = "1"
        os.environ["LEUKAUG_CACHE_DIR"] = str(Path(tmp) / "cache")
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print("study      arms  median s  min s  problems")
        for name in STUDIES:
            median, best, arms, problems = time_study(name, args.repeat, Path(tmp))
            print(f"{name:<10} {arms:>4}  {median:>8.3f}  {best:>5.3f}  {problems:>8}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
