"""Shared fixtures: a tiny synthetic C-NMC data set (Kaggle layout), generated once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from cli_tools import ATTACK_SYNTH
from leukaug.core.user_cache import CACHE_DIR_ENV
from leukaug.data.read import read_dataset
from leukaug.data.synth import SynthConfig, generate
from real_cells import REAL_CELLS_ENV, REPO, real_cells_folder

TINY_SYNTH = SynthConfig(
    size=40, subjects_per_class=3, test_subjects_per_class=2, cells_per_subject=4, seed=0
)


@pytest.fixture(autouse=True)
def _user_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Generated data and image caches go under pytest's temporary folder, never the user's
    cache (one folder per session, so tests share what they generate)."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path_factory.getbasetemp() / "leukaug-cache"))


@pytest.fixture(scope="session")
def real_cells() -> Path:
    """../shared/real-cells/cnmc-samples (read-only), or a skip naming where it was looked for."""
    folder = real_cells_folder()
    if folder is None:
        pytest.skip(f"no ../shared/real-cells/cnmc-samples beside {REPO}; set ${REAL_CELLS_ENV}")
    return folder


@pytest.fixture(scope="session")
def tiny_cnmc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a generated Kaggle-layout tree (40 px, 6 training + 4 test subjects, ~60 images).

    Session-scoped and shared: treat it as read-only (copy it with shutil.copytree to modify).
    """
    root = tmp_path_factory.mktemp("tiny_cnmc") / "C-NMC_Leukemia"
    generate(root, TINY_SYNTH)
    return root


@pytest.fixture(scope="session")
def _tiny_manifest_shared(tiny_cnmc: Path) -> pd.DataFrame:
    return read_dataset(tiny_cnmc).manifest


@pytest.fixture
def tiny_manifest(_tiny_manifest_shared: pd.DataFrame) -> pd.DataFrame:
    """The manifest of `tiny_cnmc` (ARCHITECTURE.md columns); a fresh copy per test."""
    return _tiny_manifest_shared.copy()


@pytest.fixture
def class_folders(tiny_manifest: pd.DataFrame, tmp_path: Path) -> Path:
    """A tiny one-folder-per-class data set (`all/`, `hem/`, 3 images each) under tmp_path/data."""
    root = tmp_path / "data"
    for label, folder in ((1, "all"), (0, "hem")):
        (root / folder).mkdir(parents=True)
        for path in tiny_manifest.loc[tiny_manifest["label"] == label, "path"].iloc[:3]:
            shutil.copy(path, root / folder / Path(path).name)
    return root


@pytest.fixture(scope="session")
def attack_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded data of `attack_study`, generated once (a study reuses it)."""
    from leukaug.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("attack_data") / "embedded"
    generate(root, SynthConfig(**ATTACK_SYNTH))
    return root
