"""What the synthetic data generator (`leukaug.data.synth`) is asked for: `SynthConfig`.

Plain settings and their checks, without numpy, so the study file's [data.synth] table is
validated without loading the generator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from leukaug.core.errors import ConfigError

MARKER_FILE = "SYNTHETIC_DATA.txt"  # in the root of every generated data set

# Subject-level batch effects: standard deviations of log-scale stain perturbations.
TRAIN_STAIN_SPREAD = 0.10
TEST_STAIN_SPREAD = 0.28  # default; wider on the test subjects: the domain shift
# Settings added after data sets had been generated, with their defaults: left out of a
# data set's identity at the default, so older data sets keep their folder and record.
ADDED_SETTINGS = {"test_stain_shift_fraction": 1.0}


def settings_identity(settings: dict[str, Any]) -> dict[str, Any]:
    """Generator settings as they identify a data set (ADDED_SETTINGS at default left out)."""
    return {
        name: value
        for name, value in settings.items()
        if name not in ADDED_SETTINGS or value != ADDED_SETTINGS[name]
    }


@dataclass(frozen=True)
class SynthConfig:
    """What `leukaug synth` generates. ALL subjects get twice the cells of HEM subjects (~2:1)."""

    size: int = 450
    subjects_per_class: int = 6
    test_subjects_per_class: int = 4
    cells_per_subject: int = 20
    seed: int = 0
    difficulty: float = 0.5
    test_stain_spread: float = TEST_STAIN_SPREAD  # log-scale SD of the test subjects' stain
    # one batch with another hue: every test subject's log stain vectors move by this times
    # STAIN_SHIFT_DIRECTION (the training subjects' log-scale SD is 0.10)
    test_stain_shift: float = 0.0
    # the share of each class's test subjects in that batch (the first ones; 1.0: all), so
    # one test set holds patients from both batches
    test_stain_shift_fraction: float = 1.0

    def validate(self) -> None:
        if not 16 <= self.size <= 2048:
            raise ConfigError(f"--size {self.size} is out of range; use 16 to 2048 pixels.")
        if self.subjects_per_class < 2 or self.test_subjects_per_class < 1:
            raise ConfigError(
                "Need at least 2 training subjects and 1 test subject per class "
                f"(got {self.subjects_per_class} and {self.test_subjects_per_class}); "
                "a subject-level validation split needs 2 or more."
            )
        if self.cells_per_subject < 1:
            raise ConfigError(
                f"--cells-per-subject must be at least 1, got {self.cells_per_subject}."
            )
        if not 0.0 <= self.difficulty <= 1.0:
            raise ConfigError(
                f"--difficulty {self.difficulty} is out of range; use 0 (separable) to 1 (no signal)."
            )
        if not 0.0 <= self.test_stain_spread <= 1.0:
            raise ConfigError(
                f"test_stain_spread {self.test_stain_spread} is out of range; use 0 to 1 "
                f"(the training subjects' is {TRAIN_STAIN_SPREAD})."
            )
        if not -1.0 <= self.test_stain_shift <= 1.0:
            raise ConfigError(
                f"test_stain_shift {self.test_stain_shift} is out of range; use -1 to 1 "
                "(a log-scale shift of the test subjects' stain hue, 0 for none)."
            )
        if not 0.0 <= self.test_stain_shift_fraction <= 1.0:
            raise ConfigError(
                f"test_stain_shift_fraction {self.test_stain_shift_fraction} is out of range; "
                "use 0 to 1 (the share of each class's test subjects in the shifted batch)."
            )

    def identity(self) -> dict[str, Any]:
        """The settings that identify the data set these generate (`settings_identity`)."""
        return settings_identity(asdict(self))

    def shifted(self, split: str, index: int) -> bool:
        """Whether the `index`-th subject of its class and split is in the shifted batch."""
        shifted_per_class = round(self.test_stain_shift_fraction * self.test_subjects_per_class)
        return split == "test" and index < shifted_per_class
