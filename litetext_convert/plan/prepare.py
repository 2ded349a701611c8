"""Everything a conversion needs that writes nothing: resolve/load -> infer -> map -> validate.

inspect and parity stop here; `write.convert` goes on from a `Prepared`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.plan import ops, validate
# dtype names and the cast rule live in dtypes.py; re-exported here for the writer.
from litetext_convert.dtypes import check_dtype, target_dtype  # noqa: F401
from litetext_convert.plan.hf_config import meta_model_tensors, transformers_class
from litetext_convert.plan.infer import Architecture, infer_architecture
from litetext_convert.plan.manifest import target_manifest
from litetext_convert.plan.mapping import DraftPlan, MappingTable, Plan, check_plan, draft_plan, load_table
from litetext_convert.source.digest import SourceHash
from litetext_convert.source.load import LoadedCheckpoint, load_checkpoint
from litetext_convert.source.resolve import ResolvedCheckpoint, resolve
from litetext_convert.targets import target as find_target


class TargetModel:
    """transformers' config for an architecture and that model's parameters and buffers on the meta
    device: what the plan is checked against (`plan.manifest`: built, or read back from an earlier
    build of the same model under the same transformers and torch).

    Importing transformers and, on a cache miss, its modeling code and building the meta model take
    ~1.2 s (hit) to ~3.5 s (miss) of Python. With `background=True` that runs in a thread while
    conversion loads, plans from the table and writes the shards; the import is Python and holds the
    GIL, the writing is torch ops and file I/O that release it, so the two overlap on 2 cores."""

    def __init__(self, build: Callable[[], object], *, background: bool, preload: tuple[str, ...] = ()):
        self._build = build  # the target's config (image or video), from the architecture
        self._preload = preload  # transformers classes the caller imports next (see `prepare`)
        self._result: tuple[object, dict[str, torch.Tensor]] | None = None
        self.manifest_origin: str | None = None  # "built" or "cached", once the result is in
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="litetext-target-model", daemon=True)
        if background:
            self._thread.start()
        else:
            self._thread.run()  # the same work, in this thread

    def _work(self) -> None:
        try:
            config = self._build()
            validate.check_config(config)  # sizes positive, heads dividing widths: before any meta model
            manifest = target_manifest(config, lambda built: meta_model_tensors(built))  # looked up at call time (tests patch it)
            self.manifest_origin = manifest.origin
            self._result = (config, manifest.tensors)
            for name in self._preload:
                transformers_class(name)
        except BaseException as exc:  # handed to whoever asks for the result, in their thread
            self._error = exc

    def result(self) -> tuple[object, dict[str, torch.Tensor]]:
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass
class Prepared:
    resolved: ResolvedCheckpoint
    loaded: LoadedCheckpoint
    arch: Architecture
    target_model: TargetModel
    draft: DraftPlan
    ctx: ops.OpContext
    table: MappingTable
    source_hash: SourceHash | None = None
    _checked: Plan | None = None
    target: str = "image"  # a name of configs/targets/ (the image detector alone, the video model, ...)

    @property
    def config(self):  # the target's transformers config
        return self.target_model.result()[0]

    @property
    def expected(self) -> dict[str, torch.Tensor]:
        """The model's parameters and buffers, on the meta device."""
        return self.target_model.result()[1]

    @property
    def plan(self) -> Plan:
        """The checked plan once `check_against_model` ran (it adds the filled targets), else the plan
        from the table: its targets, shapes and dtypes do not depend on the model, so writing may start
        before the check; nothing may be published before."""
        return self._checked or self.draft.plan

    @property
    def checked(self) -> bool:
        return self._checked is not None

    def check_against_model(self) -> Plan:
        """Every target is a parameter or buffer of the real (meta) model with its shape and every
        one is produced; raises `MappingError` with all problems otherwise. Waits for the model."""
        if self._checked is None:
            checked = check_plan(self.draft, self.expected, self.table)
            validate.check_dtypes(checked, self.expected)
            self._checked = checked
        return self._checked


def prepare(
    checkpoint: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    context_length: int | None = None,
    num_heads: int | None = None,
    table_path: Path | list[Path] | None = None,
    hash_source: bool | SourceHash = False,
    defer_model_check: bool = False,
    target: str = "image",
    preload: tuple[str, ...] = (),
) -> Prepared:
    """`hash_source`: start the source's sha256 now, so it overlaps the imports and the meta
    model; only conversion needs it. A `SourceHash` already running (cli convert starts one before
    torch is imported) is taken when it hashes the file `checkpoint` resolves to.

    `defer_model_check`: build the meta model in a background thread and return with the plan
    checked against the table only; the caller must call `check_against_model()` before it
    publishes anything (`write.convert` does, before the folder is renamed into place). A plan that
    already fails from the table alone is checked (and fails, with every problem) here.

    `preload`: transformers classes the caller will use next (convert: the tokenizer's), imported
    in the same thread after the model: every transformers import stays in one thread (two threads
    importing from its lazy module at once can see it half-initialised), and off the main one,
    where ~1.3 s of tokenizer imports would otherwise follow the writing."""
    chosen = find_target(target)  # configs/targets/; an unknown name is refused here, before any loading
    resolved = resolve(checkpoint, repo_id=repo_id, revision=revision)
    if isinstance(hash_source, SourceHash) and os.path.realpath(hash_source.path) == os.path.realpath(resolved.path):
        source_hash = hash_source
    else:  # not started, or another file (a Hub cache refreshed since): hash what was resolved
        source_hash = SourceHash(resolved.path) if hash_source else None
    loaded = load_checkpoint(resolved.path)
    validate.check_source_structure(loaded.tensors)
    arch = infer_architecture(loaded.tensors, resolved.filename, context_length=context_length, num_heads=num_heads)
    # The family says which targets it has (and why not, e.g. SAM3.1 video) before anything is built.
    table = load_table(table_path or chosen.table_paths(arch.family))
    target_model = TargetModel(lambda: chosen.build_config(arch, loaded.tensors), background=defer_model_check, preload=preload)
    ctx = ops.OpContext(arch.context_length)
    draft = draft_plan(table, loaded.tensors, ctx)
    prepared = Prepared(resolved, loaded, arch, target_model, draft, ctx, table, source_hash, target=target)
    # No deferral when the check must come first: a table with expected-missing targets (SAM3.1's
    # absent 0.5x neck level) learns what to fill only from the model, and a complex tensor cannot
    # be written at all (the check names it with the model's dtype).
    complex_source = any(dtype.is_complex for dtype in draft.plan.target_dtypes.values())
    if draft.problems or not defer_model_check or table.expected_missing or complex_source:
        prepared.check_against_model()
    return prepared
