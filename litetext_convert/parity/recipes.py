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



# ----------------------------------------------------------------------------------------------
# The same recipes as users write them: code text, written once. `parity`'s report, `audit`'s fix
# text and the docs show these lines, and tests/test_recipes.py runs every Python block of the docs
# (these included) on a tiny folder against the original side. `text_embeds` is the whole output of
# `get_text_features`, not its `.pooler_output`: on transformers 5.23-5.25 `Sam3LiteTextModel.forward`
# reads `text_embeds.pooler_output` itself, so a bare tensor ends in an AttributeError.

# Tokenize at the model's own context (Sam3Processor always uses 32) and pad with id 0, as upstream does.
TOKENIZE = (
    'ids = tokenizer(prompts, padding="max_length", max_length=CONTEXT, truncation=True, '
    'return_tensors="pt").input_ids'
)
# No attention mask inside the text encoder: upstream attends to padded positions.
TEXT_FEATURES = "text_embeds = model.get_text_features(input_ids=ids)"
TEXT_FEATURES_NOTE = "the output object, not its .pooler_output; no mask: upstream attends to padding"
DUMMY_BOXES = f"boxes = torch.tensor([[{list(DUMMY_BOX)}]]).expand(len(prompts), 1, 4)"
DUMMY_BOXES_NOTE = "one dummy box per prompt: cx, cy, w, h"
BOX_LABELS = f"box_labels = torch.full((len(prompts), 1), {MASKED_BOX_LABEL})"
BOX_LABELS_NOTE = f"{MASKED_BOX_LABEL}: masked, so it only switches the geometry encoder on"
# The detector masks padding (upstream masks ids == 0).
DETECTOR_CALL = (
    "outputs = model(pixel_values=pixel_values, text_embeds=text_embeds, attention_mask=(ids != 0),\n"
    "                input_boxes=boxes, input_boxes_labels=box_labels)"
)
# The text half runs anywhere; the detector call needs torchvision (transformers' geometry encoder
# calls torchvision.ops.roi_align as soon as a box is given).
TEXT_LINES = (TOKENIZE, f"{TEXT_FEATURES}   # {TEXT_FEATURES_NOTE}")
DETECTOR_LINES = (f"{DUMMY_BOXES}   # {DUMMY_BOXES_NOTE}", f"{BOX_LABELS}   # {BOX_LABELS_NOTE}", DETECTOR_CALL)
# The text half on one line, for parity's report and JSON (the padding finding).
FAITHFUL_TEXT_ONE_LINE = "; ".join((
    TOKENIZE, TEXT_FEATURES,
    "model(pixel_values=..., text_embeds=text_embeds, attention_mask=(ids != 0), "
    "input_boxes=<one masked dummy box>, ...)",
))
# `audit`'s fix for the text attention-mask finding.
NO_TEXT_MASK_FIX = (
    f"usage: {TEXT_FEATURES} (the output object, no mask), then "
    "model(..., text_embeds=text_embeds, attention_mask=(ids != 0))"
)

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
