"""The parts both families' synthetic files share: the sizes that shape the keys, a layout builder,
the detector's vision trunk, neck, text encoder and heads, and the key-manifest format.

builder.py assembles SAM3-LiteText files from these (and adds SAM3's tracker), sam31.py
SAM3.1-LiteText files (with the multiplex tracker read from its manifest). Nothing here imports
either of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]

DETECTOR_PREFIX = "detector."
TEXT_PREFIX = "detector.backbone.language_backbone."

# Fixed in every file, tiny ones included (the builder's choices, kept for the tiny detector).
VIT_IN_CHANNELS = 3
NECK_SCALES = (4.0, 2.0, 1.0, 0.5)
GEOMETRY_LABELS = 2  # positive / negative prompts


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


class LayoutBuilder:
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


def vit(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
    w = s.vit_width
    b.add(f"{p}.pos_embed", 1, s.pretrain_grid**2 + 1, w)  # +1: the pretraining cls row
    b.add(f"{p}.patch_embed.proj.weight", w, VIT_IN_CHANNELS, s.patch, s.patch)  # no bias
    for i in range(s.vit_depth):
        blk = f"{p}.blocks.{i}"
        b.norm(f"{blk}.norm1", w)
        b.add(f"{blk}.attn.freqs_cis", rope_rows(s, i), s.vit_head_dim // 2, dtype=torch.complex64)
        b.linear(f"{blk}.attn.qkv", 3 * w, w)
        b.linear(f"{blk}.attn.proj", w, w)
        b.norm(f"{blk}.norm2", w)
        b.linear(f"{blk}.mlp.fc1", s.vit_mlp, w)
        b.linear(f"{blk}.mlp.fc2", w, s.vit_mlp)
    b.norm(f"{p}.ln_pre", w)  # defined after the blocks, so stored after them


def rope_rows(s: DetectorSizes, block: int) -> int:
    side = s.grid if block in s.global_blocks else s.window_size
    return side * side


def neck(b: LayoutBuilder, p: str, s: DetectorSizes, scales: tuple[float, ...] = NECK_SCALES) -> None:
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


def text_encoder(b: LayoutBuilder, p: str, t: TextSizes, d_model: int) -> None:
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
            repmixer_block(b, layer, t)
        else:
            text_transformer_layer(b, layer, t)
    b.norm(f"{enc}.final_layer_norm", D)
    b.linear(f"{p}projector", d_model, D)


def repmixer_block(b: LayoutBuilder, p: str, t: TextSizes) -> None:
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


def text_transformer_layer(b: LayoutBuilder, p: str, t: TextSizes) -> None:
    D = t.width
    b.norm(f"{p}.pre_norm_mha.0", D)
    b.linear(f"{p}.pre_norm_mha.1.qkv_proj", 3 * D, D)
    b.linear(f"{p}.pre_norm_mha.1.out_proj", D, D)
    b.norm(f"{p}.pre_norm_ffn.0", D)
    b.linear(f"{p}.pre_norm_ffn.1", t.ffn, D)
    b.linear(f"{p}.pre_norm_ffn.4", D, t.ffn)


def fusion_layer(b: LayoutBuilder, p: str, d: int, ffn: int) -> None:
    """sam3 TransformerEncoderLayer (geometry encoder and DETR encoder)."""
    b.torch_mha(f"{p}.self_attn", d)
    b.torch_mha(f"{p}.cross_attn_image", d)
    b.linear(f"{p}.linear1", ffn, d)
    b.linear(f"{p}.linear2", d, ffn)
    for n in (1, 2, 3):
        b.norm(f"{p}.norm{n}", d)


def detector_heads(b, detector) -> None:
    """Everything of SAM3's detector after the backbones, the same in every family's file:
    geometry encoder, DETR encoder and decoder, segmentation head, dot-product scoring."""
    geometry_encoder(b, f"{DETECTOR_PREFIX}geometry_encoder", detector)
    for i in range(detector.detr_enc_layers):
        fusion_layer(b, f"{DETECTOR_PREFIX}transformer.encoder.layers.{i}", detector.d_model, detector.ffn)
    detr_decoder(b, f"{DETECTOR_PREFIX}transformer.decoder", detector)
    segmentation_head(b, f"{DETECTOR_PREFIX}segmentation_head", detector)
    dot_prod_scoring(b, f"{DETECTOR_PREFIX}dot_prod_scoring", detector)


def geometry_encoder(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
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
        fusion_layer(b, f"{p}.encode.{i}", d, s.ffn)
    b.norm(f"{p}.encode_norm", d)


def detr_decoder(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
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


def segmentation_head(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
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


def dot_prod_scoring(b: LayoutBuilder, p: str, s: DetectorSizes) -> None:
    d = s.d_model
    b.mlp(f"{p}.prompt_mlp", [d, s.ffn, d])
    b.norm(f"{p}.prompt_mlp.out_norm", d)
    b.linear(f"{p}.prompt_proj", d, d)
    b.linear(f"{p}.hs_proj", d, d)


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
