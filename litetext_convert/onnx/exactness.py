"""Exactness of an ONNX export: every weight initializer of every graph, of every rung, equals the
source tensor (re-read from the checkpoint, through the mapping's operations) as that rung stores
it, computed here independently with numpy, bit for bit.

- fp32: the tensor itself; `<name>::T<perm>` is it transposed (precision.py's fold);
- fp16: `<name>::fp16` is numpy's float16 cast (round to nearest even) of the fp32 weight;
- int8: `<name>_quantized`, `_scale`, `_zero_point` (onnxruntime's names) equal the symmetric
  per-channel int8 quantization of the fp32 weight: scale = max|w| over the channel / 127 (float32),
  zero point 0, q = clip(round_half_even(w / scale), -127, 127).

Initializers that are not weights (shape constants, computed buffers) are counted, never judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from litetext_convert.onnx.precision import FP16_STORED, TRANSPOSED

GRAPH_PREFIXES = ("model.",)  # DecoderGraph holds the model as `model`; the others use its own names
QUANT_SUFFIXES = ("_quantized", "_scale", "_zero_point")
MISMATCHES_KEPT = 20


@dataclass
class GraphExactness:
    graph: str
    checked: int = 0
    constants: int = 0
    mismatches: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"graph": self.graph, "checked": self.checked, "constants": self.constants,
                "mismatched": len(self.mismatches), "mismatches": self.mismatches[:MISMATCHES_KEPT]}


def parameter_name(initializer: str, expected: dict) -> tuple[str, list[int] | None, str]:
    """`model.x.weight::T10::fp16` -> ("x.weight", [1, 0], "::fp16"). A rung's suffix is taken off only
    when the name without it is a weight: `layer_scale` is a parameter, not the scale of `layer`."""
    for suffix in ("", FP16_STORED, *QUANT_SUFFIXES):
        if suffix and not initializer.endswith(suffix):
            continue
        name = initializer[: len(initializer) - len(suffix)]
        perm = None
        if TRANSPOSED in name:
            name, digits = name.split(TRANSPOSED, 1)
            if not digits.isdigit():
                continue  # a rung's suffix still on: the next try takes it off
            perm = [int(d) for d in digits]
        for prefix in GRAPH_PREFIXES:
            name = name.removeprefix(prefix)
        if name in expected:
            return name, perm, suffix
    return initializer, None, ""


def check_graph(path: Path, expected: dict[str, np.ndarray], filled: set[str]) -> GraphExactness:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    result = GraphExactness(path.name)
    stored = {init.name: init for init in model.graph.initializer}
    for init in model.graph.initializer:
        name, perm, part = parameter_name(init.name, expected)
        if name not in expected:
            result.constants += 1 if name not in filled else 0
            continue
        if part in ("_scale", "_zero_point"):
            continue  # judged with their `_quantized` weight
        source = expected[name] if perm is None else expected[name].transpose(perm)
        if part == "_quantized":
            siblings = init.name[: -len(part)]
            why = _int8_difference(source, stored, siblings)
        else:
            want = source.astype(np.float16) if part == FP16_STORED else source
            why = _difference(want, numpy_helper.to_array(init))
        result.checked += 1
        if why:
            result.mismatches.append({"initializer": init.name, "tensor": name, "why": why})
    return result


def _difference(want: np.ndarray, got: np.ndarray) -> str | None:
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if got.shape != want.shape:
        return f"shape {list(got.shape)}, expected {list(want.shape)}"
    if not np.array_equal(np.ascontiguousarray(got).view(np.uint8), np.ascontiguousarray(want).view(np.uint8)):
        return f"{int((got != want).sum())} of {want.size} values differ"
    return None


def int8_reference(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 along `axis`: (quantized, scale, zero point)."""
    other = tuple(i for i in range(weight.ndim) if i != axis)
    absmax = np.maximum(np.abs(weight.min(axis=other)).clip(0), np.abs(weight.max(axis=other)).clip(0))
    absmax = np.maximum(absmax, 0).astype(np.float32)
    scale = (absmax.astype(np.float64) * 2 / 254).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1.0), scale)  # an all-zero channel: onnxruntime's scale 1
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.clip(np.rint(weight.astype(np.float32) / scale.reshape(shape)), -127, 127).astype(np.int8)
    return quantized, scale, np.zeros(scale.shape, dtype=np.int8)


def _int8_difference(weight: np.ndarray, stored: dict, base: str) -> str | None:
    from onnx import numpy_helper

    parts = {s: stored.get(base + s) for s in QUANT_SUFFIXES}
    if any(p is None for p in parts.values()):
        return "a quantized weight without its scale or zero point"
    got = {s: numpy_helper.to_array(p) for s, p in parts.items()}
    # The output channel: a MatMul's B is [in, out], so the last axis that fits (a square weight fits both).
    axis = next((a for a in reversed(range(weight.ndim)) if got["_scale"].size == weight.shape[a]), None)
    if axis is None:
        return f"scale of {got['_scale'].size} values fits no axis of {list(weight.shape)} (not per channel)"
    quantized, scale, zero_point = int8_reference(weight, axis)
    for suffix, want in zip(QUANT_SUFFIXES, (quantized, scale, zero_point)):
        why = _difference(want, got[suffix].reshape(want.shape) if got[suffix].size == want.size else got[suffix])
        if why:
            return f"{suffix.lstrip('_')}: {why}"
    return None


def check_export(expected: dict[str, np.ndarray], filled: set[str], folder: Path, files: dict[str, dict[str, str]],
                 rungs: list[str]) -> dict:
    """Every graph of every rung asked for. `expected`: target name -> the source tensor through the
    mapping (parity/onnx.py computes it from the checkpoint); `filled`: targets with no source;
    `files`: graphs.json's graph -> rung -> file."""
    from litetext_convert.onnx import GRAPHS_DIR

    results = [check_graph(Path(folder) / GRAPHS_DIR / files[graph][rung], expected, filled)
               for rung in rungs for graph in files]
    checked = sum(r.checked for r in results)
    mismatched = sum(len(r.mismatches) for r in results)
    return {
        "passed": mismatched == 0 and all(r.checked for r in results),
        "rungs": rungs,
        "rule": "every weight initializer == the source tensor through the mapping's operations, as the rung "
        "stores it (fp32 itself or transposed; fp16 numpy cast; int8 symmetric per-channel, numpy), bit for bit",
        "checked": checked,
        "mismatched": mismatched,
        "graphs": [r.to_json() for r in results],
    }
