"""Everything a conversion needs that writes nothing: resolve/load -> infer -> map -> validate.

inspect and parity stop here; `write.convert` goes on from a `Prepared`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.errors import LitetextError
from litetext_convert.plan import ops, validate
# dtype names and the cast rule live in plan/dtypes.py; re-exported here for the writer.
from litetext_convert.plan.dtypes import DTYPES, check_dtype, target_dtype  # noqa: F401
from litetext_convert.plan.hf_config import build_config, build_video_config, meta_model_tensors
from litetext_convert.plan.infer import Architecture, infer_architecture
from litetext_convert.plan.mapping import MappingTable, Plan, build_plan, load_table
from litetext_convert.source.load import LoadedCheckpoint, load_checkpoint
from litetext_convert.source.resolve import ResolvedCheckpoint, resolve

# --target: image = the family's detector alone (its hf_model_class); video = detector + tracker
# (Sam3VideoModel). Which targets a family offers, and from which tables, is family data.
TARGETS = ("image", "video")

@dataclass
class Prepared:
    resolved: ResolvedCheckpoint
    loaded: LoadedCheckpoint
    arch: Architecture
    config: object  # the family's transformers config (Sam3LiteTextConfig for the LiteText families)
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
    table_path: Path | list[Path] | None = None,
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
    validate.check_source_structure(loaded.tensors)
    arch = infer_architecture(loaded.tensors, resolved.filename, context_length=context_length, num_heads=num_heads)
    # The family says which targets it has (and why not, e.g. SAM3.1 video) before anything is built.
    table = load_table(table_path or arch.family.table_paths(target))
    config = build_video_config(arch, loaded.tensors) if target == "video" else build_config(arch)
    validate.check_config(config)
    expected = meta_model_tensors(config)
    ctx = ops.OpContext(arch.context_length)
    plan = build_plan(table, loaded.tensors, expected, ctx)
    validate.check_dtypes(plan, expected)
    return Prepared(resolved, loaded, arch, config, expected, plan, ctx, table, source_hash, target)




class SourceHash:
    """sha256 of the source file in a thread (hashlib releases the GIL on large buffers)."""

    def __init__(self, path: Path):
        self._digest: str | None = None
        self.opened: tuple = ()  # the file's identity when the hash began (compared with the loaded one)
        self._thread = threading.Thread(target=self._work, args=(path,), daemon=True)
        if Path(path).is_file():  # never open a FIFO or device: the loader refuses those with one line
            self._thread.start()

    def _work(self, path: Path) -> None:
        from litetext_convert.source.load import file_identity

        digest = hashlib.sha256()
        with path.open("rb") as handle:
            self.opened = file_identity(os.fstat(handle.fileno()))
            while chunk := handle.read(16 << 20):
                digest.update(chunk)
        self._digest = digest.hexdigest()

    def result(self) -> str:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        if self._digest is None:
            raise LitetextError("could not read the source checkpoint to hash it")
        return self._digest
