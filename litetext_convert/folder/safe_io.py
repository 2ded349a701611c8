"""Reading and writing inside a converted folder without trusting it.

Reads: a file is opened only after `lstat` says it is a regular file (a FIFO would hang, a device
or a link to /dev/zero would never end), with O_NOFOLLOW, and read up to a bound. Every problem is
one RecordError naming the file.

Writes: the ONE atomic writer for everything litetext writes into a folder after conversion (parity
records, the card, the source memo). It works relative to an open directory (dir_fd), never follows
a symbolic link (the sub-folder and the file are checked with lstat and opened with O_NOFOLLOW),
refuses to replace a file that litetext did not write (the caller says how to recognise its own),
and writes a temporary file, fsyncs it and renames it over the old one: a full disk or a kill leaves
the previous file whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from litetext_convert.errors import LitetextError, OutputError, printable
from litetext_convert.folder.names import MAX_JSON_BYTES


class RecordError(LitetextError):
    """A file of a converted folder that cannot be read as what litetext wrote there."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bounded(path: Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file (never through a link), refusing more than `limit`."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise RecordError(f"{printable(path)} is missing") from None
    except OSError as exc:
        raise RecordError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise RecordError(f"{printable(path)} is {_kind(mode)}; litetext reads only regular files there, nothing was read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise RecordError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped between lstat and open
            raise RecordError(f"{printable(path)} is not a regular file; nothing was read")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise RecordError(f"{printable(path)} is larger than {limit >> 20} MB; it is not a file litetext wrote")
    return data


def read_json_file(path: Path, limit: int = MAX_JSON_BYTES) -> object:
    """JSON from a folder file; any damage (not UTF-8, not JSON, nested beyond reason) is one line."""
    data = read_bounded(path, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecordError(f"{printable(path)} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise RecordError(f"{printable(path)} is not valid JSON: {err}") from None
    except RecursionError:
        raise RecordError(f"{printable(path)} is nested too deeply to be a file litetext wrote") from None


def read_json_object(path: Path) -> dict:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise RecordError(f"{printable(path)} holds a JSON {type(data).__name__}, not an object")
    return data


# ----------------------------------------------------------------------------------------------
# The one atomic writer


@contextlib.contextmanager
def _open_dir(folder: Path, parts: tuple[str, ...], create: bool) -> Iterator[int]:
    """A descriptor of folder/parts..., each part opened relative to the last with O_NOFOLLOW."""
    flags = os.O_RDONLY | os.O_DIRECTORY
    fd = os.open(folder, flags)  # the folder the user named: a link to a folder there is their choice
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise OutputError(
                        f"{printable(Path(folder, part))} is not a folder litetext made (a symbolic link or a file); "
                        "nothing was written through it", hint="move it away") from None
                raise
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def write_inside(folder: Path, relative: str, data: bytes, *, ours: Callable[[bytes], bool], what: str) -> Path:
    """Write `data` to folder/relative atomically. An existing entry is replaced only when it is a
    regular file whose bytes `ours` recognises as litetext's; anything else is refused, unchanged."""
    *parts, name = relative.split("/")
    path = Path(folder, relative)
    with _write_errors(path), _open_dir(Path(folder), tuple(parts), create=True) as dir_fd:
        _check_replaceable(dir_fd, name, path, ours, what)
        temporary = f".{name}.tmp-{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=dir_fd)
            raise
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)  # the rename itself survives a crash
    return path


def remove_inside(folder: Path, relative: str, *, ours: Callable[[bytes], bool]) -> bool:
    """Unlink folder/relative when it is a regular file `ours` recognises (never through a link); True when removed."""
    *parts, name = relative.split("/")
    try:
        with _open_dir(Path(folder), tuple(parts), create=False) as dir_fd:
            if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return False
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as handle:
                if not ours(handle.read(MAX_JSON_BYTES + 1)):
                    return False
            os.unlink(name, dir_fd=dir_fd)
            return True
    except (OSError, OutputError):
        return False


def _check_replaceable(dir_fd: int, name: str, path: Path, ours: Callable[[bytes], bool], what: str) -> None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    refusal = OutputError(
        f"{printable(path)} exists and is not a {what} litetext wrote ({_kind(mode) if not stat.S_ISREG(mode) else 'its content says so'}); "
        "it was left as it is", hint="move it away and run again")
    if not stat.S_ISREG(mode):
        raise refusal
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        current = handle.read(MAX_JSON_BYTES + 1)
    if len(current) > MAX_JSON_BYTES or not ours(current):
        raise refusal


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"no space left on the device while writing {printable(path)}; the previous file was kept whole") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"cannot write {printable(path)}: permission denied") from None
        raise OutputError(f"cannot write {printable(path)}: {exc.strerror or exc}") from None


def json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8")


def is_litetext_json(mark: Callable[[dict], bool]) -> Callable[[bytes], bool]:
    """`ours` for a JSON file: it parses as an object that `mark` recognises."""

    def ours(data: bytes) -> bool:
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return False
        return isinstance(value, dict) and mark(value)

    return ours
