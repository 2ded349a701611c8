"""Defects of published conversions, applied to a copy of our own clean conversion.

Each function takes a folder (a copy, edited in place) and the original checkpoint's tensors, and
reproduces one thing transformers' own LiteText converter (or a careless edit) does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PROJECTION = "text_encoder.projection.weight"
TABLE = "text_encoder.embeddings.position_embedding.position_embedding"
SOURCE_TABLE = "detector.backbone.language_backbone.encoder.positional_embedding.pos_embed.pos_embed"


def _edit_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def transpose_projection(folder: Path, source: dict) -> None:
    _edit_weights(folder, lambda t: t.__setitem__(PROJECTION, t[PROJECTION].t()))


def keep_table_rows(folder: Path, source: dict) -> None:
    """The stored 77-row table, and a config that says 77 (so transformers interpolates)."""
    _edit_weights(folder, lambda t: t.__setitem__(TABLE, source[SOURCE_TABLE].clone()))
    rows = source[SOURCE_TABLE].shape[2]
    _edit_json(folder / "config.json", lambda c: c["text_config"].__setitem__("max_position_embeddings", rows))


def pad_with_end_token(folder: Path, source: dict) -> None:
    def edit(config):
        config["pad_token"] = "<|endoftext|>"
        config.pop("split_special_tokens", None)

    _edit_json(folder / "tokenizer_config.json", edit)


def tokenizer_length(folder: Path, source: dict, length: int = 77) -> None:
    _edit_json(folder / "tokenizer_config.json", lambda c: c.__setitem__("model_max_length", length))


def vit_eps_default(folder: Path, source: dict) -> None:
    _edit_json(folder / "config.json", lambda c: c["vision_config"]["backbone_config"].__setitem__("layer_norm_eps", 1e-6))


def drop_tensor(folder: Path, source: dict, key: str = "detr_decoder.layers.0.mlp.fc1.weight") -> None:
    _edit_weights(folder, lambda t: t.pop(key))


def extra_tensor(folder: Path, source: dict) -> None:
    _edit_weights(folder, lambda t: t.__setitem__("tracker.maskmem_tpos_enc", torch.zeros(3, 1, 1, 4)))


def fuse_qkv(folder: Path, source: dict, layer: int = 0) -> None:
    """The fused q/k/v stored under one key, q/k/v missing (a converter that forgot to split)."""
    def edit(t):
        base = f"vision_encoder.backbone.layers.{layer}.attention"
        for p in ("weight", "bias"):
            t[f"{base}.qkv.{p}"] = torch.cat([t.pop(f"{base}.{n}_proj.{p}") for n in "qkv"])

    _edit_weights(folder, edit)


def to_bfloat16(folder: Path, source: dict) -> None:
    _edit_weights(folder, lambda t: t.update({k: v.to(torch.bfloat16) for k, v in t.items() if v.is_floating_point()}))


def points_onto_boxes(folder: Path, source: dict) -> None:
    """A points_* projector renamed onto its boxes_* namesake (only the biases share a shape)."""
    points = source["detector.geometry_encoder.points_pos_enc_project.bias"]
    _edit_weights(folder, lambda t: t.__setitem__("geometry_encoder.boxes_pos_enc_project.bias", points.clone()))


def transformers_converter_style(folder: Path, source: dict) -> None:
    """Every known transformation of transformers' own converter at once (BatchNorm counters left at the
    model's initial 0: it skips them and saves the randomly initialised model's buffers)."""
    for defect in (transpose_projection, keep_table_rows, pad_with_end_token, vit_eps_default):
        defect(folder, source)
    tokenizer_length(folder, source, source[SOURCE_TABLE].shape[2])
    _edit_weights(folder, lambda t: t.update({k: torch.zeros_like(v) for k, v in t.items() if k.endswith("num_batches_tracked")}))
