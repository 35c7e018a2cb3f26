"""The Python API (`leukaug.run_study`, `open_study`, `load_arm`): docs/python-api.md's
walk-through run on a tiny study, every input kind `Arm.predict` takes, the same numbers as
`leukaug predict`, clear errors, and `import leukaug` staying torch-free."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import leukaug
from leukaug.cli import app
from leukaug.core.errors import ConfigError, DataError
from leukaug.study.study_file import read_study_file
from study_fixtures import TINY_ARMS, write_tiny_study

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> dict:
    """The walk-through's code blocks run in order in one namespace, on a tiny study in
    place of the packaged demo (the first block's settings are replaced after it ran)."""
    work = tmp_path_factory.mktemp("api")
    study_file = write_tiny_study(work, data_dir=work / "data", cache_dir=work / "cache")
    blocks = CODE_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    namespace: dict = {}
    exec(compile(blocks[0], f"{DOC}:block1", "exec"), namespace)
    namespace.update(study_file=str(study_file), out=work / "study", overrides=[])
    for number, block in enumerate(blocks[1:], start=2):
        exec(compile(block, f"{DOC}:block{number}", "exec"), namespace)
    return namespace


def test_the_documented_walk_through_runs(walked):
    study = walked["study"]
    assert set(study.arms) == {f"{arm}-s0" for arm in TINY_ARMS}
    assert all(record.status == "complete" for record in study.arms.values())
    assert isinstance(study.verdicts, pd.DataFrame) and not study.verdicts.empty
    assert {"arm_id", "name", "seed", "split", "prob", "path"} <= set(study.predictions.columns)
    assert study.report.is_file()
    assert len(walked["from_files"]) == 4


def test_predict_gives_what_the_predict_command_writes_for_every_input_kind(walked, tmp_path):
    arm, paths = walked["arm"], walked["paths"]
    arm_dir = walked["study"].arms[walked["arm_id"]].path
    result = CliRunner().invoke(app, ["predict", str(arm_dir), *paths])
    assert result.exit_code == 0, result.output
    expected = pd.read_csv(io.StringIO(result.stdout))["prob"].to_numpy()
    np.testing.assert_allclose(arm.predict(paths), expected, atol=1e-7)
    arrays = walked["arrays"]
    one = arm.predict(arrays[0])  # a single (H, W, 3) image
    np.testing.assert_allclose(one, expected[:1], atol=1e-6)
    floats = arm.predict(arrays.astype(np.float32) / 255)  # float numpy, channels last
    np.testing.assert_allclose(floats, expected, atol=1e-6)
    channels_first = arm.predict(torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous())
    np.testing.assert_allclose(channels_first, expected, atol=1e-6)
    mixed = arm.predict([paths[0], Image.open(paths[1]), arrays[2], torch.from_numpy(arrays[3])])
    np.testing.assert_allclose(mixed, expected, atol=1e-6)
    assert (arm.predicted_all(expected) == (expected >= arm.threshold)).all()


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 8, 8), np.uint8), "colour channels|expected images shaped"),
        (np.full((1, 8, 8, 3), 2.0, np.float32), r"in \[0, 1\]"),
        (np.zeros((1, 8, 8, 3), np.int64), "uint8"),
        ([42], "int is not an image"),
        ([], "no images"),
        ("no/such/file.png", "no such file"),
    ],
    ids=["no-channels", "float-range", "int64", "not-an-image", "empty", "missing-file"],
)
def test_bad_images_name_what_was_expected(walked, images, message):
    with pytest.raises(DataError, match=message):
        walked["arm"].predict(images)


def test_open_study_and_run_study_errors(walked, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        leukaug.open_study(tmp_path / "nope")
    with pytest.raises(DataError, match="no arms/ folder"):
        leukaug.open_study(tmp_path)
    config = read_study_file(walked["study_file"])
    with pytest.raises(ConfigError, match="StudyConfig"):
        leukaug.run_study(config, out=walked["out"], overrides=["training.epochs=2"])
    again = leukaug.run_study(config, out=walked["out"])  # finished: resumes, trains nothing
    pd.testing.assert_frame_equal(again.verdicts, walked["study"].verdicts)


def test_import_leukaug_stays_torch_free_until_the_api_is_used():
    code = (
        "import sys, leukaug\n"
        "assert 'torch' not in sys.modules, 'torch imported by import leukaug'\n"
        "assert callable(leukaug.load_arm) and 'torch' in sys.modules\n"
        "assert {'run_study', 'open_study', 'load_arm'} <= set(dir(leukaug))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = leukaug.nope
