"""Which arm is compared with which: each arm with the arm that differs from it only in its
augmentations (same model, regime, image size, epochs, initialisation, weighting, ...).

The study names the reference AUGMENTATION (`[study] baseline = "none"`); explicit
`[[study.pairs]]` add comparisons. The match is computed from the arms' recorded specs
(arm.json `spec`), so it holds for whatever the study runner wrote. Arms with no matched
reference are described, not tested.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leukaug.core.errors import ConfigError, DataError, unknown_name_message
from leukaug.stats.study_results import Study

# Spec fields that make up an arm's augmentation; every other field must match its reference.
AUGMENTATION_FIELDS = ("augmentations", "aug_p", "aug_mode")
UNAUGMENTED = "none"  # the augmentation of arms without any, when no study file labels it


@dataclass(frozen=True)
class Pair:
    """One tested comparison: arm name minus reference name."""

    arm: str
    reference: str
    source: str  # "matched" (same spec but augmentations) or "pair" (listed in the study file)


@dataclass
class ReferencePlan:
    """The comparisons of a study and what could not be compared, with the reasons."""

    baseline: str  # the reference augmentation, as the report names it
    pairs: list[Pair]
    references: list[str]  # arms with the reference augmentation
    untested: dict[str, str] = field(default_factory=dict)  # arm name -> why it is not tested
    notes: list[str] = field(default_factory=list)

    @property
    def used_references(self) -> list[str]:
        """The arms some tested arm is compared with, in order."""
        return list(dict.fromkeys(p.reference for p in self.pairs))

    @property
    def unpaired_references(self) -> list[str]:
        """Arms with the reference augmentation that no arm is compared with (described only)."""
        return [r for r in self.references if r not in self.used_references]


def _grid_labels(study: Study) -> dict[str, str]:
    """Arm name -> augmentation label, for names the study runner built as model-augmentation-regime."""
    config = study.config
    models, augmentations, regimes = (
        set(config.get(key, {}) or {}) for key in ("models", "augmentations", "regimes")
    )
    labels = {}
    for name in study.names():
        parts = name.split("-")
        if (
            len(parts) == 3
            and parts[0] in models
            and parts[1] in augmentations
            and parts[2] in regimes
        ):
            labels[name] = parts[1]
    return labels


def _identity(spec: dict[str, Any]) -> str:
    """The augmentation of a spec as text: no augmentations are one identity whatever p says."""
    if not spec.get("augmentations"):
        return UNAUGMENTED
    return json.dumps({k: spec.get(k) for k in AUGMENTATION_FIELDS}, sort_keys=True, default=str)


def augmentation_of(study: Study) -> dict[str, str]:
    """Arm name -> its augmentation: the study file's label, else the spec's augmentations."""
    labels = _grid_labels(study)
    return {
        name: labels.get(name) or _identity(study.arms_named(name)[0].spec)
        for name in study.names()
    }


def match_key(spec: dict[str, Any]) -> str:
    """Everything of a spec but its augmentations and seed; `init_from` as the source arm's name."""
    rest = {k: v for k, v in spec.items() if k not in (*AUGMENTATION_FIELDS, "seed")}
    if rest.get("init_from"):
        # .../arms/<name>-s<seed>/checkpoint.pt: matched arms start from the same arm (same seed).
        rest["init_from"] = re.sub(r"-s\d+$", "", Path(str(rest["init_from"])).parent.name)
    return json.dumps(rest, sort_keys=True, default=str)


def _resolve_baseline(
    study: Study, baseline: str | None, augmentation: dict[str, str]
) -> tuple[str, list[str]]:
    """The reference augmentation and notes; an arm name (older study files) is read as its augmentation.

    None: the augmentation of the unaugmented arms (their label in the study file, else "none").
    """
    if baseline is None:
        plain = {augmentation[n] for n in augmentation if not study.arms_named(n)[0].augmentations}
        return (plain.pop() if len(plain) == 1 else UNAUGMENTED), []
    known = set(study.config.get("augmentations") or {}) | set(augmentation.values())
    if baseline in known:
        return baseline, []
    if baseline in augmentation:
        meant = augmentation[baseline]
        return meant, [
            f"The baseline {baseline!r} is an arm name (an older study file); it is read as its augmentation "
            f"{meant!r}: every arm is compared with its matched arm that has this augmentation. "
            f'Write `baseline = "{meant}"` in [study] to say so.'
        ]
    raise ConfigError(
        "study.baseline names the reference augmentation: "
        + unknown_name_message("augmentation or arm", baseline, known | set(augmentation))
    )


def _expected_reference(name: str, label: str, baseline: str, study: Study) -> str | None:
    """The reference a grid arm would have (model-<baseline>-regime), whether or not it ran."""
    parts = name.split("-")
    if label in (study.config.get("augmentations") or {}) and len(parts) == 3:
        return f"{parts[0]}-{baseline}-{parts[2]}"
    return None


def _explicit_pairs(study: Study) -> list[dict[str, str]]:
    pairs = (study.config.get("study") or {}).get("pairs") or []
    if not isinstance(pairs, list) or not all(
        isinstance(p, dict) and set(p) == {"arm", "reference"} for p in pairs
    ):
        raise ConfigError(
            f"{study.directory / 'study.toml'}: [[study.pairs]] entries need exactly the keys "
            "'arm' and 'reference' (arm names without seed)."
        )
    return pairs


def plan_references(study: Study, baseline: str | None = None) -> ReferencePlan:
    """Match every arm with its reference (see the module docstring).

    `baseline` overrides the study file's `[study] baseline` (a reference augmentation, or an
    arm name read as its augmentation). Unknown names -> ConfigError with suggestions.
    """
    names = study.names()
    if not names:
        raise DataError(f"{study.directory} holds no completed arm (no arms/*/predictions.csv).")
    if baseline is None:
        configured = (study.config.get("study") or {}).get("baseline") or study.config.get(
            "baseline"
        )
        baseline = configured if isinstance(configured, str) else None
    augmentation = augmentation_of(study)
    wanted, notes = _resolve_baseline(study, baseline, augmentation)
    references = [n for n in names if augmentation[n] == wanted]
    keys = {n: match_key(study.arms_named(n)[0].spec) for n in names}
    pairs: list[Pair] = []
    untested: dict[str, str] = {}
    failed = {str(f.get("name")) for f in study.failed}
    for name in names:
        if name in references:
            continue
        matches = [r for r in references if keys[r] == keys[name]]
        if len(matches) == 1:
            pairs.append(Pair(name, matches[0], "matched"))
            continue
        expected = _expected_reference(name, augmentation[name], wanted, study)
        if matches:
            untested[name] = f"several arms could be its reference ({', '.join(matches)})"
        elif expected in failed:
            untested[name] = f"its reference {expected!r} failed"
        elif expected is not None and expected not in names:
            untested[name] = (
                f"its reference {expected!r} is not part of the study or did not finish"
            )
        else:
            untested[name] = (
                f"no arm with augmentation {wanted!r} differs from it only in its augmentations"
            )
    for index, pair in enumerate(_explicit_pairs(study)):
        for key in ("arm", "reference"):
            if pair[key] not in names:
                reason = "failed" if pair[key] in failed else "did not finish or is unknown"
                notes.append(
                    f"study.pairs[{index}] ({pair['arm']} vs {pair['reference']}) is not tested: "
                    f"arm {pair[key]!r} {reason}."
                )
                break
        else:
            if not any(p.arm == pair["arm"] and p.reference == pair["reference"] for p in pairs):
                pairs.append(Pair(pair["arm"], pair["reference"], "pair"))
                untested.pop(pair["arm"], None)
    if not references:
        notes.append(
            f"No completed arm has the reference augmentation {wanted!r}: only explicit pairs are tested."
        )
    return ReferencePlan(wanted, pairs, references, untested, notes)
