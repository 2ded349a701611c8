"""Whole-detector parity: the converted folder (what users download) against the ORIGINAL detector.

Both sides get the same image and the same token ids; each stage is captured with forward hooks
and compared with `compare`. The original is Meta's sam3 detector at the checkpoint's sizes with
the student text encoder (reference/sam3_detector.py).

Prompt semantics (the one known difference in meaning): for a text-only prompt Meta's detector
runs its geometry encoder on the EMPTY prompt and appends that encoder's CLS token to the prompt
tokens; `Sam3LiteTextModel.forward` skips its geometry encoder when no boxes are given. The faithful
call gives transformers ONE masked dummy box (label -10), which makes it run the geometry encoder on
an empty prompt too. The default comparison is that faithful call; the naive text-only call is
measured separately (`naive_text_only`): a property of the transformers API, not of the conversion.

Text semantics: upstream's text encoder attends to padded positions (it gets no mask) while the
detector masks them (ids == 0). Transformers does the same when the text features come from
`get_text_features(input_ids)` without a mask and the detector gets `attention_mask = ids != 0`;
that is how both calls here feed text (the tokenizer-padding question is the text parity's).
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from litetext_convert.errors import LitetextError
from litetext_convert import dtypes
from litetext_convert.parity.compare import StageDiff, compare
from litetext_convert.parity.recipes import describe_dummy_box, masked_dummy_box
from litetext_convert.parity.runtime import (
    FLOAT64_BANDED_CONVOLUTION,
    TRANSFORMERS_FLOAT64_WORKAROUNDS,
    SideRun,
    float64_convolutions,
    float64_rope,
    keep_outputs,
    release_folder_pages,
    release_mapped_pages,
    run_side,
    trim_heap,
)
from litetext_convert.reference.sam3_detector import ForwardCapture

START_ID, END_ID = 49406, 49407
IMAGE_MEAN = IMAGE_STD = 0.5  # Sam3ImageProcessor normalisation


# ----------------------------------------------------------------------------------------------
# Result


@dataclass
class DetectorParityResult:
    dtype: str
    stages: list[StageDiff]
    naive_text_only: list[StageDiff]  # transformers called without the dummy box (empty when boxes given)
    workarounds: list[str]
    original_name: str
    tolerances: dict[str, str]
    seconds: dict[str, float]
    facts: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(stage.passed for stage in self.stages)

    def first_failure(self) -> StageDiff | None:
        return next((stage for stage in self.stages if not stage.passed), None)

    def to_json(self) -> dict:
        return {
            "scope": "detector",
            "dtype": self.dtype,
            "passed": self.passed,
            "original": self.original_name,
            "stages": [stage.to_json() for stage in self.stages],
            "naive_text_only": {
                "meaning": "transformers called with text only (no dummy box): it skips the geometry encoder that "
                "Meta's detector runs on the empty prompt; a difference of API semantics, not of the conversion",
                "stages": [stage.to_json() for stage in self.naive_text_only],
            },
            "tolerances": self.tolerances,
            "workarounds": self.workarounds,
            "seconds": self.seconds,
            "facts": self.facts,
        }


# ----------------------------------------------------------------------------------------------
# Inputs


def seeded_image(size: int, seed: int) -> Tensor:
    """A random 8-bit RGB image, normalised like Sam3ImageProcessor: [1, 3, size, size]."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (1, 3, size, size), generator=generator).float() / 255.0
    return (pixels - IMAGE_MEAN) / IMAGE_STD


def load_image(path: str | Path, size: int) -> Tensor:
    """An image file resized (bilinear) to size x size and normalised like Sam3ImageProcessor."""
    from PIL import Image

    image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return ((pixels.permute(2, 0, 1).float() / 255.0 - IMAGE_MEAN) / IMAGE_STD).unsqueeze(0)


def seeded_input_ids(context_length: int, vocab_size: int, seed: int, words: int = 5) -> Tensor:
    """[start, words random ids, end, 0...]: upstream's layout (zero padding) for one prompt."""
    words = max(0, min(words, context_length - 2))
    generator = torch.Generator().manual_seed(seed + 1)
    body = torch.randint(1, min(vocab_size, START_ID), (words,), generator=generator)
    ids = torch.zeros(1, context_length, dtype=torch.long)
    ids[0, : words + 2] = torch.cat([torch.tensor([START_ID]), body, torch.tensor([END_ID])])
    return ids


def parse_box(text: str) -> tuple[float, float, float, float]:
    """'cx,cy,w,h' normalised to [0, 1] (the CLI's --box)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(0.0 <= v <= 1.0 for v in values):
        raise LitetextError(f"--box {text!r}: expected cx,cy,w,h, four numbers in [0, 1]")
    return values


# ----------------------------------------------------------------------------------------------
# The transformers side


def _valid(batch_first: Tensor, valid: Tensor | None) -> Tensor:
    """[B, N, C] -> [B, n_valid, C] (every batch item has n_valid valid tokens)."""
    if valid is None:
        return batch_first
    return torch.stack([batch_first[b][valid[b].bool()] for b in range(batch_first.shape[0])])


def _hf_stages(outputs, seen: dict, text_features: Tensor, vision_output) -> dict[str, Tensor]:
    stages: dict[str, Tensor] = {}
    for level, feature in enumerate(vision_output.fpn_hidden_states[:-1]):  # the model drops the last level
        stages[f"vision.fpn.{level}"] = feature
    stages["text.features"] = text_features
    if "geometry" in seen:
        _, geometry = seen["geometry"]
        stages["geometry.prompt"] = _valid(geometry.last_hidden_state, geometry.attention_mask)
    encoder_kwargs, encoder = seen["encoder"]
    stages["prompt.tokens"] = _valid(encoder_kwargs["text_features"], encoder_kwargs.get("text_mask"))
    stages["detr.encoder"] = encoder.last_hidden_state
    _, decoder = seen["decoder"]
    for layer in range(decoder.intermediate_hidden_states.shape[0]):
        stages[f"detr.decoder.layer{layer}"] = decoder.intermediate_hidden_states[layer]
    stages["detr.reference_boxes"] = decoder.reference_boxes
    stages["pred_boxes"] = outputs.pred_boxes
    stages["pred_logits"] = outputs.pred_logits
    stages["presence_logits"] = outputs.presence_logits
    stages["pred_masks"] = outputs.pred_masks
    stages["semantic_seg"] = outputs.semantic_seg
    return {name: tensor.detach() for name, tensor in stages.items()}


SHARED_INPUT_STAGES = ("vision.", "text.")  # computed once, before both calls of run_transformers

@dataclass
class _HfRun:
    faithful: dict[str, Tensor]
    naive: dict[str, Tensor]
    seconds: dict[str, float]


def load_converted(folder: str | Path, dtype: torch.dtype):
    from litetext_convert.plan.hf_config import model_class_of_folder
    from litetext_convert.targets import folder_target

    # A video folder's detector is its detector_model: the target's data says where it sits.
    model = folder_target(folder).detector_of(model_class_of_folder(folder).from_pretrained(str(folder), dtype=dtype))
    if dtype == torch.float64:  # every weight is a widened copy: the folder's mapped pages are not needed
        release_folder_pages(folder)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def run_transformers(model, pixel_values: Tensor, input_ids: Tensor, boxes: Tensor | None,
                     box_labels: Tensor | None) -> _HfRun:
    """The faithful call (dummy masked box when there are no boxes), then the naive text-only one
    on the same vision features."""
    seconds = {}
    hooks = {"geometry": model.geometry_encoder, "encoder": model.detr_encoder, "decoder": model.detr_decoder}
    started = time.perf_counter()
    text = model.get_text_features(input_ids=input_ids)  # no mask inside the text encoder (upstream)
    detector_mask = (input_ids != 0).long()
    vision = model.get_vision_features(pixel_values=pixel_values)
    if boxes is None:
        batch = pixel_values.shape[0]
        boxes, box_labels = masked_dummy_box(batch, pixel_values.dtype)  # the geometry CLS token, as Meta
        with ForwardCapture(hooks) as seen:
            outputs = model(vision_embeds=vision, text_embeds=text, attention_mask=detector_mask,
                            input_boxes=boxes, input_boxes_labels=box_labels)
        # Compact copies now, and the forward's outputs and captured inputs freed before the next
        # forward: in float64 at full size they are gigabytes the second forward would sit on.
        faithful = keep_outputs(_hf_stages(outputs, seen, text.pooler_output, vision))
        del outputs, seen
        trim_heap()
        seconds["transformers_forward"] = time.perf_counter() - started
        started = time.perf_counter()
        with ForwardCapture(hooks) as seen:
            outputs = model(vision_embeds=vision, text_embeds=text, attention_mask=detector_mask)
        naive = _hf_stages(outputs, seen, text.pooler_output, vision)
        # The same vision and text features fed both calls: one kept copy serves both.
        naive.update({name: faithful[name] for name in naive if name.startswith(SHARED_INPUT_STAGES)})
        seconds["transformers_naive_heads"] = time.perf_counter() - started
        return _HfRun(faithful, naive, seconds)
    labels = torch.ones(boxes.shape[:2], dtype=torch.long) if box_labels is None else box_labels
    with ForwardCapture(hooks) as seen:
        outputs = model(vision_embeds=vision, text_embeds=text, attention_mask=detector_mask,
                        input_boxes=boxes, input_boxes_labels=labels)
    seconds["transformers_forward"] = time.perf_counter() - started
    return _HfRun(_hf_stages(outputs, seen, text.pooler_output, vision), {}, seconds)


# ----------------------------------------------------------------------------------------------
# The original side


def _run_original(detector, dtype: torch.dtype, pixel_values, input_ids, boxes, box_labels):
    with float64_convolutions(dtype):
        return detector.run(pixel_values.to(dtype), input_ids, boxes=boxes, box_labels=box_labels)


def run_original(prepared, dtype: torch.dtype, pixel_values: Tensor, input_ids: Tensor,
                 boxes: Tensor | None, box_labels: Tensor | None) -> SideRun:
    """Meta's detector built from the checkpoint's own (memory-mapped) tensors, run once, freed; its
    resident checkpoint pages are handed back afterwards."""
    from litetext_convert.reference.sam3_detector import build_original_detector

    loaded = prepared.loaded
    def build():
        detector = build_original_detector(loaded.tensors, prepared.arch, dtype=dtype)
        if dtype == torch.float64:  # the model holds widened copies: the float32 pages can go now
            release_mapped_pages(loaded.tensors.values(), loaded.format)
        return detector

    return run_side(
        "original",
        build=build,
        forward=lambda detector: _run_original(detector, dtype, pixel_values, input_ids, boxes, box_labels),
        describe=lambda detector: {"keys": detector.keys.to_json(), "workarounds": list(detector.workarounds),
                                   "name": detector.original_name},
        release=lambda: release_mapped_pages(loaded.tensors.values(), loaded.format),
    )


# ----------------------------------------------------------------------------------------------
# Comparison


# Tolerances (configs/tolerances.toml [detector.<dtype>]): "rel" = max|ref - cand| <= value * max|ref|
# (the stage's magnitude); "abs" = max abs. First matching pattern wins.
def tolerance_for(stage: str, dtype: str) -> tuple[str, float]:
    table = dtypes.stage_tolerances(dtype, "detector")
    for pattern, kind, value in table:
        if re.match(pattern, stage):
            return kind, value
    raise AssertionError("the tolerance tables end with a catch-all")


def describe_tolerances(dtype: str) -> dict[str, str]:
    table = dtypes.stage_tolerances(dtype, "detector")
    words = {"abs": "max |ref - cand| <=", "rel": "max |ref - cand| / max |ref| <="}
    return {pattern: f"{words[kind]} {value:g}" for pattern, kind, value in table}


def compare_stages(reference: dict[str, Tensor], candidate: dict[str, Tensor], dtype: str,
                   notes: dict[str, str] | None = None) -> list[StageDiff]:
    notes = notes or {}
    diffs = []
    for name, ref in reference.items():
        if name not in candidate:
            diffs.append(StageDiff(name, float("inf"), float("inf"), float("inf"), 0.0, float(ref.abs().max()),
                                   list(ref.shape), False, 0.0, 0.0, notes.get(name, "stage not computed by transformers")))
            continue
        kind, value = tolerance_for(name, dtype)
        magnitude = float(ref.abs().max()) if ref.numel() else 0.0
        atol = value * magnitude if kind == "rel" else value
        diffs.append(compare(name, ref, candidate[name].to(ref.dtype), atol=atol, rtol=0.0, note=notes.get(name, "")))
    return diffs


def _prompt_facts(reference: dict[str, Tensor], faithful: dict[str, Tensor], naive: dict[str, Tensor]) -> dict:
    facts = {
        "prompt_tokens_original": list(reference["prompt.tokens"].shape),
        "prompt_tokens_transformers": list(faithful["prompt.tokens"].shape),
        "geometry_tokens_original": list(reference["geometry.prompt"].shape),
        "geometry_tokens_transformers": list(faithful["geometry.prompt"].shape),
    }
    if naive:
        facts["prompt_tokens_transformers_naive"] = list(naive["prompt.tokens"].shape)
    return facts


# ----------------------------------------------------------------------------------------------
# Entry point


@dataclass
class _Inputs:
    """What both sides are given: the image, token ids and boxes, in the run's dtype."""
    size: int
    pixel_values: Tensor
    input_ids: Tensor
    boxes: Tensor | None
    box_labels: Tensor | None


def _inputs(prepared, converted_folder, torch_dtype, *, seed, image, boxes, box_labels, input_ids) -> _Inputs:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(converted_folder))
    config = getattr(config, "detector_config", None) or config  # a video folder's detector
    size = config.vision_config.backbone_config.image_size
    pixel_values = (load_image(image, size) if image else seeded_image(size, seed)).to(torch_dtype)
    if input_ids is None:
        input_ids = seeded_input_ids(prepared.arch.context_length, config.text_config.vocab_size, seed)
    box_tensor = torch.tensor([boxes], dtype=torch_dtype) if boxes else None
    label_tensor = torch.tensor([box_labels], dtype=torch.long) if boxes and box_labels else None
    return _Inputs(size, pixel_values, input_ids, box_tensor, label_tensor)


def _run_converted_side(converted_folder, dtype: str, inputs: _Inputs) -> SideRun:
    torch_dtype = dtypes.torch_dtype(dtype)

    def forward(model) -> _HfRun:
        with float64_rope(model) if dtype == "float64" else contextlib.nullcontext(), float64_convolutions(torch_dtype):
            return run_transformers(model, inputs.pixel_values, inputs.input_ids, inputs.boxes, inputs.box_labels)

    return run_side("transformers", build=lambda: load_converted(converted_folder, torch_dtype), forward=forward,
                    release=lambda: release_folder_pages(converted_folder))


def run_detector_parity(
    checkpoint,
    converted_folder: str | Path,
    *,
    dtype: str = "float32",
    seed: int = 0,
    image: str | Path | None = None,
    boxes: list[tuple[float, float, float, float]] | None = None,
    box_labels: list[int] | None = None,
    input_ids: Tensor | None = None,
    num_heads: int | None = None,
    context_length: int | None = None,
) -> DetectorParityResult:
    """`checkpoint`: a litetext `Prepared` or anything `prepare` accepts (path, alias).

    Sides run one after the other and each is freed before the next, so peak memory is one model.
    """
    from litetext_convert.plan.prepare import Prepared, prepare

    if dtype not in dtypes.COMPUTE:
        raise ValueError(f"detector parity runs in {', '.join(dtypes.COMPUTE)}, not {dtype!r}")
    torch_dtype = dtypes.torch_dtype(dtype)
    started = time.perf_counter()
    prepared = checkpoint if isinstance(checkpoint, Prepared) else prepare(
        str(checkpoint), num_heads=num_heads, context_length=context_length)
    inputs = _inputs(prepared, converted_folder, torch_dtype, seed=seed, image=image, boxes=boxes,
                     box_labels=box_labels, input_ids=input_ids)

    # One side at a time (parity/runtime.py): peak memory is one model and one forward.
    original = run_original(prepared, torch_dtype, inputs.pixel_values, inputs.input_ids, inputs.boxes, inputs.box_labels)
    reference = original.outputs
    seconds = dict(original.seconds)
    workarounds = list(original.info["workarounds"])
    converted = _run_converted_side(converted_folder, dtype, inputs)
    hf = converted.outputs
    seconds["transformers_load"] = converted.seconds["transformers_build"]
    if dtype == "float64":
        workarounds += [*TRANSFORMERS_FLOAT64_WORKAROUNDS, FLOAT64_BANDED_CONVOLUTION]
    seconds.update(hf.seconds)

    stages = compare_stages(reference, hf.faithful, dtype)
    naive_notes = {"geometry.prompt": "transformers skipped the geometry encoder (no boxes given)"}
    naive = compare_stages(reference, hf.naive, dtype, naive_notes) if hf.naive else []
    seconds["total"] = time.perf_counter() - started
    facts = {"original_keys": original.info["keys"], **_prompt_facts(reference, hf.faithful, hf.naive)}
    facts.update({
        "image": str(image) if image else f"seeded random 8-bit image, seed {seed}",
        "image_size": inputs.size,
        "input_ids": inputs.input_ids.tolist(),
        "boxes": boxes or [],
        "transformers_prompt": "user boxes" if boxes else describe_dummy_box(),
        "text_feeding": "get_text_features(input_ids) without a mask; detector attention_mask = ids != 0",
        "threads": torch.get_num_threads(),
    })
    result = DetectorParityResult(dtype, stages, naive, workarounds, original.info["name"],
                                  describe_tolerances(dtype), seconds, facts)
    from litetext_convert.parity.plot import picture_inputs  # parity --plot; a few small arrays

    result.outputs = picture_inputs(inputs.pixel_values, reference, hf.faithful)
    return result
