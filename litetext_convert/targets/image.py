"""The image target's code: the family's detector alone (Sam3LiteTextModel for both LiteText
families). Its data is configs/targets/image.toml."""

from __future__ import annotations

from pathlib import Path

import torch

from litetext_convert.plan.hf_config import build_config as build_image_config
from litetext_convert.plan.infer import Architecture


def build_config(arch: Architecture, tensors: dict[str, torch.Tensor]):
    """The family's image config (its hf_config_class); the sizes come from the architecture alone."""
    del tensors  # every size the image config needs is in the architecture
    return build_image_config(arch)


def save_processor(folder: Path, arch: Architecture, tokenizer) -> None:
    """Sam3Processor (image processor + tokenizer)."""
    from litetext_convert.write.processor import save_processor as save_image_processor

    save_image_processor(folder, arch, tokenizer)
