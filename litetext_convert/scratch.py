"""Temporary folders that a killed run does not leave behind for good.

`parity -c CKPT` converts into a temporary folder (a full-size one holds gigabytes). Ctrl-C and
SIGTERM remove it; SIGKILL or a power cut cannot. So each folder is named for the process that made
it (`litetext-parity-<pid>-<random>`) and holds a mark; the next run removes the folders whose
process is gone. It removes only what this scheme made: a real directory (never a symbolic link,
which is neither followed nor removed), owned by this user, carrying the mark, named for a pid that
is no longer running.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from litetext_convert.errors import note

MARK = ".litetext-scratch"


def _pattern(kind: str) -> re.Pattern:
    return re.compile(rf"litetext-{re.escape(kind)}-(\d+)-[A-Za-z0-9_]+")


@contextlib.contextmanager
def scratch_folder(kind: str) -> Iterator[Path]:
    """A new temporary folder for this process, removed on the way out; dead runs' folders first."""
    remove_dead(kind)
    path = Path(tempfile.mkdtemp(prefix=f"litetext-{kind}-{os.getpid()}-"))
    (path / MARK).write_text(f"{os.getpid()}\n")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_dead(kind: str, parent: Path | None = None) -> list[Path]:
    """Remove the leftover folders of `kind` whose process is gone; returns what was removed."""
    parent = Path(parent or tempfile.gettempdir())
    pattern = _pattern(kind)
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match and _is_ours(parent / name) and not _running(int(match.group(1))):
            shutil.rmtree(parent / name, ignore_errors=True)  # fd-based on Linux: links inside are not followed
            note(f"removed {parent / name}, the temporary folder of a litetext {kind} run that was killed (pid {match.group(1)})")
            removed.append(parent / name)
    return removed


def _is_ours(path: Path) -> bool:
    try:
        info = os.lstat(path)  # lstat: a symbolic link named like ours is left alone
        mark = os.lstat(path / MARK)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_ISREG(mark.st_mode)
            and mark.st_uid == os.getuid())


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under that pid: alive
        return True
    return True
