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
import mmap
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.errors import OutputError

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
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
            "dtype": SAFETENSORS_DTYPES[entry.dtype],
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


def write_shard(
    path: Path,
    shard: Shard,
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str],
    on_tensor: Callable[[TensorEntry], None] | None = None,
) -> dict[str, int]:
    """Write one shard; returns a fingerprint per tensor so the read-back check compares real bytes."""
    checksums: dict[str, int] = {}
    with write_errors(path), path.open("wb") as handle:
        handle.write(_header(shard, metadata))
        for entry in shard.entries:
            tensor = produce(entry.name)
            if tuple(tensor.shape) != entry.shape or tensor.dtype != entry.dtype:
                raise OutputError(
                    f"internal: {entry.name} came out {list(tensor.shape)} {tensor.dtype}, planned {list(entry.shape)} {entry.dtype}"
                )
            data = tensor_bytes(tensor)
            handle.write(data)
            checksums[entry.name] = fingerprint(data)
            del data, tensor
            if on_tensor:
                on_tensor(entry)
    return checksums


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"no space left on the device while writing {path.name}", hint="free space or choose another --output-dir") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(f"cannot write {path}: permission denied") from None
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


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


# ----------------------------------------------------------------------------------------------
# Memory: give mmap'd source pages back once they are written
# ----------------------------------------------------------------------------------------------

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _madvise = _libc.madvise
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
except (OSError, AttributeError):  # not Linux: pages are only released at unmap
    _madvise = None


def release_source_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a memory-mapped, read-only source tensor from this process.

    They stay in the page cache (a later read is a cheap minor fault), but no longer count as this
    process's memory, so converting costs about one tensor of RSS instead of the whole file.
    Only ever called on tensors backed by the read-only checkpoint mapping, never on heap memory.
    """
    if _madvise is None:
        return
    storage = tensor.untyped_storage()
    start = storage.data_ptr()
    end = start + storage.nbytes()
    aligned_start = (start + _PAGE - 1) // _PAGE * _PAGE  # never touch a page shared with other data
    aligned_end = end // _PAGE * _PAGE
    if aligned_end > aligned_start:
        _madvise(aligned_start, aligned_end - aligned_start, _MADV_DONTNEED)


# ----------------------------------------------------------------------------------------------
# Atomic output folder
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_folder(target: Path, *, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; rename it into place only when the body succeeds.

    Anything else (an error, Ctrl-C) removes the temporary folder, so a half-written output never
    exists under the target's name. With `force`, an existing target is replaced only at the end.
    """
    target = Path(target).absolute()
    if target.exists() and not force:
        raise OutputError(f"output folder {target} already exists", hint="pass --force to replace it")
    if target.exists() and not target.is_dir():
        raise OutputError(f"output path {target} exists and is not a folder")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(_mkdtemp(parent, target.name))
    except OSError as exc:
        raise OutputError(f"cannot create the output folder in {parent}: {exc.strerror or exc}") from None
    try:
        yield temporary
        _swap_into_place(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _mkdtemp(parent: Path, name: str) -> str:
    folder = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp's 0700 would leak into the final folder
    return folder


def _swap_into_place(temporary: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    try:
        temporary.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
