"""Structural checks: every fact transformers relies on, checked before a folder is written or verified.

Shapes and key names can be crafted. Each check here turns what would otherwise fail deep inside
inference, the writer or the first forward (a division by zero, an unpack of a 1-D tensor, a
reshape into heads that do not divide the width) into one line that names the key or the field.
The rank table is data: configs/structure.toml.
"""

from __future__ import annotations

import re
from functools import lru_cache

import torch

from litetext_convert.errors import CheckpointError, printable
from litetext_convert.paths import read_config


@lru_cache(maxsize=1)
def _rank_rules() -> list[tuple[re.Pattern, int]]:
    return [(re.compile(pattern), rank) for pattern, rank in read_config("structure.toml")["ranks"].items()]


def check_source_structure(tensors: dict[str, torch.Tensor]) -> None:
    """Before the architecture is read: no empty dimension anywhere (no released tensor has one),
    and the tensors that carry the architecture have the rank it is read with."""
    rules = _rank_rules()
    for key, tensor in tensors.items():
        shape = tuple(tensor.shape)
        if 0 in shape:
            raise CheckpointError(f"{printable(key)} has an empty dimension {list(shape)}; a weight needs every size positive")
        for pattern, rank in rules:
            if pattern.fullmatch(key) and len(shape) != rank:
                raise CheckpointError(f"{printable(key)} has shape {list(shape)}: {rank} dimensions expected, not {len(shape)}")


def check_config(config) -> None:
    """The sizes the model is built with: positive, and heads dividing the widths they split."""
    facts = read_config("structure.toml")["config"]
    pairs = [tuple(pair) for pair in facts["heads"]]
    for where, sub in _sub_configs(config):
        for name in facts["positive"]:
            value = getattr(sub, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
                raise CheckpointError(f"{where}.{name} is {value}; it must be positive")
        for width_name, heads_name in pairs:
            width, heads = getattr(sub, width_name, None), getattr(sub, heads_name, None)
            if isinstance(width, int) and isinstance(heads, int) and (heads <= 0 or width % heads):
                raise CheckpointError(
                    f"{where}: {heads_name} {heads} does not divide {width_name} {width}; "
                    "attention could not split the width into heads"
                )


def _sub_configs(config, where: str = "config"):
    from transformers import PretrainedConfig

    yield where, config
    for name, value in vars(config).items():
        if isinstance(value, PretrainedConfig):
            yield from _sub_configs(value, f"{where}.{name}")


def check_dtypes(plan, expected: dict[str, torch.Tensor]) -> None:
    """Floats where the model holds floats, integers where it holds integers; never a complex
    tensor in a weight (a bool or int tensor in a float weight would convert silently and wrong)."""
    for target, dtype in plan.target_dtypes.items():
        want = expected.get(target)
        if want is None:
            continue
        if dtype.is_complex or dtype.is_floating_point != want.dtype.is_floating_point:
            source = plan.step_of_target[target].source
            raise CheckpointError(
                f"{printable(source)} is {str(dtype).removeprefix('torch.')} but the model holds "
                f"{str(want.dtype).removeprefix('torch.')} there ({printable(target)})"
            )
