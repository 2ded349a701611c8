"""The video target's code: transformers' Sam3VideoModel = the family's detector + Meta's SAM2-style
tracker (+ its own neck). Its data is configs/targets/video.toml."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from litetext_convert.errors import CheckpointError
from litetext_convert.plan.hf_config import build_config as build_image_config
from litetext_convert.plan.hf_config import transformers_class
from litetext_convert.plan.infer import Architecture

TRACKER = "tracker."
# Sam3TrackerVideoMemoryAttentionLayer builds its cross-attention with kv_in_dim=64 whatever the config says.
TRANSFORMERS_MEMORY_DIM = 64


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


def build_config(arch: Architecture, tensors: dict[str, torch.Tensor]):
    """The family's video config class (Sam3VideoConfig for SAM3-LiteText, configs/families/<id>/family.toml
    [target_classes.video]) with detector_config=<the image config>, tracker_config=<sizes from the weights>."""
    classes = arch.family.classes("video")
    VideoConfig = transformers_class(classes["config"])
    detector = build_image_config(arch)
    sizes = tracker_sizes(tensors)
    if sizes["mem_dim"] != TRANSFORMERS_MEMORY_DIM:
        raise CheckpointError(
            f"this tracker stores {sizes['mem_dim']}-channel memories; transformers' Sam3TrackerVideo memory attention "
            f"fixes their key/value width at {TRANSFORMERS_MEMORY_DIM}, so --target video cannot hold it"
        )
    tracker = _tracker_config(transformers_class(classes["tracker_config"]), arch, detector, sizes)
    grid = arch.detector.image_size.value // arch.detector.patch_size.value
    config = VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)
    config.architectures = [classes["model"]]
    return config


def _tracker_config(TrackerConfig, arch: Architecture, detector, t: dict[str, int]):
    image_size, patch = arch.detector.image_size.value, arch.detector.patch_size.value
    grid = image_size // patch
    return TrackerConfig(
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
        memory_fuser_padding=t["fuser_kernel"] // 2,
        memory_fuser_kernel_size=t["fuser_kernel"],
    )


def save_processor(folder: Path, arch: Architecture, tokenizer) -> None:
    """Sam3VideoProcessor (image processor + video processor + tokenizer)."""
    from litetext_convert.write.processor import save_video_processor

    save_video_processor(folder, arch, tokenizer)
