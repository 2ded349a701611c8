"""The source file's sha256 (for the conversion record), computed in a thread.

Torch-free on purpose: `convert` starts it before torch is imported, so the ~1.3 s of hashing a
2.2 GB checkpoint runs on the second core while the first imports torch and transformers.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from litetext_convert.errors import LitetextError


def file_identity(status: os.stat_result) -> tuple:
    """What changes when a file is replaced, rewritten in place or truncated."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class SourceHash:
    """sha256 of a file in a thread (hashlib releases the GIL on large buffers)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._digest: str | None = None
        self.opened: tuple = ()  # the file's identity when the hash began (compared with the loaded one)
        self._thread = threading.Thread(target=self._work, name="litetext-sha256", daemon=True)
        if self.path.is_file():  # never open a FIFO or device: the loader refuses those with one line
            self._thread.start()

    def _work(self) -> None:
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            self.opened = file_identity(os.fstat(handle.fileno()))
            while chunk := handle.read(16 << 20):
                digest.update(chunk)
        self._digest = digest.hexdigest()

    def result(self) -> str:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        if self._digest is None:
            raise LitetextError("could not read the source checkpoint to hash it")
        return self._digest
