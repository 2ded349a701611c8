"""Tensor level: every tensor of the folder against what our mapping makes of the original.

Each expected target is classified: equal; equal after a known operation the folder's converter
missed (the source stored as is: not transposed, table rows kept instead of sliced, cls row kept);
equal but in another dtype; different (and, when it is another source tensor, which one); missing.
Folder tensors the model does not have are extra. Source parts our mapping drops are listed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.audit.findings import Finding
from litetext_convert.errors import LitetextError
from litetext_convert.parity.runtime import release_mapped_pages
from litetext_convert.plan import ops
from litetext_convert.plan.prepare import Prepared

COUNTER = "num_batches_tracked"
COUNTER_CAUSE = "BatchNorm step counters (not stored, or left at transformers' 0): used only in training"
RECONVERT = "re-convert with `litetext convert` (it maps this tensor from the original)"

# What it means when a converter stored the source tensor without one of our operations.
MISSED_OPERATION = {
    "transpose": (
        "transposed",
        "the converter copied the source matrix untransposed (upstream computes x @ P, nn.Linear computes x @ W.T)",
        "transpose_projection",
    ),
    "slice_text_context": (
        "rows kept",
        "the converter kept every row of the position table; upstream slices it to the context, transformers "
        "interpolates a longer table to the input length instead",
        "slice_table",
    ),
    "drop_cls_row": ("cls row kept", "the converter kept the ViT cls-token row transformers has no token for", None),
    "split_qkv": ("not split", "the converter stored the fused q/k/v projection under one key", None),
}


class FolderTensors:
    """The folder's safetensors, read one tensor at a time: each `get` maps its shard, copies out the
    one tensor and unmaps, so no folder page stays resident and the folder is never held whole."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise LitetextError(f"{folder} holds no *.safetensors weights")
        self._where: dict[str, Path] = {}
        self._open = safe_open
        for path in files:
            try:
                with safe_open(str(path), framework="pt") as handle:
                    for key in handle.keys():
                        self._where[key] = path
            except Exception as exc:  # a damaged file fails inside safetensors in many ways
                raise LitetextError(f"cannot read {path.name}: {' '.join(str(exc).split())[:160]}") from None
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            listed = set(json.loads(index.read_text()).get("weight_map", {}))
            if listed - set(self._where):
                raise LitetextError(f"{index.name} lists tensors no shard holds: {sorted(listed - set(self._where))[:3]}")

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        with self._open(str(self._where[key]), framework="pt") as handle:
            return handle.get_tensor(key)


@dataclass
class TensorAudit:
    findings: list[Finding]
    summary: dict  # counts per class, dropped source parts
    fixes: dict[str, list[tuple[str, str]]]  # recipe id -> [(target key, operation)]


def audit_tensors(prepared: Prepared, folder_tensors: FolderTensors) -> TensorAudit:
    """One target at a time: the folder's tensor read, the expected one computed from its source,
    both dropped before the next. A memory-mapped source tensor has its resident pages released once
    compared (`_ReleasingSource`): the level costs a few tensors, not the checkpoint (2.2 GB at full size)."""
    source = _ReleasingSource(prepared)
    ctx = prepared.ctx
    by_shape: dict[tuple, list[str]] = defaultdict(list)
    for key, tensor in source.items():
        by_shape[tuple(tensor.shape)].append(key)

    groups: dict[tuple, list[str]] = defaultdict(list)  # (kind, cause, affects, fix, recipe, deviates) -> targets
    details: dict[tuple, list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    fixes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    missing_steps = {}

    for step in prepared.plan.steps:
        original = source[step.source]
        expected_list = ops.apply(list(step.ops), original, ctx)
        for target, expected in zip(step.targets, expected_list):
            if target not in folder_tensors:
                missing_steps[target] = step
                continue
            stored = folder_tensors.get(target)
            kind, key = _classify(target, stored, expected, original, step, source, by_shape, prepared)
            if key is not None and target.endswith(COUNTER):
                kind, key = "counter differs (no effect)", ("counter differs", COUNTER_CAUSE, "nothing in eval mode",
                                                            "none needed", None, False)
            counts[kind] += 1
            if key is None:
                continue
            groups[key].append(target)
            if key[0] in ("different", "dtype changed"):
                details[key].append(_difference(target, stored, expected))
            recipe = key[4]
            if recipe:
                fixes[recipe].append((target, step.ops[0] if step.ops else ""))
        source.release(step.source)

    _missing_and_extra(prepared, folder_tensors, missing_steps, by_shape, groups, counts, source)
    findings = [
        Finding(level="tensor", kind=kind, subjects=targets, affects=affects, cause=cause, fix=fix, deviates=deviates,
                recipe=recipe, detail="; ".join(details.get((kind, cause, affects, fix, recipe, deviates), [])[:3]))
        for (kind, cause, affects, fix, recipe, deviates), targets in groups.items()
    ]
    dropped = _dropped_parts(prepared)
    summary = {"expected": len(prepared.expected), "in_folder": len(folder_tensors.keys()), "classes": dict(counts),
               "dropped_source_parts": dropped}
    return TensorAudit(findings, summary, dict(fixes))


def _missing_and_extra(prepared, folder_tensors, missing_steps, by_shape, groups, counts, source) -> None:
    """Targets the folder lacks and tensors it holds beyond the model's, into `groups` and `counts`."""
    extras = [key for key in folder_tensors.keys() if key not in prepared.expected]
    unsplit = _unsplit_extras(extras, missing_steps, folder_tensors, source)
    for target, step in missing_steps.items():
        if step.source in unsplit:
            key = ("not split", MISSED_OPERATION["split_qkv"][1], _affects(target), RECONVERT, None, True)
            counts["not split"] += 1
        elif target.endswith(COUNTER):
            key = ("missing", COUNTER_CAUSE, "nothing in eval mode", "none needed", None, False)
            counts["missing (no effect)"] += 1
        else:
            key = ("missing", "no tensor under this name: transformers initialises it randomly at load",
                   _affects(target), RECONVERT, None, True)
            counts["missing"] += 1
        groups[key].append(target)

    for extra in extras:
        holder = unsplit.get(extra) or _equal_source(folder_tensors.get(extra), source, by_shape)
        what = f"holds {holder}" if holder else "matches no source tensor"
        key = ("extra", f"not a parameter of Sam3LiteTextModel ({'fused projection' if extra in unsplit.values() else what}); "
               "transformers ignores it at load", "nothing (ignored at load)", "none needed (delete it to save space)", None, False)
        groups[key].append(extra)
        counts["extra"] += 1


def _classify(target, stored, expected, original, step, source, by_shape, prepared):
    """(class, finding key or None when equal)."""
    if stored.shape == expected.shape and stored.dtype == expected.dtype and torch.equal(stored, expected):
        return "equal", None
    if stored.shape == expected.shape and stored.dtype != expected.dtype:
        lossless = torch.equal(stored.to(expected.dtype), expected)
        if lossless or _close_after_cast(stored, expected):
            kind = "dtype changed"
            cause = (f"stored as {_name(stored.dtype)} where the original is {_name(expected.dtype)}"
                     + (" (exactly representable)" if lossless else ": values rounded"))
            fix = ("load with dtype=torch.float32" if lossless else "re-convert with `litetext convert --dtype keep`")
            return kind, (kind, cause, _affects(target) + " (rounding)", fix, None, not lossless)
    for name in step.ops:
        if stored.shape == original.shape and torch.equal(stored.to(original.dtype), original):
            label, cause, recipe = MISSED_OPERATION[name]
            return label, (label, cause, _affects(target), _fix_for(label), recipe, True)
    if stored.dim() == 2 and stored.shape == expected.t().shape and torch.equal(stored.to(expected.dtype), expected.t()):
        return "transposed", ("transposed", "stored transposed relative to the original", _affects(target), RECONVERT,
                              "transpose_projection", True)
    holder = _equal_source(stored, source, by_shape, exclude=step.source)
    if holder:
        reason = prepared.plan.dropped.get(holder)
        cause = f"holds the source tensor {holder}" + (f", which the original does not use here ({reason})" if reason else "")
        return "different", ("different", cause, _affects(target), RECONVERT, None, True)
    return "different", ("different", "values differ from the original", _affects(target), RECONVERT, None, True)


def _close_after_cast(stored, expected) -> bool:
    """A rounded copy: equal to the original once the original is cast to the stored dtype."""
    return stored.is_floating_point() and torch.equal(stored, expected.to(stored.dtype))


def _equal_source(stored, source, by_shape, exclude: str | None = None) -> str | None:
    for key in by_shape.get(tuple(stored.shape), []):
        if key != exclude and source[key].dtype == stored.dtype:
            equal = torch.equal(source[key], stored)
            source.release(key)
            if equal:
                return key
    return None


def _unsplit_extras(extras, missing_steps, folder_tensors, source) -> dict[str, str]:
    """Source key -> extra folder key holding its fused q/k/v projection unchanged (both directions)."""
    found: dict[str, str] = {}
    fused_sources = {step.source for step in missing_steps.values() if "split_qkv" in step.ops}
    for extra in extras:
        stored = folder_tensors.get(extra)
        for key in fused_sources:
            if source[key].shape == stored.shape and torch.equal(source[key], stored.to(source[key].dtype)):
                found[key] = extra
                found[extra] = key
            source.release(key)
    return found


class _ReleasingSource:
    """The prepared source's tensors by key, with `release(key)`: the resident pages of a
    memory-mapped checkpoint tensor handed back once it has been compared (a later read faults them
    in again, unchanged). Tensors of other formats live on the heap and are left alone."""

    def __init__(self, prepared: Prepared):
        self._tensors = prepared.loaded.tensors
        self._format = prepared.loaded.format

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._tensors[key]

    def items(self):
        return self._tensors.items()

    def release(self, key: str) -> None:
        release_mapped_pages([self._tensors[key]], self._format)


def _dropped_parts(prepared: Prepared) -> list[dict]:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for key, reason in prepared.plan.dropped.items():
        by_reason[reason].append(key)
    return [{"reason": reason, "keys": len(keys), "example": keys[0]} for reason, keys in by_reason.items()]


def _difference(target, stored, expected) -> str:
    if stored.shape != expected.shape:
        return f"{target}: shape {list(stored.shape)} vs original {list(expected.shape)}"
    diff = (stored.double() - expected.double()).abs()
    return f"{target}: max abs {float(diff.max()):.3g} (original max {float(expected.double().abs().max()):.3g})"


def _fix_for(label: str) -> str:
    return {
        "transposed": "usage: model.text_encoder.projection.weight.data = weight.T (or re-convert with litetext)",
        "rows kept": "usage: slice the table to the context (position_embedding[:, :, :CONTEXT]) and tokenize at "
        "max_length=CONTEXT (or re-convert with litetext)",
    }.get(label, RECONVERT)


def _affects(target: str) -> str:
    if target.startswith("text_encoder.projection"):
        return "text pooled (CLIP-style) output only; the detector does not use it"
    if target.startswith("text_encoder.embeddings.position"):
        return "every text stage, so the detector-facing text features and every detector output"
    if target.startswith(("text_encoder.", "text_projection")):
        return "text features from this layer on, so every detector output"
    if target.startswith("vision_encoder."):
        return "vision features, so every detector output"
    if target.startswith("geometry_encoder."):
        return "box-prompted detections (the geometry encoder also runs on text-only prompts in Meta's detector)"
    return "detector outputs (boxes, logits, masks)"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
