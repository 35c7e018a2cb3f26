"""User-facing errors. The CLI turns any `LeukaugError` into a message and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LeukaugError(Exception):
    """An error caused by the user's input (data, config, arguments), with a fix in the text."""


class DataError(LeukaugError):
    """A data set on disk is missing, malformed or inconsistent."""


class ConfigError(LeukaugError):
    """A study file or option is invalid."""


class WeightsError(LeukaugError):
    """Pretrained weights are not available (offline, not cached)."""


class TrainingError(LeukaugError):
    """Training cannot go on (non-finite loss, bad regime for the model, ...)."""


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """'unknown augmentation 'flp'; did you mean 'flip'? Valid names: ...' (MONAI look_up_option style)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Valid names: {', '.join(valid)}."


class StorageError(LeukaugError):
    """A write failed for lack of space or permission (ENOSPC, EDQUOT, EROFS, EACCES): the
    message names the folder, its free space and what the write needed. Nothing was
    half-written; rerunning the command after fixing it resumes where it stopped."""


def masked_interrupt(error: BaseException) -> BaseException | None:
    """The KeyboardInterrupt (SIGINT, SIGTERM) behind `error`, or None when there is none.

    A library's cleanup can turn an interrupt into another exception: a signal inside
    `torch.save` makes its zip writer's exit raise "RuntimeError: unexpected pos", with the
    interrupt as `__context__`. Such a failure is the interrupt, not an arm's failure."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
