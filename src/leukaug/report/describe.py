"""Readable text for the report's Data set and Configuration sections: never a raw dict on the page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leukaug.report.tables import DASH, Table

DATASET_LABELS = {
    "root": "Data root",
    "layout": "Layout",
    "synthetic": "Synthetic",
    "synth": "Generator settings",
    "split": "Split",
    "image_sizes": "Image sizes (px)",
    "ignored": "Non-image files skipped",
    "conversions": "Image mode conversions",
    "split_fingerprint": "Split fingerprint",
    "cv": "Cross-validation",
}
# dataset.json entries the page leaves out: counts are a table of their own; the subjects of
# each cross-validation fold can run to thousands of ids (they stay in dataset.json)
NOT_SHOWN = ("counts", "fold_subjects")
NOT_A_SETTING = ("config_hash",)  # identifies an arm's settings; it is not one of them


def plain(value: Any) -> str:
    """A value in words: yes/no, "none" for missing or empty, "key: value" pairs for a mapping."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return ", ".join(f"{_words(str(k))}: {plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) if value else "none"
    return str(value)


def _words(key: str) -> str:
    return key.replace("_", " ")


def dataset_lines(dataset: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines of dataset.json, `NOT_SHOWN` left out."""
    known = [key for key in DATASET_LABELS if key in dataset]
    others = sorted(key for key in dataset if key not in DATASET_LABELS and key not in NOT_SHOWN)
    return [
        (DATASET_LABELS.get(key, _words(key).capitalize()), plain(dataset[key]))
        for key in [*known, *others]
    ]


def counts_table(counts: Any) -> Table | None:
    """Images and subjects per split and class from counts[split][class] = {images, subjects}."""
    if not isinstance(counts, Mapping):
        return None
    rows = []
    for split, classes in counts.items():
        if not isinstance(classes, Mapping):
            return None
        for name, numbers in classes.items():
            if not isinstance(numbers, Mapping):
                return None
            rows.append(
                [
                    str(split),
                    str(name),
                    plain(numbers.get("images", DASH)),
                    plain(numbers.get("subjects", DASH)),
                ]
            )
    return Table(
        "dataset-counts",
        "Images and subjects per split and class.",
        ["Split", "Class", "Images", "Subjects"],
        rows,
        text_columns=2,
    )


def augmentations_text(augmentations: list[Any]) -> str:
    """'flip + rotate(degrees=180)', or 'none'."""
    if not augmentations:
        return "none"
    parts = []
    for item in augmentations:
        if isinstance(item, Mapping) and "name" in item:
            params = item.get("params") or {}
            inner = ", ".join(f"{k}={plain(v)}" for k, v in params.items())
            parts.append(f"{item['name']}({inner})" if inner else str(item["name"]))
        else:
            parts.append(plain(item))
    return " + ".join(parts)


def flat_settings(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """One readable string per setting; nested mappings become dotted keys."""
    flat = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if key == "augmentations" and isinstance(value, list):
            flat[name] = augmentations_text(value)
        elif isinstance(value, Mapping) and value:
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = plain(value)
    return flat


@dataclass
class ArmSettings:
    """What differs between arms (a table), what they share, and each arm's full JSON."""

    differing: Table
    common: list[tuple[str, str]]
    full: list[tuple[str, str]]


def arm_settings(specs: Mapping[str, Mapping[str, Any]]) -> ArmSettings | None:
    """Columns = settings whose value is not the same for every arm; rows = arms."""
    if not specs:
        return None
    settings = {}
    for arm_id, entry in specs.items():
        spec = entry.get("spec")
        flat = flat_settings(spec) if isinstance(spec, Mapping) else {}
        identity = {k: v for k, v in entry.items() if k != "spec" and k not in NOT_A_SETTING}
        settings[arm_id] = {**flat, **flat_settings(identity)}
    every_key = dict.fromkeys(key for flat in settings.values() for key in flat)
    keys = [key for key in every_key if key != "name"]
    values = {key: [flat.get(key, DASH) for flat in settings.values()] for key in keys}
    differing = [key for key in keys if len(set(values[key])) > 1]
    common = [(key, values[key][0]) for key in keys if key not in differing]
    rows = [
        [
            arm_id,
            settings[arm_id].get("name", DASH),
            *[settings[arm_id].get(k, DASH) for k in differing],
        ]
        for arm_id in settings
    ]
    table = Table(
        "arm-settings",
        "Settings that differ between arms (one row per arm).",
        ["Arm id", "Name", *differing],
        rows,
        text_columns=2 + len(differing),
    )
    full = [
        (arm_id, json.dumps(entry, indent=2, sort_keys=True, default=str))
        for arm_id, entry in specs.items()
    ]
    return ArmSettings(table, common, full)
