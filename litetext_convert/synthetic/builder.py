"""Synthetic SAM3-LiteText checkpoints in the exact upstream on-disk layout (SAM3.1-LiteText: sam31.py;
the parts both share: parts.py).

Tests can never download the released files, so this module generates their key layout
(key -> shape, dtype, in file order) from a handful of sizes, and fills it with seeded values
that are non-trivial in every tensor, so that no mapping mistake can hide behind ones and zeros.

The layout follows the modules of Meta's `sam3` 0.1.4 image detector built with
`enable_inst_interactivity=True` (so the SAM2-style `sam2_convs` neck and the tracker exist) and
the upstream `TextStudentEncoder` (efficientsam3, branch `sam3_litetext`). At full sizes it
reproduces configs/manifest/*.tsv exactly (tests/test_synthetic.py). Key order is
`state_dict` order: a module's own parameters, then its buffers, then its children.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from pathlib import Path

import torch

from litetext_convert.synthetic import sam31
from litetext_convert.synthetic.parts import (
    DETECTOR_PREFIX,
    TEXT_PREFIX,
    DetectorSizes,
    Layout,
    LayoutBuilder,
    TextSizes,
    detector_heads,
    neck,
    text_encoder,
    vit,
)

# Fixed in every file, tiny ones included: hard-coded inside Meta's tracker classes, so a tiny
# tracker built from those classes has them too.
SAM_DECODER_DEPTH = 2
SAM_DECODER_MLP = 2048
SAM_IOU_HIDDEN = 256
SAM_MASK_TOKENS = 4  # 3 multimask outputs + 1 single-mask token
SAM_POINT_EMBEDDINGS = 4
SAM_MASK_IN_CHANS = 16
MASK_DOWNSAMPLER_CHANNELS = (1, 4, 16, 64, 256)  # stride 2 per stage, total stride 16
FUSER_LAYERS = 2
FUSER_KERNEL = 7
ROPE_THETA = 10000.0


TRACKER_PREFIX = "tracker."


CLIP_VOCAB = 49408
BUILDER_POS_ROWS = 77  # upstream's builder; released ctx16/ctx32 files store 16/32 rows


def _mobileclip(variant: str, width: int, transformer_layers: int, heads: int) -> TextSizes:
    """Upstream's rules: FFN 4 x width (ConvFFN of the RepMixers too), projection width x width."""
    return TextSizes(variant, width=width, transformer_layers=transformer_layers, heads=heads, ffn=4 * width,
                     vocab=CLIP_VOCAB, pos_rows=BUILDER_POS_ROWS, projection=width)


TEXT_PRESETS: dict[str, TextSizes] = {
    "s0": _mobileclip("mct", width=512, transformer_layers=4, heads=8),
    "s1": _mobileclip("base", width=512, transformer_layers=12, heads=8),
    "l": _mobileclip("base", width=768, transformer_layers=12, heads=12),
}

# Tiny text encoders keep the real vocabulary (the CLIP tokenizer emits ids up to 49407, and the
# embedding table is then most of a tiny file); head_dim 4 plays the role of the real head_dim 64.
TINY_TEXT_PRESETS: dict[str, TextSizes] = {
    "s0": _mobileclip("mct", width=8, transformer_layers=2, heads=2),
    "s1": _mobileclip("base", width=8, transformer_layers=3, heads=2),
    "l": _mobileclip("base", width=12, transformer_layers=3, heads=3),
}

FULL_DETECTOR = DetectorSizes(
    vit_width=1024, vit_depth=32, vit_heads=16, vit_mlp=4736, patch=14, image_size=1008,
    pretrain_image_size=336, window_size=24, global_blocks=(7, 15, 23, 31), d_model=256,
    detr_heads=8, detr_enc_layers=6, detr_dec_layers=6, geo_layers=3, num_queries=200, ffn=2048,
    roi_size=7, pixel_decoder_stages=3, tracker_layers=4, tracker_ffn=2048, tracker_mem_dim=64,
    num_maskmem=7,
)

# Small, but with every kind of key of the real file. Sizes are pairwise distinct where a mix-up
# would otherwise go unnoticed (layer counts, head_dim vs grid vs window), and keep Meta's ratios
# (mlp 4.625 x width; pretrain grid = window; last block global).
TINY_DETECTOR = DetectorSizes(
    vit_width=48, vit_depth=4, vit_heads=2, vit_mlp=222, patch=2, image_size=16,
    pretrain_image_size=8, window_size=4, global_blocks=(1, 3), d_model=32,
    detr_heads=4, detr_enc_layers=3, detr_dec_layers=5, geo_layers=2, num_queries=12, ffn=64,
    roi_size=7, pixel_decoder_stages=3, tracker_layers=2, tracker_ffn=48, tracker_mem_dim=16,
    num_maskmem=3,
)


def key_kind(key: str) -> str:
    """A key with its list indices replaced: `blocks.7.norm1.weight` -> `blocks.#.norm1.weight`.

    Only whole dotted segments count, so `norm1`/`norm2` or `conv_1x1`/`conv_3x3` stay apart."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "#", key)


# ----------------------------------------------------------------------------------------------
# Layout: small builders that append (key, shape, dtype) in state_dict order.


def _tracker(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
    """Meta's tracker (SAM2-style); its hidden size is the neck's d_model, which feeds it."""
    h, m = s.d_model, s.tracker_mem_dim
    b.add(f"{p}maskmem_tpos_enc", s.num_maskmem, 1, 1, m)
    b.add(f"{p}no_mem_embed", 1, 1, h)
    b.add(f"{p}no_mem_pos_enc", 1, 1, h)
    b.add(f"{p}no_obj_ptr", 1, h)
    b.add(f"{p}no_obj_embed_spatial", 1, m)
    b.conv(f"{p}mask_downsample", 1, 1, 4)
    _tracker_memory_attention(b, f"{p}transformer.encoder", s)
    _tracker_memory_encoder(b, f"{p}maskmem_backbone", s)
    _sam_prompt_encoder(b, f"{p}sam_prompt_encoder", h)
    _sam_mask_decoder(b, f"{p}sam_mask_decoder", h)
    b.mlp(f"{p}obj_ptr_proj", [h, h, h, h])
    b.linear(f"{p}obj_ptr_tpos_proj", m, h)


def _tracker_memory_attention(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
    h = s.d_model
    for i in range(s.tracker_layers):
        layer = f"{p}.layers.{i}"
        b.split_attention(f"{layer}.self_attn", h, h)
        b.split_attention(f"{layer}.cross_attn_image", h, h, kv_dim=s.tracker_mem_dim)
        b.linear(f"{layer}.linear1", s.tracker_ffn, h)
        b.linear(f"{layer}.linear2", h, s.tracker_ffn)
        for n in (1, 2, 3):
            b.norm(f"{layer}.norm{n}", h)
    b.norm(f"{p}.norm", h)


def _tracker_memory_encoder(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
    h = s.d_model
    # conv, LayerNorm2d, GELU per stage (indices 3 apart), then a 1x1 conv to h channels
    chans = MASK_DOWNSAMPLER_CHANNELS
    for stage, (c_in, c_out) in enumerate(zip(chans, chans[1:])):
        b.conv(f"{p}.mask_downsampler.encoder.{3 * stage}", c_out, c_in, 3)
        b.norm(f"{p}.mask_downsampler.encoder.{3 * stage + 1}", c_out)
    b.conv(f"{p}.mask_downsampler.encoder.{3 * (len(chans) - 1)}", h, chans[-1], 1)
    b.conv(f"{p}.pix_feat_proj", h, h, 1)
    for i in range(FUSER_LAYERS):
        layer = f"{p}.fuser.layers.{i}"
        b.add(f"{layer}.gamma", h)
        b.add(f"{layer}.dwconv.weight", h, 1, FUSER_KERNEL, FUSER_KERNEL)
        b.add(f"{layer}.dwconv.bias", h)
        b.norm(f"{layer}.norm", h)
        b.linear(f"{layer}.pwconv1", 4 * h, h)
        b.linear(f"{layer}.pwconv2", h, 4 * h)
    b.conv(f"{p}.out_proj", s.tracker_mem_dim, h, 1)


def _sam_prompt_encoder(b: LayoutBuilder, p: str, h: int) -> None:
    b.add(f"{p}.pe_layer.positional_encoding_gaussian_matrix", 2, h // 2)
    for i in range(SAM_POINT_EMBEDDINGS):
        b.embedding(f"{p}.point_embeddings.{i}", 1, h)
    b.embedding(f"{p}.not_a_point_embed", 1, h)
    quarter = SAM_MASK_IN_CHANS // 4
    b.conv(f"{p}.mask_downscaling.0", quarter, 1, 2)
    b.norm(f"{p}.mask_downscaling.1", quarter)
    b.conv(f"{p}.mask_downscaling.3", SAM_MASK_IN_CHANS, quarter, 2)
    b.norm(f"{p}.mask_downscaling.4", SAM_MASK_IN_CHANS)
    b.conv(f"{p}.mask_downscaling.6", h, SAM_MASK_IN_CHANS, 1)
    b.embedding(f"{p}.no_mask_embed", 1, h)


def _sam_mask_decoder(b: LayoutBuilder, p: str, h: int) -> None:
    tr = f"{p}.transformer"
    for i in range(SAM_DECODER_DEPTH):
        layer = f"{tr}.layers.{i}"
        b.split_attention(f"{layer}.self_attn", h, h)
        b.norm(f"{layer}.norm1", h)
        b.split_attention(f"{layer}.cross_attn_token_to_image", h, h // 2)  # downsample rate 2
        b.norm(f"{layer}.norm2", h)
        b.linear(f"{layer}.mlp.lin1", SAM_DECODER_MLP, h)
        b.linear(f"{layer}.mlp.lin2", h, SAM_DECODER_MLP)
        b.norm(f"{layer}.norm3", h)
        b.norm(f"{layer}.norm4", h)
        b.split_attention(f"{layer}.cross_attn_image_to_token", h, h // 2)
    b.split_attention(f"{tr}.final_attn_token_to_image", h, h // 2)
    b.norm(f"{tr}.norm_final_attn", h)
    b.embedding(f"{p}.iou_token", 1, h)
    b.embedding(f"{p}.mask_tokens", SAM_MASK_TOKENS, h)
    b.embedding(f"{p}.obj_score_token", 1, h)
    b.conv_transpose(f"{p}.output_upscaling.0", h, h // 4, 2)
    b.norm(f"{p}.output_upscaling.1", h // 4)
    b.conv_transpose(f"{p}.output_upscaling.3", h // 4, h // 8, 2)
    b.conv(f"{p}.conv_s0", h // 8, h, 1)
    b.conv(f"{p}.conv_s1", h // 4, h, 1)
    for i in range(SAM_MASK_TOKENS):
        b.mlp(f"{p}.output_hypernetworks_mlps.{i}", [h, h, h, h // 8])
    b.mlp(f"{p}.iou_prediction_head", [h, SAM_IOU_HIDDEN, SAM_IOU_HIDDEN, SAM_MASK_TOKENS])
    b.mlp(f"{p}.pred_obj_score_head", [h, h, h, 1])


def upstream_layout(text: TextSizes, detector: DetectorSizes) -> Layout:
    """Every key of a LiteText full-detector file (prefixes included), in file order."""
    b = LayoutBuilder()
    vision = f"{DETECTOR_PREFIX}backbone.vision_backbone"
    vit(b, f"{vision}.trunk", detector)
    neck(b, f"{vision}.convs", detector)
    neck(b, f"{vision}.sam2_convs", detector)
    text_encoder(b, TEXT_PREFIX, text, detector.d_model)
    detector_heads(b, detector)
    _tracker(b, TRACKER_PREFIX, detector)
    return b.layout


# ----------------------------------------------------------------------------------------------
# Values.

SCALES = ("default", "model")


# "default" keeps activations O(1) through a full-size forward (weights ~ 1/sqrt(fan_in); the
# pre-norm residual streams then grow ~sqrt(depth): ViT std ~6 after 32 blocks, measured) and
# makes every branch matter; "model" uses the models' own init magnitudes (std 0.02 linears,
# 1e-5 layer scales), jittered wherever that init is a constant.
_STD = {  # role -> (default, model) standard deviation around the role's centre
    "bias": (0.1, 0.02),
    "norm_weight": (0.1, 0.02),  # around 1
    "running_mean": (0.2, 0.02),
    "vit_pos": (1.0, 0.02),
    "free_param": (1.0, 0.02),  # tracker's learned tokens and tables
}
_RUNNING_VAR_HALF_WIDTH = {"default": 0.5, "model": 0.1}  # running_var ~ U(1 - w, 1 + w) > 0
_LAYER_SCALE_INIT = {"layer_scale": 1e-5, "gamma": 1e-6}  # RepMixer / CXBlock init values
_DEFAULT_LAYER_SCALE = (0.1, 1.0)  # large enough that a wrong mapping of the branch shows
_MODEL_LINEAR_STD = 0.02
_MAX_BATCHES_TRACKED = 1_000_000


def _role(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> str:
    leaf = key.rsplit(".", 1)[-1]
    if dtype == torch.complex64:
        return "rope"
    if leaf in ("num_batches_tracked", "running_mean", "running_var", "projection_layer"):
        return leaf
    if leaf in _LAYER_SCALE_INIT:
        return "layer_scale"
    if leaf == "pos_embed":
        return "text_pos" if key.startswith(TEXT_PREFIX) else "vit_pos"
    if leaf.endswith("bias"):
        return "bias"
    if leaf.endswith("weight"):
        return "norm_weight" if len(shape) == 1 else "weight"
    return "free_param"


def _key_seed(seed: int, key: str) -> int:
    """Per-key seed: values do not depend on which other keys exist or their order."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _normal(shape, std: float, gen: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen).mul_(std).add_(mean)


def _uniform(shape, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen).mul_(high - low).add_(low)


def _draw(key: str, shape: tuple[int, ...], role: str, scale: str, gen: torch.Generator,
          detector: DetectorSizes) -> torch.Tensor:
    model_scale = scale == "model"
    if role == "rope":
        return _rope_table_for(key, detector)
    if role == "num_batches_tracked":
        return torch.randint(1, _MAX_BATCHES_TRACKED, shape, generator=gen, dtype=torch.int64)
    if role == "running_var":
        half = _RUNNING_VAR_HALF_WIDTH[scale]
        return _uniform(shape, 1.0 - half, 1.0 + half, gen)
    if role == "layer_scale":
        init = _LAYER_SCALE_INIT[key.rsplit(".", 1)[-1]]
        low, high = (0.5 * init, 1.5 * init) if model_scale else _DEFAULT_LAYER_SCALE
        return _uniform(shape, low, high, gen)
    if role == "text_pos":  # MobileCLIP's own init, at both scales: tokens are embedded alike
        return _normal(shape, shape[-1] ** -0.5, gen)
    if role == "projection_layer":  # used as x @ P
        return _normal(shape, shape[0] ** -0.5, gen)
    if role == "weight":
        return _normal(shape, _MODEL_LINEAR_STD if model_scale else math.prod(shape[1:]) ** -0.5, gen)
    std = _STD[role][1 if model_scale else 0]
    return _normal(shape, std, gen, mean=1.0 if role == "norm_weight" else 0.0)


def axial_rope_table(head_dim: int, side: int, position_scale: float, theta: float = ROPE_THETA) -> torch.Tensor:
    """2-D axial RoPE rotations [side*side, head_dim/2] (complex64): x angles, then y angles.

    Row r is patch (x = r % side, y = r // side) with positions scaled by `position_scale`;
    each axis uses head_dim/4 frequencies theta^(-4j/head_dim).
    """
    exponents = torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim
    freqs = 1.0 / (theta**exponents)
    index = torch.arange(side * side, dtype=torch.float32)
    x = (index % side) * position_scale
    y = torch.div(index, side, rounding_mode="floor") * position_scale
    angles = [torch.outer(x, freqs), torch.outer(y, freqs)]
    return torch.cat([torch.polar(torch.ones_like(a), a) for a in angles], dim=-1)


def _rope_table_for(key: str, s: DetectorSizes) -> torch.Tensor:
    """The exact table the ViT computes: Meta's model uses the stored buffer, transformers
    recomputes it, so parity needs the real values rather than random rotations."""
    block = int(re.search(r"\.blocks\.(\d+)\.", key).group(1))
    if block in s.global_blocks:  # positions interpolated to the window the RoPE was trained at
        return axial_rope_table(s.vit_head_dim, s.grid, s.window_size / s.grid)
    return axial_rope_table(s.vit_head_dim, s.window_size, 1.0)


FAMILIES = ("sam3_litetext", "sam3p1_litetext")


def family_layout(family: str, text: TextSizes, detector: DetectorSizes) -> Layout:
    """The on-disk layout of a family's released files (SAM3.1-LiteText: synthetic/sam31.py)."""
    if family == "sam3_litetext":
        return upstream_layout(text, detector)
    if family == "sam3p1_litetext":
        return sam31.upstream_layout(text, detector)
    raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES}")


def build_state_dict(text: TextSizes, detector: DetectorSizes, *, seed: int = 0, scale: str = "default",
                     dtype: torch.dtype = torch.float32, family: str = "sam3_litetext") -> dict[str, torch.Tensor]:
    """Seeded values for every key of the family's layout; floating tensors in `dtype`.

    RoPE tables stay complex64 and counters int64, as in a half-precision file saved from the model.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    state: dict[str, torch.Tensor] = {}
    for key, (shape, stored_dtype) in family_layout(family, text, detector).items():
        gen = torch.Generator().manual_seed(_key_seed(seed, key))
        value = _draw(key, shape, _role(key, shape, stored_dtype), scale, gen, detector)
        if value.is_floating_point() and dtype != value.dtype:
            value = value.to(dtype)  # one tensor at a time: never two copies of the whole model
        state[key] = value
    return state


def save_checkpoint(path: str | Path, text: TextSizes, detector: DetectorSizes, **kwargs) -> Path:
    """Write `{"model": state_dict}` as the released files are written; kwargs go to build_state_dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": build_state_dict(text, detector, **kwargs)}, path)
    return path


def tiny_text(variant: str = "s0", context: int = 16, pos_rows: int | None = None) -> TextSizes:
    """A tiny text encoder of the given variant whose positional table has `pos_rows` (default: context) rows."""
    return dataclasses.replace(TINY_TEXT_PRESETS[variant], pos_rows=context if pos_rows is None else pos_rows)


def tiny_checkpoint(path: str | Path, variant: str = "s0", context: int = 16, pos_rows: int | None = None,
                    **kwargs) -> Path:
    """A few-MB checkpoint with every kind of key of a real file (tiny detector, tiny text encoder);
    `family="sam3p1_litetext"` (a kwarg for build_state_dict) writes the SAM3.1-LiteText layout."""
    return save_checkpoint(path, tiny_text(variant, context, pos_rows), TINY_DETECTOR, **kwargs)
