"""The command line's conventions, applied to every command in one place.

`LeukaugTyper` is `typer.Typer` whose commands and groups are `LeukaugCommand` /
`LeukaugGroup`: `-h` works as `--help`; flags show no `<bool>` type; arguments read
`STUDY`, `ARM_DIR` (upper-case, no braces) in the help and the usage line; help texts are
shown as written (rich markup in them is escaped, so `leukaug[onnx]` stays visible).
`choice(values)` turns a registry's names into a closed set (`Literal`) for typer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

HELP_OPTIONS = ["-h", "--help"]
CONTEXT_SETTINGS = {"help_option_names": HELP_OPTIONS}
_REQUIRED_PIECE = re.compile(r"^\{(.+)\}(\.\.\.)?$")


def choice(values: Iterable[str]) -> Any:
    """A closed set of strings for a typer parameter annotation (`--opt a|b|c`)."""
    return Literal[tuple(values)]  # type: ignore[valid-type]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 image`, `2 images`: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _plain(text: str | None) -> str | None:
    """Help text shown as written: rich would swallow `[onnx]` or `[bold]` in it."""
    return escape(text) if text else text


def _conventional_params(params: list[Any]) -> list[Any]:
    """Flags without a type, arguments named in upper case; help texts unmarked (once)."""
    for param in params:
        if getattr(param, "_leukaug_conventions", False):
            continue
        param._leukaug_conventions = True
        if isinstance(param, TyperArgument):
            if param.metavar is None and param.name:
                param.metavar = param.name.upper()
        elif getattr(param, "is_flag", False) and not getattr(param, "count", False):
            param.metavar = ""  # typer's rich help would print <bool>
        if getattr(param, "help", None):
            param.help = _plain(param.help)
    return params


def _usage_pieces(pieces: list[str]) -> list[str]:
    """`{STUDY}` -> `STUDY` on the usage line (optional ones keep their `[...]`)."""
    return [_REQUIRED_PIECE.sub(r"\1\2", piece) for piece in pieces]


class LeukaugCommand(TyperCommand):
    """A command following the conventions above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _plain(self.help)
        self.short_help = _plain(self.short_help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(super().collect_usage_pieces(ctx))


class LeukaugGroup(TyperGroup):
    """A command group following the conventions above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _plain(self.help)
        self.short_help = _plain(self.short_help)

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional_params(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(super().collect_usage_pieces(ctx))


class LeukaugTyper(typer.Typer):
    """`typer.Typer` whose groups and commands follow the conventions (and `-h` is `--help`)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", LeukaugGroup)
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", LeukaugCommand)
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        return super().command(*args, **kwargs)
