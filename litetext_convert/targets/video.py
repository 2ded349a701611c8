"""The video target's code: transformers' Sam3VideoModel = the family's detector + Meta's SAM2-style
tracker (+ its own neck). Its data is configs/targets/video.toml."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from litetext_convert.errors import CheckpointError
from litetext_convert.paths import read_config
from litetext_convert.plan.hf_config import build_config as build_image_config
from litetext_convert.plan.hf_config import transformers_class
from litetext_convert.plan.infer import Architecture, tracker_sizes
from litetext_convert.targets.image import image_processor_fields

# Sam3TrackerVideoMemoryAttentionLayer builds its cross-attention with kv_in_dim=64 whatever the config says.
TRANSFORMERS_MEMORY_DIM = 64


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


def video_processor_fields(arch: Architecture) -> dict:
    fields = dict(read_config("video_processor.toml")["video_processor"])
    fields["size"] = {"height": arch.detector.image_size.value, "width": arch.detector.image_size.value}
    return fields


def save_processor(folder: Path, arch: Architecture, tokenizer) -> None:
    """Sam3VideoProcessor (image processor + video processor + tokenizer)."""
    if importlib.util.find_spec("torchvision") is not None and importlib.util.find_spec("PIL") is not None:
        from transformers import Sam3ImageProcessor, Sam3VideoProcessor
        from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

        image = image_processor_fields(arch)
        image.pop("image_processor_type")
        video = video_processor_fields(arch)
        video.pop("video_processor_type")
        processor = Sam3VideoProcessor(
            image_processor=Sam3ImageProcessor(**image), video_processor=Sam2VideoVideoProcessor(**video), tokenizer=tokenizer
        )
        processor.save_pretrained(str(folder))
        return
    tokenizer.save_pretrained(str(folder))
    config = {
        "image_processor": dict(sorted(image_processor_fields(arch).items())),
        "processor_class": read_config("video_processor.toml")["processor"]["processor_class"],
        "target_size": arch.detector.image_size.value,
        "video_processor": dict(sorted(video_processor_fields(arch).items())),
    }
    (folder / "processor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
