"""Read the architecture from the weights, and say where every value came from.

Sources, in order of trust: `weights` (a tensor shape or a key count), `flag` (the user said so),
`name` (the `ctxNN` in the file name), `variant table` (configs/variants.toml: facts that no tensor
shows, such as the head count), `default` (transformers' SAM3 value, not observable).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from litetext_convert.errors import CheckpointError
from litetext_convert.families import Family, recognise
from litetext_convert.paths import read_config

TEXT = "detector.backbone.language_backbone."
TRUNK = "detector.backbone.vision_backbone.trunk."
NECK = "detector.backbone.vision_backbone.convs."

_CONTEXT_IN_NAME = re.compile(r"ctx(\d+)")
_HEAD_DIM = 64  # every MobileCLIP text variant uses 64-wide heads


@dataclass(frozen=True)
class Fact:
    value: Any
    source: str

    def to_json(self) -> dict:
        return {"value": self.value, "source": self.source}


@dataclass
class TextArchitecture:
    variant: Fact  # "s0" | "s1" | "l" | "custom"
    family: Fact  # "mct" (RepMixer + transformers + RepMixer) | "base"
    hidden_size: Fact
    num_layers: Fact  # every layer, RepMixer blocks included
    num_heads: Fact
    intermediate_size: Fact
    vocab_size: Fact
    projection_dim: Fact
    detector_width: Fact
    repmixer_kernel_size: Fact | None
    positional_rows: Fact
    context_length: Fact


@dataclass
class DetectorArchitecture:
    vit_width: Fact
    vit_depth: Fact
    vit_heads: Fact
    vit_mlp: Fact
    patch_size: Fact
    num_channels: Fact
    image_size: Fact
    pretrain_image_size: Fact
    window_size: Fact
    global_attn_indexes: Fact
    d_model: Fact
    geometry_layers: Fact
    geometry_ffn: Fact
    roi_size: Fact
    detr_encoder_layers: Fact
    detr_encoder_ffn: Fact
    detr_decoder_layers: Fact
    detr_decoder_ffn: Fact
    num_queries: Fact
    mask_upsampling_stages: Fact
    attention_heads: Fact
    vit_layer_norm_eps: Fact


@dataclass
class Architecture:
    text: TextArchitecture
    detector: DetectorArchitecture
    family: Family
    notes: list[str] = field(default_factory=list)

    @property
    def context_length(self) -> int:
        return self.text.context_length.value

    @property
    def variant(self) -> str:
        return self.text.variant.value

    def to_json(self) -> dict:
        def facts(section) -> dict:
            return {name: value.to_json() for name, value in asdict_shallow(section).items() if value is not None}

        return {
            "family": self.family.to_json(),
            "text": facts(self.text),
            "detector": facts(self.detector),
            "notes": list(self.notes),
        }


def asdict_shallow(obj) -> dict:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


# ----------------------------------------------------------------------------------------------
# Text encoder
# ----------------------------------------------------------------------------------------------


def _layer_indices(keys: list[str], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in keys if (m := pattern.match(key))})


def _shape(tensors: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in tensors:
        raise CheckpointError(f"missing key needed to read the architecture: {key}")
    return tuple(tensors[key].shape)


def infer_text(
    tensors: dict[str, torch.Tensor],
    filename: str,
    *,
    context_length: int | None,
    num_heads: int | None,
    notes: list[str],
    variants: dict[str, dict],
) -> TextArchitecture:
    vocab, hidden = _shape(tensors, TEXT + "encoder.embedding_layer.weight")
    family, layers, ffn, kernel = _text_layers(tensors)
    projection_in, projection_dim = _shape(tensors, TEXT + "encoder.projection_layer")
    if projection_in != hidden:
        raise CheckpointError(f"projection_layer is {projection_in}x{projection_dim}, expected {hidden} rows")
    detector_width = _shape(tensors, TEXT + "projector.weight")[0]
    pos_shape = _shape(tensors, TEXT + "encoder.positional_embedding.pos_embed.pos_embed")
    if len(pos_shape) != 4 or pos_shape[3] != hidden:
        raise CheckpointError(f"text positional table has shape {list(pos_shape)}, expected [1, 1, T, {hidden}]")
    rows = pos_shape[2]

    variant = _match_variant(variants, family, hidden, len(layers))
    heads = _heads(variants, variant, hidden, num_heads)
    context = _context(filename, rows, context_length, notes)
    return TextArchitecture(
        variant=variant,
        family=Fact(family, "weights"),
        hidden_size=Fact(hidden, "weights"),
        num_layers=Fact(len(layers), "weights"),
        num_heads=heads,
        intermediate_size=Fact(ffn, "weights"),
        vocab_size=Fact(vocab, "weights"),
        projection_dim=Fact(projection_dim, "weights"),
        detector_width=Fact(detector_width, "weights"),
        repmixer_kernel_size=kernel,
        positional_rows=Fact(rows, "weights"),
        context_length=context,
    )


def _text_layers(tensors: dict[str, torch.Tensor]) -> tuple[str, list[int], int, Fact | None]:
    """The text layers' layout from their keys: family (base, or mct: RepMixer first and last), the
    layer indices, the feed-forward width and the RepMixer kernel (None without RepMixers)."""
    keys = list(tensors)
    layers = _layer_indices(keys, TEXT + "encoder.transformer.")
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"text encoder layers are not numbered 0..n-1: {layers[:12]}")
    repmixers = [i for i in layers if f"{TEXT}encoder.transformer.{i}.token_mixer.layer_scale" in tensors]
    attention_layers = [i for i in layers if i not in repmixers]
    if not repmixers:
        family = "base"
    elif repmixers == [0, len(layers) - 1] and len(layers) > 2:
        family = "mct"
    else:
        raise CheckpointError(
            f"unsupported text layout: RepMixer blocks at {repmixers} of {len(layers)} layers "
            "(transformers supports them first and last, or not at all)"
        )
    if not attention_layers:
        raise CheckpointError("the text encoder has no transformer layers")
    first = f"{TEXT}encoder.transformer.{attention_layers[0]}."
    ffn = _shape(tensors, first + "pre_norm_ffn.1.weight")[0]
    kernel = None
    if repmixers:
        conv_ffn = _shape(tensors, f"{TEXT}encoder.transformer.0.convffn.fc1.weight")[0]
        if conv_ffn != ffn:
            raise CheckpointError(
                f"RepMixer feed-forward width {conv_ffn} differs from the transformer layers' {ffn}; "
                "transformers uses one intermediate_size for both"
            )
        kernel = Fact(_shape(tensors, f"{TEXT}encoder.transformer.0.token_mixer.mixer.rbr_conv.0.conv.weight")[-1], "weights")
    return family, layers, ffn, kernel


def _match_variant(variants: dict[str, dict], family: str, hidden: int, layers: int) -> Fact:
    for key, spec in variants.items():
        if (spec["variant"], spec["hidden_size"], spec["layers"]) == (family, hidden, layers):
            return Fact(key, "weights + variant table")
    return Fact("custom", "weights (no released variant has this shape)")


def _heads(table: dict[str, dict], variant: Fact, hidden: int, flag: int | None) -> Fact:
    if flag is not None:
        if hidden % flag:
            raise CheckpointError(f"--num-heads {flag} does not divide the text width {hidden}")
        return Fact(flag, "flag")
    if variant.value in table:
        return Fact(table[variant.value]["heads"], "variant table (not observable in the weights)")
    if hidden % _HEAD_DIM:
        raise CheckpointError(f"text width {hidden} is not a multiple of 64; pass --num-heads")
    return Fact(hidden // _HEAD_DIM, "head_dim 64 rule (not observable in the weights)")


def _context(filename: str, rows: int, flag: int | None, notes: list[str]) -> Fact:
    named = _CONTEXT_IN_NAME.search(filename)
    if flag is not None:
        context = Fact(flag, "flag")
    elif named:
        context = Fact(int(named.group(1)), "name")
    else:
        context = Fact(rows, "weights (positional table length)")
    if context.value < 1:
        raise CheckpointError(f"context length must be positive, got {context.value}")
    if rows < context.value:
        raise CheckpointError(
            f"the positional table stores {rows} positions but the context is {context.value} "
            f"(from the {context.source}); pass --context-length {rows} or less"
        )
    if rows > context.value:
        notes.append(
            f"text positional table has {rows} rows; sliced to the first {context.value} as upstream inference does "
            "(upstream training interpolated the full table instead)"
        )
    return context


# ----------------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------------


def detector_facts() -> dict:
    return read_config("detector.toml")


def infer_detector(tensors: dict[str, torch.Tensor], notes: list[str]) -> DetectorArchitecture:
    keys = list(tensors)
    width, channels, patch, _ = _shape(tensors, TRUNK + "patch_embed.proj.weight")
    depth = len(_layer_indices(keys, TRUNK + "blocks."))
    mlp = _shape(tensors, TRUNK + "blocks.0.mlp.fc1.weight")[0]
    pos_rows = _shape(tensors, TRUNK + "pos_embed")[1] - 1
    pretrain_side = math.isqrt(pos_rows)
    if pretrain_side * pretrain_side != pos_rows:
        raise CheckpointError(f"ViT position table has {pos_rows + 1} rows, not 1 + a square grid")

    heads, window, image_size, global_blocks = _attention_geometry(tensors, depth, width, patch, notes)
    d_model = _shape(tensors, NECK + "0.conv_1x1.weight")[0]
    return DetectorArchitecture(
        vit_width=Fact(width, "weights"),
        vit_depth=Fact(depth, "weights"),
        vit_heads=heads,
        vit_mlp=Fact(mlp, "weights"),
        patch_size=Fact(patch, "weights"),
        num_channels=Fact(channels, "weights"),
        image_size=image_size,
        pretrain_image_size=Fact(pretrain_side * patch, "weights"),
        window_size=window,
        global_attn_indexes=global_blocks,
        d_model=Fact(d_model, "weights"),
        geometry_layers=Fact(len(_layer_indices(keys, "detector.geometry_encoder.encode.")), "weights"),
        geometry_ffn=Fact(_shape(tensors, "detector.geometry_encoder.encode.0.linear1.weight")[0], "weights"),
        roi_size=Fact(_shape(tensors, "detector.geometry_encoder.boxes_pool_project.weight")[-1], "weights"),
        detr_encoder_layers=Fact(len(_layer_indices(keys, "detector.transformer.encoder.layers.")), "weights"),
        detr_encoder_ffn=Fact(_shape(tensors, "detector.transformer.encoder.layers.0.linear1.weight")[0], "weights"),
        detr_decoder_layers=Fact(len(_layer_indices(keys, "detector.transformer.decoder.layers.")), "weights"),
        detr_decoder_ffn=Fact(_shape(tensors, "detector.transformer.decoder.layers.0.linear1.weight")[0], "weights"),
        num_queries=Fact(_shape(tensors, "detector.transformer.decoder.query_embed.weight")[0], "weights"),
        mask_upsampling_stages=Fact(
            len(_layer_indices(keys, "detector.segmentation_head.pixel_decoder.conv_layers.")), "weights"
        ),
        # The decoder's box relative-position MLP emits one bias per head; the other fusion modules
        # show no head count, and SAM3 uses one count throughout.
        attention_heads=Fact(
            _shape(tensors, "detector.transformer.decoder.boxRPB_embed_x.layers.1.weight")[0],
            "weights (decoder box-RPB heads; assumed for every fusion module)",
        ),
        vit_layer_norm_eps=Fact(
            detector_facts()["vit_layer_norm_eps"],
            "SAM3 ViT code (configs/detector.toml; not observable in the weights)",
        ),
    )


def _attention_geometry(tensors, depth: int, width: int, patch: int, notes: list[str]):
    """The RoPE tables show what the config must say: windowed blocks hold window^2 rows, global
    blocks (H/patch)^2 rows, and the last dimension is head_dim / 2."""
    tables = [tensors.get(f"{TRUNK}blocks.{i}.attn.freqs_cis") for i in range(depth)]
    if any(table is None for table in tables):
        return _sam3_vit_geometry(width, depth, notes)
    rows = [table.shape[0] for table in tables]
    head_dim = tables[0].shape[-1] * 2
    if width % head_dim:
        raise CheckpointError(f"ViT width {width} is not a multiple of the RoPE head dim {head_dim}")
    window_rows = Counter(rows).most_common(1)[0][0]
    largest = max(rows)
    global_blocks = [i for i, count in enumerate(rows) if count == largest] if largest != window_rows else []
    image_side = math.isqrt(largest)
    window_side = math.isqrt(window_rows)
    if image_side * image_side != largest or window_side * window_side != window_rows:
        raise CheckpointError(f"ViT RoPE tables have non-square row counts {sorted(set(rows))}")
    return (
        Fact(width // head_dim, "weights (RoPE head dim)"),
        Fact(window_side if global_blocks else 0, "weights (RoPE table of windowed blocks)"),
        Fact(image_side * patch, "weights (RoPE table of global blocks)"),
        Fact(global_blocks, "weights (blocks with the full-image RoPE table)"),
    )


def _sam3_vit_geometry(width: int, depth: int, notes: list[str]):
    sam3 = detector_facts()["vit_without_rope_tables"]
    if (width, depth) != (sam3["width"], sam3["depth"]):
        raise CheckpointError(
            f"the ViT blocks carry no RoPE tables (attn.freqs_cis) and the ViT ({width} wide, {depth} deep) is not "
            "SAM3's: window size, global blocks and image size cannot be read from this checkpoint"
        )
    notes.append("no ViT RoPE tables in the file: window size, global blocks, image size and heads are SAM3's own")
    source = "SAM3 ViT (configs/detector.toml; the file has no RoPE tables to read it from)"
    return (
        Fact(width // sam3["head_dim"], source),
        Fact(sam3["window_size"], source),
        Fact(sam3["image_size"], source),
        Fact(list(sam3["global_attn_indexes"]), source),
    )


def infer_architecture(
    tensors: dict[str, torch.Tensor],
    filename: str,
    *,
    context_length: int | None = None,
    num_heads: int | None = None,
) -> Architecture:
    family = recognise(list(tensors), filename)
    notes: list[str] = []
    text = infer_text(
        tensors, filename, context_length=context_length, num_heads=num_heads, notes=notes, variants=family.variant_table()
    )
    detector = infer_detector(tensors, notes)
    if text.detector_width.value != detector.d_model.value:
        raise CheckpointError(
            f"the text projector outputs {text.detector_width.value} features but the detector is {detector.d_model.value} wide"
        )
    return Architecture(text, detector, family, notes)


def to_plain(arch: Architecture) -> dict:
    """Just the values, for quick assertions and --json consumers who do not want sources."""
    return {
        section: {name: fact.value for name, fact in asdict_shallow(getattr(arch, section)).items() if fact is not None}
        for section in ("text", "detector")
    }


# ----------------------------------------------------------------------------------------------
# The video tracker's sizes (the video target's config and the original tracker are built from them)

TRACKER = "tracker."  # the video tracker's keys in an upstream checkpoint


def tracker_sizes(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The tracker's sizes, read from the shapes of its weights (never assumed)."""

    def shape(key: str) -> tuple[int, ...]:
        if TRACKER + key not in tensors:
            raise CheckpointError(f"--target video needs the tracker weights, and {TRACKER + key} is missing")
        return tuple(tensors[TRACKER + key].shape)

    def count(pattern: str) -> int:
        regex = re.compile(re.escape(TRACKER) + pattern)
        return len({m.group(1) for key in tensors if (m := regex.fullmatch(key))})

    num_maskmem, _, _, mem_dim = shape("maskmem_tpos_enc")
    hidden = shape("no_mem_embed")[-1]
    return {
        "hidden": hidden,
        "mem_dim": mem_dim,
        "num_maskmem": num_maskmem,
        "memory_attention_layers": count(r"transformer\.encoder\.layers\.(\d+)\.linear1\.weight"),
        "memory_attention_ffn": shape("transformer.encoder.layers.0.linear1.weight")[0],
        "decoder_layers": count(r"sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.lin1\.weight"),
        "decoder_mlp": shape("sam_mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        "iou_hidden": shape("sam_mask_decoder.iou_prediction_head.layers.0.weight")[0],
        "multimask_outputs": shape("sam_mask_decoder.mask_tokens.weight")[0] - 1,
        "point_embeddings": count(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight"),
        "mask_input_channels": shape("sam_prompt_encoder.mask_downscaling.3.weight")[0],
        "fuser_layers": count(r"maskmem_backbone\.fuser\.layers\.(\d+)\.gamma"),
        "fuser_intermediate": shape("maskmem_backbone.fuser.layers.0.pwconv1.weight")[0],
        "fuser_kernel": shape("maskmem_backbone.fuser.layers.0.dwconv.weight")[-1],
        "downsampler_stages": count(r"maskmem_backbone\.mask_downsampler\.encoder\.(\d+)\.weight") // 2,
    }
