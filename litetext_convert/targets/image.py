"""The image target's code: the family's detector alone (Sam3LiteTextModel for both LiteText
families). Its data is configs/targets/image.toml."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from litetext_convert.paths import read_config
from litetext_convert.plan.hf_config import build_config as build_image_config
from litetext_convert.plan.infer import Architecture


def build_config(arch: Architecture, tensors: dict[str, torch.Tensor]):
    """The family's image config (its hf_config_class); the sizes come from the architecture alone."""
    del tensors  # every size the image config needs is in the architecture
    return build_image_config(arch)


def _processor_settings() -> dict:
    return read_config("processor.toml")


def image_processor_fields(arch: Architecture) -> dict:
    patches = arch.detector.image_size.value // arch.detector.patch_size.value
    fields = dict(_processor_settings()["image_processor"])
    fields["size"] = {"height": arch.detector.image_size.value, "width": arch.detector.image_size.value}
    fields["mask_size"] = {"height": patches * 4, "width": patches * 4}
    return fields


def save_processor(folder: Path, arch: Architecture, tokenizer) -> None:
    """Sam3Processor (image processor + tokenizer); as plain data where torchvision is missing."""
    if importlib.util.find_spec("torchvision") is not None:
        _save_with_transformers(folder, arch, tokenizer)
    else:
        _save_as_data(folder, arch, tokenizer)


def _save_with_transformers(folder: Path, arch: Architecture, tokenizer) -> None:
    from transformers import Sam3ImageProcessor, Sam3Processor

    fields = image_processor_fields(arch)
    fields.pop("image_processor_type")
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(**fields), tokenizer=tokenizer)
    processor.save_pretrained(str(folder))


def _save_as_data(folder: Path, arch: Architecture, tokenizer) -> None:
    """Without torchvision, Sam3ImageProcessor cannot be instantiated; its saved form is plain data."""
    tokenizer.save_pretrained(str(folder))
    settings = _processor_settings()["processor"]
    config = {
        "image_processor": dict(sorted(image_processor_fields(arch).items())),
        "point_pad_value": settings["point_pad_value"],
        "processor_class": settings["processor_class"],
        "target_size": arch.detector.image_size.value,
    }
    (folder / "processor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
