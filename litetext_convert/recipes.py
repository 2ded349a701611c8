"""The user-facing recipes, written once: the calls that make a converted folder compute what the
original computes.

`parity`'s report, `audit`'s fix text and the docs all show these strings, and
`tests/test_recipes.py` runs every Python block of the docs (these included) on a tiny converted
folder against the original side. So a recipe that stops working on a new transformers fails one
test instead of misleading users in three places.

Why `text_embeds` is the whole output of `get_text_features`, not its `.pooler_output`: on
transformers 5.23-5.25 `Sam3LiteTextModel.forward` reads `text_embeds.pooler_output` itself, so a
bare tensor ends in `AttributeError: 'Tensor' object has no attribute 'pooler_output'`.
"""

from __future__ import annotations

# Tokenize at the model's own context (Sam3Processor always uses 32) and pad with id 0, as upstream does.
TOKENIZE = (
    'ids = tokenizer(prompts, padding="max_length", max_length=CONTEXT, truncation=True, '
    'return_tensors="pt").input_ids'
)
# No attention mask inside the text encoder: upstream attends to padded positions.
TEXT_FEATURES = "text_embeds = model.get_text_features(input_ids=ids)"
TEXT_FEATURES_NOTE = "the output object, not its .pooler_output; no mask: upstream attends to padding"
# Meta's detector runs its geometry encoder on an empty prompt; transformers runs it only when a box is
# given, so one masked dummy box (parity/detector.py: DUMMY_BOX, MASKED_BOX_LABEL) switches it on.
DUMMY_BOXES = "boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0]]]).expand(len(prompts), 1, 4)"
DUMMY_BOXES_NOTE = "one dummy box per prompt: cx, cy, w, h"
BOX_LABELS = "box_labels = torch.full((len(prompts), 1), -10)"
BOX_LABELS_NOTE = "-10: masked, so it only switches the geometry encoder on"
# The detector masks padding (upstream masks ids == 0).
DETECTOR_CALL = (
    "outputs = model(pixel_values=pixel_values, text_embeds=text_embeds, attention_mask=(ids != 0),\n"
    "                input_boxes=boxes, input_boxes_labels=box_labels)"
)

# The recipe as Python lines: the docs embed them verbatim (tests/test_recipes.py checks that they do).
# The text half runs anywhere; the detector call needs torchvision (transformers' geometry encoder
# imports it for roi_align as soon as a box is given).
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
