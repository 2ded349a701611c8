"""Synthetic SAM3.1-LiteText checkpoints: the on-disk layout of
`sam3p1_litetext/efficient_sam3p1_litetext_mobileclip_*_ctx*.pt` (efficientsam3, branch `stage1_sam3.1`).

What differs from SAM3-LiteText (builder.py; the shared parts are parts.py), all read from a real S0 file's key listing
(configs/manifest/upstream_keys_sam31_s0_full.tsv):
- key order: the language backbone first (upstream's merge script writes it first), then the
  multiplex tracker, then the detector in SAM3's order;
- the detector neck has three levels (4x, 2x, 1x: no 0.5x `convs.3`), and two more necks of the same
  shape feed the tracker: `interactive_convs` and `propagation_convs` (no `sam2_convs`);
- the tracker is SAM 3.1's Object Multiplex tracker under `tracker.model.*`.

The tracker's layout is taken from that listing (names, order, full-size shapes) rather than
generated: no target litetext supports reads it (every key is dropped with a reason), so a tiny file
only needs its names and kinds. At tiny sizes every dimension is scaled by d_model / 256 (at least 1),
which keeps the file small; at full size the shapes are the listing's.
"""

from __future__ import annotations

import math
from functools import lru_cache

from litetext_convert.paths import configs_dir
from litetext_convert.synthetic.parts import (
    DETECTOR_PREFIX,
    TEXT_PREFIX,
    DetectorSizes,
    Layout,
    LayoutBuilder,
    TextSizes,
    detector_heads,
    layout_from_tsv,
    neck,
    text_encoder,
    vit,
)

MANIFEST = "upstream_keys_sam31_s0_full.tsv"
TRACKER_PREFIX = "tracker.model."
TRI_NECK_SCALES = (4.0, 2.0, 1.0)
NECKS = ("convs", "interactive_convs", "propagation_convs")  # detector, interactive tracker, propagation
MANIFEST_D_MODEL = 256


@lru_cache(maxsize=1)
def _manifest_tracker() -> Layout:
    layout = layout_from_tsv((configs_dir() / "manifest" / MANIFEST).read_text())
    return {key: value for key, value in layout.items() if key.startswith(TRACKER_PREFIX)}


def _tracker(b: LayoutBuilder, s: DetectorSizes) -> None:
    for key, (shape, dtype) in _manifest_tracker().items():
        if s.d_model != MANIFEST_D_MODEL:
            shape = tuple(max(1, math.ceil(dim * s.d_model / MANIFEST_D_MODEL)) for dim in shape)
        b.add(key, *shape, dtype=dtype)


def upstream_layout(text: TextSizes, detector: DetectorSizes) -> Layout:
    """Every key of a SAM3.1-LiteText file (prefixes included), in file order."""
    b = LayoutBuilder()
    text_encoder(b, TEXT_PREFIX, text, detector.d_model)
    _tracker(b, detector)
    vision = f"{DETECTOR_PREFIX}backbone.vision_backbone"
    vit(b, f"{vision}.trunk", detector)
    for name in NECKS:
        neck(b, f"{vision}.{name}", detector, TRI_NECK_SCALES)
    detector_heads(b, detector)
    return b.layout
