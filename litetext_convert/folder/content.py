"""What a parity record binds: the sha256 of every content file of the folder (weights and index,
configs, tokenizer, processor) and of the conversion record it belongs to.

A record counts only while the folder still hashes to what it names: an edited config.json, a
zeroed weight, a record copied from another folder (another conversion record) are caught by the
digests. Hashes are cached in this process by (device, inode, size, mtime_ns, ctime_ns), so the
card written right after a parity run, and push's plan, do not read the weights twice; any change
to a file changes its ctime, so the cache never hides one.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import NamedTuple

from litetext_convert.errors import LitetextError, printable
from litetext_convert.folder.names import CONVERSION_RECORD, ONNX_DIR, ONNX_NAME, is_content_name
from litetext_convert.folder.records import ConversionRecord

BINDING_SCHEMA = 1


class FileDigest(NamedTuple):
    """What identifies a file's content locally and on the Hub: sha256 is what an LFS/Xet pointer
    records; git_sha1 is the git blob id, the only id the Hub keeps for small files kept in git."""

    size: int
    sha256: str | None
    git_sha1: str | None


_CACHE: dict[tuple[int, ...], FileDigest] = {}
# The Hub keeps files above this size (and every *.safetensors) in LFS, identified by sha256 alone: the
# git blob id of a large file is never compared, so it is not computed (it cost ~40% of the hashing time).
GIT_BLOB_LIMIT = 10 * 1024 * 1024


def digest_bytes(data: bytes) -> FileDigest:
    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return FileDigest(len(data), hashlib.sha256(data).hexdigest(), git_sha1)


def digest_file(path: Path, chunk_size: int = 8 << 20) -> FileDigest:
    """Both hashes in one read of a regular file (never through a link): weights are large and read once."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        before = os.fstat(handle.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise LitetextError(f"{printable(path)} is not a regular file")
        key = (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
        if key in _CACHE:
            return _CACHE[key]
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(b"blob %d\0" % before.st_size) if before.st_size <= GIT_BLOB_LIMIT else None
        while chunk := handle.read(chunk_size):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
        after = os.fstat(handle.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise LitetextError(f"{printable(path)} changed while it was read; run again")
    digest = FileDigest(before.st_size, sha256.hexdigest(), sha1.hexdigest() if sha1 is not None else None)
    _CACHE[key] = digest
    return digest


def content_files(folder: Path, conversion: ConversionRecord) -> list[str]:
    """The folder's content files: top-level entries the conversion record lists whose names are in
    the content vocabulary (names.CONTENT_NAME), present now. Links and non-regular entries are
    named by the verdict (binding_problem), never hashed through."""
    folder = Path(folder)
    listed = {name for name in conversion.files if is_content_name(name)}
    present = {entry.name for entry in os.scandir(folder) if is_content_name(entry.name)}
    graphs = folder / ONNX_DIR
    if graphs.is_dir() and not graphs.is_symlink():  # an ONNX export: its graphs are content too
        present |= {f"{ONNX_DIR}/{entry.name}" for entry in os.scandir(graphs) if ONNX_NAME.fullmatch(entry.name)}
    return sorted(listed | present) if listed else sorted(present)


def binding(folder: Path, conversion: ConversionRecord) -> dict:
    """The `verified` part of a parity record: what the run verified, by digest."""
    return BindingInBackground(folder, conversion).result()


class BindingInBackground:
    """`binding()` with the hashing in a thread, so parity measures while the weights are hashed
    (sha256 of a 2.2 GB folder is ~2 s of CPU; hashlib releases the GIL on large buffers).

    The cheap checks (missing files, links, hard links) run now, in the caller's thread, so a bad
    folder is refused before anything is measured. Hashing while the run reads the same files is
    safe: `keep()` checks the folder again against these digests before it writes a record (the
    cache key holds ctime, so a file changed during the run is read again and named)."""

    def __init__(self, folder: Path, conversion: ConversionRecord):
        self.folder, self.conversion = Path(folder), conversion
        self.names = content_files(self.folder, conversion)
        for name in self.names:
            _check_plain_file(self.folder, name)
        self._files: dict | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="litetext-binding", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            files = {}
            for name in self.names:
                digest = digest_file(self.folder / name)
                files[name] = {"sha256": digest.sha256, "bytes": digest.size}
            self._files = files
        except BaseException as exc:  # handed to the caller of result(), in its thread
            self._error = exc

    def result(self) -> dict:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return {"schema": BINDING_SCHEMA, "conversion_record": self.conversion.sha256, "files": self._files}


def _check_plain_file(folder: Path, name: str) -> None:
    try:
        info = os.lstat(folder / name)
    except FileNotFoundError:
        raise LitetextError(f"{printable(folder)} cannot be loaded: {printable(name)}, which its conversion wrote, is missing",
                            hint="convert again") from None
    if not stat.S_ISREG(info.st_mode):
        raise LitetextError(f"{printable(folder / name)} is not a regular file (a link or a special file); "
                            "litetext verifies and publishes only regular files inside the folder")
    if info.st_nlink > 1:
        raise LitetextError(f"{printable(folder / name)} has {info.st_nlink} hard links: it may be a file outside the folder; "
                            "copy it in (cp) so the folder holds its own", hint="a hard link is never verified or published")


def binding_problem(folder: Path, conversion: ConversionRecord, verified: dict, record_file: str) -> str | None:
    """Why the folder is no longer what `record_file` verified (naming the first changed file), or None."""
    folder = Path(folder)
    if verified.get("conversion_record") != conversion.sha256:
        return (f"{record_file} was made for another conversion ({CONVERSION_RECORD} changed since, "
                "or the record was copied from another folder)")
    named = verified["files"]
    current = content_files(folder, conversion)
    for name in sorted(set(named) | set(current)):
        if name not in current:
            return f"{name} was verified by {record_file} but is no longer in the folder"
        if name not in named:
            return f"{name} is in the folder but {record_file} did not verify it"
        try:
            _check_plain_file(folder, name)
            digest = digest_file(folder / name)
        except (LitetextError, OSError) as err:
            return err.one_line() if isinstance(err, LitetextError) else f"cannot read {printable(name)}: {err.strerror}"
        if (digest.size, digest.sha256) != (named[name]["bytes"], named[name]["sha256"]):
            return f"{name} changed since {record_file} verified it (sha256 {digest.sha256[:12]}, verified {named[name]['sha256'][:12]})"
    return None
