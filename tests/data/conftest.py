"""Fixtures shared by the data tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def cnmc_copy(tiny_cnmc: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the tiny Kaggle-layout C-NMC data set."""
    root = tmp_path / "C-NMC_Leukemia"
    shutil.copytree(tiny_cnmc, root)
    return root
