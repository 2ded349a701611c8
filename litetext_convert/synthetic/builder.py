"""Synthetic SAM3-LiteText checkpoints in the exact upstream on-disk layout (SAM3.1-LiteText: sam31.py).

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
from dataclasses import dataclass
from pathlib import Path

import torch

Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]

DETECTOR_PREFIX = "detector."
TRACKER_PREFIX = "tracker."
TEXT_PREFIX = "detector.backbone.language_backbone."

# Fixed in every file, tiny ones included. The SAM_* and mask-downsampler numbers are hard-coded
# inside Meta's tracker classes, so a tiny tracker built from those classes has them too; the rest
# are the builder's choices, kept for the tiny detector.
VIT_IN_CHANNELS = 3
ROPE_THETA = 10000.0
NECK_SCALES = (4.0, 2.0, 1.0, 0.5)
GEOMETRY_LABELS = 2  # positive / negative prompts
SAM_DECODER_DEPTH = 2
SAM_DECODER_MLP = 2048
SAM_IOU_HIDDEN = 256
SAM_MASK_TOKENS = 4  # 3 multimask outputs + 1 single-mask token
SAM_POINT_EMBEDDINGS = 4
SAM_MASK_IN_CHANS = 16
MASK_DOWNSAMPLER_CHANNELS = (1, 4, 16, 64, 256)  # stride 2 per stage, total stride 16
FUSER_LAYERS = 2
FUSER_KERNEL = 7


@dataclass(frozen=True)
class DetectorSizes:
    """Everything that shapes the keys outside the text encoder (tracker included)."""

    vit_width: int
    vit_depth: int
    vit_heads: int
    vit_mlp: int
    patch: int
    image_size: int
    pretrain_image_size: int
    window_size: int
    global_blocks: tuple[int, ...]
    d_model: int
    detr_heads: int  # geometry encoder, DETR encoder/decoder and mask head attention
    detr_enc_layers: int
    detr_dec_layers: int
    geo_layers: int
    num_queries: int
    ffn: int  # DETR encoder/decoder, geometry encoder and dot-product-scoring MLP
    roi_size: int
    pixel_decoder_stages: int
    tracker_layers: int
    tracker_ffn: int
    tracker_mem_dim: int
    num_maskmem: int

    def __post_init__(self) -> None:
        problems = _detector_problems(self)
        if problems:
            raise ValueError("inconsistent DetectorSizes: " + "; ".join(problems))

    @property
    def vit_head_dim(self) -> int:
        return self.vit_width // self.vit_heads

    @property
    def grid(self) -> int:
        """Patches per side of the input image (the 1x feature map)."""
        return self.image_size // self.patch

    @property
    def pretrain_grid(self) -> int:
        return self.pretrain_image_size // self.patch


def _detector_problems(s: DetectorSizes) -> list[str]:
    checks = [
        (s.vit_width % s.vit_heads == 0, "vit_width must be divisible by vit_heads"),
        (s.vit_width % s.vit_heads == 0 and (s.vit_width // s.vit_heads) % 4 == 0,
         "ViT head_dim must be divisible by 4 (axial RoPE: head_dim/4 frequencies per axis)"),
        (s.vit_width % 4 == 0, "vit_width must be divisible by 4 (the 4x neck level has width/4 channels)"),
        (s.image_size % s.patch == 0, "image_size must be divisible by patch"),
        (s.pretrain_image_size % s.patch == 0, "pretrain_image_size must be divisible by patch"),
        (s.patch > 0 and (s.image_size // s.patch) % s.window_size == 0,
         "image_size/patch must be divisible by window_size"),
        (all(0 <= b < s.vit_depth for b in s.global_blocks), "global_blocks must index ViT blocks"),
        (list(s.global_blocks) == sorted(set(s.global_blocks)), "global_blocks must be sorted, unique"),
        (len(s.global_blocks) < s.vit_depth, "at least one ViT block must be windowed"),
        (s.d_model % 16 == 0,
         "d_model must be divisible by 16 (GroupNorm(8); the tracker's 8 heads on d_model/2; d_model/8 upscaling)"),
        (s.d_model % s.detr_heads == 0, "d_model must be divisible by detr_heads"),
        (s.tracker_mem_dim % 2 == 0 and s.d_model % s.tracker_mem_dim == 0,
         "tracker_mem_dim must be even and divide d_model (object pointers are split into mem_dim tokens)"),
        (min(s.detr_enc_layers, s.detr_dec_layers, s.geo_layers, s.tracker_layers) >= 1,
         "every stack needs at least one layer"),
        (s.pixel_decoder_stages >= 1 and s.num_maskmem >= 1 and s.num_queries >= 1 and s.roi_size >= 1,
         "pixel_decoder_stages, num_maskmem, num_queries and roi_size must be positive"),
    ]
    return [message for ok, message in checks if not ok]


@dataclass(frozen=True)
class TextSizes:
    """MobileCLIP text encoder sizes. `heads` is not visible in any weight shape."""

    variant: str  # "mct": RepMixer, n transformer layers, RepMixer; "base": n transformer layers
    width: int
    transformer_layers: int
    heads: int
    ffn: int  # upstream: 4 * width, for the RepMixers' ConvFFN as well
    vocab: int
    pos_rows: int  # rows of the stored positional table (77 as built, 16/32 in released files)
    projection: int  # columns of `projection_layer` (= width upstream)
    repmixer_kernel: int = 11

    def __post_init__(self) -> None:
        if self.variant not in ("mct", "base"):
            raise ValueError(f"unknown text variant {self.variant!r}: expected 'mct' or 'base'")
        if self.width % self.heads:
            raise ValueError("text width must be divisible by heads")

    @property
    def num_layers(self) -> int:
        """All layers, the RepMixers included (transformers' `num_hidden_layers`)."""
        return self.transformer_layers + (2 if self.variant == "mct" else 0)


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


class _LayoutBuilder:
    def __init__(self) -> None:
        self.layout: Layout = {}

    def add(self, key: str, *shape: int, dtype: torch.dtype = torch.float32) -> None:
        if key in self.layout:
            raise AssertionError(f"duplicate key {key}")
        self.layout[key] = (tuple(shape), dtype)

    def linear(self, name: str, out_dim: int, in_dim: int, bias: bool = True) -> None:
        self.add(f"{name}.weight", out_dim, in_dim)
        if bias:
            self.add(f"{name}.bias", out_dim)

    def conv(self, name: str, out_ch: int, in_ch: int, kh: int, kw: int | None = None) -> None:
        self.add(f"{name}.weight", out_ch, in_ch, kh, kh if kw is None else kw)
        self.add(f"{name}.bias", out_ch)

    def conv_transpose(self, name: str, in_ch: int, out_ch: int, k: int) -> None:
        self.add(f"{name}.weight", in_ch, out_ch, k, k)  # ConvTranspose2d stores [in, out, k, k]
        self.add(f"{name}.bias", out_ch)

    def norm(self, name: str, dim: int) -> None:
        self.add(f"{name}.weight", dim)
        self.add(f"{name}.bias", dim)

    def batchnorm(self, name: str, dim: int) -> None:
        self.norm(name, dim)
        self.add(f"{name}.running_mean", dim)
        self.add(f"{name}.running_var", dim)
        self.add(f"{name}.num_batches_tracked", dtype=torch.int64)

    def embedding(self, name: str, rows: int, dim: int) -> None:
        self.add(f"{name}.weight", rows, dim)

    def mlp(self, name: str, dims: list[int]) -> None:
        """sam3 `MLP`: `layers.i` Linear layers through the given widths."""
        for i, (d_in, d_out) in enumerate(zip(dims, dims[1:])):
            self.linear(f"{name}.layers.{i}", d_out, d_in)

    def torch_mha(self, name: str, dim: int) -> None:
        """nn.MultiheadAttention: fused in_proj (q, k, v rows) then out_proj."""
        self.add(f"{name}.in_proj_weight", 3 * dim, dim)
        self.add(f"{name}.in_proj_bias", 3 * dim)
        self.linear(f"{name}.out_proj", dim, dim)

    def split_attention(self, name: str, dim: int, internal: int, kv_dim: int | None = None) -> None:
        """SAM-style attention with separate q/k/v/out projections."""
        kv_dim = dim if kv_dim is None else kv_dim
        self.linear(f"{name}.q_proj", internal, dim)
        self.linear(f"{name}.k_proj", internal, kv_dim)
        self.linear(f"{name}.v_proj", internal, kv_dim)
        self.linear(f"{name}.out_proj", dim, internal)


def _vit(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
    w = s.vit_width
    b.add(f"{p}.pos_embed", 1, s.pretrain_grid**2 + 1, w)  # +1: the pretraining cls row
    b.add(f"{p}.patch_embed.proj.weight", w, VIT_IN_CHANNELS, s.patch, s.patch)  # no bias
    for i in range(s.vit_depth):
        blk = f"{p}.blocks.{i}"
        b.norm(f"{blk}.norm1", w)
        b.add(f"{blk}.attn.freqs_cis", _rope_rows(s, i), s.vit_head_dim // 2, dtype=torch.complex64)
        b.linear(f"{blk}.attn.qkv", 3 * w, w)
        b.linear(f"{blk}.attn.proj", w, w)
        b.norm(f"{blk}.norm2", w)
        b.linear(f"{blk}.mlp.fc1", s.vit_mlp, w)
        b.linear(f"{blk}.mlp.fc2", w, s.vit_mlp)
    b.norm(f"{p}.ln_pre", w)  # defined after the blocks, so stored after them


def _rope_rows(s: DetectorSizes, block: int) -> int:
    side = s.grid if block in s.global_blocks else s.window_size
    return side * side


def _neck(b: _LayoutBuilder, p: str, s: DetectorSizes, scales: tuple[float, ...] = NECK_SCALES) -> None:
    w, d = s.vit_width, s.d_model
    for level, scale in enumerate(scales):
        lvl = f"{p}.{level}"
        if scale == 4.0:
            b.conv_transpose(f"{lvl}.dconv_2x2_0", w, w // 2, 2)
            b.conv_transpose(f"{lvl}.dconv_2x2_1", w // 2, w // 4, 2)
            in_ch = w // 4
        elif scale == 2.0:
            b.conv_transpose(f"{lvl}.dconv_2x2", w, w // 2, 2)
            in_ch = w // 2
        else:  # 1x as is, 0.5x through a parameter-free max-pool
            in_ch = w
        b.conv(f"{lvl}.conv_1x1", d, in_ch, 1)
        b.conv(f"{lvl}.conv_3x3", d, d, 3)


def _text(b: _LayoutBuilder, p: str, t: TextSizes, d_model: int) -> None:
    D = t.width
    enc = f"{p}encoder"
    b.add(f"{enc}.projection_layer", D, t.projection)  # the module's own parameter comes first
    b.embedding(f"{enc}.embedding_layer", t.vocab, D)
    b.add(f"{enc}.positional_embedding.pos_embed.pos_embed", 1, 1, t.pos_rows, D)
    kinds = ["transformer"] * t.transformer_layers
    if t.variant == "mct":
        kinds = ["repmixer", *kinds, "repmixer"]
    for i, kind in enumerate(kinds):
        layer = f"{enc}.transformer.{i}"
        if kind == "repmixer":
            _repmixer_block(b, layer, t)
        else:
            _text_transformer_layer(b, layer, t)
    b.norm(f"{enc}.final_layer_norm", D)
    b.linear(f"{p}projector", d_model, D)


def _repmixer_block(b: _LayoutBuilder, p: str, t: TextSizes) -> None:
    D, k = t.width, t.repmixer_kernel
    b.add(f"{p}.layer_scale", D, 1, 1)
    b.add(f"{p}.token_mixer.layer_scale", D, 1, 1)
    b.batchnorm(f"{p}.token_mixer.norm.rbr_skip", D)
    b.batchnorm(f"{p}.token_mixer.mixer.rbr_skip", D)
    b.add(f"{p}.token_mixer.mixer.rbr_conv.0.conv.weight", D, 1, 1, k)  # depthwise, no bias
    b.batchnorm(f"{p}.token_mixer.mixer.rbr_conv.0.bn", D)
    b.add(f"{p}.convffn.conv.conv.weight", D, 1, 1, k)
    b.batchnorm(f"{p}.convffn.conv.bn", D)
    b.conv(f"{p}.convffn.fc1", t.ffn, D, 1)
    b.conv(f"{p}.convffn.fc2", D, t.ffn, 1)


def _text_transformer_layer(b: _LayoutBuilder, p: str, t: TextSizes) -> None:
    D = t.width
    b.norm(f"{p}.pre_norm_mha.0", D)
    b.linear(f"{p}.pre_norm_mha.1.qkv_proj", 3 * D, D)
    b.linear(f"{p}.pre_norm_mha.1.out_proj", D, D)
    b.norm(f"{p}.pre_norm_ffn.0", D)
    b.linear(f"{p}.pre_norm_ffn.1", t.ffn, D)
    b.linear(f"{p}.pre_norm_ffn.4", D, t.ffn)


def _fusion_layer(b: _LayoutBuilder, p: str, d: int, ffn: int) -> None:
    """sam3 TransformerEncoderLayer (geometry encoder and DETR encoder)."""
    b.torch_mha(f"{p}.self_attn", d)
    b.torch_mha(f"{p}.cross_attn_image", d)
    b.linear(f"{p}.linear1", ffn, d)
    b.linear(f"{p}.linear2", d, ffn)
    for n in (1, 2, 3):
        b.norm(f"{p}.norm{n}", d)


def _geometry_encoder(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
    d = s.d_model
    b.embedding(f"{p}.label_embed", GEOMETRY_LABELS, d)
    b.embedding(f"{p}.cls_embed", 1, d)
    b.linear(f"{p}.points_direct_project", d, 2)
    b.linear(f"{p}.points_pool_project", d, d)
    b.linear(f"{p}.points_pos_enc_project", d, d)
    b.linear(f"{p}.boxes_direct_project", d, 4)
    b.conv(f"{p}.boxes_pool_project", d, d, s.roi_size)
    b.linear(f"{p}.boxes_pos_enc_project", d, d + 2)  # sine encoding of the centre + (w, h)
    b.linear(f"{p}.final_proj", d, d)
    b.norm(f"{p}.norm", d)
    b.norm(f"{p}.img_pre_norm", d)
    for i in range(s.geo_layers):
        _fusion_layer(b, f"{p}.encode.{i}", d, s.ffn)
    b.norm(f"{p}.encode_norm", d)


def _detr_decoder(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
    d = s.d_model
    for i in range(s.detr_dec_layers):
        layer = f"{p}.layers.{i}"
        b.torch_mha(f"{layer}.cross_attn", d)
        b.norm(f"{layer}.norm1", d)
        b.torch_mha(f"{layer}.ca_text", d)
        b.norm(f"{layer}.catext_norm", d)
        b.torch_mha(f"{layer}.self_attn", d)
        b.norm(f"{layer}.norm2", d)
        b.linear(f"{layer}.linear1", s.ffn, d)
        b.linear(f"{layer}.linear2", d, s.ffn)
        b.norm(f"{layer}.norm3", d)
    b.norm(f"{p}.norm", d)
    b.mlp(f"{p}.bbox_embed", [d, d, d, 4])
    b.embedding(f"{p}.query_embed", s.num_queries, d)
    b.embedding(f"{p}.reference_points", s.num_queries, 4)
    b.mlp(f"{p}.boxRPB_embed_x", [2, d, s.detr_heads])  # one bias per cross-attention head
    b.mlp(f"{p}.boxRPB_embed_y", [2, d, s.detr_heads])
    b.embedding(f"{p}.presence_token", 1, d)
    b.mlp(f"{p}.presence_token_head", [d, d, d, 1])
    b.norm(f"{p}.presence_token_out_norm", d)
    b.mlp(f"{p}.ref_point_head", [2 * d, d, d])


def _segmentation_head(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
    d = s.d_model
    for i in range(s.pixel_decoder_stages):
        b.conv(f"{p}.pixel_decoder.conv_layers.{i}", d, d, 3)
    for i in range(s.pixel_decoder_stages):
        b.norm(f"{p}.pixel_decoder.norms.{i}", d)  # GroupNorm(8, d)
    b.mlp(f"{p}.mask_predictor.mask_embed", [d, d, d, d])
    b.torch_mha(f"{p}.cross_attend_prompt", d)
    b.norm(f"{p}.cross_attn_norm", d)
    b.conv(f"{p}.semantic_seg_head", 1, d, 1)
    b.conv(f"{p}.instance_seg_head", d, d, 1)


def _dot_prod_scoring(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
    d = s.d_model
    b.mlp(f"{p}.prompt_mlp", [d, s.ffn, d])
    b.norm(f"{p}.prompt_mlp.out_norm", d)
    b.linear(f"{p}.prompt_proj", d, d)
    b.linear(f"{p}.hs_proj", d, d)


def _tracker(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
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


def _tracker_memory_attention(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
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


def _tracker_memory_encoder(b: _LayoutBuilder, p: str, s: DetectorSizes) -> None:
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


def _sam_prompt_encoder(b: _LayoutBuilder, p: str, h: int) -> None:
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


def _sam_mask_decoder(b: _LayoutBuilder, p: str, h: int) -> None:
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
    b = _LayoutBuilder()
    vision = f"{DETECTOR_PREFIX}backbone.vision_backbone"
    _vit(b, f"{vision}.trunk", detector)
    _neck(b, f"{vision}.convs", detector)
    _neck(b, f"{vision}.sam2_convs", detector)
    _text(b, TEXT_PREFIX, text, detector.d_model)
    detector_heads(b, detector)
    _tracker(b, TRACKER_PREFIX, detector)
    return b.layout


def detector_heads(b, detector) -> None:
    """Everything of SAM3's detector after the backbones, the same in every family's file:
    geometry encoder, DETR encoder and decoder, segmentation head, dot-product scoring."""
    _geometry_encoder(b, f"{DETECTOR_PREFIX}geometry_encoder", detector)
    for i in range(detector.detr_enc_layers):
        _fusion_layer(b, f"{DETECTOR_PREFIX}transformer.encoder.layers.{i}", detector.d_model, detector.ffn)
    _detr_decoder(b, f"{DETECTOR_PREFIX}transformer.decoder", detector)
    _segmentation_head(b, f"{DETECTOR_PREFIX}segmentation_head", detector)
    _dot_prod_scoring(b, f"{DETECTOR_PREFIX}dot_prod_scoring", detector)


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
        from litetext_convert.synthetic import sam31

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


# ----------------------------------------------------------------------------------------------
# The manifest format (configs/manifest/*.tsv): key, shape as a list, dtype without "torch.".

MANIFEST_HEADER = "key\tshape\tdtype"


def layout_to_tsv(layout: Layout) -> str:
    rows = [f"{key}\t{list(shape)}\t{str(dtype).removeprefix('torch.')}" for key, (shape, dtype) in layout.items()]
    return "\n".join([MANIFEST_HEADER, *rows]) + "\n"


def layout_from_tsv(text: str) -> Layout:
    lines = text.splitlines()
    if not lines or lines[0] != MANIFEST_HEADER:
        raise ValueError(f"not a key manifest: expected the header {MANIFEST_HEADER!r}")
    layout: Layout = {}
    for line in lines[1:]:
        key, shape, dtype = line.split("\t")
        dims = shape.strip("[]")
        layout[key] = (tuple(int(d) for d in dims.split(",")) if dims else (), getattr(torch, dtype))
    return layout
