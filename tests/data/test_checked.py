"""The record of checked images (data/checked.py): an unchanged data set is not decoded
again, and any change to a file (content, truncation, permissions) gets it checked anew."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leukaug.core.errors import DataError
from leukaug.data import cache, read
from leukaug.data.checked import record_path
from leukaug.data.images import MAX_PIXELS
from leukaug.data.read import read_dataset


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path `read_dataset` fully decodes, in order."""
    seen: list[str] = []
    real_open = read.open_rgb

    def counting(path, max_pixels=MAX_PIXELS):
        seen.append(str(path))
        return real_open(path, max_pixels)

    monkeypatch.setattr(read, "open_rgb", counting)
    return seen


def _record(tmp_path: Path, root: Path) -> Path:
    return record_path(tmp_path / "cache", root, MAX_PIXELS)


def test_an_unchanged_data_set_is_not_decoded_again(
    cnmc_copy: Path, tmp_path: Path, decoded: list[str]
) -> None:
    record = _record(tmp_path, cnmc_copy)
    first = read_dataset(cnmc_copy, check_record=record)
    assert len(decoded) == len(first.manifest) and record.is_file()
    decoded.clear()
    again = read_dataset(cnmc_copy, check_record=record)
    assert decoded == []
    assert again.manifest.equals(first.manifest)
    assert (again.modes, again.sizes, again.conversions, again.notes) == (
        first.modes,
        first.sizes,
        first.conversions,
        first.notes,
    )


def test_without_a_record_every_image_is_decoded(
    cnmc_copy: Path, tmp_path: Path, decoded: list[str]
) -> None:
    read_dataset(cnmc_copy, check_record=_record(tmp_path, cnmc_copy))
    decoded.clear()
    dataset = read_dataset(cnmc_copy)
    assert len(decoded) == len(dataset.manifest)


def test_a_truncated_image_is_checked_again_and_refused(cnmc_copy: Path, tmp_path: Path) -> None:
    record = _record(tmp_path, cnmc_copy)
    read_dataset(cnmc_copy, check_record=record)
    bad = sorted((cnmc_copy / "training_data" / "fold_1" / "hem").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:-500])
    with pytest.raises(DataError, match=rf"{bad.name}: .*truncated"):
        read_dataset(cnmc_copy, check_record=record)


def test_a_file_rewritten_with_its_old_size_and_time_is_checked_again(
    cnmc_copy: Path, tmp_path: Path, decoded: list[str]
) -> None:
    """The change time (which no user can set back) catches an edit that kept the size and
    the modification time."""
    record = _record(tmp_path, cnmc_copy)
    read_dataset(cnmc_copy, check_record=record)
    edited = sorted((cnmc_copy / "training_data" / "fold_0" / "all").iterdir())[0]
    before = edited.stat()
    edited.write_bytes(edited.read_bytes())
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    decoded.clear()
    read_dataset(cnmc_copy, check_record=record)
    assert decoded == [os.path.realpath(edited)]


def test_a_damaged_record_is_ignored(cnmc_copy: Path, tmp_path: Path, decoded: list[str]) -> None:
    record = _record(tmp_path, cnmc_copy)
    record.parent.mkdir(parents=True)
    record.write_text('{"format": 1, "images": {"x": "not an entry"}', encoding="utf-8")
    dataset = read_dataset(cnmc_copy, check_record=record)
    assert len(decoded) == len(dataset.manifest)
    decoded.clear()
    read_dataset(cnmc_copy, check_record=record)  # rewritten whole after the full check
    assert decoded == []


def test_an_unwritable_record_only_costs_the_shortcut(
    cnmc_copy: Path, tmp_path: Path, decoded: list[str]
) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be", encoding="utf-8")
    record = _record(tmp_path, cnmc_copy)
    dataset = read_dataset(cnmc_copy, check_record=record)
    assert len(dataset.manifest) == len(decoded) and not record.exists()


def test_the_image_cache_key_comes_from_the_record_and_matches_the_bytes(
    cnmc_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = _record(tmp_path, cnmc_copy)
    first = read_dataset(cnmc_copy, check_record=record)
    monkeypatch.setattr(cache, "_DIGESTS", {})
    from_bytes = cache.fingerprint(first.manifest, 32)
    monkeypatch.setattr(cache, "_DIGESTS", {})  # a new process: only the record knows them
    again = read_dataset(cnmc_copy, check_record=record)

    def no_second_read(*args, **kwargs):
        raise AssertionError(f"{args[0]} was read again to compute the cache key")

    monkeypatch.setattr(cache, "open", no_second_read, raising=False)
    assert cache.fingerprint(again.manifest, 32) == from_bytes
