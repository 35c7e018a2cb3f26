"""Attacks on leukaug, as a hostile or careless user would make them (issue 13).

Every test here is one attack, named after it, on tiny data; each must end in a
`LeukaugError` naming the culprit (exit status 2 through the CLI), never a traceback,
a silent acceptance or a hang. One section per area; the fixtures at the top of each
section build the attack material and are meant to be reused by new tests.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageFile

from leukaug.cli import main
from leukaug.core.errors import DataError
from leukaug.data.cache import load_or_build_cache
from leukaug.data.read import read_dataset

KAGGLE_TRAIN = Path("training_data", "fold_0")
KAGGLE_TEST = Path("validation_data", "C-NMC_test_prelim_phase_data")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Exit status of `leukaug ARGS` through the real entry point."""
    monkeypatch.setattr(sys, "argv", ["leukaug", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


# ============================================================================= bad data


def write_png_bomb(path: Path, side: int) -> Path:
    """A valid all-black 1-bit PNG of side x side pixels, a few KB to ~100 KB on disk,
    written under any name (a `.bmp` suffix does not stop PIL from reading it)."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def bomb_30000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reported attack: a 30000 x 30000 1-bit PNG saved as `.bmp` (~108 KB)."""
    return write_png_bomb(tmp_path_factory.mktemp("bomb") / "UID_1_1_1_all.bmp", 30000)


@pytest.fixture
def class_folders(tiny_manifest: pd.DataFrame, tmp_path: Path) -> Path:
    """A tiny one-folder-per-class data set (`all/`, `hem/`, 3 images each) under tmp_path/data."""
    root = tmp_path / "data"
    for label, folder in ((1, "all"), (0, "hem")):
        (root / folder).mkdir(parents=True)
        for path in tiny_manifest.loc[tiny_manifest["label"] == label, "path"].iloc[:3]:
            shutil.copy(path, root / folder / Path(path).name)
    return root


@pytest.fixture
def cnmc_copy(tiny_cnmc: Path, tmp_path: Path) -> Path:
    """A private, editable copy of the tiny Kaggle-layout C-NMC data set."""
    root = tmp_path / "C-NMC_Leukemia"
    shutil.copytree(tiny_cnmc, root)
    return root


@pytest.fixture
def tcia_copy(tiny_cnmc: Path, tmp_path: Path) -> Path:
    """The tiny data set in the TCIA layout (C-NMC_training_data/, test folder + labels)."""
    root = tmp_path / "tcia"
    root.mkdir()
    shutil.copytree(tiny_cnmc / "training_data", root / "C-NMC_training_data")
    shutil.copytree(tiny_cnmc / KAGGLE_TEST, root / KAGGLE_TEST.name)
    labels = "C-NMC_test_prelim_phase_data_labels.csv"
    shutil.copy(tiny_cnmc / "validation_data" / labels, root / labels)
    return root


@pytest.fixture
def outside(tiny_manifest: pd.DataFrame, tmp_path: Path) -> Path:
    """A folder outside every data root, holding one ALL and one HEM image (C-NMC names)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for label in (1, 0):
        path = Path(tiny_manifest.loc[tiny_manifest["label"] == label, "path"].iloc[0])
        shutil.copy(path, folder / path.name.replace("_1_", "_9_", 1))
    return folder


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts full decodes (`ImageFile.load`); reading a header does not decode."""
    calls = {"n": 0}
    real = ImageFile.ImageFile.load

    def counting(self: ImageFile.ImageFile):
        calls["n"] += 1
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return lambda: calls["n"]


def test_decompression_bomb_30000_px_bmp_refused_by_name_before_any_decoding(
    class_folders: Path, bomb_30000: Path, count_decodes: Callable[[], int]
) -> None:
    assert bomb_30000.stat().st_size < 200_000
    shutil.copy(bomb_30000, class_folders / "all" / "zz_bomb.bmp")
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match=r"zz_bomb\.bmp: the image is 30000 x 30000") as error:
        read_dataset(class_folders, positive_class="all")
    assert "over the limit of 50,000,000" in str(error.value)
    assert count_decodes() == 0  # refused from the header, before any image was decoded
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # PIL's own guard is back in place


def test_decompression_bomb_10000_px_exits_2_through_the_cli(
    class_folders: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_png_bomb(class_folders / "hem" / "big.bmp", 10000)
    status = run_cli(monkeypatch, "data", "inspect", str(class_folders), "--positive-class", "all")
    error = "".join(capsys.readouterr().err.split())  # the console may wrap long lines
    assert status == 2
    assert "big.bmp:" in error and "10000x10000" in error and "Traceback" not in error


def test_pixel_limit_is_a_keyword_of_the_reader_and_the_cache(
    class_folders: Path, tmp_path: Path, count_decodes: Callable[[], int]
) -> None:
    manifest = read_dataset(class_folders, positive_class="all", max_pixels=40 * 40).manifest
    with pytest.raises(DataError, match=r"40 x 40 = 1,600 pixels, over the limit of 1,599"):
        read_dataset(class_folders, positive_class="all", max_pixels=40 * 40 - 1)
    decoded = count_decodes()
    with pytest.raises(DataError, match=r"\.bmp: the image is 40 x 40"):
        load_or_build_cache(manifest, 16, tmp_path / "cache", max_pixels=1000)
    assert count_decodes() == decoded  # the cache checks every header before decoding
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_csv_row_with_more_fields_than_the_header(class_folders: Path) -> None:
    (class_folders / "labels.csv").write_text("path,label,subject\nall/x.bmp,1,P1,extra\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 2 has 4 fields, the header 3"):
        read_dataset(class_folders, labels_csv="labels.csv")


def test_csv_row_with_fewer_fields_than_the_header(class_folders: Path) -> None:
    image = next((class_folders / "all").iterdir()).relative_to(class_folders).as_posix()
    (class_folders / "labels.csv").write_text(f"path,label,subject\n{image},1,P1\n\n{image}\n")
    with pytest.raises(DataError, match=r"labels\.csv: line 4 has 1 fields, the header 3"):
        read_dataset(class_folders, labels_csv="labels.csv")


def test_cnmc_test_labels_row_with_more_fields(cnmc_copy: Path) -> None:
    labels = cnmc_copy / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    lines = labels.read_text().splitlines()
    lines[3] += ",surplus"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"_labels\.csv: line 4 has 4 fields, the header 3"):
        read_dataset(cnmc_copy)


def _link_message(link: Path, target: Path) -> str:
    return rf"{link}: a symbolic link to {target}.*outside the data root"


def test_symlinked_image_outside_the_root_kaggle(cnmc_copy: Path, outside: Path) -> None:
    target = next(outside.glob("*_all.bmp"))
    link = cnmc_copy / KAGGLE_TRAIN / "all" / target.name
    link.symlink_to(target)
    with pytest.raises(DataError, match=_link_message(link, target)):
        read_dataset(cnmc_copy)


def test_symlinked_class_folder_outside_the_root_kaggle(cnmc_copy: Path, outside: Path) -> None:
    class_dir = cnmc_copy / KAGGLE_TRAIN / "hem"
    shutil.rmtree(class_dir)
    for path in outside.glob("*_all.bmp"):
        path.unlink()
    class_dir.symlink_to(outside)
    with pytest.raises(DataError, match=_link_message(class_dir, outside)):
        read_dataset(cnmc_copy)


def test_symlinked_test_folder_outside_the_root_kaggle(cnmc_copy: Path, tmp_path: Path) -> None:
    test_dir = cnmc_copy / KAGGLE_TEST
    moved = shutil.move(test_dir, tmp_path / "moved_test")
    test_dir.symlink_to(moved)
    with pytest.raises(DataError, match=_link_message(test_dir, Path(moved))):
        read_dataset(cnmc_copy)


def test_symlinked_image_outside_the_root_tcia(tcia_copy: Path, outside: Path) -> None:
    target = next(outside.glob("*_hem.bmp"))
    link = tcia_copy / "C-NMC_training_data" / "fold_1" / "hem" / target.name
    link.symlink_to(target)
    with pytest.raises(DataError, match=_link_message(link, target)):
        read_dataset(tcia_copy)


def test_symlinked_fold_folder_outside_the_root_tcia(tcia_copy: Path, tmp_path: Path) -> None:
    fold = tcia_copy / "C-NMC_training_data" / "fold_2"
    moved = shutil.move(fold, tmp_path / "fold_2_elsewhere")
    fold.symlink_to(moved)
    with pytest.raises(DataError, match=_link_message(fold, Path(moved))):
        read_dataset(tcia_copy)


def test_symlinked_class_folder_outside_the_root_folders(
    class_folders: Path, outside: Path
) -> None:
    shutil.rmtree(class_folders / "hem")
    (class_folders / "hem").symlink_to(outside)
    with pytest.raises(DataError, match=_link_message(class_folders / "hem", outside)):
        read_dataset(class_folders, positive_class="all")


def test_symlinked_subject_folder_outside_the_root_folders(
    class_folders: Path, outside: Path
) -> None:
    link = class_folders / "all" / "P7"
    link.symlink_to(outside)
    with pytest.raises(DataError, match=_link_message(link, outside)):
        read_dataset(class_folders, positive_class="all")


def test_symlinked_image_outside_the_root_csv(class_folders: Path, outside: Path) -> None:
    target = next(outside.glob("*_all.bmp"))
    (class_folders / "linked.bmp").symlink_to(target)
    (class_folders / "labels.csv").write_text("path,label\nlinked.bmp,1\n")
    link = class_folders / "linked.bmp"
    with pytest.raises(DataError, match=rf"line 2: {_link_message(link, target)}"):
        read_dataset(class_folders, labels_csv="labels.csv")


def test_symlink_loop_in_a_class_folder(class_folders: Path) -> None:
    (class_folders / "all" / "again").symlink_to(class_folders / "all")
    with pytest.raises(DataError, match=r"again: a symbolic link to .* \(a loop\)"):
        read_dataset(class_folders, positive_class="all")


def test_symlinks_inside_the_root_are_followed(class_folders: Path) -> None:
    hidden = class_folders / ".store"  # folders starting with "." are not class folders
    shutil.move(class_folders / "hem", hidden)
    (class_folders / "hem").symlink_to(hidden)  # a class folder linked inside the root
    image = sorted((class_folders / "all").glob("*.bmp"))[0]
    (class_folders / ".images").mkdir()
    shutil.move(image, class_folders / ".images" / image.name)
    (class_folders / "all" / "P1").mkdir()
    (class_folders / "all" / "P1" / image.name).symlink_to(class_folders / ".images" / image.name)
    manifest = read_dataset(class_folders, positive_class="all").manifest
    assert len(manifest) == 6
    row = manifest.set_index("image_id").loc[f"all/P1/{image.name}"]
    assert row["subject"] == "P1" and row["path"] == str(class_folders / ".images" / image.name)
    assert (manifest["image_id"].str.startswith("hem/")).sum() == 3


# ============================================================ config and environment

ATTACK_SYNTH = {"size": 72, "subjects_per_class": 3, "test_subjects_per_class": 2,
                "cells_per_subject": 2}  # fmt: skip


def attack_study(
    folder: Path,
    data_dir: Path,
    *,
    cache_dir: Path | None = None,
    device: str = "cpu",
    description: str = "",
    extra: str = "",
    name: str = "attack.toml",
) -> Path:
    """A one-arm study (custom CNN, 72 px, 1 epoch) on the embedded data in `data_dir`."""
    import tomli_w

    table = {
        "study": {"name": "attack", "description": description, "device": device},
        "data": {"dir": str(data_dir), "cache_dir": str(cache_dir or folder / "cache"),
                 "synth": ATTACK_SYNTH},
        "training": {"image_size": 72, "epochs": 1, "batch_size": 16},
        "models": {"custom_cnn": {}},
        "executor": {"threads": 1},
    }  # fmt: skip
    path = folder / name
    path.write_text(tomli_w.dumps(table) + extra, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def attack_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded data of `attack_study`, generated once (a study reuses it)."""
    from leukaug.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("attack_data") / "embedded"
    generate(root, SynthConfig(**ATTACK_SYNTH))
    return root


def output(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """(stdout, stderr) with the console's line wrapping undone (all whitespace removed)."""
    captured = capsys.readouterr()
    return "".join(captured.out.split()), "".join(captured.err.split())


def squeeze(text: str | Path) -> str:
    return "".join(str(text).split())


def test_markup_in_a_study_key_is_printed_as_it_is(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = attack_study(tmp_path, attack_data)
    study.write_text(study.read_text().replace("[training]", '[training]\n"[/x]" = 1'))
    assert run_cli(monkeypatch, "run", str(study), "--out", str(tmp_path / "out")) == 2
    _, err = output(capsys)
    assert "Unknownkey'[/x]'" in err and "Traceback" not in err


def test_markup_in_a_data_label_is_printed_as_it_is(
    class_folders: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    image = next((class_folders / "all").iterdir()).relative_to(class_folders).as_posix()
    (class_folders / "labels.csv").write_text(f"path,label\n{image},[/x]\n")
    status = run_cli(
        monkeypatch, "data", "inspect", str(class_folders), "--labels-csv", "labels.csv"
    )
    _, err = output(capsys)
    assert status == 2 and "label'[/x]'isnot0or1" in err


def test_brackets_in_a_folder_name_survive_in_output_and_errors(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = tmp_path / "cnmc [copy]"
    shutil.copytree(tiny_cnmc, root)
    assert run_cli(monkeypatch, "data", "inspect", str(root), "--out", str(tmp_path / "sheet")) == 0
    out, _ = output(capsys)
    assert squeeze(root) in out
    assert run_cli(monkeypatch, "data", "inspect", str(root / "[red]nope")) == 2
    _, err = output(capsys)
    assert squeeze(root / "[red]nope") in err


@pytest.mark.slow  # trains an arm or more
def test_train_into_a_folder_with_brackets(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "arm [copy] [/x]"
    status = run_cli(monkeypatch, "train", "--data", str(tiny_cnmc), "--model", "resnet18",
                     "--image-size", "32", "--epochs", "1", "--out", str(out),
                     "--cache-dir", str(tmp_path / "cache"), "--device", "cpu")  # fmt: skip
    stdout, err = output(capsys)
    assert status == 0, err
    assert f"resultsin{squeeze(out)}" in stdout + err


def test_out_is_a_file(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = attack_study(tmp_path, attack_data)
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    for target in (out, out / "study"):
        assert run_cli(monkeypatch, "run", str(study), "--out", str(target)) == 2
        _, err = output(capsys)
        assert f"{squeeze(out)}isafile" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # checked before any cache was built


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (for root, who writes anywhere else: /sys)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_out_is_not_writable(
    tmp_path: Path, attack_data: Path, unwritable: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = attack_study(tmp_path, attack_data)
    for target in (unwritable, unwritable / "leukaug-attack" / "out"):
        assert run_cli(monkeypatch, "run", str(study), "--out", str(target)) == 2
        _, err = output(capsys)
        assert f"--out{squeeze(target)}isnotwritable" in err
    assert not (tmp_path / "cache").exists()


def test_study_file_not_in_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    study = tmp_path / "latin1.toml"
    study.write_bytes('[study]\ndescription = "Leucémie"\n[models.custom_cnn]\n'.encode("latin-1"))
    assert run_cli(monkeypatch, "run", str(study), "--out", str(tmp_path / "out")) == 2
    _, err = output(capsys)
    assert squeeze(study) in err and "notUTF-8" in err and "line2" in err
    assert not (tmp_path / "out").exists()


def test_train_out_is_a_file(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "arm.txt"
    out.write_text("")
    status = run_cli(monkeypatch, "train", "--data", str(tiny_cnmc), "--model", "resnet18",
                     "--image-size", "32", "--out", str(out), "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    _, err = output(capsys)
    assert status == 2 and f"{squeeze(out)}isafile" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_an_absent_accelerator_is_refused_before_running(
    device: str, tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    study = attack_study(tmp_path, attack_data, device=device)
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 2
    _, err = output(capsys)
    assert f"study.device='{device}',butthismachinehasno" in err
    assert not (tmp_path / "cache").exists() and not (out / "arms").exists()
    assert run_cli(monkeypatch, "run", str(attack_study(tmp_path, attack_data)), "--out", str(out),
                   "--device", device) == 2  # fmt: skip
    status = run_cli(monkeypatch, "train", "--data", str(attack_data), "--model", "custom_cnn",
                     "--image-size", "72", "--device", device, "--out", str(tmp_path / "arm"),
                     "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert status == 2 and not (tmp_path / "arm").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_no_report_path_is_printed_when_no_report_was_written(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import leukaug.study.jobs

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the accelerator vanished")

    monkeypatch.setattr(leukaug.study.jobs, "run_any_arm", broken)
    out = tmp_path / "out"
    assert (
        run_cli(monkeypatch, "run", str(attack_study(tmp_path, attack_data)), "--out", str(out))
        == 1
    )
    stdout, _ = output(capsys)
    assert "Report:" not in stdout and "nostudyreport" in stdout.replace(
        "noreport", "nostudyreport"
    )
    assert not (out / "report.html").exists()


def train_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """`leukaug train` of resnet18 at 32 px for one epoch (seconds on a CPU)."""
    return ["train", "--data", str(data), "--model", "resnet18", "--image-size", "32",
            "--epochs", "1", "--batch-size", "8", "--out", str(out), "--cache-dir", str(cache),
            "--device", "cpu", *extra]  # fmt: skip


@pytest.mark.slow  # trains an arm or more
def test_train_writes_nothing_until_valid_and_takes_force(
    tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out, cache = tmp_path / "arm", tmp_path / "cache"
    bad = train_args(
        tiny_cnmc, out, cache, "--pretrained", "--weights-path", str(tmp_path / "no.pt")
    )
    assert run_cli(monkeypatch, *bad) == 2
    assert not out.exists()  # no arm.json saying "running" to block the corrected command
    too_small = train_args(tiny_cnmc, out, cache, "--image-size", "16")  # the last one counts
    assert run_cli(monkeypatch, *too_small) == 2 and not out.exists()
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, out, cache)) == 0
    first = json.loads((out / "arm.json").read_text())
    capsys.readouterr()
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, out, cache, "--lr", "0.001")) == 2
    _, err = output(capsys)
    assert "--force" in err
    assert json.loads((out / "arm.json").read_text()) == first
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, out, cache, "--lr", "0.001", "--force")) == 0
    second = json.loads((out / "arm.json").read_text())
    assert second["status"] == "complete" and second["spec"]["lr"] == 0.001
    assert second["config_hash"] != first["config_hash"]


@pytest.mark.slow  # trains an arm or more
def test_train_takes_positive_class_and_labels_csv(
    class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = ("--split", "image", "--val-fraction", "0.34")
    out = tmp_path / "by_folder"
    assert run_cli(monkeypatch, *train_args(class_folders, out, tmp_path / "cache", "--positive-class",
                                            "all", *split)) == 0  # fmt: skip
    labels = pd.read_csv(out / "predictions.csv")
    assert set(labels["label"]) == {0, 1} and set(labels["split"]) == {"val"}
    rows = [f"{p.relative_to(class_folders).as_posix()},{int(p.parent.name == 'all')}"
            for p in sorted(class_folders.glob("*/*.bmp"))]  # fmt: skip
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "by_csv"
    assert run_cli(monkeypatch, *train_args(class_folders, out, tmp_path / "cache", "--labels-csv",
                                            str(tmp_path / "labels.csv"), *split)) == 0  # fmt: skip
    assert json.loads((out / "arm.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_a_description_with_control_characters_runs_resumes_and_reruns(
    tmp_path: Path, attack_data: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import tomllib

    description = "bell\a tab\t nul\x00 esc\x1b[31m del\x7f line\u2028end\nsecond line"
    study = attack_study(tmp_path, attack_data, description=description)
    out = tmp_path / "out"
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 0
    resolved = tomllib.loads((out / "study.toml").read_text(encoding="utf-8"))
    assert resolved["study"]["description"] == description
    capsys.readouterr()
    ring = "study.description=ring\a\x1b"  # a bare word: --set takes it as a string
    assert run_cli(monkeypatch, "run", str(study), "--out", str(out), "--set", ring) == 0
    header = (out / "study.toml").read_text(encoding="utf-8").splitlines()[0]
    assert header.endswith("--set study.description=ring\\x07\\x1b.")  # escaped comment
    assert run_cli(monkeypatch, "run", str(out / "study.toml"), "--out", str(out)) == 0
    stdout, _ = output(capsys)
    assert stdout.count("skipped(done)") == 2  # both reruns resumed the finished arm
    assert not (out / ".lock").exists() and not (out / ".lock.json").exists()


def test_a_raw_control_character_in_a_study_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    study = tmp_path / "raw.toml"
    study.write_text('[study]\ndescription = "bell\a"\n[models.custom_cnn]\n', encoding="utf-8")
    assert run_cli(monkeypatch, "run", str(study), "--out", str(tmp_path / "out")) == 2
    _, err = output(capsys)
    assert f"{squeeze(study)}:notvalidTOML" in err


def test_a_non_empty_data_dir_for_embedded_data_says_set_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data_dir = tmp_path / "mine"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("my own files")
    study, out = attack_study(tmp_path, data_dir), tmp_path / "out"
    for _ in range(2):  # the failed run released its lock
        assert run_cli(monkeypatch, "run", str(study), "--out", str(out)) == 2
        _, err = output(capsys)
        assert f"data.dir={squeeze(data_dir)}" in err and "setdata.dir" in err
        assert "--out" not in err
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]


# ============================================================================= faults


def not_weights(kind: str, path: Path) -> Path:
    """A file given as weights that is none: text, a truncated checkpoint, a pickled object."""
    import pickle

    import torch

    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "truncated":
        torch.save({"model": {"w": torch.zeros(64, 64)}}, path)
        path.write_bytes(path.read_bytes()[:700])
    else:  # an object the safe loader must refuse (the pickles of issue 13 run code)
        path.write_bytes(pickle.dumps(collections.OrderedDict(w=Path("/etc/passwd"))))
    return path


@pytest.mark.parametrize("kind", ["text", "truncated", "pickled_object"])
def test_init_from_a_file_that_is_not_weights(
    kind: str, tiny_cnmc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    bad = not_weights(kind, tmp_path / "weights [v2].pt")
    out = tmp_path / "arm"
    status = run_cli(
        monkeypatch, *train_args(tiny_cnmc, out, tmp_path / "cache", "--init-from", str(bad))
    )
    _, err = output(capsys)
    assert status == 2 and f"notaweightsfile:{squeeze(bad)}" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert not (out / "arm.json").exists()


def test_init_from_not_weights_in_a_study_arm_error_json(
    tiny_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    from leukaug.arm.spec import ArmSpec
    from leukaug.data.split import split_manifest
    from leukaug.study.jobs import ArmJob, StudyArm

    manifest = split_manifest(tiny_manifest, strategy="image")
    bad = not_weights("pickled_object", tmp_path / "source.pt")
    spec = ArmSpec(model="resnet18", image_size=32, epochs=1, init_from=str(bad))
    job = ArmJob(tmp_path / "study", manifest, tmp_path / "cache", None, "cpu", threads=1)
    outcome = job.run(StudyArm("a-s0", "a", spec, 32))
    error = (tmp_path / "study" / "arms" / "a-s0" / "error.json").read_text()
    assert outcome.failed and f"not a weights file: {bad}" in outcome.message
    assert "weights_only" not in error and "not a weights file" in error


# Item 11: a damaged resume file (last.pt, checkpoint.pt) is set aside, named in the log
# and in arm.json, and the arm restarts from its last good state: never the same failure again.
FAULT_ARM_SIZE = 72


@pytest.fixture(scope="module")
def fault_arm(tmp_path_factory: pytest.TempPathFactory, tiny_cnmc: Path):
    """(spec, manifest, cache, clean run's folder): a tiny two-epoch arm run once, uninterrupted."""
    from leukaug.arm.single import run_arm
    from leukaug.arm.spec import ArmSpec
    from leukaug.data.split import split_manifest

    manifest = split_manifest(read_dataset(tiny_cnmc).manifest, "subject", val_fraction=0.3)
    cache = load_or_build_cache(manifest, FAULT_ARM_SIZE, tmp_path_factory.mktemp("cache"))
    spec = ArmSpec(model="custom_cnn", image_size=FAULT_ARM_SIZE, epochs=2, batch_size=8, lr=1e-3)
    clean = tmp_path_factory.mktemp("clean") / "arm"
    run_arm(spec, manifest, cache, clean, arm_id="arm", name="arm", device="cpu")
    return spec, manifest, cache, clean


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["last.pt", "checkpoint.pt"])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_resume_file_is_set_aside_and_the_arm_restarts(
    fault_arm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, damaged: str, damage: str
) -> None:
    from leukaug.arm import loop as train
    from leukaug.arm.single import run_arm

    spec, manifest, cache, clean = fault_arm
    arm_dir = tmp_path / "arm"
    original = train.train_one_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_arm(spec, manifest, cache, arm_dir, arm_id="arm", name="arm", device="cpu")
    monkeypatch.setattr(train, "train_one_epoch", original)
    path = arm_dir / damaged
    path.write_bytes(
        path.read_bytes()[: len(path.read_bytes()) // 2] if damage == "truncated" else b""
    )

    with caplog.at_level("WARNING", logger="leukaug"):
        run_arm(spec, manifest, cache, arm_dir, arm_id="arm", name="arm", device="cpu")
    moved = list(arm_dir.glob(f"{damaged}.damaged-*"))
    assert len(moved) == 1 and str(path) in caplog.text and str(moved[0]) in caplog.text
    info = json.loads((arm_dir / "arm.json").read_text())
    assert info["status"] == "complete"
    assert [(r["path"], r["moved_to"]) for r in info["damaged_files"]] == [
        (str(path), str(moved[0]))
    ]
    for name in ("predictions.csv", "metrics.json"):  # restarted: the uninterrupted result
        assert (arm_dir / name).read_bytes() == (clean / name).read_bytes(), name
    run_arm(spec, manifest, cache, arm_dir, arm_id="arm", name="arm", device="cpu")  # no loop


def test_a_damaged_checkpoint_of_a_finished_arm_is_named_by_predict(
    fault_arm, tmp_path: Path
) -> None:
    from leukaug.trained.loader import load_trained_arm

    *_, clean = fault_arm
    arm_dir = tmp_path / "arm"
    shutil.copytree(clean, arm_dir)
    checkpoint = arm_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(DataError) as error:
        load_trained_arm(arm_dir)
    assert f"{checkpoint} is damaged" in str(error.value) and "rerun the arm" in str(error.value)


# ======================================================================== concurrency

HOLD_LOCKS = """
import contextlib, sys
from leukaug.core.lock import folder_lock

with contextlib.ExitStack() as stack:
    for folder in sys.argv[1:]:
        stack.enter_context(folder_lock(folder))
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def held_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(pid, root): another process holds the locks of root/study, root/arm, root/study/arms/a-s0."""
    root = tmp_path_factory.mktemp("held")
    folders = [root / "study", root / "arm", root / "study" / "arms" / "a-s0"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCKS, *map(str, folders)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    yield holder.pid, root
    holder.communicate("", timeout=60)


@pytest.mark.slow
def test_a_second_run_on_a_locked_study_folder_is_refused(
    held_folders: tuple[int, Path],
    tmp_path: Path,
    attack_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    pid, root = held_folders
    study = attack_study(tmp_path, attack_data)
    assert run_cli(monkeypatch, "run", str(study), "--out", str(root / "study")) == 2
    _, err = output(capsys)
    assert f"{squeeze(root / 'study')}isinuse" in err
    assert f"pid{pid}onhost{socket.gethostname()}" in err and "command:" in err
    assert not (tmp_path / "cache").exists() and not (root / "study" / "study.toml").exists()


@pytest.mark.slow
def test_train_into_a_locked_arm_folder_is_refused(
    held_folders: tuple[int, Path],
    tiny_cnmc: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    pid, root = held_folders
    assert run_cli(monkeypatch, *train_args(tiny_cnmc, root / "arm", tmp_path / "cache")) == 2
    _, err = output(capsys)
    assert f"pid{pid}onhost" in err and not (root / "arm" / "arm.json").exists()


@pytest.mark.slow
def test_an_arm_worker_leaves_a_locked_arm_folder_alone(
    held_folders: tuple[int, Path], tiny_manifest: pd.DataFrame, tmp_path: Path
) -> None:
    from leukaug.arm.spec import ArmSpec
    from leukaug.study.jobs import ArmJob, StudyArm

    pid, root = held_folders
    arm_dir = root / "study" / "arms" / "a-s0"
    (arm_dir / ".arm.json.x.tmp").write_text("the holder's write in progress")
    job = ArmJob(root / "study", tiny_manifest, tmp_path / "cache", None, "cpu", threads=1)
    outcome = job.run(StudyArm("a-s0", "a", ArmSpec(model="resnet18", image_size=32), 32))
    assert (
        outcome.failed and outcome.error_type == "FolderLocked" and f"pid {pid}" in outcome.message
    )
    assert (arm_dir / ".arm.json.x.tmp").exists() and not (arm_dir / "error.json").exists()
