"""Everything a conversion needs that writes nothing: resolve/load -> infer -> map -> validate.

inspect and parity stop here; `write.convert` goes on from a `Prepared`.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.errors import LitetextError
from litetext_convert.plan import ops
from litetext_convert.paths import configs_dir
from litetext_convert.plan.hf_config import build_config, build_video_config, meta_model_tensors, meta_video_model_tensors
from litetext_convert.plan.infer import Architecture, infer_architecture
from litetext_convert.plan.mapping import MappingTable, Plan, build_plan, load_table
from litetext_convert.source.load import LoadedCheckpoint, load_checkpoint
from litetext_convert.source.resolve import ResolvedCheckpoint, resolve

# --target -> its mapping table: image = the detector alone; video = detector + tracker (composes mapping.toml)
TARGETS = {"image": "mapping.toml", "video": "video.toml"}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class Prepared:
    resolved: ResolvedCheckpoint
    loaded: LoadedCheckpoint
    arch: Architecture
    config: object  # transformers.Sam3LiteTextConfig
    expected: dict[str, torch.Tensor]  # the model's parameters and buffers, on the meta device
    plan: Plan
    ctx: ops.OpContext
    table: MappingTable
    source_hash: "SourceHash | None" = None
    target: str = "image"  # "image": Sam3LiteTextModel; "video": Sam3VideoModel (detector + tracker)


def prepare(
    checkpoint: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    context_length: int | None = None,
    num_heads: int | None = None,
    table_path: Path | None = None,
    hash_source: bool = False,
    target: str = "image",
) -> Prepared:
    """`hash_source`: start the source's sha256 now, so it overlaps the imports and the meta
    model; only conversion needs it."""
    if target not in TARGETS:
        raise LitetextError(f"unknown --target {target!r}; choose {', '.join(TARGETS)}")
    resolved = resolve(checkpoint, repo_id=repo_id, revision=revision)
    source_hash = SourceHash(resolved.path) if hash_source else None
    loaded = load_checkpoint(resolved.path)
    arch = infer_architecture(loaded.tensors, resolved.filename, context_length=context_length, num_heads=num_heads)
    if target == "video":
        config = build_video_config(arch, loaded.tensors)
        expected = meta_video_model_tensors(config)
    else:
        config = build_config(arch)
        expected = meta_model_tensors(config)
    ctx = ops.OpContext(arch.context_length)
    table = load_table(table_path or configs_dir() / TARGETS[target])
    plan = build_plan(table, loaded.tensors, expected, ctx)
    return Prepared(resolved, loaded, arch, config, expected, plan, ctx, table, source_hash, target)



def check_dtype(requested: str) -> None:
    if requested != "keep" and requested not in DTYPES:
        raise LitetextError(f"unknown --dtype {requested!r}; choose keep, {', '.join(DTYPES)}")


def target_dtype(source: torch.dtype, requested: str) -> torch.dtype:
    if requested == "keep" or not source.is_floating_point:
        return source
    return DTYPES[requested]



class SourceHash:
    """sha256 of the source file in a thread (hashlib releases the GIL on large buffers)."""

    def __init__(self, path: Path):
        self._digest: str | None = None
        self._thread = threading.Thread(target=self._work, args=(path,), daemon=True)
        self._thread.start()

    def _work(self, path: Path) -> None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(16 << 20):
                digest.update(chunk)
        self._digest = digest.hexdigest()

    def result(self) -> str:
        self._thread.join()
        if self._digest is None:
            raise LitetextError("could not read the source checkpoint to hash it")
        return self._digest
