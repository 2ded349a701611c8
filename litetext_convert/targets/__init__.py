"""Targets as data: what a checkpoint is converted into (image, video, ...).

A target lives in configs/targets/<id>.toml (its label, which mapping tables of a family it uses,
where its transformers classes come from, how a folder of it is recognised, the parity scopes it
supports and what each runs, its model-card wording) plus one small code module
(litetext_convert/targets/<id>.py: config builder, processor saver), loaded when its code is called.
The parity scopes themselves (label, what they need) are configs/scopes.toml.
"""

from litetext_convert.targets.registry import (
    Scope,
    Target,
    default_target,
    folder_target,
    scope,
    scope_names,
    scope_target,
    target,
    target_names,
)

__all__ = [
    "Scope",
    "Target",
    "default_target",
    "folder_target",
    "scope",
    "scope_names",
    "scope_target",
    "target",
    "target_names",
]
