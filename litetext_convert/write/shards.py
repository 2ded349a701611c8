"""Write the converted folder's weights: streamed safetensors shards (the atomic folder swap and
what litetext owns live in folder/ownership.py).

Why not `safetensors.torch.save_file`: it first turns every tensor of a shard into `bytes`, one
whole extra copy of the shard in memory. The safetensors layout is simple and fixed (8-byte
little-endian header length, a JSON header with dtype/shape/offsets, then the raw bytes in header
order), so we write the header from the plan and then each tensor as it is produced, and give the
source pages back to the kernel as soon as they are written. Reading back goes through the
`safetensors` library itself, so a mistake here cannot hide.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.dtypes import safetensors_code
from litetext_convert.errors import OutputError, printable

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
