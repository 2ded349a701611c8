"""What litetext owns in a converted folder, and the atomic swap that replaces one.

The rule: a folder is litetext's when it holds a conversion record written by litetext and every
entry in it is one litetext can recognise as its own, by name and mark, never by a list a user can
edit: content files with the names a conversion writes (folder/names.CONTENT_NAME: weights, index,
configs, tokenizer, processor), the conversion record, the card (README.md carrying the card's
mark), parity records and the source memo (JSON objects carrying litetext's mark, in real
sub-folders). Anything else -> refuse, naming it (`thesis.txt` is never deleted, even when someone
adds it to the conversion record's `files`). Only that folder, at the path the user named, is ever
replaced, and the old one is emptied file by file from the names just checked, through descriptors
opened without following links (never rmtree), so a file that appears meanwhile survives.

Stale `.NAME.partial-PID-*` / `.NAME.old-PID` leftovers of a killed run are removed only when they
are real folders (lstat: a link named like one is never followed) holding only regular files with
names litetext writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from litetext_convert.errors import LitetextError, OutputError, note, printable
from litetext_convert.folder.names import (
    CARD,
    CONVERSION_RECORD,
    LEGACY_PARITY_RECORD,
    MAX_JSON_BYTES,
    MEMO_DIR,
    ONNX_DIR,
    ONNX_NAME,
    PARITY_DIR,
    RECORD_NAME,
    is_content_name,
)
from litetext_convert.folder.records import read_conversion_record, written_by_litetext
from litetext_convert.folder.safe_io import is_litetext_json

CARD_MARK = b"Converted by litetext"  # in every card litetext writes (publish/model_card.py, provenance)
RECORD_FOLDERS = (PARITY_DIR, MEMO_DIR)  # sub-folders litetext writes JSON records into
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$")
# What a killed run can have written into its `.partial-` folder: weights, index, configs, tokenizer files.
_WRITTEN_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(safetensors|json|txt|jinja)$")
_our_json = is_litetext_json(lambda data: written_by_litetext(data)
                             or isinstance(data.get("key"), str) or isinstance(data.get("checkpoint"), str))


def owned_files(folder: Path) -> list[str]:
    """The files of `folder` that litetext wrote, as relative posix paths (a sub-folder's files after
    its name); raises OutputError naming the first entry that it did not write."""
    folder = Path(folder)
    try:
        read_conversion_record(folder)
    except LitetextError:
        entries = sorted(os.listdir(folder))
        raise OutputError(
            f"output folder {printable(folder)} holds {printable(entries[0])!r} and no litetext conversion record: "
            "litetext did not write it",
            hint="litetext only replaces folders it wrote; move it away or choose another --output-dir",
        ) from None
    owned = []
    for entry in sorted(os.listdir(folder)):
        mode = os.lstat(folder / entry).st_mode
        if entry in RECORD_FOLDERS and stat.S_ISDIR(mode):
            for inner in sorted(os.listdir(folder / entry)):
                if not (RECORD_NAME.fullmatch(inner) and _is_ours(folder / entry / inner, _our_json)):
                    raise _foreign(folder, f"{entry}/{inner}")
                owned.append(f"{entry}/{inner}")
        elif entry == ONNX_DIR and stat.S_ISDIR(mode):  # an ONNX export's graphs: named as the exporter names them
            for inner in sorted(os.listdir(folder / entry)):
                if not (ONNX_NAME.fullmatch(inner) and stat.S_ISREG(os.lstat(folder / entry / inner).st_mode)):
                    raise _foreign(folder, f"{entry}/{inner}")
                owned.append(f"{entry}/{inner}")
        elif not stat.S_ISREG(mode) or not _owned_top_level(folder, entry):
            raise _foreign(folder, entry)
        else:
            owned.append(entry)
    return owned


def _owned_top_level(folder: Path, entry: str) -> bool:
    if entry == CONVERSION_RECORD or is_content_name(entry):
        return True
    if entry == CARD:
        return _is_ours(folder / entry, lambda data: CARD_MARK in data)
    if entry == LEGACY_PARITY_RECORD:
        return _is_ours(folder / entry, _our_json)
    return False


def _is_ours(path: Path, ours) -> bool:
    """A regular file (never through a link) whose bytes `ours` recognises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return False
        data = handle.read(MAX_JSON_BYTES + 1)
    return len(data) <= MAX_JSON_BYTES and ours(data)


def _foreign(folder: Path, entry: str) -> OutputError:
    return OutputError(
        f"output folder {printable(folder)} holds {printable(entry)!r}, which litetext did not write",
        hint="litetext only replaces files it wrote; move it away or choose another --output-dir",
    )


def check_output_target(target: Path, *, keep: list[Path] = ()) -> None:
    """Paths litetext never writes over, whatever the options: the working directory or a folder
    above it, a mount point, the file-system root, the home folder, a folder holding a `keep` path
    (the source checkpoint)."""
    real = Path(os.path.realpath(target))
    cwd = Path(os.path.realpath(os.getcwd()))
    reason = None
    if real == Path(real.anchor) or real == Path(os.path.realpath(Path.home())):
        reason = "is the file-system root or the home folder"
    elif real == cwd or real in cwd.parents:
        reason = "is the working directory or a folder above it"
    elif target.exists() and os.path.ismount(real):
        reason = "is a mount point"
    else:
        for path in keep:
            kept = Path(os.path.realpath(path))
            if kept == real or real in kept.parents or Path(os.path.abspath(path)).is_relative_to(target):
                reason = f"holds {printable(path)}, which is read in this run"
                break
    if reason:
        raise OutputError(f"refusing to write over {printable(target)}: it {reason}", hint="choose a new folder as the output")


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool, keep: list[Path] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; rename it into place only when the body succeeds.

    Anything else (an error, Ctrl-C) removes the temporary folder and any parent folder created for
    it, so a half-written output never exists under the target's name. With `force`, an existing
    target is replaced only when litetext wrote it (see `owned_files`), and only at the end; the
    swap itself re-checks the target and never replaces a folder that appeared meanwhile.
    """
    target = Path(os.path.abspath(target))
    check_output_target(target, keep=keep)
    _check_name(target)
    replaced = _existing_target(target, force)
    parent = target.parent
    created = _missing_parents(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(parent, target.name)
        temporary = Path(_mkdtemp(parent, target.name))
    except OSError as exc:
        _remove_empty(created)
        raise OutputError(f"cannot create the output folder in {printable(parent)}: {exc.strerror or exc}") from None
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield temporary
        _swap_into_place(temporary, target, replaced)
    except BaseException:
        _remove_partial(temporary)
        _remove_empty(created)
        raise


def _check_name(target: Path) -> None:
    try:
        os.fsencode(target).decode("utf-8")
    except UnicodeDecodeError:
        raise OutputError(
            f"output name {printable(target)} is not valid UTF-8", hint="transformers and the Hub need UTF-8 file names"
        ) from None


def _existing_target(target: Path, force: bool) -> tuple[os.stat_result, list[str]] | None:
    """None when `target` is free; else (its identity, its files) when --force may replace it."""
    if not os.path.lexists(target):
        return None
    if not force:
        raise OutputError(f"output folder {printable(target)} already exists", hint="pass --force to replace a folder litetext wrote")
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"output path {printable(target)} exists and is not a folder", hint="litetext never replaces a file")
    try:
        identity = os.stat(target)
        if not os.listdir(target):
            return identity, []
        return identity, owned_files(target)
    except PermissionError:
        raise OutputError(f"cannot read the existing output folder {printable(target)}: permission denied") from None


def _missing_parents(parent: Path) -> list[Path]:
    missing = []
    for folder in [parent, *parent.parents]:
        if os.path.lexists(folder):
            break
        missing.append(folder)
    return missing  # deepest first


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _mkdtemp(parent: Path, name: str) -> str:
    # The pid in the name lets a later run tell a killed run's leftover from a live run's folder.
    folder = tempfile.mkdtemp(prefix=f".{name}.partial-{os.getpid()}-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp's 0700 would leak into the final folder
    return folder


def _remove_partial(folder: Path) -> None:
    """Our own temporary folder: it holds only what this run wrote."""
    shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_leftovers(parent: Path, name: str) -> None:
    """A `.NAME.partial-PID-*` / `.NAME.old-PID` of a killed run: named, and removed when provably ours
    (its process is gone, it is a real folder, not a link, and it holds only regular files with the
    names litetext writes). Everything happens through a descriptor of that folder: nothing is followed."""
    for entry in sorted(os.listdir(parent)):
        match = _LEFTOVER.match(entry)
        if not match or match["name"] != name or _pid_alive(int(match["pid"])):
            continue
        path = parent / entry
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            note(f"{printable(path)} looks like an earlier run's leftover but is not a folder (a link?); left as it is")
            continue
        try:
            size = _empty_leftover(path)
        except OSError:
            size = None
        if size is None:
            note(f"{printable(path)} looks like an earlier run's leftover but holds files litetext did not write; left as it is")
        else:
            note(f"removed {printable(path)} ({size / 1e6:.1f} MB), left by an earlier litetext run that was killed")


def _empty_leftover(path: Path) -> int | None:
    """Remove a leftover folder's files and the folder; None (nothing removed) when any is not ours.
    An ONNX export's leftover also holds its `onnx/` folder of graphs (only graph names, regular files)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        inside = os.listdir(fd)
        infos = [os.stat(f, dir_fd=fd, follow_symlinks=False) for f in inside]
        graphs = [f for f, i in zip(inside, infos) if f == ONNX_DIR and stat.S_ISDIR(i.st_mode)]
        files = [(f, i) for f, i in zip(inside, infos) if f not in graphs]
        if not all(_WRITTEN_NAME.match(f) and stat.S_ISREG(i.st_mode) for f, i in files):
            return None
        size = _empty_graphs_folder(fd) if graphs else 0
        if size is None:
            return None
        for f, _ in files:
            os.unlink(f, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)
    return size + sum(i.st_size for _, i in files)


def _empty_graphs_folder(parent_fd: int) -> int | None:
    """Remove a leftover's `onnx/` folder (opened without following a link) when it holds only graphs."""
    fd = os.open(ONNX_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
    try:
        inside = os.listdir(fd)
        infos = [os.stat(f, dir_fd=fd, follow_symlinks=False) for f in inside]
        if not all(ONNX_NAME.fullmatch(f) and stat.S_ISREG(i.st_mode) for f, i in zip(inside, infos)):
            return None
        for f in inside:
            os.unlink(f, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(ONNX_DIR, dir_fd=parent_fd)
    return sum(i.st_size for i in infos)


def _unlink_owned(old: Path, names: list[str]) -> None:
    """Unlink the files checked as ours, each relative to a descriptor of its own folder (no link followed)."""
    top = os.open(old, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name in names:  # only the files checked just before the swap; a file that appeared since stays
            *sub, leaf = name.split("/")
            with contextlib.suppress(OSError):
                if not sub:
                    os.unlink(leaf, dir_fd=top)
                    continue
                inner = os.open(sub[0], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                try:
                    os.unlink(leaf, dir_fd=inner)
                finally:
                    os.close(inner)
        for sub in RECORD_FOLDERS:
            with contextlib.suppress(OSError):
                os.rmdir(sub, dir_fd=top)
    finally:
        os.close(top)


def _rename_noreplace(source: Path, destination: Path) -> None:
    """rename(2) that fails with EEXIST instead of replacing (an empty folder would be replaced silently)."""
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the file system has no RENAME_NOREPLACE
            raise OSError(code, os.strerror(code), str(destination))
    if os.path.lexists(destination):
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), str(destination))
    os.rename(source, destination)


def _appeared(target: Path) -> OutputError:
    return OutputError(
        f"output folder {printable(target)} appeared or changed while converting (another run?); it was left as it is",
        hint="nothing was written; run again",
    )


def _swap_into_place(temporary: Path, target: Path, replaced: tuple[os.stat_result, list[str]] | None) -> None:
    if replaced is None:
        try:
            _rename_noreplace(temporary, target)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise _appeared(target) from None
            raise OutputError(f"cannot move the converted folder to {printable(target)}: {exc.strerror or exc}") from None
        return
    identity, _ = replaced
    try:
        now = os.stat(target)
        same = (now.st_dev, now.st_ino) == (identity.st_dev, identity.st_ino)
        current = owned_files(target) if os.listdir(target) else []
    except (OSError, OutputError):
        raise _appeared(target) from None
    if not same:
        raise _appeared(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        _rename_noreplace(target, old)
    except OSError as exc:
        raise OutputError(f"cannot move the old folder {printable(target)} aside: {exc.strerror or exc}") from None
    try:
        _rename_noreplace(temporary, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            _rename_noreplace(old, target)
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise _appeared(target) from None
        raise OutputError(f"cannot move the converted folder to {printable(target)}: {exc.strerror or exc}") from None
    _unlink_owned(old, current)
    try:
        os.rmdir(old)
    except OSError:
        note(f"{printable(old)} (the replaced folder) gained files during the run; left as it is")


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    _renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
except (OSError, AttributeError):  # not Linux/glibc: check-then-rename
    _renameat2 = None
