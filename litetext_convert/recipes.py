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
# The detector masks padding (upstream masks ids == 0).
DETECTOR_CALL = "outputs = model(pixel_values=pixel_values, text_embeds=text_embeds, attention_mask=(ids != 0))"

TEXT_FEATURES_NOTE = "the output object, not its .pooler_output; no attention mask: upstream attends to padding"

# The three lines as a Python block (the docs embed it verbatim; tests/test_docs.py checks that).
FAITHFUL_TEXT_BLOCK = "\n".join((TOKENIZE, f"{TEXT_FEATURES}   # {TEXT_FEATURES_NOTE}", DETECTOR_CALL))

# The same on one line, for reports and JSON.
FAITHFUL_TEXT_ONE_LINE = "; ".join((TOKENIZE, TEXT_FEATURES, DETECTOR_CALL))

# `audit`'s fix for the text attention-mask finding.
NO_TEXT_MASK_FIX = (
    f"usage: {TEXT_FEATURES} (the output object, no mask), then "
    "model(..., text_embeds=text_embeds, attention_mask=(ids != 0))"
)
