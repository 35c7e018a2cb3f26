#!/usr/bin/env python3
"""How tall and how wide the report page is: a demo-sized fabricated study (16 arm names x
2 seeds, 28 test subjects; tests/report_fixtures.py) is reported by the leukaug on
PYTHONPATH and laid out in headless chromium at 1280 and 800 CSS px
(scripts/screenshot_report.py). Prints the page height and every table that would scroll
sideways or be cut off, per width, and writes them to benchmarks/results/report_height.json.

    PYTHONPATH=src .venv/bin/python benchmarks/report_height.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

AUGMENTATIONS = ["flip", "rotate", "flip_rotate", "stain", "stain_strong", "noise", "blur"]
AUGMENTATIONS += ["crop", "paper", "paper_stain", "colour", "elastic", "cutout", "mixup", "gamma"]
WIDTHS = (1280, 800)


def main() -> None:
    from screenshot_report import capture

    from leukaug.report import build_report
    from report_fixtures import make_study

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/report_height.json")
    args = parser.parse_args()
    arms = {"none": 0.3} | {aug: 0.3 + 0.05 * (k % 5) for k, aug in enumerate(AUGMENTATIONS)}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        study = make_study(
            Path(scratch) / "study",
            arms,
            seeds=(0, 1),
            failed=(),
            n_subjects={"train": 20, "val": 8, "test": 28},
            images_per_subject=20,
        )
        report = build_report(study, n_resamples=200)["report"]
        for width in WIDTHS:
            shot = capture(report, width)
            results[str(width)] = {"height": shot.height, "scrolled": shot.scrolled}
            print(
                f"{width} px wide: page {shot.height} px tall; scrolled: {shot.scrolled or 'none'}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
