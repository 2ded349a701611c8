"""The transformers config that matches an inferred architecture, and the model built on it
on the meta device (shapes only: no memory, no random initialisation)."""

from __future__ import annotations

import torch

from litetext_convert.plan.infer import Architecture


def transformers_class(name: str):
    """A transformers class by the name a family declares (hf_model_class / hf_config_class)."""
    import transformers

    return getattr(transformers, name)


def build_config(arch: Architecture):
    """The family's image config (its hf_config_class) from an inferred architecture."""
    config_class = transformers_class(arch.family.hf_config_class)
    det = arch.detector
    d_model, heads = det.d_model.value, det.attention_heads.value
    config = config_class(
        vision_config=_vision_config(arch),
        text_config=_text_config(arch),
        geometry_encoder_config={
            "hidden_size": d_model,
            "num_layers": det.geometry_layers.value,
            "num_attention_heads": heads,
            "intermediate_size": det.geometry_ffn.value,
            "roi_size": det.roi_size.value,
        },
        detr_encoder_config={
            "hidden_size": d_model,
            "num_layers": det.detr_encoder_layers.value,
            "num_attention_heads": heads,
            "intermediate_size": det.detr_encoder_ffn.value,
        },
        detr_decoder_config={
            "hidden_size": d_model,
            "num_layers": det.detr_decoder_layers.value,
            "num_attention_heads": heads,
            "intermediate_size": det.detr_decoder_ffn.value,
            "num_queries": det.num_queries.value,
        },
        mask_decoder_config={
            "hidden_size": d_model,
            "num_upsampling_stages": det.mask_upsampling_stages.value,
            "num_attention_heads": heads,
        },
    )
    config.architectures = [arch.family.hf_model_class]
    return config


def _vision_config(arch: Architecture) -> dict:
    det = arch.detector
    patches = det.image_size.value // det.patch_size.value
    return {
        "model_type": "sam3_vision_model",
        "fpn_hidden_size": det.d_model.value,
        # The neck upsamples the ViT grid 4x and 2x, keeps 1x and pools 0.5x; the first three feed the mask decoder.
        "backbone_feature_sizes": [[patches * 4, patches * 4], [patches * 2, patches * 2], [patches, patches]],
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": det.vit_width.value,
            "intermediate_size": det.vit_mlp.value,
            "num_hidden_layers": det.vit_depth.value,
            "num_attention_heads": det.vit_heads.value,
            "num_channels": det.num_channels.value,
            "image_size": det.image_size.value,
            "patch_size": det.patch_size.value,
            "pretrain_image_size": det.pretrain_image_size.value,
            "window_size": det.window_size.value,
            "global_attn_indexes": list(det.global_attn_indexes.value),
            "layer_norm_eps": det.vit_layer_norm_eps.value,
        },
    }


def _text_config(arch: Architecture) -> dict:
    text = arch.text
    text_config = {
        "vocab_size": text.vocab_size.value,
        "hidden_size": text.hidden_size.value,
        "intermediate_size": text.intermediate_size.value,
        "projection_dim": text.projection_dim.value,
        "num_hidden_layers": text.num_layers.value,
        "num_attention_heads": text.num_heads.value,
        # The table is sliced to the context, so transformers never interpolates it.
        "max_position_embeddings": text.context_length.value,
        "use_repmixer_blocks": text.family.value == "mct",
    }
    if text.repmixer_kernel_size is not None:
        text_config["repmixer_kernel_size"] = text.repmixer_kernel_size.value
    return text_config


def meta_model_tensors(config) -> dict[str, torch.Tensor]:
    """Every parameter and persistent buffer the model expects, as meta tensors."""
    model_class = transformers_class(config.architectures[0])
    with torch.device("meta"):
        model = model_class(config)
    return dict(model.state_dict())


def model_class_of_folder(folder) -> type:
    """The transformers class a converted folder was written for (config.json `architectures`)."""
    import json
    from pathlib import Path

    architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or ["Sam3LiteTextModel"]
    return transformers_class(architectures[0])
