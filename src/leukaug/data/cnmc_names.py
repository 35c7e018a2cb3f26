"""The C-NMC 2019 file-name grammar: `UID_<subject>_<image>_<cell>_all.bmp` (ALL) and
`UID_H<subject>_<image>_<cell>_hem.bmp` (HEM). Used by the C-NMC readers and, to find
subjects, by the generic class-folder reader.
"""

from __future__ import annotations

import re
from pathlib import Path

from leukaug import LABEL_ALL, LABEL_HEM
from leukaug.core.errors import DataError

# Any image suffix: real downloads hold BMP data under other names (the reader goes by content).
CNMC_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)\.(bmp|png|jpe?g|tiff?)$", re.IGNORECASE)
CLASS_FOLDERS = {"all": LABEL_ALL, "hem": LABEL_HEM}


def try_parse_cnmc_name(name: str) -> tuple[str, int] | None:
    """`UID_H49_35_1_hem.bmp` -> ('H49', 0); None if the name is not C-NMC style."""
    match = CNMC_NAME.match(name)
    if match is None:
        return None
    subject, suffix = match.group(1).upper(), match.group(4).lower()
    label = CLASS_FOLDERS[suffix]
    if subject.startswith("H") != (label == LABEL_HEM):
        return None  # healthy subjects carry H and the _hem suffix, leukemic neither
    return subject, label


def parse_cnmc_name(name: str, where: Path | str) -> tuple[str, int]:
    """(subject, label) of a C-NMC file name; raises `DataError` naming `where` otherwise."""
    parsed = try_parse_cnmc_name(name)
    if parsed is None:
        raise DataError(
            f"{where}: cannot parse the C-NMC file name {name!r}. Expected "
            "UID_<subject>_<image>_<cell>_all.bmp or UID_H<subject>_<image>_<cell>_hem.bmp. "
            "Fix: restore the original name, or move the file out of the C-NMC folders."
        )
    return parsed
