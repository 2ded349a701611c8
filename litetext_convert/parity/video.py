"""Whole-pipeline video parity: a text prompt through detector, tracker and association heuristics,
Meta's video pipeline (reference/sam3_video.py) against transformers' documented text-prompt flow
(Sam3VideoProcessor.init_video_session -> add_text_prompt -> Sam3VideoModel.propagate_in_video_iterator
-> postprocess_outputs) on a `--target video` folder, the same seeded frames fed to both.

Each side runs once, alone (parity/runtime.run_side); hooks on each side's own methods record, per
frame, what that side actually computed:

  settings    the heuristics' thresholds (Meta's video builder vs the folder's config)
  tokens      the ids each side fed its text encoder
  pixels      the frame each side fed its detector (each side's own preprocessing)
  detector    every query's score (probability), box (xyxy, normalized) and mask logits
  detections  what enters the heuristics: queries above the score threshold that survive NMS
  tracker     each tracked object's propagated mask logits and object score, before the heuristics
  decisions   which detection starts which object id, which objects are matched, removed, reconditioned,
              and the object ids alive after the frame
  output      the post-processed result: object ids, scores, boxes (xyxy, normalized), binary masks

The report gives the first stage (in frame order, then the order above) where the two differ and its
cause. transformers behaves differently from Meta by design in several places (KNOWN); `recipes`
makes the transformers side compute what Meta computes in each of them, so that the remaining
comparison is meaningful; the run is made as shipped and with the recipes.

Everything runs in float32 on the CPU (Meta's GPU runs use a process-wide bfloat16 autocast: a
precision choice, not a difference of meaning). Decisions are discrete: a difference of rounding
can only change one when a value lies within rounding of a threshold, and the report would show it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from litetext_convert import dtypes
from litetext_convert.parity.compare import StageDiff, compare
from litetext_convert.parity.recipes import known_differences, masked_dummy_box, video_precision_note
from litetext_convert.reference.sam3_video import WORKAROUNDS

STAGES = ("pixels", "detector", "detections", "tracker", "decisions", "output")
# transformers' known behaviours (configs/known_differences.toml); the tracker's own meet the pipeline
# too (new detections enter the tracker as mask prompts). The tracker parity's "mask_consolidation"
# models Meta's tracker predictor on its own; inside the video pipeline Meta adds a detection through
# add_new_mask, whose output is the input mask itself ("input_mask_as_output").
TRACKER_RECIPES = ("memory_mask_order", "mask_size", "pointer_token")
KNOWN = {**known_differences("video"),
         **{name: "tracker: see parity/tracker.py KNOWN[" + repr(name) + "]" for name in TRACKER_RECIPES}}
PRECISION = video_precision_note()
RECIPES = ("memory_mask_order", "mask_size", "pointer_token")
KNOWN.update({
    "prompted_frame_first": "flow: Meta's add_prompt runs the prompted frame at once (objects start there) and "
    "propagate_in_video then runs that frame again, where the objects now exist and are tracked and matched; "
    "transformers' add_text_prompt only registers the prompt and propagation runs each frame once. Recipe: run "
    "the prompted frame once before propagating, as Meta's add_prompt does.",
    "input_mask_as_output": "a new object's frame: Meta's tracker (add_new_mask) outputs the input mask itself, at video "
    "resolution as +-1024 (\"for a better video editing experience\"), brings it down to the low-res mask size "
    "(antialiased) and encodes the memory from that, upsampled to image size; transformers outputs its mask-as-output "
    "logits (+-10) and encodes the memory from its own high-res mask. Recipe: the same steps on the transformers side.",
    "new_object_mask": "a new detection's mask prompt: Meta upsamples the detector's mask logits (bilinear) to the "
    "tracker's input mask size (16 x grid) and binarizes at 0; transformers binarizes the logits at 0.5 at the "
    "detector's resolution. Recipe: Meta's upsample-then-binarize.",
    **{name: "tracker: see parity/tracker.py KNOWN[" + repr(name) + "]" for name in TRACKER_RECIPES},
})
PRECISION = (
    "both sides store the tracker's memory in bfloat16. In float32 the two implementations differ by rounding "
    "(~1e-6) before that cast, so now and then a memory element rounds to the neighbouring bfloat16 value on one "
    "side: one bfloat16 step (2^-8 relative) that the following frames' masks carry (~1e-4). The proof with the "
    "recipes therefore runs in float64 (as the tracker scope does), where both sides' values before the cast agree "
    "to ~1e-15 and round alike; the float32 run with the recipes is shown too."
)
RECIPES = ("tokens", "geometry_cls", "pixels", "cv_utils", "memory_selection", "prompted_frame_first",
           "new_object_mask", "input_mask_as_output", *TRACKER_RECIPES)


# ----------------------------------------------------------------------------------------------
# What one side records


@dataclass
class FrameRecord:
    detector: dict = field(default_factory=dict)  # probs [Q], boxes [Q, 4] xyxy normalized, masks [Q, h, w]
    detections: dict = field(default_factory=dict)  # scores [D], boxes [D, 4], masks [D, h, w]
    tracker: dict = field(default_factory=dict)  # object id -> (mask logits [h, w], score logit)
    decisions: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)  # ids, scores, boxes (xyxy normalized), masks (bool)


@dataclass
class PipelineRecord:
    side: str
    ids: Tensor | None = None
    pixels: list[Tensor] = field(default_factory=list)
    frames: dict[int, FrameRecord] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def frame(self, index: int) -> FrameRecord:
        return self.frames.setdefault(int(index), FrameRecord())


def _record_decisions(frame: FrameRecord, plan: dict, alive) -> None:
    """Both sides' update plans name the same decisions; several passes over a frame accumulate."""
    seen = frame.decisions
    new_inds = plan.get("new_det_fa_inds", plan.get("new_det_out_inds", []))
    new = {int(i): int(o) for i, o in zip(list(new_inds), list(plan["new_det_obj_ids"]))}
    seen.setdefault("new", {}).update(new)
    matched = {int(d): sorted(int(o) for o in objs) for d, objs in plan["det_to_matched_trk_obj_ids"].items()}
    seen.setdefault("matched", {}).update(matched)
    seen["unmatched"] = sorted(set(seen.get("unmatched", [])) | {int(o) for o in plan["unmatched_trk_obj_ids"]})
    seen["removed"] = sorted(set(seen.get("removed", [])) | {int(o) for o in plan["obj_ids_newly_removed"]})
    seen["reconditioned"] = sorted(set(seen.get("reconditioned", [])) | {int(o) for o in plan.get("reconditioned_obj_ids", ())})
    seen["alive"] = sorted(int(o) for o in alive)


def _wrap(owner, name: str, after: Callable) -> None:
    """owner.name(*a, **k) then after(result, *a, **k); the instance attribute hides the method."""
    method = getattr(owner, name)

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        result = method(*args, **kwargs)
        after(result, *args, **kwargs)
        return result

    setattr(owner, name, wrapped)


def _detections(det_out: dict, side: int) -> dict:
    boxes = det_out["bbox"].double()
    return {"scores": det_out["scores"].double().clone(), "boxes": boxes.clone() / (1 if boxes.numel() == 0 or
            float(boxes.abs().max()) <= 1.5 else side), "masks": det_out["mask"].double().clone()}


# ----------------------------------------------------------------------------------------------
# Frames


def seeded_frames(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 RGB frames [count, height, width, 3]: a shared scene with a bright square that moves."""
    rng = np.random.default_rng(seed)
    scene = rng.random((height, width, 3)) * 0.6
    frames = []
    for index in range(count):
        frame = scene + rng.random((height, width, 3)) * 0.1
        top, left = height // 4 + index, width // 4 + index
        frame[top : top + height // 2, left : left + width // 3] += 0.35
        frames.append(np.clip(frame * 255, 0, 255).astype(np.uint8))
    return np.stack(frames)


def original_preprocessing(frames: np.ndarray, size: int) -> Tensor:
    """What Meta's frame loader feeds its model (sam3.model.io_utils, frames given as PIL images): PIL's
    default (bicubic) resize to size x size, / 255, float16, then (x - 0.5) / 0.5 in float16."""
    from PIL import Image

    out = []
    for frame in frames:
        resized = np.array(Image.fromarray(frame).convert("RGB").resize((size, size))) / 255.0
        image = torch.from_numpy(resized).permute(2, 0, 1).to(torch.float16)
        half = torch.tensor(0.5, dtype=torch.float16)
        out.append((image - half) / half)
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# Stand-ins for transformers' cv-utils kernel (recipe "cv_utils")


class CvUtilsStandIn:
    """The two kernel functions transformers' Sam3Video calls: greedy NMS over an IoU matrix (highest
    score first, drop what overlaps a kept one by more than the threshold) and 8-connected components."""

    @staticmethod
    def generic_nms(ious: Tensor, scores: Tensor, iou_threshold: float, use_iou_matrix: bool = True) -> Tensor:
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        kept = []
        while order:
            best, order = order[0], order[1:]
            kept.append(best)
            order = [i for i in order if float(ious[best, i]) <= iou_threshold]
        return torch.tensor(kept, dtype=torch.long)

    @staticmethod
    def cc_2d(mask: Tensor, get_counts: bool = True) -> tuple[Tensor, Tensor]:
        from litetext_convert.reference.sam3_video import connected_components_8

        labels, counts = torch.zeros_like(mask, dtype=torch.int32), torch.zeros_like(mask, dtype=torch.int32)
        for b in range(mask.shape[0]):
            for c in range(mask.shape[1]):
                lab, cnt = connected_components_8(mask[b, c])
                labels[b, c], counts[b, c] = lab.int(), cnt.int()
        return labels, counts


# ----------------------------------------------------------------------------------------------
# Meta's side


def run_original(prepared, frames: np.ndarray, text: str, tokenizer, *, settings: dict | None = None,
             memory_selection: bool | None = None, dtype: torch.dtype = torch.float32) -> PipelineRecord:
    """Meta's video pipeline as its demo runs it: init_state, add_prompt(frame 0, text), propagate_in_video."""
    from PIL import Image

    from litetext_convert.reference.sam3_video import (
        META_MEMORY_SELECTION,
        build_original_video,
        video_runtime,
    )

    selection = META_MEMORY_SELECTION if memory_selection is None else memory_selection
    video = build_original_video(prepared.loaded.tensors, prepared.arch, tokenizer, settings=settings,
                                 memory_selection=selection, dtype=dtype)
    model = video.model
    record = PipelineRecord("original", settings=dict(video.settings))
    record.notes = [f"tracker memory selection {'on' if selection else 'off'}", *video.workarounds]
    side = model.image_size

    def raw(out, *args, **kwargs):
        frame = int(kwargs["find_input"].img_ids.flatten()[0])
        boxes = out["pred_boxes_xyxy"][0].double().clone()
        record.frame(frame).detector = {"probs": out["pred_logits"][0, :, 0].double().sigmoid().clone(),
                                        "boxes": boxes, "masks": out["pred_masks"][0].double().clone()}

    def detections(det_out, *args, **kwargs):
        record.frame(kwargs["frame_idx"]).detections = _detections(det_out, side)

    def tracked(result, *args, **kwargs):
        masks, scores = result
        ids = kwargs["tracker_metadata_prev"]["obj_ids_all_gpu"]
        record.frame(kwargs["frame_idx"]).tracker = {int(o): (masks[i].double().clone(), float(scores[i]))
                                                      for i, o in enumerate(ids)}

    def planned(result, *args, **kwargs):
        plan, metadata = result
        _record_decisions(record.frame(kwargs["frame_idx"]), plan, metadata["obj_ids_all_gpu"])

    with video_runtime(video):
        _wrap(model.detector, "forward_grounding", raw)
        _wrap(model, "run_backbone_and_detection", detections)
        _wrap(model, "run_tracker_propagation", tracked)
        _wrap(model, "run_tracker_update_planning_phase", planned)
        state = model.init_state(resource_path=[Image.fromarray(f) for f in frames], offload_video_to_cpu=True)
        batch = state["input_batch"]
        record.pixels = [image.clone() for image in batch.img_batch]
        batch.img_batch = batch.img_batch.to(video.dtype)  # see reference/sam3_video.WORKAROUNDS
        model.add_prompt(state, frame_idx=0, text_str=text)
        record.ids = model.detector.backbone.language_backbone.last_ids[:1].clone()
        for frame_idx, out in model.propagate_in_video(state):
            xywh = torch.as_tensor(out["out_boxes_xywh"]).double().reshape(-1, 4)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # normalized already
            record.frame(frame_idx).output = {
                "ids": [int(i) for i in out["out_obj_ids"]], "scores": torch.as_tensor(out["out_probs"]).double(),
                "boxes": boxes, "masks": torch.as_tensor(out["out_binary_masks"]).bool(),
            }
    del video, model
    gc.collect()
    return record


# ----------------------------------------------------------------------------------------------
# transformers' side


def run_transformers(folder: str | Path, frames: np.ndarray, text: str, *, recipes: tuple[str, ...] = (),
                     tokenizer=None, context: int = 0, settings: dict | None = None,
                     dtype: torch.dtype = torch.float32) -> PipelineRecord:
    """transformers' documented text-prompt flow on `folder`; `recipes` (names of KNOWN) make it compute what
    Meta computes, `settings` override the heuristics' thresholds; float64 as the original side (float64_run)."""
    from transformers import Sam3VideoProcessor
    from transformers.models.sam3_video import modeling_sam3_video

    model = _load_video_side(folder, dtype, settings)
    processor = Sam3VideoProcessor.from_pretrained(str(folder))
    record = PipelineRecord("transformers", settings={k: getattr(model, k) for k in _SETTING_NAMES if hasattr(model, k)})
    side = model.tracker_model.image_size  # before any recipe touches the tracker
    session, prompt_id = _prompted_session(model, processor, frames, text, recipes, tokenizer, context, dtype)
    saved_kernel = modeling_sam3_video.cv_utils_kernel
    if "cv_utils" in recipes:
        modeling_sam3_video.cv_utils_kernel = CvUtilsStandIn()
    _tracker_recipes(model, [r for r in recipes if r in TRACKER_RECIPES + ("new_object_mask", "input_mask_as_output")],
                     (session.video_height, session.video_width))
    handle = _record_each_step(model, session, record, side)
    try:
        _propagate(model, processor, session, record, dtype, prompted_frame_first="prompted_frame_first" in recipes)
    finally:
        handle.remove()
        modeling_sam3_video.cv_utils_kernel = saved_kernel
    record.ids = session.prompt_input_ids[prompt_id].clone()
    record.pixels = [session.processed_frames[i].clone() for i in range(len(frames))]
    record.notes = [f"recipes: {', '.join(recipes) or 'none'}"]
    del model
    gc.collect()
    return record


def _load_video_side(folder: str | Path, dtype: torch.dtype, settings: dict | None):
    from transformers import Sam3VideoModel

    from litetext_convert.parity.runtime import float64_memory_rope

    model = Sam3VideoModel.from_pretrained(str(folder)).eval().to(dtype)
    if dtype == torch.float64:
        float64_memory_rope(model.tracker_model.memory_attention.rotary_emb)
    for name, value in (settings or {}).items():
        setattr(model, name, value)
    return model


def _prompted_session(model, processor, frames: np.ndarray, text: str, recipes: tuple[str, ...], tokenizer,
                      context: int, dtype: torch.dtype):
    """The video session with the text prompt; the input recipes (pixels, tokens, geometry_cls) applied."""
    from litetext_convert.reference.sam3_video import float64_run

    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=dtype)
    if "pixels" in recipes:
        for index, image in enumerate(original_preprocessing(frames, model.tracker_model.image_size)):
            session.processed_frames[index] = image.to(dtype)
    session = processor.add_text_prompt(session, text)
    prompt_id = next(iter(session.prompts))
    if "tokens" in recipes:
        ids = tokenizer([text], context)
        session.prompt_input_ids[prompt_id] = ids
        session.prompt_attention_masks[prompt_id] = (ids != 0).long()
        with torch.no_grad(), float64_run(dtype):  # no mask inside the text encoder, as upstream
            session.prompt_embeddings[prompt_id] = model.detector_model.get_text_features(input_ids=ids, return_dict=True)
    if "geometry_cls" in recipes:
        _with_dummy_box(model.detector_model)
    return session, prompt_id


def _record_each_step(model, session, record: PipelineRecord, side: int):
    """Wrap the model's pipeline steps so that each frame's detector output, detections, tracked
    masks and decisions land in `record`; returns the detector hook's handle (removed by the caller)."""
    current = {"frame": 0}
    track = model._det_track_one_frame

    @functools.wraps(track)
    def det_track(*args, **kwargs):
        current["frame"] = int(kwargs["frame_idx"])
        return track(*args, **kwargs)

    model._det_track_one_frame = det_track

    def raw(module, args, kwargs, out):
        probs = out.pred_logits[0].double().sigmoid() * out.presence_logits[0].double().sigmoid()
        record.frame(current["frame"]).detector = {"probs": probs.reshape(-1).clone(), "boxes": out.pred_boxes[0].double().clone(),
                                                   "masks": out.pred_masks[0].double().clone()}

    def detections(result, *args, **kwargs):
        record.frame(current["frame"]).detections = _detections(next(iter(result.values())), side)

    alive_before: dict = {}

    def tracked(result, *args, **kwargs):
        masks, scores = result
        ids = alive_before.get("ids", [])
        record.frame(kwargs.get("frame_idx", current["frame"])).tracker = {
            int(o): (masks[i].double().clone(), float(scores[i])) for i, o in enumerate(ids)}

    propagate = model.run_tracker_propagation

    @functools.wraps(propagate)
    def run_tracker_propagation(*args, **kwargs):
        alive_before["ids"] = list(session.obj_ids)
        return propagate(*args, **kwargs)

    model.run_tracker_propagation = run_tracker_propagation
    _wrap(model, "run_tracker_propagation", tracked)

    def planned(result, *args, **kwargs):
        plan, metadata = result
        _record_decisions(record.frame(kwargs["frame_idx"]), plan, metadata["obj_ids"])

    _wrap(model, "run_detection", detections)
    _wrap(model, "run_tracker_update_planning_phase", planned)
    return model.detector_model.register_forward_hook(raw, with_kwargs=True)


def _propagate(model, processor, session, record: PipelineRecord, dtype: torch.dtype, *, prompted_frame_first: bool) -> None:
    from litetext_convert.parity.runtime import float64_rope
    from litetext_convert.reference.sam3_video import float64_run

    rope = float64_rope(model.detector_model) if dtype == torch.float64 else contextlib.nullcontext()
    with torch.no_grad(), float64_run(dtype), rope:
        if prompted_frame_first:
            model(inference_session=session, frame_idx=0)
        for output in model.propagate_in_video_iterator(inference_session=session):
            post = processor.postprocess_outputs(session, output)
            height, width = session.video_height, session.video_width
            scale = torch.tensor([width, height, width, height], dtype=torch.float64)
            record.frame(output.frame_idx).output = {
                "ids": [int(i) for i in post["object_ids"]], "scores": post["scores"].double(),
                "boxes": post["boxes"].double().reshape(-1, 4) / scale, "masks": post["masks"].bool(),
            }


_SETTING_NAMES = ("score_threshold_detection", "assoc_iou_thresh", "det_nms_thresh", "new_det_thresh", "hotstart_delay",
                  "hotstart_unmatch_thresh", "hotstart_dup_thresh", "suppress_unmatched_only_within_hotstart",
                  "min_trk_keep_alive", "max_trk_keep_alive", "init_trk_keep_alive",
                  "suppress_overlapping_based_on_recent_occlusion_threshold", "suppress_det_close_to_boundary",
                  "fill_hole_area", "recondition_every_nth_frame", "masklet_confirmation_enable",
                  "decrease_trk_keep_alive_for_empty_masklets")


def _tracker_recipes(model, recipes: list[str], video_size: tuple[int, int]) -> None:
    """parity/tracker.py's recipes on the pipeline's tracker, and Meta's handling of a new object's mask."""
    from litetext_convert.parity.tracker import (
        _resize_after_binarize,
        _single_mask_pointer,
    )

    tracker = model.tracker_model
    grid = tracker.prompt_encoder.image_embedding_size[0]
    if "pointer_token" in recipes:
        tracker._single_frame_forward = _single_mask_pointer(tracker._single_frame_forward)
    pending: list[Tensor] = []
    if "input_mask_as_output" in recipes:
        _input_mask_as_output(tracker, video_size, pending)
    add = model._tracker_add_new_objects

    @functools.wraps(add)
    def add_new_objects(*args, **kwargs):
        if "new_object_mask" in recipes:
            logits = kwargs["new_obj_masks"].unsqueeze(1)
            upsampled = F.interpolate(logits, size=(16 * grid, 16 * grid), mode="bilinear", align_corners=False)
            kwargs["new_obj_masks"] = (upsampled > 0).squeeze(1).to(logits.dtype)  # transformers' ">= 0.5" keeps it
        if "input_mask_as_output" in recipes:
            pending[:] = [_at_video(m[None, None] >= 0.5, video_size) for m in kwargs["new_obj_masks"]]
        saved = tracker.image_size
        if "mask_size" in recipes:
            tracker.image_size = 16 * grid
        downsampler = tracker.memory_encoder.mask_downsampler
        patched = (tracker.__dict__.get("_encode_new_memory"), downsampler.__dict__.get("forward"))
        if "memory_mask_order" in recipes:
            # only here: the pipeline's other memory updates (Sam3VideoBase._tracker_update_memories) upsample
            # low-res logits before the sigmoid on both sides
            _resize_after_binarize(tracker, 16 * grid)
        try:
            return add(*args, **kwargs)
        finally:
            tracker.image_size = saved
            for owner, name, value in ((tracker, "_encode_new_memory", patched[0]), (downsampler, "forward", patched[1])):
                if value is None:
                    owner.__dict__.pop(name, None)
                else:
                    setattr(owner, name, value)

    model._tracker_add_new_objects = add_new_objects


def _input_mask_as_output(tracker, video_size: tuple[int, int], pending: list) -> None:
    """Meta's add_new_mask: the binary input mask at video resolution (antialiased bilinear, > 0.5) as
    +-1024 logits, minus the pixels of the objects added after it on the same frame (each add_new_mask
    sets the earlier objects' masks to -1024 under its own), brought to the low-res mask size
    (antialiased bilinear) as the frame's output, and upsampled to image size (bilinear) for the memory.
    `pending`: the new objects' video-resolution masks in the order they are added, filled by the caller;
    transformers runs them in that order (ascending object index)."""
    use_mask = tracker._use_mask_as_output

    @functools.wraps(use_mask)
    def use_mask_as_output(backbone_features, high_res_features, mask_inputs):
        out = use_mask(backbone_features, high_res_features, mask_inputs)
        dtype = out.high_res_masks.dtype
        own = pending.pop(0)
        if not torch.equal(own, _at_video(mask_inputs, video_size)):
            raise AssertionError("new objects reached the tracker in another order than they were added")
        later = torch.zeros_like(own)
        for mask in pending:
            later |= mask
        logits = torch.where(own & ~later, 1024.0, -1024.0).to(dtype)
        side = tracker.prompt_encoder.mask_input_size[0]  # the low-res mask size (4 x grid)
        low = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        image_size = tracker.prompt_encoder.input_image_size  # the model's, whatever the mask_size recipe set
        out.pred_masks = low
        out.high_res_masks = F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return out

    tracker._use_mask_as_output = use_mask_as_output


def _at_video(mask: Tensor, video_size: tuple[int, int]) -> Tensor:
    return F.interpolate(mask.float(), size=video_size, mode="bilinear", align_corners=False, antialias=True) > 0.5


def _with_dummy_box(detector) -> None:
    forward = detector.forward

    @functools.wraps(forward)
    def with_box(*args, **kwargs):
        if kwargs.get("input_boxes") is None:
            vision = kwargs["vision_embeds"]
            batch = vision.fpn_hidden_states[0].shape[0] if hasattr(vision, "fpn_hidden_states") else 1
            kwargs["input_boxes"], kwargs["input_boxes_labels"] = masked_dummy_box(batch)  # parity/recipes.py
        return forward(*args, **kwargs)

    detector.forward = with_box


# ----------------------------------------------------------------------------------------------
# Comparison


@dataclass
class Stage:
    frame: int | None
    name: str
    passed: bool
    detail: str = ""
    diffs: list[StageDiff] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name if self.frame is None else f"frame{self.frame}.{self.name}"

    def to_json(self) -> dict:
        return {"stage": self.label, "passed": self.passed, "detail": self.detail,
                "diffs": [d.to_json() for d in self.diffs]}


def _tensors(frame: int, name: str, pairs: list[tuple[str, Tensor, Tensor]], dtype: str) -> Stage:
    atol, rtol = dtypes.tolerances(dtype, "video")  # configs/tolerances.toml
    diffs = [compare(f"frame{frame}.{name}.{part}", a, b, atol=atol, rtol=rtol) for part, a, b in pairs]
    worst = max(diffs, key=lambda d: d.max_abs, default=None)
    detail = f"max abs {worst.max_abs:.2e} ({worst.name.rsplit('.', 1)[-1]})" if worst else "nothing to compare"
    return Stage(frame, name, all(d.passed for d in diffs), detail, diffs)


def _masks_differ(a: Tensor, b: Tensor) -> int:
    return int((a != b).sum()) if a.shape == b.shape else -1


def compare_records(original: PipelineRecord, hf: PipelineRecord, dtype: str = "float32") -> list[Stage]:
    stages = []
    # a setting transformers does not have is off there: the same when Meta's value turns it off too
    absent = {k for k in original.settings if k not in hf.settings and original.settings[k] is False}
    differing = {k: (original.settings[k], hf.settings.get(k)) for k in original.settings
                 if k not in absent and original.settings[k] != hf.settings.get(k)}
    stages.append(Stage(None, "settings", not differing, f"differ (original, transformers): {differing}" if differing else
                        f"{len(original.settings) - len(absent)} heuristics settings equal; off in Meta and absent in "
                        f"transformers: {sorted(absent)}"))
    same_ids = original.ids is not None and hf.ids is not None and original.ids.shape == hf.ids.shape and torch.equal(original.ids, hf.ids)
    stages.append(Stage(None, "tokens", same_ids, f"original {list(original.ids.shape)} {original.ids.flatten().tolist()}, "
                        f"transformers {list(hf.ids.shape)} {hf.ids.flatten().tolist()}"))
    for index in sorted(set(original.frames) | set(hf.frames)):
        m, h = original.frames.get(index, FrameRecord()), hf.frames.get(index, FrameRecord())
        stages.append(_tensors(index, "pixels", [("image", original.pixels[index].double(), hf.pixels[index].double())], dtype))
        if m.detector and h.detector:
            stages.append(_tensors(index, "detector", [(k, m.detector[k], h.detector[k].reshape(m.detector[k].shape)
                                                        if h.detector[k].numel() == m.detector[k].numel() else h.detector[k])
                                                       for k in ("probs", "boxes", "masks")], dtype))
        count = (len(m.detections.get("scores", [])), len(h.detections.get("scores", [])))
        if count[0] != count[1]:
            stages.append(Stage(index, "detections", False, f"original keeps {count[0]} detections, transformers {count[1]}"))
        else:
            stage = _tensors(index, "detections", [(k, m.detections[k], h.detections[k]) for k in ("scores", "boxes", "masks")],
                             dtype)
            stage.detail = f"{count[0]} detections; {stage.detail}"
            stages.append(stage)
        ids = (sorted(m.tracker), sorted(h.tracker))
        if ids[0] != ids[1]:
            stages.append(Stage(index, "tracker", False, f"tracked objects: original {ids[0]}, transformers {ids[1]}"))
        else:
            pairs = []
            for obj in ids[0]:
                pairs += [(f"obj{obj}.mask", m.tracker[obj][0], h.tracker[obj][0].reshape(m.tracker[obj][0].shape)),
                          (f"obj{obj}.score", torch.tensor(m.tracker[obj][1]), torch.tensor(h.tracker[obj][1]))]
            stage = _tensors(index, "tracker", pairs, dtype)
            stage.detail = f"objects {ids[0]}; {stage.detail}"
            stages.append(stage)
        same = m.decisions == h.decisions
        stages.append(Stage(index, "decisions", same, f"original {m.decisions}" + ("" if same else f"; transformers {h.decisions}")))
        mo, ho = m.output, h.output
        if mo.get("ids") != ho.get("ids"):
            stages.append(Stage(index, "output", False, f"object ids: original {mo.get('ids')}, transformers {ho.get('ids')}"))
        else:
            stage = _tensors(index, "output", [("scores", mo["scores"], ho["scores"]), ("boxes", mo["boxes"], ho["boxes"])],
                             dtype)
            pixels = _masks_differ(mo["masks"], ho["masks"])
            stage.passed = stage.passed and pixels == 0
            stage.detail = f"objects {mo['ids']}; {stage.detail}; mask pixels differing {pixels} of {mo['masks'].numel()}"
            stages.append(stage)
    return stages


def first_divergence(stages: list[Stage]) -> Stage | None:
    return next((s for s in stages if not s.passed), None)


@dataclass
class VideoParityResult:
    runs: dict[str, list[Stage]]  # RUNS: name -> stages
    recipes: tuple[str, ...]
    notes: list[str]

    def to_json(self) -> dict:
        def run(name, stages):
            first = first_divergence(stages)
            return {"dtype": RUNS[name][1], "recipes": RUNS[name][0], "passed": first is None,
                    "first_divergence": first.label if first else None, "cause": cause_of(first),
                    "stages": [s.to_json() for s in stages]}

        return {"scope": "video-pipeline", **{name: run(name, stages) for name, stages in self.runs.items()},
                "recipes": {r: KNOWN[r] for r in self.recipes}, "precision": PRECISION, "notes": self.notes}


# name -> (with the recipes, dtype). The proof is "with_recipes" (float64).
RUNS = {"as_shipped": (False, "float32"), "with_recipes": (True, "float64"), "with_recipes_float32": (True, "float32")}


def cause_of(stage: Stage | None) -> str | None:
    """The known behaviour that explains a first divergence as shipped, by stage."""
    if stage is None:
        return None
    name = stage.name
    if name in ("tokens", "pixels"):
        return KNOWN[name]
    if name in ("detector", "detections"):
        return KNOWN["tokens"] + " / " + KNOWN["geometry_cls"] + " / " + KNOWN["cv_utils"]
    if name == "settings":
        return "the folder's config does not hold Meta's video builder's heuristics settings"
    return "downstream of earlier divergences, or (float32 with all recipes) " + PRECISION


def run_video_parity(prepared, folder: str | Path, tokenizer, *, frames: np.ndarray, text: str,
                     settings: dict | None = None) -> VideoParityResult:
    """The comparisons of RUNS, each side run alone: as shipped (Meta's pipeline as its video builder makes
    it, transformers as it ships, float32), and with the recipes in float64 and in float32."""
    context = prepared.arch.context_length
    runs = {}
    for name, (recipes, dtype) in RUNS.items():
        torch_dtype = dtypes.torch_dtype(dtype)
        original = run_original(prepared, frames, text, tokenizer, settings=settings, dtype=torch_dtype,
                                memory_selection=False if recipes else None)
        hf = run_transformers(folder, frames, text, recipes=RECIPES if recipes else (), tokenizer=tokenizer,
                              context=context, settings=settings, dtype=torch_dtype)
        runs[name] = compare_records(original, hf, dtype)
        del original, hf
        gc.collect()
    notes = [*WORKAROUNDS, f"frames {list(frames.shape)}, text {text!r}, settings overridden: {settings or {}}"]
    return VideoParityResult(runs, RECIPES, notes)
