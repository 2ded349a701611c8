"""Tracker parity: Meta's SAM3 tracker (original keys, reference/sam3_tracker.py) against the
converted `Sam3VideoModel`'s `tracker_neck` + `Sam3TrackerVideoModel`, on a seeded clip.

Both sides get the same seeded ViT features for each frame (the ViT itself is covered by the
detector parity) and the same frame-0 prompt, then track the following frames without prompts.
Stages: neck levels, prompt encoder, frame-0 mask decoder (masks, object score, object pointer),
memory encoder, stored memory, memory attention and the later frames' masks / score / pointer.

Two of transformers' behaviours differ from Meta's on a mask prompt (see KNOWN). They are never
absorbed by a tolerance: the plain run shows them, and a second run with the recipe that makes
transformers compute what Meta computes shows that nothing else differs.
"""

from __future__ import annotations

import functools
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from litetext_convert import dtypes
from litetext_convert.parity.compare import StageDiff, compare
from litetext_convert.parity.recipes import known_differences, tracker_recipes
from litetext_convert.parity.runtime import float64_memory_rope
from litetext_convert.reference.sam3_tracker import (
    WORKAROUNDS,
    Prompt,
    float64_casts,
    run_original_tracker,
)


# transformers' known behaviours and the recipes per prompt kind: configs/known_differences.toml.
KNOWN = known_differences("tracker")
RECIPES = tracker_recipes()


@dataclass
class PromptRun:
    """One prompt: transformers as it is, and transformers with the recipes, against one Meta run."""

    prompt: str
    plain: list[StageDiff]
    recipe: tuple[str, ...]
    with_recipe: list[StageDiff]

    def to_json(self) -> dict:
        plain_failures = [s.name for s in self.plain if not s.passed]
        return {
            "prompt": self.prompt,
            "plain": {"passed": not plain_failures, "first_failure": plain_failures[0] if plain_failures else None,
                      "stages": [s.to_json() for s in self.plain]},
            "recipe": list(self.recipe),
            "with_recipe": {"passed": all(s.passed for s in self.with_recipe),
                            "first_failure": next((s.name for s in self.with_recipe if not s.passed), None),
                            "stages": [s.to_json() for s in self.with_recipe]},
            "known_differences": {name: KNOWN[name] for name in self.recipe} if plain_failures else {},
        }


@dataclass
class TrackerParityResult:
    dtype: str
    runs: list[PromptRun]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The conversion is right when, with transformers' known behaviours set to Meta's, every stage agrees."""
        return all(stage.passed for run in self.runs for stage in run.with_recipe)

    def to_json(self) -> dict:
        return {
            "scope": "tracker",
            "dtype": self.dtype,
            "passed": self.passed,
            "first_failure": next((f"{r.prompt}:{s.name}" for r in self.runs for s in r.with_recipe if not s.passed), None),
            "prompts": [run.to_json() for run in self.runs],
            "seconds": self.seconds,
            "notes": self.notes,
            "workarounds": WORKAROUNDS,
        }


def seeded_clip(frames: int, channels: int, grid: int, seed: int) -> Tensor:
    """ViT features for `frames` frames: a shared scene plus per-frame motion, so tracking has work."""
    generator = torch.Generator().manual_seed(seed)
    scene = torch.randn(1, channels, grid, grid, generator=generator, dtype=torch.float64)
    motion = torch.randn(frames, channels, grid, grid, generator=generator, dtype=torch.float64)
    return scene + 0.3 * motion


def seeded_prompt(kind: str, image_size: int, grid: int, seed: int) -> Prompt:
    generator = torch.Generator().manual_seed(seed + 1)
    if kind == "points":
        # a box (corner labels 2, 3) and one positive click inside it
        corners = torch.tensor([[0.2, 0.25], [0.7, 0.8]], dtype=torch.float64) * image_size
        click = (corners.mean(0) + torch.rand(2, generator=generator, dtype=torch.float64)).unsqueeze(0)
        return Prompt(points=torch.cat([corners, click]), labels=torch.tensor([2, 3, 1]))
    if kind == "mask":
        side = 16 * grid  # the size Meta's video pipeline gives a new detection's mask
        mask = torch.zeros(side, side)
        y0, x0 = (torch.rand(2, generator=generator) * side / 3).long().tolist()
        mask[y0 : y0 + side // 2, x0 : x0 + side // 3] = 1.0
        return Prompt(mask=mask)
    raise ValueError(f"unknown prompt kind {kind!r}: points or mask")


def run_converted_tracker(folder: str | Path, vit_features: Tensor, prompt: Prompt, dtype: torch.dtype,
                          recipe: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The converted tracker on the seeded clip: its stages per frame, with `recipe` (names of KNOWN) applied."""
    model = _load_tracker_side(folder, dtype)
    tracker = model.tracker_model
    frames, _, grid, _ = vit_features.shape
    size = tracker.image_size
    stages: dict[str, Tensor] = {}
    with torch.no_grad():
        session, obj_idx = _prompted_session(model, vit_features, prompt, dtype, stages)
        _apply_recipes(tracker, recipe, prompt, grid)
        hooks = {"prompt_encoder": tracker.prompt_encoder, "memory_attention": tracker.memory_attention,
                 "memory_encoder": tracker.memory_encoder}
        seen: dict[str, list] = {}
        handles = [m.register_forward_hook(lambda mod, a, out, n=n: seen.setdefault(n, []).append(out)) for n, m in hooks.items()]
        try:
            for frame in range(frames):
                with float64_casts(dtype):
                    tracker(inference_session=session, frame_idx=frame)
                if frame == 0:
                    tracker.image_size = size  # the recipe only concerns the prompted frame
                kind = "cond_frame_outputs" if frame == 0 else "non_cond_frame_outputs"
                out = session.output_dict_per_obj[obj_idx][kind][frame]
                stages[f"frame{frame}.masks"] = out["pred_masks"]
                stages[f"frame{frame}.object_score"] = out["object_score_logits"]
                stages[f"frame{frame}.object_pointer"] = out["object_pointer"]
                stages[f"frame{frame}.memory"] = out["maskmem_features"].float()
        finally:
            for handle in handles:
                handle.remove()
    if "prompt_encoder" in seen:
        sparse, dense = seen["prompt_encoder"][0]
        stages["frame0.prompt_sparse"], stages["frame0.prompt_dense"] = sparse, dense
    stages["frame0.memory_encoder"] = seen["memory_encoder"][0][0]
    for frame, output in enumerate(seen.get("memory_attention", [])[-(frames - 1):], start=1):  # not on frame 0
        stages[f"frame{frame}.memory_attention"] = output
    del model
    return stages


def _load_tracker_side(folder: str | Path, dtype: torch.dtype):
    from transformers import Sam3VideoModel

    model = Sam3VideoModel.from_pretrained(str(folder)).eval()
    model.detector_model = None  # the tracker side needs only tracker_neck + tracker_model: free the detector
    gc.collect()
    model = model.to(dtype)
    if dtype == torch.float64:
        float64_memory_rope(model.tracker_model.memory_attention.rotary_emb)
    return model


def _prompted_session(model, vit_features: Tensor, prompt: Prompt, dtype: torch.dtype, stages: dict):
    """An inference session with every frame's ViT features through the tracker neck (the neck
    levels of frame 0 go to `stages`) and the prompt on frame 0."""
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
        Sam3TrackerVideoInferenceSession,
    )

    frames, channels, grid, _ = vit_features.shape
    size = model.tracker_model.image_size
    session = Sam3TrackerVideoInferenceSession(
        video=torch.zeros(frames, 3, size, size), video_height=size, video_width=size, dtype=dtype,
        max_vision_features_cache_size=frames,
    )
    for frame in range(frames):
        hidden = vit_features[frame : frame + 1].to(dtype).permute(0, 2, 3, 1).reshape(1, grid * grid, channels)
        feats, pos = model.get_vision_features_for_tracker(SimpleNamespace(last_hidden_state=hidden))
        session.cache.cache_vision_features(frame, {"vision_feats": feats, "vision_pos_embeds": pos})
        if frame == 0:
            for level, x in enumerate(feats):
                stages[f"neck.level{level}"] = x
    obj_idx = session.obj_id_to_idx(1)
    if prompt.points is not None:
        session.add_point_inputs(obj_idx, 0, {"point_coords": prompt.points[None, None].to(dtype),
                                              "point_labels": prompt.labels[None, None].int()})
    else:
        session.add_mask_inputs(obj_idx, 0, prompt.mask[None, None])
    session.obj_with_new_inputs = [1]
    return session, obj_idx


def _apply_recipes(tracker, recipe: tuple[str, ...], prompt: Prompt, grid: int) -> None:
    """The recipes (configs/known_differences.toml [tracker]) that make transformers compute what Meta computes."""
    if "mask_size" in recipe and prompt.mask is not None:
        tracker.image_size = prompt.mask.shape[-1]
    if "pointer_token" in recipe:
        tracker._single_frame_forward = _single_mask_pointer(tracker._single_frame_forward)
    if "memory_mask_order" in recipe:
        _resize_after_binarize(tracker, 16 * grid)
    if "mask_consolidation" in recipe:
        _consolidate_like_meta(tracker)


def _resize_after_binarize(tracker, mask_memory_size: int) -> None:
    """Meta's order in memory encoding: binarize / sigmoid the high-res logits as they are (image_size),
    then resize to `mask_memory_size` as the first step of the mask downsampler."""
    encode, downsample = tracker._encode_new_memory, tracker.memory_encoder.mask_downsampler.forward

    @functools.wraps(encode)
    def encode_at_image_size(*args, **kwargs):
        saved, size = tracker.prompt_encoder.mask_input_size, kwargs["pred_masks_high_res"].shape[-1]
        tracker.prompt_encoder.mask_input_size = (size // 4, size // 4)  # 4 x 4 x this = the masks' size: no resize
        try:
            return encode(*args, **kwargs)
        finally:
            tracker.prompt_encoder.mask_input_size = saved

    @functools.wraps(downsample)
    def resize_then_downsample(masks):
        masks = torch.nn.functional.interpolate(
            masks, size=(mask_memory_size, mask_memory_size), mode="bilinear", align_corners=False, antialias=True
        )
        return downsample(masks)

    tracker._encode_new_memory = encode_at_image_size
    tracker.memory_encoder.mask_downsampler.forward = resize_then_downsample


def _consolidate_like_meta(tracker) -> None:
    """Meta's path for a mask prompt's frame: low-res logits at side // patch * 4 (antialiased), then
    Sam3TrackerPredictor's consolidation to the low-res size (no antialias), and high-res logits for
    memory upsampled back from them."""
    import torch.nn.functional as F

    use_mask = tracker._use_mask_as_output
    patch = tracker.prompt_encoder.input_image_size // tracker.prompt_encoder.image_embedding_size[0]

    @functools.wraps(use_mask)
    def use_mask_as_output(backbone_features, high_res_features, mask_inputs):
        out = use_mask(backbone_features, high_res_features, mask_inputs)
        side, low_side = mask_inputs.shape[-1], tracker.prompt_encoder.mask_input_size[0]
        logits = mask_inputs.to(out.high_res_masks.dtype) * 20.0 - 10.0
        low = F.interpolate(logits, size=(side // patch * 4,) * 2, mode="bilinear", align_corners=False, antialias=True)
        low = F.interpolate(low, size=(low_side, low_side), mode="bilinear", align_corners=False, antialias=False)
        out.pred_masks = low
        image_size = tracker.prompt_encoder.input_image_size  # the model's, whatever the mask_size recipe set
        out.high_res_masks = F.interpolate(low, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return out

    tracker._use_mask_as_output = use_mask_as_output


def _single_mask_pointer(single_frame_forward):
    """The mask-prompt pointer from the single-mask token, as Meta builds it."""

    @functools.wraps(single_frame_forward)
    def forward(*args, **kwargs):
        if kwargs.get("input_masks") is not None and kwargs.get("input_points") is None:
            kwargs["multimask_output"] = False
        return single_frame_forward(*args, **kwargs)

    return forward


def _align(name: str, reference: Tensor, candidate: Tensor) -> tuple[Tensor, Tensor]:
    """Same values in different containers: Meta keeps memories as BCHW where transformers keeps
    (HW)BC, and transformers adds an object axis; nothing else is rearranged."""
    ref, cand = reference.detach(), candidate.detach()
    if name.endswith(".memory") and cand.dim() == 3 and ref.dim() == 4:
        cand = cand.permute(1, 2, 0).reshape(ref.shape)
    elif name.endswith("memory_attention") and ref.dim() == 3:
        ref = ref.reshape(-1, ref.shape[-1])
        cand = cand.reshape(-1, cand.shape[-1])
    elif ref.shape != cand.shape and ref.numel() == cand.numel():
        cand = cand.reshape(ref.shape)
    return ref, cand


def run_tracker_parity(prepared, folder: str | Path, *, prompts: tuple[str, ...] = ("points", "mask"),
                       dtype: str = "float64", seed: int = 0, frames: int = 3) -> TrackerParityResult:
    """Per prompt: Meta's side first, then transformers' twice (as it is, then with the recipes); only
    the compared tensors are kept between the sides."""
    torch_dtype = dtypes.torch_dtype(dtype)
    det = prepared.arch.detector
    grid = det.image_size.value // det.patch_size.value
    clip = seeded_clip(frames, det.vit_width.value, grid, seed)
    seconds: dict[str, float] = {}
    runs = []
    for kind in prompts:
        prompt = seeded_prompt(kind, det.image_size.value, grid, seed)
        started = time.perf_counter()
        reference = run_original_tracker(prepared.loaded.tensors, prepared.arch, clip, prompt, torch_dtype)
        seconds[f"{kind}.original"] = time.perf_counter() - started
        gc.collect()
        diffs = {}
        for recipe in ((), RECIPES[kind]):
            started = time.perf_counter()
            candidate = run_converted_tracker(folder, clip, prompt, torch_dtype, recipe)
            seconds[f"{kind}.transformers{'+recipe' if recipe else ''}"] = time.perf_counter() - started
            diffs[recipe] = _compare_stages(reference, candidate, dtype)
            del candidate
            gc.collect()
        runs.append(PromptRun(kind, diffs[()], RECIPES[kind], diffs[RECIPES[kind]]))
        del reference
    notes = [f"seeded clip: {frames} frames of ViT features (seed {seed}); prompt on frame 0, tracked after"]
    return TrackerParityResult(dtype, runs, seconds, notes)


def _compare_stages(reference: dict, candidate: dict, dtype: str) -> list[StageDiff]:
    atol, rtol = dtypes.tolerances(dtype, "tracker")  # configs/tolerances.toml
    # The stored memory is bfloat16 on both sides: one bfloat16 step is that stage's resolution.
    memory_rtol = dtypes.tolerance_value("tracker", "memory", "rtol")
    diffs = []
    for name in _stage_order(reference, candidate):
        ref, cand = _align(name, reference[name], candidate[name])
        if name.endswith(".memory"):
            diffs.append(compare(name, ref, cand, atol=atol, rtol=memory_rtol,
                                 note="stored in bfloat16 on both sides: compared to one bfloat16 step"))
        else:
            diffs.append(compare(name, ref, cand, atol=atol, rtol=rtol))
    return diffs


# Pipeline order within a frame (the neck comes first, once).
_ORDER = ("prompt_sparse", "prompt_dense", "memory_attention", "masks", "object_score", "object_pointer",
          "memory_encoder", "memory")


def _stage_order(reference: dict, candidate: dict) -> list[str]:
    names = [n for n in reference if n in candidate and not n.startswith("_")]

    def key(name: str):
        if not name.startswith("frame"):
            return -1, 0, name
        frame, stage = name.split(".", 1)
        return int(frame[5:]), _ORDER.index(stage), name

    return sorted(names, key=key)
