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
    Sam3LiteTextConfig = transformers_class(arch.family.hf_config_class)
    text, det = arch.text, arch.detector
    patches = det.image_size.value // det.patch_size.value
    vision = {
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
    d_model = det.d_model.value
    heads = det.attention_heads.value
    config = Sam3LiteTextConfig(
        vision_config=vision,
        text_config=text_config,
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
# ----------------------------------------------------------------------------------------------
# Video target: Sam3VideoModel = this detector + Meta's SAM2-style tracker (+ its own neck).

TRACKER = "tracker."
# Sam3TrackerVideoMemoryAttentionLayer builds its cross-attention with kv_in_dim=64 whatever the config says.
TRANSFORMERS_MEMORY_DIM = 64


def tracker_sizes(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The tracker's sizes, read from the shapes of its weights (never assumed)."""
    from litetext_convert.errors import CheckpointError

    def shape(key: str) -> tuple[int, ...]:
        if TRACKER + key not in tensors:
            raise CheckpointError(f"--target video needs the tracker weights, and {TRACKER + key} is missing")
        return tuple(tensors[TRACKER + key].shape)

    def count(pattern: str) -> int:
        import re

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


def build_video_config(arch: Architecture, tensors: dict[str, torch.Tensor]):
    """The family's video config class (Sam3VideoConfig for SAM3-LiteText, configs/families/<id>/family.toml
    [target_classes.video]) with detector_config=<the image config>, tracker_config=<sizes from the weights>."""
    from litetext_convert.errors import CheckpointError

    classes = arch.family.classes("video")
    VideoConfig, TrackerConfig = transformers_class(classes["config"]), transformers_class(classes["tracker_config"])

    detector = build_config(arch)
    t = tracker_sizes(tensors)
    if t["mem_dim"] != TRANSFORMERS_MEMORY_DIM:
        raise CheckpointError(
            f"this tracker stores {t['mem_dim']}-channel memories; transformers' Sam3TrackerVideo memory attention "
            f"fixes their key/value width at {TRANSFORMERS_MEMORY_DIM}, so --target video cannot hold it"
        )
    det = arch.detector
    image_size, patch = det.image_size.value, det.patch_size.value
    grid = image_size // patch
    tracker = TrackerConfig(
        vision_config={**detector.vision_config.to_dict(), "fpn_hidden_size": t["hidden"]},
        prompt_encoder_config={
            "hidden_size": t["hidden"],
            "image_size": image_size,
            "patch_size": patch,
            "mask_input_channels": t["mask_input_channels"],
            "num_point_embeddings": t["point_embeddings"],
        },
        mask_decoder_config={
            "hidden_size": t["hidden"],
            "mlp_dim": t["decoder_mlp"],
            "num_hidden_layers": t["decoder_layers"],
            "num_multimask_outputs": t["multimask_outputs"],
            "iou_head_hidden_dim": t["iou_hidden"],
        },
        image_size=image_size,
        num_maskmem=t["num_maskmem"],
        memory_attention_hidden_size=t["hidden"],
        memory_attention_num_layers=t["memory_attention_layers"],
        memory_attention_feed_forward_hidden_size=t["memory_attention_ffn"],
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=t["hidden"],
        memory_encoder_output_channels=t["mem_dim"],
        mask_downsampler_embed_dim=t["hidden"],
        mask_downsampler_total_stride=2 ** t["downsampler_stages"],
        memory_fuser_num_layers=t["fuser_layers"],
        memory_fuser_embed_dim=t["hidden"],
        memory_fuser_intermediate_dim=t["fuser_intermediate"],
        memory_fuser_kernel_size=t["fuser_kernel"],
        memory_fuser_padding=t["fuser_kernel"] // 2,
    )
    config = VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)
    config.architectures = [classes["model"]]
    return config


def folder_target(folder) -> str:
    """Which target a converted folder holds ("video" for a Sam3VideoModel config, else "image")."""
    import json
    from pathlib import Path

    try:
        model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return "image"
    return "video" if model_type == "sam3_video" else "image"
