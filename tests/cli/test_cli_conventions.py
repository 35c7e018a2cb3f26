"""The command line's conventions (issue 10 section 3): --version, -h, completion, help
texts shown as written, closed sets as choices from their registries, packaged studies by
name, --set overrides, --dry-run, --json, -v/-q, the user cache folder; and one tiny study
end to end (results table, TensorBoard files and a self-describing checkpoint per arm)."""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from leukaug.arm.model_card import MODEL_CARD_KEY
from leukaug.arm.spec import CHOICES
from leukaug.cli import app
from leukaug.cli.studies_commands import packaged_studies
from leukaug.core.errors import ConfigError, LeukaugError
from leukaug.core.user_cache import CACHE_DIR_ENV, default_cache_dir
from leukaug.study.overrides import apply_overrides, parse_value
from leukaug.trained.export import EXPORTERS

WIDE = {"TERMINAL_WIDTH": "400", "COLUMNS": "400"}  # help texts on one line each


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


def user_error(result, text: str) -> bool:
    """The command stopped with a LeukaugError (`main` turns it into exit status 2) saying `text`."""
    return isinstance(result.exception, LeukaugError) and text in str(result.exception)


def all_commands() -> list[tuple[list[str], object]]:
    """(path of names, click command) of every command and group in the app."""
    found = []

    def walk(path: list[str], command) -> None:
        found.append((path, command))
        for name, sub in getattr(command, "commands", {}).items():
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


COMMANDS = all_commands()
COMMAND_IDS = [" ".join(path) or "root" for path, _ in COMMANDS]


def test_version_names_every_key_dependency_and_cuda():
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    for name in ("leukaug", "torch", "torchvision", "kornia", "CUDA", "python"):
        assert name in result.output
    assert torch.__version__ in result.output


def test_completion_can_be_installed():
    assert "--install-completion" in invoke("--help").output


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=COMMAND_IDS)
def test_every_help_follows_the_conventions(path):
    short, long = invoke(*path, "-h"), invoke(*path, "--help")
    assert short.exit_code == 0 and short.output == long.output
    text = short.output
    assert "<bool>" not in text  # flags take no value
    usage = text[text.index("Usage:") :].splitlines()[0]
    assert "{" not in usage, usage  # arguments read STUDY, ARM_DIR, not {study}
    assert not re.search(r"\b[a-z_]+\.\.\.", usage), usage


@pytest.mark.parametrize("path,command", COMMANDS, ids=COMMAND_IDS)
def test_help_texts_are_shown_as_written(path, command):
    text = " ".join(invoke(*path, "--help").output.split())
    for param in command.params:
        helped = getattr(param, "help", None) or ""
        for bracketed in re.findall(r"\[[^\]\s]+\]", helped.replace("\\[", "[")):
            assert bracketed in text, f"{bracketed} of {param.name} swallowed in {path}"


def test_the_export_help_keeps_the_extra_in_brackets():
    assert "leukaug[onnx]" in invoke("export", "--help").output


@pytest.mark.parametrize(
    "args,values",
    [
        (["train", "--optimizer"], CHOICES["optimizer"]),
        (["train", "--regime"], CHOICES["regime"]),
        (["train", "--aug-mode"], CHOICES["aug_mode"]),
        (["export", "--format"], tuple(EXPORTERS.names())),
    ],
)
def test_closed_sets_are_choices_from_their_registries(args, values):
    command = typer.main.get_command(app).commands[args[0]]
    (option,) = [p for p in command.params if args[1] in p.opts]
    assert tuple(option.type_descriptor.choices) == tuple(values)
    result = invoke(*args[:1], "x", args[1], "no-such-value")
    assert result.exit_code == 2 and "no-such-value" in result.output


def test_studies_list_show_and_copy(tmp_path):
    listed = json.loads(invoke("studies", "list", "--json").stdout)
    assert {row["name"] for row in listed} == set(packaged_studies())
    assert {"demo", "paper"} <= set(packaged_studies())
    shown = invoke("studies", "show", "paper")
    assert shown.output == packaged_studies()["paper"].read_text(encoding="utf-8")
    copy = tmp_path / "mine.toml"
    assert invoke("studies", "copy", "paper", str(copy)).exit_code == 0
    assert copy.read_text(encoding="utf-8") == shown.output
    again = invoke("studies", "copy", "paper", str(copy))
    assert user_error(again, "--force")


def test_an_unknown_study_name_suggests_the_packaged_ones(tmp_path):
    result = invoke("run", "papr", "--out", str(tmp_path / "out"), "--dry-run")
    assert user_error(result, "'paper'") and "studies list" in str(result.exception)


def test_set_values_are_toml_and_one_part_keys_find_their_section():
    assert parse_value("3") == 3 and parse_value("[0,1]") == [0, 1]
    assert parse_value("true") is True and parse_value("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="not a TOML value"):
        parse_value("[0, 1")
    sections = {"study": ["seeds", "device"], "training": ["epochs"]}
    table = apply_overrides({"study": {"seeds": [0]}}, ["seeds=[0,1]", "epochs=2"], sections)
    assert table == {"study": {"seeds": [0, 1]}, "training": {"epochs": 2}}


def dry_run(*sets: str, out: Path) -> dict:
    args = ["run", "demo", "--out", str(out), "--dry-run", "--json"]
    result = invoke(*args, *[item for s in sets for item in ("--set", s)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dry_run_lists_arms_references_data_and_work(tmp_path):
    plan = dry_run("training.epochs=2", "seeds=[0]", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    by_name = {arm["name"]: arm for arm in plan["arms"]}
    assert len(plan["arms"]) == len(by_name) == 4  # demo: 4 augmentation arms, one seed now
    assert by_name["custom_cnn-none-full"]["reference"] is None
    assert by_name["custom_cnn-stain-full"]["reference"] == "custom_cnn-none-full"
    images = plan["data"]["images"]
    assert plan["work"]["training_image_passes"] == 4 * 2 * images["train"]
    assert plan["data"]["root"].startswith(str(default_cache_dir()))


def test_a_bad_override_is_reported_like_a_bad_file(tmp_path):
    result = invoke("run", "demo", "--out", str(tmp_path), "--dry-run", "--set", "training.epoch=3")
    assert user_error(result, "Did you mean 'epochs'")
    assert "--set training.epoch=3" in str(result.exception)  # names where the value came from
    result = invoke("run", "demo", "--out", str(tmp_path), "--dry-run", "--set", "seeds=[0,0]")
    assert user_error(result, "distinct")


@pytest.mark.parametrize("command,key", [("models", "custom_cnn"), ("augmentations", "flip")])
def test_registries_as_json(command, key):
    result = invoke(command, "--json")
    assert result.exit_code == 0, result.output
    assert key in {row["name"] for row in json.loads(result.stdout)}


def test_verbosity_sets_the_library_log_level():
    from leukaug.cli import progress

    for flag, level in (("-v", logging.DEBUG), ("-q", logging.WARNING), (None, logging.INFO)):
        args = [flag, "studies", "list", "--json"] if flag else ["studies", "list", "--json"]
        assert invoke(*args).exit_code == 0
        assert progress.library_log_level() == level


def test_the_user_cache_folder_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_cache_dir() != Path.cwd() and default_cache_dir().is_absolute()


TINY = """
[study]
name = "tiny-cli"
seeds = [0]
device = "cpu"

[data.synth]
size = 72
subjects_per_class = 2
test_subjects_per_class = 1
cells_per_subject = 3

[training]
image_size = 72
epochs = 3
batch_size = 16

[models.custom_cnn]

[augmentations]
none = []
flip = ["flip"]
"""


@pytest.mark.slow
def test_a_tiny_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY, encoding="utf-8")
    cache = tmp_path / "cache"
    result = invoke(
        "-q", "run", "tiny.toml", "--out", "out", "--set", "training.epochs=1",
        "--cache-dir", str(cache), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [arm["status"] for arm in summary["arms"]] == ["complete", "complete"]
    assert {row["arm"] for row in summary["results"]} == {"custom_cnn-flip-full"}
    assert sorted(os.listdir(tmp_path)) == ["cache", "out", "tiny.toml"]  # nothing else in cwd
    resolved = tomllib.loads((tmp_path / "out" / "study.toml").read_text(encoding="utf-8"))
    assert resolved["training"]["epochs"] == 1  # the override, recorded
    assert Path(resolved["data"]["cache_dir"]) == cache
    for arm in ("custom_cnn-none-full-s0", "custom_cnn-flip-full-s0"):
        folder = tmp_path / "out" / "arms" / arm
        assert list(folder.glob("events.out.tfevents.*")), f"no TensorBoard file in {arm}"
        card = torch.load(folder / "checkpoint.pt", weights_only=True)[MODEL_CARD_KEY]
        assert card["arm_id"] == arm and card["image_size"] == 72
    table = invoke("run", "tiny.toml", "--out", "out", "--set", "training.epochs=1",
                   "--cache-dir", str(cache))  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "custom_cnn-flip-full" in table.output and "Verdicts" in table.output
