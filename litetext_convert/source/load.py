"""Read a checkpoint safely: sniff the format from its first bytes, never unpickle code, unwrap.

Torch files go through `torch.load(weights_only=True)` only, memory-mapped where the format
allows it, so a 2 GB checkpoint costs page cache, not a private copy.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.errors import CheckpointError

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

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


def sniff_format(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head:
        raise CheckpointError(f"{path} is empty")
    if head.startswith(b"PK\x03\x04"):
        return TORCH_ZIP
    if len(head) >= 9 and head[8:9] == b"{":
        header_length = struct.unpack("<Q", head[:8])[0]
        if 0 < header_length < path.stat().st_size:
            return SAFETENSORS
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode, as torch's legacy format starts
        return TORCH_LEGACY
    raise CheckpointError(f"{path} is not a checkpoint: not a torch file or safetensors (first bytes {head[:8].hex()})")


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}")
    kind = sniff_format(path)
    raw = _load_safetensors(path) if kind == SAFETENSORS else _load_torch(path, kind)
    state_dict, wrapper = _unwrap(raw, path)
    tensors, prefix = _strip_ddp_prefix(state_dict, path)
    return LoadedCheckpoint(path, kind, wrapper, prefix, tensors)


def _load_torch(path: Path, kind: str):
    # mmap needs the zip format; the legacy format is read whole (still weights_only).
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == TORCH_ZIP)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds objects that a weights-only load refuses to unpickle ({_refused_global(str(exc))})",
            hint="litetext never runs code from a checkpoint; re-save it as a plain state dict",
        ) from None
    except Exception as exc:  # a damaged file can make torch's reader fail in many ways
        reason = _plain(str(exc))[:160] or type(exc).__name__
        raise CheckpointError(f"{path} is damaged or truncated ({reason})") from None


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
        raise CheckpointError(f"{path} is a damaged safetensors file ({' '.join(str(exc).split())[:160]})") from None


def _unwrap(raw, path: Path) -> tuple[dict, str | None]:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a dict of tensors")
    for wrapper in _WRAPPERS:
        if isinstance(raw.get(wrapper), dict):
            return raw[wrapper], wrapper
    return raw, None


def _strip_ddp_prefix(state_dict: dict, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors")
    others = [str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {', '.join(others[:5])}")
    if not all(key.startswith(_DDP_PREFIX) for key in tensors):
        return tensors, None
    # Multi-GPU training saves every key under `module.`; the layout underneath is unchanged.
    return {key[len(_DDP_PREFIX) :]: value for key, value in tensors.items()}, _DDP_PREFIX
