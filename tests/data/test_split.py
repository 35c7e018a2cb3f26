"""Splits: subject-level by default (no subject in two splits), image-level with a warning."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from leukaug.core.errors import ConfigError, DataError
from leukaug.data.split import check_no_subject_leak, split_manifest, split_report


def _subjects(frame: pd.DataFrame, split: str) -> set[str]:
    return set(frame.loc[frame["split"] == split, "subject"])


def test_subject_split_has_no_leak_and_keeps_the_test_set(tiny_manifest: pd.DataFrame) -> None:
    frame = split_manifest(tiny_manifest, strategy="subject", val_fraction=0.2, seed=0)
    assert len(frame) == len(tiny_manifest) and "split" not in tiny_manifest.columns
    assert set(frame["split"]) == {"train", "val", "test"}
    assert ((frame["split"] == "test") == (frame["source_split"] == "test")).all()
    train, val, test = (_subjects(frame, s) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    for label in (0, 1):  # stratified: every class has validation subjects
        assert ((frame["split"] == "val") & (frame["label"] == label)).any()
    check_no_subject_leak(frame)


def test_subject_split_is_seeded(tiny_manifest: pd.DataFrame) -> None:
    first = split_manifest(tiny_manifest, seed=1)["split"]
    assert first.equals(split_manifest(tiny_manifest, seed=1)["split"])
    others = [split_manifest(tiny_manifest, seed=s)["split"] for s in range(2, 8)]
    assert any(not first.equals(other) for other in others)


def test_image_split_warns_about_leakage(tiny_manifest: pd.DataFrame) -> None:
    with pytest.warns(UserWarning, match=r"subject\(s\) have cells in more than one split"):
        frame = split_manifest(tiny_manifest, strategy="image", val_fraction=0.3, seed=0)
    report = split_report(frame, strategy="image")
    assert report.leaked_subjects and report.warnings
    with pytest.raises(DataError, match="span two splits"):
        check_no_subject_leak(frame)


def test_report_counts_subjects_and_images_per_class(tiny_manifest: pd.DataFrame) -> None:
    frame = split_manifest(tiny_manifest)
    report = split_report(frame)
    counts = report.counts.set_index(["split", "class"])
    assert counts["images"].sum() == len(tiny_manifest)
    assert list(report.counts.columns) == ["split", "class", "subjects", "images"]
    expected = frame.groupby(["split", "label"])["subject"].nunique()
    assert counts.loc[("val", "ALL"), "subjects"] == expected[("val", 1)]
    assert (
        counts.loc[("test", "HEM"), "images"]
        == ((frame["split"] == "test") & (frame["label"] == 0)).sum()
    )
    assert report.leaked_subjects == []


def test_bad_arguments(tiny_manifest: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="unknown split strategy"):
        split_manifest(tiny_manifest, strategy="patient")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        split_manifest(tiny_manifest, val_fraction=1.0)
    one_subject = tiny_manifest[tiny_manifest["subject"].isin(["1", "H4", "H5"])]
    with pytest.raises(DataError, match="class ALL has only 1 training subject"):
        split_manifest(one_subject)


def test_subject_in_train_and_test_sources_is_refused(tiny_manifest: pd.DataFrame) -> None:
    frame = tiny_manifest.copy()
    test_row = frame.index[frame["source_split"] == "test"][0]
    train_subject = frame.loc[
        (frame["source_split"] == "train") & (frame["label"] == frame.loc[test_row, "label"]),
        "subject",
    ].iloc[0]
    frame.loc[test_row, "subject"] = train_subject
    with pytest.raises(DataError, match="span two splits"):
        split_manifest(frame)


def _without_test_set(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.assign(source_split="train")


def test_test_fraction_holds_out_a_stratified_subject_level_test_set(
    tiny_manifest: pd.DataFrame,
) -> None:
    manifest = _without_test_set(tiny_manifest)
    frame = split_manifest(manifest, val_fraction=0.25, seed=3, test_fraction=0.4)
    train, val, test = (_subjects(frame, s) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    for label in (0, 1):  # each class: 5 subjects, 2 of them (0.4) held out
        part = frame[frame["label"] == label]
        assert part.loc[part["split"] == "test", "subject"].nunique() == 2
    again = split_manifest(manifest, val_fraction=0.25, seed=3, test_fraction=0.4)
    assert frame["split"].equals(again["split"])  # fixed by the seed
    other = split_manifest(manifest, val_fraction=0.25, seed=4, test_fraction=0.4)
    assert not frame["split"].equals(other["split"])


def test_test_fraction_is_refused_when_the_data_have_a_test_set(
    tiny_manifest: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match="already has a test set"):
        split_manifest(tiny_manifest, test_fraction=0.3)
    with pytest.raises(ConfigError, match=r"test_fraction 1\.5 must be between 0 and 1"):
        split_manifest(_without_test_set(tiny_manifest), test_fraction=1.5)


def test_test_fraction_without_subject_ids_is_image_level_with_a_warning(
    tiny_manifest: pd.DataFrame,
) -> None:
    manifest = _without_test_set(tiny_manifest).assign(subject=tiny_manifest["image_id"])
    with pytest.warns(UserWarning, match="no subject ids"):
        frame = split_manifest(manifest, test_fraction=0.3)
    for label in (0, 1):
        part = frame[frame["label"] == label]
        share = (part["split"] == "test").mean()
        assert 0.2 < share < 0.4


def test_image_split_without_shared_subjects_does_not_warn(tiny_manifest: pd.DataFrame) -> None:
    manifest = tiny_manifest.assign(subject=tiny_manifest["image_id"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = split_manifest(manifest, strategy="image", val_fraction=0.3)
    assert split_report(frame, strategy="image").warnings == []


def test_a_source_validation_set_is_kept(tiny_manifest: pd.DataFrame) -> None:
    manifest = tiny_manifest.copy()
    chosen = manifest["subject"].isin(["2", "H5"]) & (manifest["source_split"] == "train")
    manifest.loc[chosen, "source_split"] = "val"
    frame = split_manifest(manifest, seed=7)
    assert ((frame["split"] == "val") == chosen).all()
