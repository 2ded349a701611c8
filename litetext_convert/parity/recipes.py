"""The transformers-side recipes: what makes transformers compute what the original computes where
it differs by design. The prose of each known difference is data (configs/known_differences.toml);
the code of a recipe lives beside the scope that applies it (parity/tracker.py, parity/video.py),
except the one every scope shares: the masked dummy box.

The masked dummy box. For a text-only prompt Meta's detector encodes its EMPTY geometric prompt and
appends the geometry encoder's CLS token; transformers' Sam3 models skip the geometry encoder when
no box is given. One box labelled -10 (transformers' padding label) makes transformers run the
encoder with the box masked out: the CLS token and nothing else, as Meta. The box's value never
reaches a valid token (masked in the geometry encoder's and the DETR's attention): measured on the
tiny S0 detector, whole (0.5, 0.5, 1, 1) and empty (0, 0, 0, 0) boxes give bit-identical
transformers outputs on all 18 compared stages, and both pass against Meta in float32 (1.05e-5)
and float64 (2.0e-14). The whole image (cx, cy, w, h = 0.5, 0.5, 1, 1) is kept: a well-formed box
for roi_align in every backend, where an empty box is a degenerate region.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from litetext_convert.paths import read_config

DUMMY_BOX = (0.5, 0.5, 1.0, 1.0)  # cx, cy, w, h (normalised): the whole image; masked, so never read
MASKED_BOX_LABEL = -10  # transformers' "padding box" label


def masked_dummy_box(batch: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(input_boxes, input_boxes_labels) for a text-only prompt that still runs the geometry encoder."""
    boxes = torch.tensor([[DUMMY_BOX]], dtype=dtype).expand(batch, 1, 4)
    return boxes, torch.full((batch, 1), MASKED_BOX_LABEL, dtype=torch.long)


def describe_dummy_box() -> str:
    return f"one masked dummy box {DUMMY_BOX}, label {MASKED_BOX_LABEL}"


@cache
def _known() -> dict:
    return read_config("known_differences.toml")


def known_differences(scope: str) -> dict[str, str]:
    """name -> what differs and its recipe, for `scope` (tracker, video)."""
    return dict(_known()[scope])


def tracker_recipes() -> dict[str, tuple[str, ...]]:
    """The tracker scope's recipes per prompt kind."""
    return {kind: tuple(names) for kind, names in _known()["tracker_recipes"].items()}


def video_precision_note() -> str:
    return _known()["video_precision"]["float32"]
