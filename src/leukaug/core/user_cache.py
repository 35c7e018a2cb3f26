"""Where generated data and image caches go unless a study or `--cache-dir` says otherwise.

`$LEUKAUG_CACHE_DIR` when set (tests and CI point it at a temporary folder), else the
platform's user cache folder (`platformdirs.user_cache_dir("leukaug")`: ~/.cache/leukaug
on Linux, ~/Library/Caches/leukaug on macOS) - never the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

CACHE_DIR_ENV = "LEUKAUG_CACHE_DIR"
APP_NAME = "leukaug"


def default_cache_dir() -> Path:
    """The folder for the embedded data and image caches (absolute; not created here)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(user_cache_dir(APP_NAME)).resolve()
