"""The study files shipped inside the package (`leukaug/studies/*.toml`), and what a study
argument means: an existing file, else the name of a packaged study (`leukaug run paper`,
`leukaug.run_study("paper", out=...)`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from leukaug.core.errors import ConfigError, unknown_name_message

STUDY_SUFFIX = ".toml"


def packaged_studies() -> dict[str, Path]:
    """Name (file stem) -> path of every study file in the package's `studies/` folder."""
    folder = resources.files("leukaug") / "studies"
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(STUDY_SUFFIX)
    }


def packaged_study(name: str) -> Path:
    """The packaged study called `name` (`paper` or `paper.toml`), else a ConfigError."""
    studies = packaged_studies()
    stem = name.removesuffix(STUDY_SUFFIX)
    if stem not in studies:
        raise ConfigError(
            unknown_name_message("packaged study", name, studies)
            + " (`leukaug studies list` shows them)"
        )
    return studies[stem]


def resolve_study(study: str) -> Path:
    """A study argument: an existing file, else the name of a packaged study."""
    path = Path(study)
    if path.is_file():
        return path
    if path.suffix == STUDY_SUFFIX and (path.parent != Path(".") or path.exists()):
        raise ConfigError(f"Study file {study!r} does not exist.")
    try:
        return packaged_study(study)
    except ConfigError as error:
        raise ConfigError(
            f"{study!r} is neither a study file nor a packaged study: {error}"
        ) from None
