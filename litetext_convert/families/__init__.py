"""Checkpoint families as data: which family a file belongs to, and what that family brings.

A family (SAM3-LiteText, SAM3.1-LiteText, ...) lives in configs/families/<id>/family.toml: its
tell-tale keys, aliases and Hub folder, the variant table, the mapping tables per target (and the
targets it cannot have, with the reason), the transformers class, and the model card's wording.
Look-alikes (configs/lookalikes.toml) are refused by name before any family is tried.
"""

from litetext_convert.families.registry import (
    Family,
    all_aliases,
    family_by_id,
    family_of_alias,
    load_families,
    recognise,
    refuse_lookalikes,
)

__all__ = [
    "Family",
    "all_aliases",
    "family_by_id",
    "family_of_alias",
    "load_families",
    "recognise",
    "refuse_lookalikes",
]
