"""Read a checkpoint safely: sniff the format from its first bytes, never unpickle code, unwrap.

Torch files go through `torch.load(weights_only=True)` only, memory-mapped where the format
allows it, so a 2 GB checkpoint costs page cache, not a private copy.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import pickle
import pickletools
import re
import signal
import stat
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from litetext_convert.errors import CheckpointError, printable
from litetext_convert.source.digest import file_identity

TORCH_ZIP = "torch zip"
TORCH_LEGACY = "torch legacy pickle"
SAFETENSORS = "safetensors"

_WRAPPERS = ("model", "state_dict")
_DDP_PREFIX = "module."


@dataclass
class LoadedCheckpoint:
    path: Path
    format: str
    wrapper: str | None  # "model", "state_dict" or None for a bare dict
    stripped_prefix: str | None
    tensors: dict[str, torch.Tensor]
    identity: tuple = field(default=())  # the file as it was when loaded (see `file_identity`)

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


# dtypes a checkpoint tensor may have: what safetensors and the model hold, and complex RoPE tables
# (SAM3 stores its ViT rotary tables; they are dropped with a reason, see the mapping).
ACCEPTED_DTYPES = frozenset(
    {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64, torch.complex128, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool}
)
# A state dict's pickle holds names and small records, a few hundred bytes per tensor; more than
# this is data that is not weights (e.g. a crafted 1.5 GB string in a 7.5 MB zip).
PICKLE_BYTES_PER_TENSOR = 4096
PICKLE_BYTES_FLOOR = 16 << 20
# Each stored tensor costs ~10 kB of memory once loaded (objects, names, the reader's index): a
# crafted 35 MB zip whose pickle lists 300k storages took `inspect` to 3.5 GB. Released checkpoints
# hold 150 to 2,000 tensors, megabytes each; allowing one per 4 kB of file beyond a floor keeps
# memory within a small multiple of the file, and a count past that is refused before unpickling.
TENSORS_FLOOR = 10_000
FILE_BYTES_PER_TENSOR = 4096
BINPERSID = b"Q"  # the pickle opcode that hands torch a stored tensor's id (protocol 2, as torch.save writes)


def _proc_device(status: os.stat_result) -> str:
    """A file's device as /proc/self/maps and smaps spell it (major:minor in hex)."""
    return f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}"


class MappedRegions:
    """Where a memory-mapped source tensor's bytes lie in the source file.

    torch maps a zip checkpoint's storages straight from the file (`mmap=True`), so a tensor the
    mapping leaves unchanged is a byte range of that file. Found from the process's own mappings
    (Linux /proc/self/maps, matched by device and inode, not by name); anywhere else there are none
    and every tensor is written from memory."""

    def __init__(self, path: Path):
        self.regions: list[tuple[int, int, int]] = []  # (start address, end address, file offset)
        try:
            status = os.stat(path)
            with open("/proc/self/maps") as maps:
                lines = maps.readlines()
        except OSError:
            return
        device = _proc_device(status)
        for line in lines:
            fields = line.split(maxsplit=5)
            if len(fields) < 5 or fields[4] != str(status.st_ino) or fields[3] != device:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            self.regions.append((start, end, int(fields[2], 16)))

    def offset_of(self, tensor: torch.Tensor) -> int | None:
        """The file offset of a contiguous tensor's bytes, when they all lie in one mapping of the file."""
        if not self.regions or not tensor.is_contiguous() or tensor.device.type != "cpu":
            return None
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        for region_start, region_end, offset in self.regions:
            if region_start <= start and end <= region_end:
                return start - region_start + offset
        return None


def _check_regular_file(path: Path) -> os.stat_result:
    """stat before opening: a FIFO would block forever, a device would be read without end."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {printable(path)}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(status.st_mode):
        raise CheckpointError(f"{printable(path)} is a directory, not a checkpoint file")
    if not stat.S_ISREG(status.st_mode):
        kind = "FIFO" if stat.S_ISFIFO(status.st_mode) else "socket" if stat.S_ISSOCK(status.st_mode) else "device"
        raise CheckpointError(f"{printable(path)} is a {kind}, not a checkpoint file (nothing was read from it)")
    return status


def sniff_format(path: Path) -> str:
    _check_regular_file(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except IsADirectoryError:
        raise CheckpointError(f"{printable(path)} is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointError(f"{printable(path)} is empty")
    if head.startswith(b"PK\x03\x04"):
        return TORCH_ZIP
    if len(head) >= 9 and head[8:9] == b"{":
        header_length = struct.unpack("<Q", head[:8])[0]
        if 0 < header_length < path.stat().st_size:
            return SAFETENSORS
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode, as torch's legacy format starts
        return TORCH_LEGACY
    raise CheckpointError(f"{printable(path)} is not a checkpoint: not a torch file or safetensors (first bytes {head[:8].hex()})")


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    path = Path(path)
    identity = file_identity(_check_regular_file(path))
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:  # torch's reader takes the name as UTF-8 text
        raise CheckpointError(f"checkpoint name {printable(path)} is not valid UTF-8", hint="rename the file") from None
    kind = sniff_format(path)
    if kind == TORCH_ZIP:
        _check_pickle_size(path)
    elif kind == TORCH_LEGACY:
        _check_legacy_pickle(path)
    raw = _load_safetensors(path) if kind == SAFETENSORS else _load_torch(path, kind)
    state_dict, wrapper = _unwrap(raw, path)
    tensors, prefix = _strip_ddp_prefix(state_dict, path)
    _check_tensor_kinds(tensors, path)
    return LoadedCheckpoint(path, kind, wrapper, prefix, tensors, identity)


def _check_pickle_size(path: Path) -> None:
    """Bounded memory: the pickle is unpickled whole, so it must be in proportion to the tensors
    the archive stores, and those in proportion to the file. Read from the zip directory and the
    pickle's bytes, before anything is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            pickles = [info for info in infos if info.filename.endswith("/data.pkl") or info.filename == "data.pkl"]
            storages = sum(1 for info in infos if "/data/" in info.filename)
            tensor_limit = max(TENSORS_FLOOR, path.stat().st_size // FILE_BYTES_PER_TENSOR)
            _check_count(path, storages, tensor_limit, "its archive stores")
            byte_limit = max(PICKLE_BYTES_FLOOR, PICKLE_BYTES_PER_TENSOR * storages)
            for info in pickles:
                if info.file_size > byte_limit:
                    raise CheckpointError(
                        f"{printable(path)}: its pickle is {info.file_size / 1e6:.0f} MB for {storages} stored tensors, "
                        f"more than a state dict needs ({byte_limit / 1e6:.0f} MB at most); refused before unpickling",
                        hint="re-save it as a plain state dict",
                    )
                _check_count(path, _persistent_ids(archive, info, tensor_limit), tensor_limit, "its pickle refers to")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, zlib.error) as exc:
        raise CheckpointError(f"{printable(path)} is damaged or truncated ({printable(exc)[:160]})") from None


def _check_legacy_pickle(path: Path) -> None:
    """The legacy format is four pickles (magic number, protocol, system info, the object) then the
    storages' bytes: the object's persistent ids are counted the same way, opcode by opcode,
    stopping as soon as the count is past the limit (no memory beyond one opcode at a time)."""
    limit = max(TENSORS_FLOOR, path.stat().st_size // FILE_BYTES_PER_TENSOR)
    count = 0
    try:
        with path.open("rb") as raw:
            handle = _BoundedReader(raw, path.stat().st_size)
            for _ in range(3):  # magic number, protocol version, system info: a few bytes each
                for _opcode in pickletools.genops(handle):
                    pass
            for opcode, _, _ in pickletools.genops(handle):
                if opcode.name in ("BINPERSID", "PERSID"):
                    count += 1
                    if count > limit:
                        break
    except (OSError, ValueError, EOFError):
        return  # not the four pickles of the format: torch's weights-only load says what it is
    _check_count(path, count, limit, "its pickle refers to")


class _BoundedReader:
    """A file for pickletools that refuses a read longer than what is left of the file: a damaged
    length field would otherwise make it allocate that many bytes before reading them."""

    def __init__(self, handle, size: int):
        self._handle, self._size = handle, size

    def read(self, count: int = -1) -> bytes:
        if count > self._size - self._handle.tell():
            raise ValueError("a length runs past the end of the file")
        return self._handle.read(count)

    def readline(self) -> bytes:
        return self._handle.readline(1 << 16)

    def tell(self) -> int:
        return self._handle.tell()


def _check_count(path: Path, count: int, limit: int, what: str) -> None:
    if count > limit:
        raise CheckpointError(
            f"{printable(path)}: {what} {count} tensors, more than a checkpoint of {path.stat().st_size / 1e6:.0f} MB "
            f"can hold ({limit} at most); refused before unpickling, so memory stays in proportion to the file",
            hint="re-save it as a plain state dict",
        )


def _persistent_ids(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> int:
    """How many stored tensors the pickle asks for (each one a tensor object, shared storage or
    not). Counting the opcode's byte is an upper bound read in one pass; only a count past the
    limit is made exact, opcode by opcode (names and strings may hold the same byte)."""
    data = archive.read(info)  # at most the byte limit checked above
    bound = data.count(BINPERSID)
    if bound <= limit:
        return bound
    return sum(1 for opcode, _, _ in pickletools.genops(data) if opcode.name in ("BINPERSID", "PERSID"))


def _load_torch(path: Path, kind: str):
    # mmap needs the zip format; the legacy format is read whole (still weights_only).
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == TORCH_ZIP)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{printable(path)} holds objects that a weights-only load refuses to unpickle ({_refused_global(str(exc))})",
            hint="litetext never runs code from a checkpoint; re-save it as a plain state dict",
        ) from None
    except Exception as exc:  # a damaged file can make torch's reader fail in many ways
        reason = _plain(str(exc))[:160] or type(exc).__name__
        raise CheckpointError(f"{printable(path)} is damaged or truncated ({reason})") from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _plain(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())


def _refused_global(message: str) -> str:
    """The part of torch's long refusal that says what was refused (e.g. 'Unsupported global: GLOBAL io.open')."""
    plain = _plain(message)
    match = re.search(r"Unsupported (?:global|operand):? (?:GLOBAL )?\S+", plain)
    return match.group(0)[:160] if match else plain[:160] or "unsupported content"


def _load_safetensors(path: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, json.JSONDecodeError, OSError, ValueError) as exc:
        raise CheckpointError(f"{printable(path)} is a damaged safetensors file ({' '.join(str(exc).split())[:160]})") from None


def _unwrap(raw, path: Path) -> tuple[dict, str | None]:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{printable(path)} holds a {type(raw).__name__}, not a dict of tensors")
    for wrapper in _WRAPPERS:
        if isinstance(raw.get(wrapper), dict):
            return raw[wrapper], wrapper
    return raw, None


def _strip_ddp_prefix(state_dict: dict, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    not_strings = [key for key in state_dict if not isinstance(key, str)]
    if not_strings:
        shown = ", ".join(printable(repr(key))[:60] for key in not_strings[:3])
        raise CheckpointError(f"{printable(path)}: state dict keys that are not strings: {shown}")
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{printable(path)} contains no tensors")
    others = [printable(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise CheckpointError(f"{printable(path)}: state dict entries that are not tensors: {', '.join(others[:5])}")
    if not all(key.startswith(_DDP_PREFIX) for key in tensors):
        return tensors, None
    # Multi-GPU training saves every key under `module.`; the layout underneath is unchanged.
    return {key[len(_DDP_PREFIX) :]: value for key, value in tensors.items()}, _DDP_PREFIX


def _check_tensor_kinds(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Only dense CPU tensors of the dtypes a safetensors file and the model can hold go on."""
    for key, tensor in tensors.items():
        problem = None
        if tensor.layout != torch.strided or tensor.is_sparse or getattr(tensor, "is_nested", False):
            problem = f"a {str(tensor.layout).removeprefix('torch.')} tensor (only dense tensors are weights)"
        elif tensor.is_quantized:
            problem = "a quantized tensor"
        elif tensor.device.type != "cpu":
            problem = f"a tensor on the {tensor.device.type} device, without data"
        elif tensor.dtype not in ACCEPTED_DTYPES:
            problem = f"dtype {str(tensor.dtype).removeprefix('torch.')}, which a converted checkpoint cannot hold"
        elif type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            problem = f"a tensor subclass ({type(tensor).__name__})"
        if problem:
            raise CheckpointError(f"{printable(path)}: {printable(key)} is {problem}")


# ----------------------------------------------------------------------------------------------
# The source must not change while it is converted


class SourceGuard:
    """Keeps the source file as it was when loaded, for the length of a conversion.

    The weights are memory-mapped: a source truncated under us would kill the process with
    SIGBUS on the next page read, and one rewritten in place would mix old and new weights under
    the old sha256. Python cannot recover from SIGBUS, so it must never happen: a read lease
    (F_SETLEASE) makes the kernel hold any other process that opens the file for writing or
    truncates it, and tell us (SIGIO); `check()` then stops the run with one line before another
    page is read, and releasing the lease lets the writer go on. Where a lease is not available
    (another owner, a network file system) `check()` still compares the file's identity before
    every tensor and at the end.
    """

    def __init__(self, path: Path, identity: tuple):
        self.path = Path(path)
        self.identity = identity
        self.changing = False
        self._fd: int | None = None
        self._previous = None

    def __enter__(self) -> SourceGuard:  # noqa: PYI034 - a context manager used in one place
        with contextlib.suppress(OSError):
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            if threading.current_thread() is threading.main_thread():
                self._previous = signal.signal(signal.SIGIO, self._on_lease_break)
                try:
                    fcntl.fcntl(self._fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
                except OSError:  # not the owner, a network file system, or open for writing elsewhere
                    self._restore_handler()
        self.check()
        return self

    def _on_lease_break(self, signum, frame) -> None:
        self.changing = True

    def _restore_handler(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGIO, self._previous)
            self._previous = None

    def check(self) -> None:
        try:
            now = file_identity(os.stat(self.path))
        except OSError:
            now = None
        if self.changing or (self.identity and now != self.identity):
            raise CheckpointError(
                f"the source checkpoint {printable(self.path)} was changed by another program while it was being converted",
                hint="nothing was written; run again once it is complete",
            )

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            os.close(self._fd)
            self._fd = None
        self._restore_handler()


# ----------------------------------------------------------------------------------------------
# Memory: give a memory-mapped source's pages back once they are used (convert, inspect, parity)
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


def release_clean_file_pages(path: Path) -> int:
    """Drop this process's resident pages of every mapping of `path` that holds no private change
    (Private_Dirty and Anonymous both 0, from /proc/self/smaps): those pages equal the file, so a
    later read faults them back unchanged. For a folder transformers loaded memory-mapped and the
    model then widened (float64): the mapping stays open, 2.2 GB resident at full size, after no
    parameter uses it. Returns the bytes of the mappings released; 0 off Linux."""
    if _madvise is None:
        return 0
    try:
        status = os.stat(path)
        with open("/proc/self/smaps") as smaps:
            lines = smaps.readlines()
    except OSError:
        return 0
    device = _proc_device(status)
    mappings, current = [], None
    for line in lines:
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            matches = len(fields) >= 5 and fields[3] == device and fields[4] == str(status.st_ino)
            start, end = (int(address, 16) for address in fields[0].split("-"))
            current = {"start": start, "end": end, "private": 0} if matches else None
            if current is not None:
                mappings.append(current)
        elif current is not None and fields and fields[0] in ("Private_Dirty:", "Anonymous:"):
            current["private"] += int(fields[1])
    released = 0
    for mapping in mappings:
        if mapping["private"] == 0:
            _madvise(mapping["start"], mapping["end"] - mapping["start"], _MADV_DONTNEED)
            released += mapping["end"] - mapping["start"]
    return released
