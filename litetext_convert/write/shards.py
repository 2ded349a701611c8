"""Write the converted folder: streamed safetensors shards, atomically.

Why not `safetensors.torch.save_file`: it first turns every tensor of a shard into `bytes`, one
whole extra copy of the shard in memory. The safetensors layout is simple and fixed (8-byte
little-endian header length, a JSON header with dtype/shape/offsets, then the raw bytes in header
order), so we write the header from the plan and then each tensor as it is produced, and give the
source pages back to the kernel as soon as they are written. Reading back goes through the
`safetensors` library itself, so a mistake here cannot hide.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import math
import os
import re
import shutil
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.dtypes import safetensors_code
from litetext_convert.errors import OutputError, note, printable

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_ALIGN = 8  # tensor data offsets stay 8-byte aligned, as safetensors' own writer keeps them


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class Shard:
    filename: str
    entries: list[TensorEntry]

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries)


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    cleaned = text.strip().upper().replace(" ", "")
    for unit, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if cleaned.endswith(unit) and cleaned[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(cleaned[: -len(unit)]) * factor)
    if cleaned.isdigit():
        return int(cleaned)
    raise OutputError(f"cannot read shard size {text!r}", hint="use e.g. 5GB, 500MB or a byte count")


def plan_shards(entries: list[TensorEntry], max_shard_bytes: int) -> list[Shard]:
    """Greedy in plan order (keeps each component contiguous); a tensor larger than the limit gets
    a shard of its own, as transformers does."""
    groups: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if groups[-1] and size + entry.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(entry)
        size += entry.nbytes
    if len(groups) == 1:
        return [Shard(SINGLE_FILE, groups[0])]
    total = len(groups)
    return [Shard(f"model-{i + 1:05d}-of-{total:05d}.safetensors", group) for i, group in enumerate(groups)]


def _header(shard: Shard, metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for entry in shard.entries:
        header[entry.name] = {
            "dtype": safetensors_code(entry.dtype),
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-(len(encoded) + 8) % _ALIGN)
    return struct.pack("<Q", len(encoded)) + encoded


_SAMPLE = 64 << 10


def fingerprint(data: memoryview) -> int:
    """crc32 of a tensor's first, middle and last 64 KiB (all of it when small), with its length.

    What the read-back check must catch is a wrong offset, order or tensor: any of those changes
    every sampled byte. Hashing every byte twice (written, then read back) cost ~1.8 s and made the
    read-back touch every page of a 2 GB shard.
    """
    size = len(data)
    if size <= 3 * _SAMPLE:
        return zlib.crc32(data, size)
    middle = size // 2 - _SAMPLE // 2
    crc = zlib.crc32(data[:_SAMPLE], size)
    crc = zlib.crc32(data[middle : middle + _SAMPLE], crc)
    return zlib.crc32(data[size - _SAMPLE :], crc)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a contiguous tensor, without another copy."""
    flat = tensor.contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


class FileCopier:
    """Copies a target tensor that is an unchanged byte range of the source file (a renamed tensor,
    a row block of a fused one) from file to file inside the kernel (copy_file_range), as `cp` does:
    its pages are never faulted into this process and never copied through user space. Anything
    else (transposed, cast, filled) is written from memory. Where the kernel or file system cannot
    copy ranges, it says so on the first tensor and every tensor is written from memory."""

    def __init__(self, path: Path, regions):
        self.path = path
        self.regions = regions  # source.load.MappedRegions of the source file
        self.enabled = hasattr(os, "copy_file_range") and bool(regions.regions)
        self._fd: int | None = None

    def copy(self, tensor: torch.Tensor, out_fd: int) -> bool:
        """True when `tensor`'s bytes were appended to `out_fd` from the source file."""
        offset = self.regions.offset_of(tensor) if self.enabled else None
        if offset is None:
            return False
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size, done = tensor.numel() * tensor.element_size(), 0
        while done < size:
            try:
                copied = os.copy_file_range(self._fd, out_fd, size - done, offset + done)
            except OSError as exc:
                if done == 0 and exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                    self.enabled = False  # not on this file system: write from memory instead
                    return False
                raise
            if copied == 0:
                raise OutputError(f"the source checkpoint {printable(self.path)} ended early while it was copied; it changed during the conversion")
            done += copied
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_shard(
    path: Path,
    shard: Shard,
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str],
    on_tensor: Callable[[TensorEntry], None] | None = None,
    copier: FileCopier | None = None,
) -> dict[str, int]:
    """Write one shard; returns a fingerprint per tensor so the read-back check compares real bytes."""
    checksums: dict[str, int] = {}
    with write_errors(path), open(path, "wb", buffering=0) as handle:
        _write_all(handle, _header(shard, metadata))
        for entry in shard.entries:
            tensor = produce(entry.name)
            if tuple(tensor.shape) != entry.shape or tensor.dtype != entry.dtype:
                raise OutputError(
                    f"internal: {entry.name} came out {list(tensor.shape)} {tensor.dtype}, planned {list(entry.shape)} {entry.dtype}"
                )
            data = tensor_bytes(tensor)
            if copier is None or not copier.copy(tensor, handle.fileno()):
                _write_all(handle, data)
            checksums[entry.name] = fingerprint(data)  # a few sampled pages: the read-back check compares them
            del data, tensor
            if on_tensor:
                on_tensor(entry)
    return checksums


def _write_all(handle, data) -> None:
    """An unbuffered write may take fewer bytes than given (Linux caps one write near 2 GiB)."""
    view = memoryview(data).cast("B")
    while view:
        written = handle.write(view)
        view = view[written:]


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        # The `tokenizers` library writes tokenizer.json from Rust; its I/O errors arrive as a bare
        # Exception("No space left on device (os error 28)"). Same errno, same one line.
        match = _RUST_OS_ERROR.search(str(exc)) if not isinstance(exc, OSError) else None
        if not isinstance(exc, OSError) and not match:
            raise
        if match:
            exc = OSError(int(match.group(1)), os.strerror(int(match.group(1))))
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"no space left on the device while writing {path.name}", hint="free space or choose another --output-dir") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"cannot write {printable(path)}: permission denied") from None
        raise OutputError(f"cannot write {printable(path)}: {exc.strerror or exc}") from None


def write_index(folder: Path, shards: list[Shard], metadata: dict[str, str]) -> None:
    if len(shards) == 1:
        return
    index = {
        "metadata": {"total_size": sum(shard.nbytes for shard in shards), **metadata},
        "weight_map": {entry.name: shard.filename for shard in shards for entry in shard.entries},
    }
    write_json(folder / INDEX_FILE, index)


def write_json(path: Path, data: dict) -> None:
    with write_errors(path):
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_report_path(path: Path, *, ours: Callable[[bytes], bool], what: str) -> Path:
    """A file the user names for a report (e.g. `parity --plot FILE.png`) is written only when it is
    new, or a regular file that `ours` recognises as one litetext wrote: never over anything else
    (the source checkpoint, a user's file). Checked before the long run."""
    path = Path(os.path.abspath(path))
    if os.path.lexists(path):
        try:
            mine = stat.S_ISREG(os.lstat(path).st_mode) and ours(path.read_bytes())
        except OSError:
            mine = False
        if not mine:
            raise OutputError(
                f"{printable(path)} exists and is not a {what} litetext wrote; it was left as it is",
                hint="choose a new file name",
            )
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {printable(path)}: its folder does not exist")
    return path


# ----------------------------------------------------------------------------------------------
# Atomic output folder: litetext replaces only what it provably wrote
# ----------------------------------------------------------------------------------------------
#
# The rule: a folder is litetext's when it holds a conversion record written by litetext, and
# every entry in it is a regular file that the record's `files` list names, or one that a later
# litetext command adds (the card README.md, parity records under parity/, the hidden source memo
# under .litetext/, the legacy parity_record.json). Anything else in it -> refuse, naming it.
# Only that folder, at the path the user named, is ever replaced, and the old one is emptied file
# by file from that list (never rmtree), so a file that appears meanwhile survives.

LATER_FILES = frozenset({"parity_record.json", "README.md"})  # folder.LEGACY_PARITY_RECORD, folder.CARD
LATER_FOLDERS = {  # sub-folder -> the names litetext writes in it (folder.PARITY_DIR; folder.SOURCE_MEMO)
    "parity": re.compile(r"[A-Za-z0-9_.+-]+\.json"),
    ".litetext": re.compile(r"[A-Za-z0-9_.+-]+\.json"),
    "onnx": re.compile(r"[A-Za-z0-9_.+-]+\.(onnx|onnx\.data|json)"),  # an ONNX export (litetext_convert/onnx)
}
CARD_MARK = b"Converted by litetext"  # in every card litetext writes (publish/model_card.py, provenance)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$")
# What a killed run can have written into its `.partial-` folder: weights, index, configs, tokenizer files.
_WRITTEN_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(safetensors|json|txt|jinja)$")


def owned_files(folder: Path) -> list[str]:
    """The files of `folder` that litetext wrote, as relative posix paths (sub-folders' files first
    listed after them); raises OutputError naming the first entry that it did not write."""
    from litetext_convert.folder import CONVERSION_RECORD

    record_path = folder / CONVERSION_RECORD
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        listed = record["files"]
        if record["tool"]["name"] != "litetext" or not all(isinstance(n, str) for n in listed):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        entries = sorted(os.listdir(folder))
        raise OutputError(
            f"output folder {printable(folder)} holds {printable(entries[0])!r} and no litetext conversion record "
            "listing its files: litetext did not write it",
            hint="litetext only replaces folders it wrote; move it away or choose another --output-dir",
        ) from None
    allowed = set(listed) | LATER_FILES | {CONVERSION_RECORD}
    owned = []
    for entry in sorted(os.listdir(folder)):
        mode = os.lstat(folder / entry).st_mode
        if entry in LATER_FOLDERS and stat.S_ISDIR(mode):
            for inner in sorted(os.listdir(folder / entry)):
                if not LATER_FOLDERS[entry].fullmatch(inner) or not stat.S_ISREG(os.lstat(folder / entry / inner).st_mode):
                    raise _foreign(folder, f"{entry}/{inner}")
                owned.append(f"{entry}/{inner}")
        elif entry in allowed and stat.S_ISREG(mode):
            if entry == "README.md" and entry not in listed and CARD_MARK not in (folder / entry).read_bytes():
                raise _foreign(folder, entry)  # a README the user wrote in place of litetext's card
            owned.append(entry)
        else:
            raise _foreign(folder, entry)
    return owned


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
    (its process is gone and it holds only files with the names litetext writes)."""
    for entry in sorted(os.listdir(parent)):
        match = _LEFTOVER.match(entry)
        if not match or match["name"] != name or _pid_alive(int(match["pid"])):
            continue
        path = parent / entry
        try:
            inside = os.listdir(path)
            ours = all(_WRITTEN_NAME.match(f) and stat.S_ISREG(os.lstat(path / f).st_mode) for f in inside)
        except OSError:
            ours = False
        size = sum((path / f).stat().st_size for f in inside) if ours else 0
        if ours:
            for f in inside:
                os.unlink(path / f)
            os.rmdir(path)
            note(f"removed {printable(path)} ({size / 1e6:.1f} MB), left by an earlier litetext run that was killed")
        else:
            note(f"{printable(path)} looks like an earlier run's leftover but holds files litetext did not write; left as it is")


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
    for name in current:  # only the files checked just above; a file that appeared since stays
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old / name)
    for sub in LATER_FOLDERS:
        with contextlib.suppress(FileNotFoundError, OSError):
            os.rmdir(old / sub)
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
