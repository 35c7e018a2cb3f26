"""What `[data] normalize` costs: building the image cache of the 40 real C-NMC cells
(450 x 450 BMP) at 96 px, one process, with no stain normalisation, Macenko and Reinhard
(targets fitted to the same cells first, timed apart).

    .venv/bin/python benchmarks/stain_norm.py [--cells ../shared/real-cells/cnmc-samples]

Writes `benchmarks/results/stain_norm.json`. CPU time of this process (the one-core cost on
a shared machine); a real build spreads it over every core (`workers`), once per data set,
size and target.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from leukaug.core.atomic import write_json
from leukaug.data.cache import load_or_build_cache
from leukaug.data.read import read_dataset
from leukaug.data.stain_norm import training_target

RESULTS = Path(__file__).parent / "results"
DEFAULT_CELLS = Path(__file__).resolve().parents[2] / "shared/real-cells/cnmc-samples"
SIZE = 96


def cpu_seconds(function, *args, **kwargs):
    start = time.process_time()
    value = function(*args, **kwargs)
    return value, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=Path, default=DEFAULT_CELLS)
    args = parser.parse_args()
    manifest: pd.DataFrame = read_dataset(args.cells).manifest
    n = len(manifest)
    results: dict[str, object] = {"images": n, "size": SIZE, "machine": platform.processor()}
    with tempfile.TemporaryDirectory() as cache:
        for method in ("none", "macenko", "reinhard"):
            target, fit_s = (None, 0.0)
            if method != "none":
                target, fit_s = cpu_seconds(training_target, method, list(manifest["path"]))
            folder = Path(cache) / method
            _, build_s = cpu_seconds(
                load_or_build_cache, manifest, SIZE, folder, workers=1, stain=target
            )
            results[method] = {
                "fit_cpu_s": round(fit_s, 3),
                "build_cpu_s": round(build_s, 3),
                "images_per_cpu_s": round(n / build_s, 1),
            }
            print(f"{method:9s} fit {fit_s:6.2f} s  cache build {build_s:6.2f} s  "
                  f"{n / build_s:6.1f} images/s (CPU time, one process)")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "stain_norm.json", results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
