"""The tables `leukaug run` prints (the dry run's plan, the verdicts) at 80 columns: arm
names told apart without the parts every arm shares, time estimates, missing weights."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from leukaug.cli import app
from leukaug.cli.results import ShortNames, results_table, shared_affixes

NARROW = {"COLUMNS": "80", "TERMINAL_WIDTH": "80"}
DEMO_ARMS = ("none", "flip_rotate", "noise", "stain")


def render(table, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_the_parts_every_arm_shares_are_dropped_and_named() -> None:
    names = [f"custom_cnn-{aug}-full-s0" for aug in DEMO_ARMS]
    assert shared_affixes(names) == ("custom_cnn-", "-full-s0")
    short = ShortNames(names)
    assert [short(n) for n in names] == list(DEMO_ARMS)
    assert short.note == "; arm names without the shared 'custom_cnn-' and '-full-s0'"
    assert shared_affixes(["a-x", "a-x"]) == ("", "")  # one name: nothing to tell apart
    assert shared_affixes(["a-b", "a-b-c"]) == ("a-", "")  # every name keeps a part


def test_the_verdict_table_fits_80_columns_with_whole_names() -> None:
    rows = [
        {"arm": f"custom_cnn-{aug}-full", "reference": "custom_cnn-none-full", "metric":
         "balanced_accuracy", "n_seeds": 4, "effect": 0.1, "ci_low": 0.0, "ci_high": 0.2,
         "p_adjusted": 0.01, "verdict": "no detectable difference"}
        for aug in DEMO_ARMS[1:]
    ]  # fmt: skip
    text = render(results_table(rows, width=80))
    wide = render(results_table(rows, width=200), width=200)
    assert "custom_cnn-flip_rotate-full" in wide and "without the shared" not in wide  # it fits
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "without the shared 'custom_cnn-' and '-full'" in " ".join(text.split())
    for aug in DEMO_ARMS[1:]:
        assert any(f" {aug} " in line for line in text.splitlines()), text  # never cut


def test_the_dry_run_at_80_columns_tells_arms_apart_and_estimates_time(tmp_path: Path) -> None:
    args = ["run", "demo", "--out", str(tmp_path / "out"), "--dry-run", "--set", "seeds=[0,1]"]
    result = CliRunner().invoke(app, [*args, "--set", "training.epochs=1"], env=NARROW)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for aug in DEMO_ARMS:
        for seed in (0, 1):
            assert any(f" {aug}-full-s{seed} " in line for line in lines), result.output
    assert "without the shared 'custom_cnn-'" in " ".join(result.output.split())
    assert "time: about" in result.output and "in total" in result.output
    plan = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert all(arm["estimate_seconds"] > 0 for arm in plan["arms"])
    assert plan["work"]["estimated_seconds"] > 0


def test_the_dry_run_flags_arms_whose_imagenet_weights_are_missing(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    study = tmp_path / "pretrained.toml"
    study.write_text(
        "[study]\nname = 'w'\nseeds = [0]\ndevice = 'cpu'\n"
        "[data.synth]\nsize = 72\nsubjects_per_class = 2\ntest_subjects_per_class = 1\n"
        "cells_per_subject = 3\n[training]\nimage_size = 32\nbatch_size = 2\nepochs = 1\n"
        "[models.resnet18]\npretrained = true\n[models.custom_cnn]\nimage_size = 72\n"
        "[augmentations]\nnone = []\n",
        encoding="utf-8",
    )
    args = ["run", str(study), "--out", str(tmp_path / "out"), "--dry-run"]
    result = CliRunner().invoke(app, args, env=NARROW)
    assert result.exit_code == 0, result.output
    assert any(
        "resnet18" in line and "needs weights" in line for line in result.output.splitlines()
    )
    assert "leukaug weights fetch resnet18" in " ".join(result.output.split())
    plan = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    fetch = {arm["model"]: arm["fetch_weights"] for arm in plan["arms"]}
    assert fetch == {"resnet18": "leukaug weights fetch resnet18", "custom_cnn": None}
