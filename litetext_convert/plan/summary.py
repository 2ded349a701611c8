"""What `litetext inspect` reports about a checkpoint, as plain data (rendered by report.py)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from functools import lru_cache

import torch

from litetext_convert.paths import read_config
from litetext_convert.plan.prepare import Prepared
from litetext_convert.source.load import TORCH_ZIP, release_source_pages


@lru_cache(maxsize=1)
def _components() -> list[tuple[str, re.Pattern, bool]]:
    table = read_config("components.toml")
    return [(c["name"], re.compile(c["pattern"]), bool(c.get("extra"))) for c in table["component"]]


def component_of(key: str) -> tuple[str, bool]:
    for name, pattern, extra in _components():
        if pattern.search(key):
            return name, extra
    return "unknown", True


def scan_non_finite(tensors: dict[str, torch.Tensor], release_pages: bool) -> dict[str, int]:
    """Count NaN/Inf per floating tensor (complex tables included); reads every byte once."""
    bad: dict[str, int] = {}
    for key, tensor in tensors.items():
        if tensor.is_floating_point() or tensor.is_complex():
            # A NaN or Inf anywhere makes the sum non-finite: one cheap reduction per tensor, and
            # the exact count only for the rare tensor that fails it (or overflows the sum).
            if not bool(torch.isfinite(tensor.sum())):
                count = int((~torch.isfinite(tensor)).sum())
                if count:
                    bad[key] = count
            if release_pages:
                release_source_pages(tensor)
    return bad


def summarize(prepared: Prepared, *, scan: bool = True) -> dict:
    loaded = prepared.loaded
    components: dict[str, dict] = defaultdict(lambda: {"keys": 0, "parameters": 0, "extra": False})
    for key, tensor in loaded.tensors.items():
        name, extra = component_of(key)
        components[name]["keys"] += 1
        components[name]["parameters"] += tensor.numel()
        components[name]["extra"] = extra and key in prepared.plan.dropped  # the video target converts the tracker
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for t in loaded.tensors.values())
    non_finite = scan_non_finite(loaded.tensors, loaded.format == TORCH_ZIP) if scan else None
    plan = prepared.plan
    return {
        "file": str(prepared.resolved.path),
        "source": {**prepared.resolved.to_json(), "local_path": str(prepared.resolved.path)},
        "format": loaded.format,
        "wrapper": loaded.wrapper,
        "stripped_prefix": loaded.stripped_prefix,
        "bytes": loaded.bytes,
        "keys": len(loaded.tensors),
        "parameters": sum(t.numel() for t in loaded.tensors.values()),
        "dtypes": dict(dtypes),
        "components": dict(components),
        "family": prepared.arch.family.to_json(),
        "architecture": prepared.arch.to_json(),
        "mapping": {
            "tables": [entry["file"] for entry in prepared.table.to_json()],
            "target": prepared.target,
            "mapped": plan.mapped_sources,
            "dropped": plan.drops_by_reason(),
            "filled": plan.fills_by_reason(),
            "targets": len(plan.target_shapes) + len(plan.filled),
            "missing": 0,
            "unexpected": 0,
        },
        "non_finite": non_finite,
    }
