"""What the plan is checked against: the target model's parameters and persistent buffers (names,
shapes, dtypes), built on the meta device, or read back from an earlier build of the same model.

Building it means importing transformers' modeling code and constructing the model on the meta
device: ~2.3 s of Python on 2 cores, more than copying a 2.2 GB checkpoint. The result is a pure
function of that code, torch and the config, so it is kept in a cache keyed by exactly those:
  - the config, as a full dict (every value, defaults included) and the model class name;
  - the torch version;
  - the transformers version and, for every .py file of the installed transformers package, its
    path, size and mtime (found without importing it: an upgrade, a reinstall or an edited file in
    an editable checkout all give another key).
A cached entry is the same check, not a weaker one: the names, shapes and dtypes that building the
model gave last time, under a key that changes whenever the build could give anything else.
Anything unreadable in the cache is ignored and rebuilt; a cache that cannot be written is skipped.

Where: $LITETEXT_CACHE_DIR, else $XDG_CACHE_HOME/litetext, else ~/.cache/litetext (the `manifests/`
folder). LITETEXT_NO_CACHE=1 builds every time and writes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

CACHE_FORMAT = 1  # bump when the file layout or the key's contents change
BUILT, CACHED = "built", "cached"  # how a manifest was obtained (the conversion record keeps it)


@dataclass(frozen=True)
class Manifest:
    tensors: dict[str, torch.Tensor]  # name -> meta tensor with the model's shape and dtype
    origin: str  # BUILT or CACHED


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is switched off."""
    if os.environ.get("LITETEXT_NO_CACHE", "").strip() not in ("", "0"):
        return None
    override = os.environ.get("LITETEXT_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "litetext"


def package_fingerprint(package: str) -> str:
    """sha256 over (relative path, size, mtime_ns) of the package's .py files, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return "absent"
    root = Path(spec.origin).parent
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def manifest_key(config) -> str:
    """Everything the meta model's names, shapes and dtypes depend on, hashed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:  # pragma: no cover - transformers is a dependency
        transformers_version = "unknown"
    material = {
        "format": CACHE_FORMAT,
        "model_class": config.architectures[0],
        "config_class": type(config).__name__,
        "config": config.to_dict(),
        "torch": torch.__version__,
        "transformers": transformers_version,
        "transformers_files": package_fingerprint("transformers"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def target_manifest(config, build) -> Manifest:
    """`build(config)` -> {name: meta tensor}, or the cached result of an earlier identical build."""
    folder = cache_dir()
    path = folder / "manifests" / f"{manifest_key(config)}.json" if folder else None
    if path is not None:
        cached = _read(path)
        if cached is not None:
            return Manifest(cached, CACHED)
    tensors = build(config)
    if path is not None:
        _write(path, config.architectures[0], tensors)
    return Manifest(tensors, BUILT)


def _read(path: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when the entry is absent or not exactly what `_write` writes."""
    try:
        entries = json.loads(path.read_text())["tensors"]
        tensors = {}
        for name, shape, dtype_name in entries:
            dtype = getattr(torch, dtype_name)
            if not isinstance(name, str) or not isinstance(dtype, torch.dtype) or name in tensors:
                return None
            if not all(isinstance(size, int) and size >= 0 for size in shape):
                return None
            tensors[name] = torch.empty(shape, dtype=dtype, device="meta")
        return tensors or None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(path: Path, model_class: str, tensors: dict[str, torch.Tensor]) -> None:
    entries = [[name, list(tensor.shape), str(tensor.dtype).removeprefix("torch.")] for name, tensor in tensors.items()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then renamed: a reader never sees half an entry.
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as output:
                json.dump({"format": CACHE_FORMAT, "model_class": model_class, "tensors": entries}, output)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only or full cache folder costs the next run the build, nothing else
