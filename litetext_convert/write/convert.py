"""The conversion pipeline's second half: write -> verify.

`plan.prepare` does everything that needs no output (inspect and parity stop there); `convert` streams
the mapped tensors into safetensors shards inside a temporary folder, checks the plan against the
real (meta) model and what it wrote, and only then renames the folder into place. The meta model
may still be building while the shards are written (workflows/convert.py starts it in the
background); it is waited for before anything is published. The workflow around this (source memo,
model card, the overlap) is `workflows.convert.convert_folder`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from litetext_convert import __version__
from litetext_convert.errors import OutputError
from litetext_convert.folder import CONVERSION_RECORD
from litetext_convert.folder.ownership import atomic_folder
from litetext_convert.plan import ops
from litetext_convert.dtypes import check_dtype, target_dtype
from litetext_convert.plan.prepare import Prepared
from litetext_convert.source.digest import SourceHash
from litetext_convert.source.load import TORCH_ZIP, MappedRegions, SourceGuard, release_source_pages
from litetext_convert.targets import target as find_target
from litetext_convert.write.processor import (
    load_tokenizer,
    merges_fingerprint,
    processor_settings,
    vocabulary_name,
)
from litetext_convert.write.shards import (
    INDEX_FILE,
    FileCopier,
    TensorEntry,
    fingerprint,
    parse_size,
    plan_shards,
    tensor_bytes,
    write_errors,
    write_index,
    write_json,
    write_shard,
)


@dataclass
class ConversionResult:
    folder: Path
    record: dict
    shards: list[str]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def target_entries(prepared: Prepared, dtype: str) -> list[TensorEntry]:
    plan = prepared.plan
    mapped = [
        TensorEntry(target, plan.target_shapes[target], target_dtype(plan.target_dtypes[target], dtype))
        for step in plan.steps
        for target in step.targets
    ]
    filled = [TensorEntry(name, fill.shape, target_dtype(fill.dtype, dtype)) for name, fill in plan.filled.items()]
    return mapped + filled


class _TargetProducer:
    """Produces target tensors in plan order; each source is read once and its pages released
    as soon as its last target is written."""

    def __init__(self, prepared: Prepared, dtype: str, release_pages: bool, guard: SourceGuard | None = None):
        self.prepared = prepared
        self.guard = guard
        self.dtype = dtype
        self.release_pages = release_pages
        self.pending: dict[str, torch.Tensor] = {}

    def __call__(self, name: str) -> torch.Tensor:
        fill = self.prepared.plan.filled.get(name)
        if fill is not None:  # an expected-missing target: no source, its declared fill
            return fill.tensor().to(target_dtype(fill.dtype, self.dtype))
        if name not in self.pending:
            if self.guard:
                self.guard.check()  # before touching the next source pages (a truncated mmap is SIGBUS)
            step = self.prepared.plan.step_of_target[name]
            sources = [self.prepared.loaded.tensors[key] for key in step.sources]
            outputs = ops.apply_gathered(list(step.ops), sources, self.prepared.ctx)
            self.pending.update(zip(step.targets, outputs))
        tensor = self.pending.pop(name)
        return tensor.to(target_dtype(tensor.dtype, self.dtype)).contiguous()

    def written(self, entry: TensorEntry) -> None:
        step = self.prepared.plan.step_of_target.get(entry.name)
        if step is None:  # a filled target has no source pages to release
            return
        if self.release_pages and entry.name == step.targets[-1]:
            for key in step.sources:
                release_source_pages(self.prepared.loaded.tensors[key])


def convert(
    prepared: Prepared,
    output_dir: Path,
    *,
    dtype: str = "keep",
    max_shard_size: str = "5GB",
    tokenizer: str | None = None,
    force: bool = False,
    verify_load: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    source_hash: SourceHash | None = None,
) -> ConversionResult:
    """`source_hash`: the source's sha256 already running (the workflow starts it before torch is
    imported); hashed here otherwise."""
    dtype = check_dtype(dtype)  # aliases (bf16, fp16) become the canonical name the record keeps
    started = time.perf_counter()
    entries = target_entries(prepared, dtype)
    shards = plan_shards(entries, parse_size(max_shard_size))
    source_hash = source_hash or SourceHash(prepared.resolved.path)
    guard = SourceGuard(prepared.resolved.path, prepared.loaded.identity)
    with guard, atomic_folder(output_dir, force=force, keep=[prepared.resolved.path]) as folder:
        checksums = _write_shards(prepared, folder, shards, dtype, guard, on_bytes)
        write_index(folder, shards, {})
        # The shards were written from the table's plan, possibly while the meta model was still
        # being built (in the background: workflows/convert.py); nothing is renamed into place before this check.
        prepared.check_against_model()
        _write_config_and_processor(prepared, folder, entries, tokenizer)
        verify_written(folder, shards, checksums)
        warnings = verify_with_transformers(folder) if verify_load else []
        record = conversion_record(prepared, entries, dtype, source_hash.result())
        if source_hash.opened not in ((), prepared.loaded.identity):
            guard.changing = True  # the file hashed is not the file loaded
        guard.check()  # what was hashed and written is what was loaded
        record["tokenizer"] = tokenizer_record(folder, tokenizer)
        record["files"] = sorted([*os.listdir(folder), CONVERSION_RECORD])  # what litetext may replace later
        write_json(folder / CONVERSION_RECORD, record)
    return ConversionResult(Path(output_dir), record, [s.filename for s in shards], time.perf_counter() - started, warnings)


def _write_shards(prepared: Prepared, folder: Path, shards, dtype: str, guard: SourceGuard,
                  on_bytes: Callable[[int], None] | None) -> dict[str, int]:
    """Every shard, tensor by tensor in plan order; returns each tensor's checksum for the read-back."""
    mapped = prepared.loaded.format == TORCH_ZIP  # the one format litetext memory-maps
    producer = _TargetProducer(prepared, dtype, release_pages=mapped, guard=guard)
    metadata = {"format": "pt"}

    def written(entry: TensorEntry) -> None:
        producer.written(entry)
        if on_bytes:
            on_bytes(entry.nbytes)

    copier = FileCopier(prepared.loaded.path, MappedRegions(prepared.loaded.path)) if mapped else None
    checksums: dict[str, int] = {}
    try:
        for shard in shards:
            checksums.update(write_shard(folder / shard.filename, shard, producer, metadata, on_tensor=written, copier=copier))
    finally:
        if copier is not None:
            copier.close()
    return checksums


def _write_config_and_processor(prepared: Prepared, folder: Path, entries: list[TensorEntry], tokenizer: str | None) -> None:
    # The tokenizer is loaded only now: it imports transformers, which must not race the background
    # import of its modeling code (a half-initialised lazy module fails "cannot import name"). A bad
    # tokenizer still fails before anything is published: the temporary folder is removed.
    tokenizer_object = load_tokenizer(tokenizer, prepared.arch.context_length)
    config = prepared.config
    config.dtype = _config_dtype(entries)
    with write_errors(folder / "config.json"):
        config.save_pretrained(str(folder))
    with write_errors(folder / "processor_config.json"):
        find_target(prepared.target).save_processor(folder, prepared.arch, tokenizer_object)


def _config_dtype(entries: list[TensorEntry]) -> str:
    floating = {entry.dtype for entry in entries if entry.dtype.is_floating_point}
    return str(floating.pop()).removeprefix("torch.") if len(floating) == 1 else "float32"


def verify_written(folder: Path, shards, checksums: dict[str, int]) -> None:
    """Read every shard back through the safetensors library: names, shapes, dtypes and bytes."""
    from safetensors import safe_open

    problems = []
    for shard in shards:
        with safe_open(str(folder / shard.filename), framework="pt") as handle:
            if set(handle.keys()) != {entry.name for entry in shard.entries}:
                problems.append(f"{shard.filename}: tensor names differ from the plan")
                continue
            for entry in shard.entries:
                tensor = handle.get_tensor(entry.name)
                if tuple(tensor.shape) != entry.shape or tensor.dtype != entry.dtype:
                    problems.append(f"{entry.name}: read back as {list(tensor.shape)} {tensor.dtype}")
                elif fingerprint(tensor_bytes(tensor)) != checksums[entry.name]:
                    problems.append(f"{entry.name}: bytes read back differ from the bytes written")
    if len(shards) > 1 and not (folder / INDEX_FILE).exists():
        problems.append("index file missing")
    if problems:
        raise OutputError(f"the written weights failed the read-back check: {'; '.join(problems[:5])}")


def verify_with_transformers(folder: Path) -> list[str]:
    """--verify-load: what users will do. No missing, unexpected or mismatched keys allowed."""
    import warnings as _warnings

    from transformers.utils import logging as hf_logging

    from litetext_convert.plan.hf_config import model_class_of_folder

    hf_logging.disable_progress_bar()
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        model, info = model_class_of_folder(folder).from_pretrained(str(folder), output_loading_info=True)
    bad = {name: keys for name, keys in info.items() if keys and name != "error_msgs"}
    if bad or info.get("error_msgs"):
        raise OutputError(f"transformers reloads the folder with problems: {bad or info['error_msgs']}")
    del model
    return [str(w.message) for w in caught]


def conversion_record(prepared: Prepared, entries: list[TensorEntry], dtype: str, sha256: str) -> dict:
    plan = prepared.plan
    return {
        "tool": {"name": "litetext", "version": __version__},
        "source": {
            **prepared.resolved.to_json(),
            "sha256": sha256,
            "bytes": prepared.loaded.bytes,
            "format": prepared.loaded.format,
            "wrapper": prepared.loaded.wrapper,
            "stripped_prefix": prepared.loaded.stripped_prefix,
        },
        "family": prepared.arch.family.to_json(),
        "target": {
            "name": prepared.target,
            "model_class": prepared.config.architectures[0],
            # The model checked against: built on the meta device now, or read from litetext's cache
            # of an earlier build of the same model under the same transformers files and torch.
            "manifest": prepared.target_model.manifest_origin,
        },
        "variant": prepared.arch.variant,
        "context_length": prepared.arch.context_length,
        "architecture": prepared.arch.to_json(),
        "keys": {
            "source": len(prepared.loaded.tensors),
            "mapped": plan.mapped_sources,
            "dropped": plan.drops_by_reason(),
            "target": len(entries),
            "filled": plan.fills_by_reason(),
            "missing": 0,
            "unexpected": 0,
        },
        "parameters": sum(math.prod(entry.shape) for entry in entries if entry.dtype.is_floating_point),
        "dtype": dtype if dtype != "keep" else _config_dtype(entries),
        "mapping_tables": prepared.table.to_json(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def tokenizer_record(folder: Path, source: str | None) -> dict:
    from litetext_convert.reference import merges_from_folder

    merges_sha256 = merges_fingerprint(merges_from_folder(folder))
    return {
        # A local folder is named, not located: the record is published and a path is this machine's.
        "source": f"local folder {Path(source).name}" if source and Path(source).is_dir() else source or processor_settings()["tokenizer"]["default_source"],
        "merges_sha256": merges_sha256,
        "vocabulary": vocabulary_name(merges_sha256) or "unknown (neither CLIP's nor the synthetic test vocabulary)",
    }


