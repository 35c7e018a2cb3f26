"""How long every `leukaug` command takes to start, and whether starting it imports torch.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 5] [--json] [--out FILE]

Runs `leukaug --version`, `leukaug -h` and `leukaug COMMAND -h` for every command and group
subcommand, each `--repeat` times in a fresh interpreter, and prints the median and minimum
wall time of each with whether torch was imported (a `sys.modules` probe at exit). In the
same run, as references on the same machine at the same load: `python -c pass` (the
interpreter alone) and `python -c "import torch"`. The load average before and after is
recorded, since other processes on a shared machine slow every figure alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import typer

from leukaug.cli import app

RESULTS = Path(__file__).parent / "results"
TORCH_MARK = "leukaug-startup-torch-imported="
# The child runs the console script's entry point and reports at exit whether torch was
# imported; the probe itself imports nothing.
CLI_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('{mark}' + str('torch' in sys.modules), file=sys.stderr))\n"
    "sys.argv = ['leukaug', *{args!r}]\n"
    "from leukaug.cli import main\n"
    "main()\n"
)
REFERENCES = {"python -c pass": "pass", 'python -c "import torch"': "import torch"}


def command_paths() -> list[list[str]]:
    """Every command and group subcommand of the app, as the words that name it."""
    paths: list[list[str]] = []

    def walk(path: list[str], command: object) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            paths.append([*path, name])
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return paths


def time_once(code: str) -> tuple[float, bool | None]:
    """(wall seconds, torch imported or None when the code does not report it) of one
    fresh `python -c code`."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    seconds = time.perf_counter() - start
    marks = [line for line in done.stderr.splitlines() if line.startswith(TORCH_MARK)]
    if done.returncode != 0:
        raise RuntimeError(f"`python -c {code!r}` failed ({done.returncode}):\n{done.stderr}")
    return seconds, (marks[-1].removeprefix(TORCH_MARK) == "True") if marks else None


def measure(label: str, code: str, repeat: int) -> dict:
    runs = [time_once(code) for _ in range(repeat)]
    seconds = [s for s, _ in runs]
    imported = {t for _, t in runs}
    return {
        "command": label,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "runs_s": seconds,
        "torch_imported": imported.pop() if len(imported) == 1 else sorted(imported),
    }


def run(repeat: int) -> dict:
    cases = [("leukaug --version", ["--version"]), ("leukaug -h", ["-h"])]
    cases += [(f"leukaug {' '.join(path)} -h", [*path, "-h"]) for path in command_paths()]
    started, load_before = time.strftime("%Y-%m-%dT%H:%M:%S%z"), os.getloadavg()
    rows = [measure(label, code, repeat) for label, code in REFERENCES.items()]
    rows += [
        measure(label, CLI_PROBE.format(mark=TORCH_MARK, args=args), repeat)
        for label, args in cases
    ]
    return {
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.node()}: {os.cpu_count()} CPU(s), {platform.platform()}",
        "python": platform.python_version(),
        "repeat": repeat,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }


def table(result: dict) -> str:
    before = ", ".join(f"{v:.2f}" for v in result["load_average_before"])
    after = ", ".join(f"{v:.2f}" for v in result["load_average_after"])
    lines = [
        f"{result['started']} to {result['finished']}  {result['machine']}",
        f"{result['repeat']} fresh processes per command; load average (1, 5, 15 min) "
        f"before {before}, after {after}",
        "",
        "| command | median s | min s | imports torch |",
        "|---|---:|---:|---|",
    ]
    for row in result["rows"]:
        torch = {True: "yes", False: "no", None: "(reference)"}.get(row["torch_imported"], "mixed")
        lines.append(
            f"| `{row['command']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | {torch} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    args = parser.parse_args()
    result = run(args.repeat)
    print(json.dumps(result, indent=2) if args.json else table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
