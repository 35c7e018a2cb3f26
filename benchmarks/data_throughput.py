"""Data-layer throughput: synthetic rendering, reading + validating, cache build, batch reads.

    .venv/bin/python benchmarks/data_throughput.py [--quick]

Writes `benchmarks/results/data_throughput[_quick].json`. Single process except the cache
build, measured with 1 worker and with every core (same data, the bytes compared; the
goal for `leukaug synth` is >= 200 images/s at 128 px on one core, for the cache >= 8x
faster on 16 cores than in one process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from leukaug.core.atomic import write_json
from leukaug.data import cache as cache_module
from leukaug.data.cache import default_workers, load_or_build_cache
from leukaug.data.images import check_pixels
from leukaug.data.read import read_dataset
from leukaug.data.synth import SynthConfig, generate, render_split

RESULTS = Path(__file__).parent / "results"


def _timed(function, *args, **kwargs):
    """(value, wall seconds, CPU seconds of this process): on a shared machine the CPU
    seconds give the one-core rate, the wall seconds what a user waited."""
    start, start_cpu = time.perf_counter(), time.process_time()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start, time.process_time() - start_cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def synth_rate(size: int, cells_per_subject: int) -> dict:
    config = SynthConfig(
        size=size,
        subjects_per_class=6,
        test_subjects_per_class=2,
        cells_per_subject=cells_per_subject,
    )
    (images, _, _), wall, cpu = _timed(render_split, config, "train")
    result = {
        "size": size,
        "images": len(images),
        "render_images_per_s_wall": len(images) / wall,
        "render_images_per_cpu_s": len(images) / cpu,
    }
    with tempfile.TemporaryDirectory() as tmp:
        summary, wall, cpu = _timed(generate, Path(tmp) / "data", config)
    result["generate_to_disk_images_per_s_wall"] = summary["images"] / wall
    result["generate_to_disk_images_per_cpu_s"] = summary["images"] / cpu
    return result


def cache_rates(cells_per_subject: int, cache_size: int, batch: int, draws: int) -> dict:
    config = SynthConfig(
        size=450,
        subjects_per_class=6,
        test_subjects_per_class=2,
        cells_per_subject=cells_per_subject,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "C-NMC_Leukemia"
        generate(root, config)
        dataset, read_s, read_cpu = _timed(read_dataset, root)
        manifest = dataset.manifest
        n = len(manifest)
        _, header_s, _ = _timed(lambda: [check_pixels(p) for p in manifest["path"]])
        workers = default_workers()
        builds = {}
        for count in (1, workers):
            cache_module._DIGESTS.clear()
            children_before = _children_cpu()
            cache, build_s, build_cpu = _timed(
                load_or_build_cache,
                manifest,
                cache_size,
                Path(tmp) / f"cache_{count}",
                workers=count,
            )
            builds[count] = (cache, build_s, build_cpu + _children_cpu() - children_before)
        one, many = builds[1][0], builds[workers][0]
        identical = (one.path / "images.npy").read_bytes() == (
            many.path / "images.npy"
        ).read_bytes()
        cache, build_s, build_cpu = builds[1]
        cache_module._DIGESTS.clear()
        _, reuse_cold_s, _ = _timed(load_or_build_cache, manifest, cache_size, one.path.parent)
        _, reuse_warm_s, _ = _timed(load_or_build_cache, manifest, cache_size, one.path.parent)
        rng = np.random.default_rng(0)
        times = []
        for _ in range(draws):
            rows = np.sort(rng.choice(n, size=min(batch, n), replace=False))
            start = time.perf_counter()
            np.asarray(cache.images[rows]).sum()
            times.append(time.perf_counter() - start)
    return {
        "source_size": 450,
        "images": n,
        "read_and_decode_images_per_s_wall": n / read_s,
        "read_and_decode_images_per_cpu_s": n / read_cpu,
        "cache_size": cache_size,
        "pixel_limit_header_check_images_per_s_wall": n / header_s,
        "cache_build_images_per_s_wall": n / build_s,
        "cache_build_images_per_cpu_s": n / build_cpu,
        "cache_build_workers": workers,
        "cache_build_all_workers_images_per_s_wall": n / builds[workers][1],
        "cache_build_speedup_all_workers_vs_one": build_s / builds[workers][1],
        # CPU seconds of the whole build (this process + workers), 1 worker / all: a ratio
        # near 1 means the pool adds no work, so on an idle machine the speed-up ~ cores
        "cache_build_cpu_s_one_worker": build_cpu,
        "cache_build_cpu_s_all_workers": builds[workers][2],
        "cache_build_bytes_identical": identical,
        "cache_reuse_seconds_cold_fingerprint": reuse_cold_s,
        "cache_reuse_seconds_warm_fingerprint": reuse_warm_s,
        "random_batch": batch,
        "random_batch_read_ms_median": 1000 * float(np.median(times)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args()
    cells = 4 if args.quick else 40
    result = {
        "quick": args.quick,
        "load_average": os.getloadavg(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "synth_128": synth_rate(128, cells),
        "synth_450": synth_rate(450, 2 if args.quick else 10),
        "cache": cache_rates(
            cells_per_subject=4 if args.quick else 30,
            cache_size=128,
            batch=64,
            draws=20 if args.quick else 200,
        ),
    }
    name = "data_throughput_quick.json" if args.quick else "data_throughput.json"
    write_json(RESULTS / name, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
