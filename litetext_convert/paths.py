"""Where the declarative data (configs/) lives, installed or in a checkout."""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """configs/ of the checkout (editable install) or the copy inside the wheel."""
    override = os.environ.get("LITETEXT_CONFIGS")
    if override:
        return Path(override)
    for candidate in (_PACKAGE_DIR / "_configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("configs/ not found beside the litetext_convert package")


@lru_cache(maxsize=None)
def read_config(name: str) -> dict:
    """One TOML table of configs/, read once per process (callers must not mutate it)."""
    return tomllib.loads((configs_dir() / name).read_text())
