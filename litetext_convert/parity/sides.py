"""Run the sides of a parity comparison one at a time.

A whole-model comparison holds two models of the same size; holding both at once doubles peak
memory (full-size S0: two 2.2 GB models plus two forwards' activations). `run_side` builds one
side, runs it, keeps only the outputs that are compared, as compact CPU copies, and frees the
model before it returns. Peak memory is then one model, one forward's activations and the kept
outputs; the sides run in sequence, so the wall time is unchanged.

    original = run_side("original", build=lambda: build_original(...), forward=lambda m: m.run(x))
    converted = run_side("transformers", build=lambda: load_converted(folder), forward=lambda m: trace(m, x))
    diffs = compare_stages(original.outputs, converted.outputs)

`forward` returns the outputs to keep: a tensor, or dicts, lists, tuples or dataclasses of them
(other values pass through unchanged). Anything the comparison needs from the model itself (a
record of its keys, its name) is taken by `describe` while the model still exists. `release`
runs after the model is gone: hand back memory that the model shared, e.g. the resident pages
of a memory-mapped source checkpoint (`release_mapped_pages`).

Used by the whole-detector parity (parity/detector.py); the video tracker parity follows the
same rule with the same helper.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import Tensor

Model = TypeVar("Model")


@dataclass
class SideRun(Generic[Model]):
    name: str
    outputs: Any  # what `forward` returned, every tensor replaced by a compact detached CPU copy
    seconds: dict[str, float] = field(default_factory=dict)  # NAME_build, NAME_forward
    info: Any = None  # what `describe(model)` returned


def run_side(
    name: str,
    *,
    build: Callable[[], Model],
    forward: Callable[[Model], Any],
    describe: Callable[[Model], Any] | None = None,
    release: Callable[[], None] | None = None,
    keep_dtype: torch.dtype | None = None,
) -> SideRun:
    """Build one side, run it under no_grad, keep its outputs, free the model, then `release`.

    `keep_dtype`: cast kept floating-point outputs (e.g. to float64 so that later arithmetic on
    them cannot round); by default they keep their own dtype."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model = build()
    trim_heap()  # whatever the build allocated and dropped (random initial weights replaced by loaded ones)
    seconds[f"{name}_build"] = time.perf_counter() - started
    try:
        started = time.perf_counter()
        with torch.no_grad():
            outputs = keep_outputs(forward(model), keep_dtype)
        seconds[f"{name}_forward"] = time.perf_counter() - started
        info = describe(model) if describe is not None else None
    finally:
        del model
        gc.collect()  # model graphs hold reference cycles (hooks, parent links): free them now
        trim_heap()
        if release is not None:
            release()
    return SideRun(name, outputs, seconds, info)


def keep_outputs(value: Any, dtype: torch.dtype | None = None) -> Any:
    """Every tensor in `value` as a detached CPU tensor that owns exactly its own elements: a view
    into a large activation (one decoder layer of a stacked output, a transposed slice) would
    otherwise keep the whole buffer alive."""
    if isinstance(value, Tensor):
        return _compact(value, dtype)
    if isinstance(value, Mapping):
        return {key: keep_outputs(item, dtype) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(keep_outputs(item, dtype) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: keep_outputs(getattr(value, f.name), dtype)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def _compact(tensor: Tensor, dtype: torch.dtype | None) -> Tensor:
    tensor = tensor.detach().cpu()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        return tensor.to(dtype).contiguous()  # a new tensor already
    owned = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor if owned else tensor.clone(memory_format=torch.contiguous_format)


def trim_heap() -> None:
    """Give freed heap memory back to the kernel. glibc keeps freed blocks of up to 32 MB (most
    weight matrices) in its heap rather than unmapping them, so a freed model would otherwise
    still count in the process's resident memory when the next side starts."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def release_mapped_pages(tensors: Iterable[Tensor], format_name: str) -> None:
    """After a side that read a memory-mapped checkpoint: its resident pages stop counting as this
    process's memory (they stay in the page cache). Only for a torch zip checkpoint, the one
    format litetext maps read-only; tensors of any other format live on the heap and are left alone."""
    from litetext_convert.source.load import TORCH_ZIP, release_source_pages

    if format_name != TORCH_ZIP:
        return
    for tensor in tensors:
        release_source_pages(tensor)


def release_folder_pages(folder) -> None:
    """After a side that loaded a converted folder: transformers keeps the folder's safetensors
    memory-mapped after the model is freed, with every page the forward touched still resident
    (2.2 GB at full size, held through the comparison that follows). Only mappings with no private
    change are released (source.load.release_clean_file_pages)."""
    from pathlib import Path

    from litetext_convert.source.load import release_clean_file_pages

    for shard in Path(folder).glob("*.safetensors"):
        release_clean_file_pages(shard)
