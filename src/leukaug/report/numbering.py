"""Table and figure numbers, assigned when the page is rendered so a dropped item leaves no gap.

Whoever builds a caption may start it with its own "Table 6." or "Figure 3."; the renderer
replaces that with the item's place on the page, and rewrites references to the old number
in the page's text ("per-seed comparisons are in Table 6") to follow. References to the
seed paper's own numbering ("the paper's Figure 10") are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

LEADING_NUMBER = re.compile(r"^(?P<label>(?:Table|Figure) \d+)\.\s+")
REFERENCE = re.compile(r"(?<!paper's )\b(?:Table|Figure) \d+\b")


def renames(captions: Sequence[str], word: str) -> dict[str, str]:
    """Old label -> new label ("Table 6" -> "Table 5") for captions numbered in page order."""
    found = {}
    for number, caption in enumerate(captions, start=1):
        match = LEADING_NUMBER.match(caption)
        if match:
            found[match["label"]] = f"{word} {number}"
    return found


def numbered(caption: str, label: str, moved: Mapping[str, str]) -> str:
    """The caption under its new `label`, with its own references moved as well."""
    match = LEADING_NUMBER.match(caption)
    rest = caption[match.end() :] if match else caption
    return f"{label}. {follow(rest, moved)}"


def follow(text: str, moved: Mapping[str, str]) -> str:
    """`text` with every "Table N" / "Figure N" reference moved to its new number."""
    return REFERENCE.sub(lambda match: moved.get(match[0], match[0]), text)
