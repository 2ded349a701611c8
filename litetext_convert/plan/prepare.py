"""Everything a conversion needs that writes nothing: resolve/load -> infer -> map -> validate.

inspect, parity and audit stop here (`prepare`); conversion (workflows/convert.py) starts from
`read_checkpoint` so that it can build the target model while it writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.plan import ops, validate
from litetext_convert.plan.hf_config import meta_model_tensors, transformers_class
from litetext_convert.plan.infer import Architecture, infer_architecture
from litetext_convert.plan.manifest import BUILT, checked_against_model, target_manifest
from litetext_convert.plan.mapping import DraftPlan, MappingTable, Plan, check_plan, draft_plan, load_table
from litetext_convert.source.load import LoadedCheckpoint, load_checkpoint
from litetext_convert.source.resolve import ResolvedCheckpoint, resolve
from litetext_convert.targets import target as find_target


class TargetModel:
    """transformers' config for an architecture and that model's parameters and buffers on the meta
    device: what the plan is checked against (`plan.manifest`: built, or read back from an earlier
    build of the same model under the same transformers and torch).

    Nothing is built until asked: `result()` builds it in the caller's thread, unless
    `start_in_background()` ran first. Importing transformers and, on a cache miss, its modeling
    code and building the meta model take ~1.2 s (hit) to ~3.5 s (miss) of Python; conversion
    (workflows/convert.py) runs that in a thread while it writes the shards: the import is Python
    and holds the GIL, the writing is torch ops and file I/O that release it, so the two overlap."""

    def __init__(self, build: Callable[[], object]):
        self._build = build  # the target's config (image or video), from the architecture
        self._preload: tuple[str, ...] = ()
        self._result: tuple[object, dict[str, torch.Tensor]] | None = None
        self.manifest_origin: str | None = None  # "built" or "cached", once the result is in
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="litetext-target-model", daemon=True)
        self._started = False

    def start_in_background(self, preload: tuple[str, ...] = ()) -> None:
        """`preload`: transformers classes the caller uses next (convert: the tokenizer's), imported
        in the same thread after the model: every transformers import stays in one thread (two
        threads importing from its lazy module at once can see it half-initialised)."""
        if not self._started:
            self._started = True
            self._preload = preload
            self._thread.start()

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

    def rebuilt(self) -> dict[str, torch.Tensor]:
        """The manifest built now (never the cache), replacing the cached one; in this thread."""
        config = self.result()[0]
        tensors = target_manifest(config, lambda built: meta_model_tensors(built), use_cache=False).tensors
        self._result, self.manifest_origin = (config, tensors), BUILT
        return tensors

    def result(self) -> tuple[object, dict[str, torch.Tensor]]:
        if not self._started:
            self._started = True
            self._work()  # the same work, in this thread
        elif self._thread.is_alive():
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

    @property
    def must_check_before_writing(self) -> bool:
        """Whether writing may not start on the table's plan alone: a plan that already fails from
        the table (the check reports every problem, the model's too), a table with expected-missing
        targets (SAM3.1's absent 0.5x neck level: what to fill comes from the model), or a complex
        tensor (it cannot be written at all; the check names it with the model's dtype)."""
        complex_source = any(dtype.is_complex for dtype in self.draft.plan.target_dtypes.values())
        return bool(self.draft.problems or self.table.expected_missing or complex_source)

    def check_against_model(self) -> Plan:
        """Every target is a parameter or buffer of the real (meta) model with its shape and every
        one is produced; raises `MappingError` with all problems otherwise. Waits for the model."""
        if self._checked is None:
            # A cached manifest that the plan fails against is rebuilt and checked again (plan.manifest).
            expected = self.expected  # waits for the model: its origin is known after
            self._checked = checked_against_model(self.target_model.manifest_origin, expected, self._check, self.target_model.rebuilt)
        return self._checked

    def _check(self, expected: dict[str, torch.Tensor]) -> Plan:
        checked = check_plan(self.draft, expected, self.table)
        validate.check_dtypes(checked, expected)
        return checked


def read_checkpoint(
    checkpoint: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    context_length: int | None = None,
    num_heads: int | None = None,
    table_path: Path | list[Path] | None = None,
    target: str = "image",
) -> Prepared:
    """resolve -> load -> infer -> the plan drafted from the table. The target model is not built
    yet: `prepare` builds it and checks the plan at once; conversion builds it in the background
    while it writes and checks before it publishes (workflows/convert.py)."""
    chosen = find_target(target)  # configs/targets/; an unknown name is refused here, before any loading
    resolved = resolve(checkpoint, repo_id=repo_id, revision=revision)
    loaded = load_checkpoint(resolved.path)
    validate.check_source_structure(loaded.tensors)
    arch = infer_architecture(loaded.tensors, resolved.filename, context_length=context_length, num_heads=num_heads)
    # The family says which targets it has (and why not, e.g. SAM3.1 video) before anything is built.
    table = load_table(table_path or chosen.table_paths(arch.family))
    target_model = TargetModel(lambda: chosen.build_config(arch, loaded.tensors))
    ctx = ops.OpContext(arch.context_length)
    draft = draft_plan(table, loaded.tensors, ctx)
    return Prepared(resolved, loaded, arch, target_model, draft, ctx, table, target=target)


def prepare(
    checkpoint: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    context_length: int | None = None,
    num_heads: int | None = None,
    table_path: Path | list[Path] | None = None,
    target: str = "image",
) -> Prepared:
    """Everything a conversion needs that writes nothing, the plan checked against the target model
    (raises `MappingError` with every problem). inspect, parity and audit stop here."""
    prepared = read_checkpoint(
        checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads,
        table_path=table_path, target=target,
    )
    prepared.check_against_model()
    return prepared
