"""Attacks on leukaug through its data (bad images, CSVs, symbolic links),
as a hostile or careless user would make them (issue 13).

Every test here is one attack, named after it, on tiny data; each must end in a
`LeukaugError` naming the culprit (exit status 2 through the CLI), never a traceback,
a silent acceptance or a hang. The fixtures at the top build the attack material and are
meant to be reused by new tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageFile

from cli_tools import run_cli
from leukaug.core.errors import DataError
from leukaug.data.cache import load_or_build_cache
from leukaug.data.read import read_dataset

KAGGLE_TRAIN = Path("training_data", "fold_0")
KAGGLE_TEST = Path("validation_data", "C-NMC_test_prelim_phase_data")


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


# ============================================================================= odd files (issue 22)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    with contextlib.chdir(path.parent):  # a relative name: AF_UNIX paths hold 108 bytes
        server.bind(path.name)  # the socket file stays after the socket is closed
    server.close()


def _self_link(path: Path) -> None:
    path.symlink_to(path.name)  # an image name linked to itself: a loop


def _broken_link(path: Path) -> None:
    path.symlink_to("no_such_image.bmp")


ODD_FILES = {
    "a FIFO (named pipe)": _fifo,
    "a socket": _socket,
    "a symbolic link loop": _self_link,
    "a broken symbolic link": _broken_link,
}


@pytest.mark.parametrize("reason", list(ODD_FILES))
def test_an_odd_file_named_like_an_image_is_skipped_and_listed(
    reason: str, cnmc_copy: Path
) -> None:
    """Issue 22: a FIFO was dropped silently, a link loop gave a RuntimeError traceback; a
    FIFO that were opened would block the read forever."""
    odd = cnmc_copy / KAGGLE_TRAIN / "all" / "UID_99_1_1_all.bmp"
    ODD_FILES[reason](odd)
    dataset = read_dataset(cnmc_copy)
    name = (KAGGLE_TRAIN / "all" / odd.name).as_posix()
    assert name in dataset.ignored and name not in set(dataset.manifest["image_id"])
    assert any(f"{name} ({reason})" in note for note in dataset.notes)


def test_a_device_named_like_an_image_is_skipped_and_listed(cnmc_copy: Path) -> None:
    """A link to a device (/dev/zero would feed a reader forever); never opened, not even
    to say its target is outside the data root."""
    odd = cnmc_copy / KAGGLE_TRAIN / "all" / "UID_99_1_1_all.bmp"
    odd.symlink_to("/dev/zero")
    dataset = read_dataset(cnmc_copy)
    assert any("UID_99_1_1_all.bmp (a device)" in note for note in dataset.notes)


def test_an_unreadable_image_is_skipped_and_listed(class_folders: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permissions (chmod 000 cannot stop it)")
    image = sorted((class_folders / "all").glob("*.bmp"))[0]
    image.chmod(0)
    try:
        dataset = read_dataset(class_folders, positive_class="all")
    finally:
        image.chmod(0o644)
    assert any(f"all/{image.name} (unreadable" in note for note in dataset.notes)
    assert len(dataset.manifest) == 5


@pytest.mark.parametrize("reason", ["a FIFO (named pipe)", "a symbolic link loop"])
def test_a_csv_row_naming_an_odd_file_is_refused_by_name(reason: str, class_folders: Path) -> None:
    ODD_FILES[reason](class_folders / "odd.bmp")
    (class_folders / "labels.csv").write_text("path,label\nodd.bmp,1\n")
    with pytest.raises(DataError, match=rf"line 2: 'odd.bmp' is {re.escape(reason)}, not an"):
        read_dataset(class_folders, labels_csv="labels.csv")


def test_a_fifo_without_an_image_suffix_is_never_opened(class_folders: Path) -> None:
    """Images are also found by content (their first bytes); a FIFO is never opened to
    look (the read would block forever)."""
    os.mkfifo(class_folders / "all" / "pipe")
    dataset = read_dataset(class_folders, positive_class="all")
    assert any("all/pipe (a FIFO (named pipe))" in note for note in dataset.notes)
