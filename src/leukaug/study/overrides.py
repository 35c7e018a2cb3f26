"""`--set KEY=VALUE` overrides of a study file: `training.epochs=3`, `seeds=[0,1]`.

VALUE is read as a TOML value (`3`, `1e-4`, `true`, `[0, 1]`, `"cpu"`, `{name = "rotate"}`);
a bare word that is not TOML (`cpu`, `cuda:0`) is taken as a string. KEY is a dotted path
into the study's tables; a key without a table (`seeds`, `epochs`) is looked up in the
sections that have it ([study], [training], [data], [executor]) when exactly one does. The
result is validated like the file itself (`config.parse_study`), so a bad key or value gets
the same message.

A command's dedicated flags (`leukaug train --epochs 3`, `leukaug run --device cpu`) are
sugar for the same assignments: `flag_assignments` writes each flag's value as one
`KEY=VALUE` (a `Flag` says which key), and `flag_names` lets a validation message name the
flag instead of the key.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tomli_w

from leukaug.core.errors import ConfigError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself when it is a bare word TOML does not read."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if re.fullmatch(r"[^\s\[\]{}\"'=,]+", text):
            return text
        raise ConfigError(
            f"--set value {text!r} is not a TOML value. Fix: write it as in the study file, "
            'e.g. 3, 1e-4, true, [0, 1], "a string".'
        ) from None


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """`"training.epochs=3"` -> (["training", "epochs"], 3)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not KEY_PATTERN.match(key):
        raise ConfigError(
            f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. "
            "--set training.epochs=3 or --set seeds=[0,1]."
        )
    return key.split("."), parse_value(value.strip())


def _locate(
    table: Mapping[str, Any], path: list[str], sections: Mapping[str, set[str]]
) -> list[str]:
    """A one-part key that names no table is looked for in the sections holding it."""
    if len(path) > 1 or path[0] in table or path[0] in sections:
        return path
    holders = [name for name, keys in sections.items() if path[0] in keys]
    if len(holders) == 1:
        return [holders[0], path[0]]
    if len(holders) > 1:
        options = ", ".join(f"{name}.{path[0]}" for name in holders)
        raise ConfigError(f"--set {path[0]}: ambiguous; write one of {options}.")
    return path


def apply_overrides(
    table: Mapping[str, Any],
    assignments: Iterable[str],
    section_keys: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """A copy of the parsed study `table` with every `KEY=VALUE` assignment applied in order.

    `section_keys` (section -> its keys) lets a one-part key such as `seeds` or `epochs` find
    its section; the config module passes its own field names.
    """
    result = copy.deepcopy(dict(table))
    sections = {name: set(keys) for name, keys in (section_keys or {}).items()}
    for text in assignments:
        path, value = parse_assignment(text)
        path = _locate(result, path, sections)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"--set {text!r}: {where} is a value, not a table.")
            node = child
        node[path[-1]] = value
    return result


def describe(assignments: Iterable[str]) -> str:
    """How the overrides are named in messages and the resolved study.toml's header."""
    return " ".join(f"--set {a}" for a in assignments)


@dataclass(frozen=True)
class Flag:
    """A dedicated command-line flag and the study key it sets (`--epochs` ->
    `training.epochs`)."""

    flag: str
    key: str


def toml_value(value: Any) -> str:
    """`value` written as a TOML value (what `parse_value` reads back)."""
    return tomli_w.dumps({"value": value}).removeprefix("value = ").strip()


def flag_assignments(values: Sequence[tuple[Flag, Any]]) -> list[str]:
    """`KEY=VALUE` assignments for the flags given (None: the flag was not given)."""
    return [f"{flag.key}={toml_value(value)}" for flag, value in values if value is not None]


def flag_names(flags: Iterable[Flag]) -> dict[str, str]:
    """key -> flag, for messages about the keys the flags set."""
    return {flag.key: flag.flag for flag in flags}
