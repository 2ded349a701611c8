"""The parity runtime: what makes a comparison fit in memory and compute in float64, for every scope.

- one side at a time (`run_side`), compact kept outputs, heap trimming, page release;
- float64 helpers: transformers' RoPE recomputed in float64 (ViT: `float64_rope`; the tracker's
  memory attention: `float64_memory_rope`), and 2-D convolutions in bands of output rows
  (`float64_convolutions`), so a float64 run costs band-sized scratch, not the whole unfolded input.

Run the sides of a parity comparison one at a time.

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

import contextlib
import ctypes
import dataclasses
import gc
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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


# ----------------------------------------------------------------------------------------------
# float64: RoPE in float64 (transformers computes it in float32 whatever the model dtype)

TRANSFORMERS_FLOAT64_WORKAROUNDS = (
    "transformers side, float64 only: ViT RoPE in float64: each layer's position_ids and "
    "Sam3ViTRotaryEmbedding's inv_freq recomputed by the same formulas in float64, and "
    "apply_rotary_pos_emb_2d without its float32 cast of q/k",
)


@contextlib.contextmanager
def float64_rope(model) -> Iterator[None]:
    """transformers' Sam3 ViT computes RoPE angles and rotations in float32 whatever the model dtype;
    float64 parity needs them in float64 (the original side does the same, see sam3_detector)."""
    from transformers.models.sam3 import modeling_sam3

    def rotary_forward(self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * self.inv_freq.to(torch.float64)
        return self.recomposition_frequencies(freqs.cos()), self.recomposition_frequencies(freqs.sin())

    def apply_rotary(q, k, cos, sin):
        rotate = modeling_sam3.rotate_pairwise
        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

    saved = [(modeling_sam3.Sam3ViTRotaryEmbedding, "forward"), (modeling_sam3, "apply_rotary_pos_emb_2d")]
    originals = [getattr(owner, name) for owner, name in saved]
    buffers = _float64_rope_buffers(model)
    modeling_sam3.Sam3ViTRotaryEmbedding.forward = rotary_forward
    modeling_sam3.apply_rotary_pos_emb_2d = apply_rotary
    try:
        yield
    finally:
        for (owner, name), original in zip(saved, originals):
            setattr(owner, name, original)
        for module, name, value in buffers:
            setattr(module, name, value)


def _float64_rope_buffers(model) -> list[tuple[torch.nn.Module, str, Tensor]]:
    """Swap in float64 inv_freq / position_ids; returns what to put back."""
    from transformers.models.sam3 import modeling_sam3

    saved = []
    for module in model.modules():
        if isinstance(module, modeling_sam3.Sam3ViTRotaryEmbedding):
            config = module.config
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            spatial = head_dim // 2
            theta = config.rope_parameters["rope_theta"]
            saved.append((module, "inv_freq", module.inv_freq))
            module.inv_freq = 1.0 / (theta ** (torch.arange(0, spatial, 2, dtype=torch.float64) / spatial))
        elif isinstance(getattr(module, "position_ids", None), Tensor) and hasattr(module, "precompute_positions"):
            side = math.isqrt(module.position_ids.shape[0])
            scale = module.config.window_size / side  # precompute_positions' factor
            saved.append((module, "position_ids", module.position_ids))
            module.position_ids = torch.round(module.position_ids.to(torch.float64) / scale) * scale
    return saved


# ----------------------------------------------------------------------------------------------
# float64 convolutions in bands of output rows

# torch's float64 convolution on the CPU (no oneDNN kernel for double) unfolds the whole input
# before one matrix product: a 3x3, 256-channel convolution at 288 x 288 (the pixel decoder) takes
# 1.6 GB of scratch, against 0.2 GB in float32. The same convolution in bands of output rows, over
# the zero-padded input, forms each output from the same products with a band-sized
# scratch; the matrix product may add them in another order (float64 rounding, ~1e-15 relative on
# random inputs, 0 on the pixel decoder's layer), and both sides run under it alike.
BAND_SCRATCH_BYTES = 64 << 20

FLOAT64_BANDED_CONVOLUTION = (
    "both sides, float64 only: 2-D convolutions whose unfolded input exceeds "
    f"{BAND_SCRATCH_BYTES >> 20} MB run in bands of output rows over the zero-padded input (torch's "
    "float64 CPU convolution unfolds the whole input at once: 1.6 GB for one pixel-decoder layer)"
)


def float64_convolutions(dtype: torch.dtype):
    """Banded convolutions for a float64 run (both sides alike); nothing otherwise."""
    return banded_float64_convolution() if dtype == torch.float64 else contextlib.nullcontext()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


@contextlib.contextmanager
def banded_float64_convolution() -> Iterator[None]:
    """While active, torch.nn.functional.conv2d (what nn.Conv2d calls) runs large float64
    convolutions band by band; every other call is passed through unchanged."""
    import torch.nn.functional as F

    original = F.conv2d

    def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if input.dtype != torch.float64 or input.dim() != 4 or isinstance(padding, str):
            return original(input, weight, bias, stride, padding, dilation, groups)
        (stride_h, stride_w), (pad_h, pad_w), (dil_h, dil_w) = _pair(stride), _pair(padding), _pair(dilation)
        kernel_h, kernel_w = weight.shape[-2:]
        batch, channels, height, width = input.shape
        out_h = (height + 2 * pad_h - dil_h * (kernel_h - 1) - 1) // stride_h + 1
        out_w = (width + 2 * pad_w - dil_w * (kernel_w - 1) - 1) // stride_w + 1
        row_bytes = channels * kernel_h * kernel_w * out_w * input.element_size() * batch
        if row_bytes * out_h <= BAND_SCRATCH_BYTES or out_h < 2:
            return original(input, weight, bias, stride, padding, dilation, groups)
        rows = max(1, BAND_SCRATCH_BYTES // row_bytes)
        output = None
        for first in range(0, out_h, rows):
            last = min(out_h, first + rows)
            # Input rows of this band in padded coordinates; only the band is zero-padded (top and
            # bottom rows outside the input), the width keeps the convolution's own padding.
            start, end = first * stride_h, (last - 1) * stride_h + dil_h * (kernel_h - 1) + 1
            rows_in = input[:, :, max(0, start - pad_h) : min(height, end - pad_h)]
            above, below = max(0, pad_h - start), max(0, end - pad_h - height)
            if above or below:
                rows_in = F.pad(rows_in, (0, 0, above, below))
            band = original(rows_in, weight, bias, stride, (0, pad_w), dilation, groups)
            if output is None:
                output = band.new_empty((batch, band.shape[1], out_h, out_w))
            output[:, :, first:last] = band
        return output

    F.conv2d = conv2d
    try:
        yield
    finally:
        F.conv2d = original


def float64_memory_rope(rotary) -> None:
    """float64 runs only: transformers computes the memory attention's RoPE angles in float32 whatever
    the model dtype (`.float()` in the rotary forward); Meta's tables follow the run's dtype here. The
    same formula in float64 (inverse frequencies recomputed, not upcast)."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
        Sam3TrackerVideoVisionRotaryEmbedding,
    )

    inv_freq, _ = Sam3TrackerVideoVisionRotaryEmbedding.compute_axial_rope_parameters(rotary.config)
    spatial_dim = 2 * inv_freq.numel()
    base = rotary.config.rope_parameters["rope_theta"]
    inv_freq64 = 1.0 / (base ** (torch.arange(0, spatial_dim, 2, dtype=torch.float64) / spatial_dim))

    def forward(x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq64.to(x.device)
        cos, sin = freqs.cos() * rotary.attention_scaling, freqs.sin() * rotary.attention_scaling
        return rotary.recomposition_frequencies(cos), rotary.recomposition_frequencies(sin)

    rotary.forward = forward
