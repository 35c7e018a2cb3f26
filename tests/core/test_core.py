"""Tests for the shared core: registry, atomic writes, error messages, CLI exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from leukaug.core import atomic
from leukaug.core.errors import ConfigError, unknown_name_message
from leukaug.core.registry import Registry


def test_registry_registers_and_looks_up() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("alpha")(1)
    registry.add("beta", 2)
    assert registry.get("alpha") == 1
    assert registry.names() == ["alpha", "beta"]
    assert "beta" in registry


def test_registry_rejects_duplicates() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("alpha", 2)


def test_unknown_name_suggests_close_matches() -> None:
    registry: Registry[int] = Registry("augmentation")
    for name in ("flip", "hflip", "rotate"):
        registry.add(name, 0)
    with pytest.raises(ConfigError) as caught:
        registry.get("flp")
    message = str(caught.value)
    assert "Unknown augmentation 'flp'" in message
    assert "Did you mean 'flip'" in message
    assert "Valid names: flip, hflip, rotate" in message


def test_unknown_name_without_close_match_lists_valid_names() -> None:
    message = unknown_name_message("model", "zzz", ["resnet50", "custom_cnn"])
    assert "Did you mean" not in message
    assert message.endswith("Valid names: custom_cnn, resnet50.")


def test_atomic_writes_create_files(tmp_path) -> None:
    atomic.write_text(tmp_path / "a" / "b.txt", "hello")
    atomic.write_json(tmp_path / "c.json", {"x": 1})
    atomic.write_csv(tmp_path / "d.csv", pd.DataFrame({"image_id": ["1.bmp"], "prob": [0.5]}))
    assert (tmp_path / "a" / "b.txt").read_text() == "hello"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1}
    assert pd.read_csv(tmp_path / "d.csv").to_dict("list") == {"image_id": ["1.bmp"], "prob": [0.5]}


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path) -> None:
    target = tmp_path / "result.csv"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as handle:
        handle.write("half-written")
        raise RuntimeError("crash in the middle")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]


def test_cli_help_and_unknown_command_exit_codes() -> None:
    ok = subprocess.run([sys.executable, "-m", "leukaug", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0
    assert "leukaug" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "leukaug", "nosuch"], capture_output=True, text=True
    )
    assert bad.returncode == 2


def test_read_json_returns_none_when_missing_and_names_a_corrupt_file(tmp_path) -> None:
    from leukaug.core.errors import DataError

    assert atomic.read_json(tmp_path / "absent.json") is None
    atomic.write_json(tmp_path / "ok.json", {"status": "complete"})
    assert atomic.read_json(tmp_path / "ok.json") == {"status": "complete"}
    (tmp_path / "bad.json").write_text("{half")
    with pytest.raises(DataError, match=r"bad\.json is not valid JSON"):
        atomic.read_json(tmp_path / "bad.json")
