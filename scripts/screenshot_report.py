#!/usr/bin/env python3
"""Render a report.html in Debian's headless chromium and save a PNG screenshot.

    .venv/bin/python scripts/screenshot_report.py STUDY_DIR_OR_REPORT_HTML [--out FILE.png]
    .venv/bin/python scripts/screenshot_report.py --demo [--out FILE.png]

`--demo` fabricates a study (tests/report_fixtures.py) in a temporary folder and builds its
report first. Networking is disabled in the browser, so a page that needed the network
would show it. Install the browser with `apt-get install -y chromium`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_study(directory: Path) -> Path:
    """Build the report of a fabricated study (four arms x two seeds, one failed arm); return report.html."""
    sys.path.insert(0, str(ROOT / "tests"))
    from leukaug.report import build_report
    from report_fixtures import make_study

    study = make_study(
        directory / "study",
        {"baseline": 0.3, "flip_rotate": 1.5, "noise": 0.35, "always_hem": "always_hem"},
        seeds=(0, 1),
        n_subjects={
            "train": 20,
            "val": 8,
            "test": 28,
        },  # C-NMC's preliminary test set has 28 subjects
        images_per_subject=40,
    )
    return build_report(study)["report"]


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 4000) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get update && apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            f"--screenshot={out.resolve()}",
            f"--window-size={width},{height}",
            report.resolve().as_uri(),
        ]
        subprocess.run(command, check=True, timeout=120, capture_output=True)
    if not out.is_file():
        raise SystemExit(f"chromium wrote no screenshot to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", nargs="?", type=Path, help="a study folder or its report.html")
    parser.add_argument(
        "--demo", action="store_true", help="fabricate a study and screenshot its report"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "leukaug-report-screenshot.png"
    )
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.demo:
            report = demo_study(Path(scratch))
        elif args.target is None:
            parser.error("give a study folder or report.html, or --demo")
        else:
            report = args.target / "report.html" if args.target.is_dir() else args.target
        screenshot(report, args.out, height=args.height)
    print(args.out)


if __name__ == "__main__":
    main()
