"""Meta's SAM3 video pipeline, the ORIGINAL side of the whole-pipeline video parity
(parity/video.py, scripts/video_parity.py).

What runs is Meta's own `sam3.model.sam3_video_inference.Sam3VideoInference`: per frame the
detector, the tracker's propagation, and the association heuristics of `Sam3VideoBase`
(NMS, det-to-track matching, hotstart, keep-alive, occlusion suppression, reconditioning,
masklet confirmation), then its output post-processing. It is assembled here, at the
checkpoint's sizes, around
  - the original LiteText detector: Meta's detector classes as reference/sam3_detector.py builds
    them (clean-room student text encoder, ORIGINAL keys), as Meta's video builder wraps them
    (`Sam3ImageOnVideoMultiGPU`, with the SAM2 neck that feeds the tracker), and
  - Meta's tracker as reference/sam3_tracker.py builds it (ORIGINAL `tracker.*` keys),
with the heuristics' settings of `sam3.model_builder.build_sam3_video_model` (META_SETTINGS).

CPU workarounds (all in `video_runtime`, listed in WORKAROUNDS) on top of the detector's and the
tracker's own; none changes what is computed, except where WORKAROUNDS says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from litetext_convert.reference.sam3_detector import (
    DETECTOR_PREFIX,
    TEXT_PREFIX,
    OriginalDetectorSizes,
    TokenIdLanguageBackbone,
    _cast_real_tensors,
    _dot_product_scoring,
    _drop_float32_caches,
    _float64_rope_tables,
    _geometry_encoder,
    _import_sam3,
    _load_strict,
    _segmentation_head,
    _split_keys,
    _student_text_encoder,
    _transformer,
    _vision_backbone,
    original_runtime,
)
from litetext_convert.reference.sam3_tracker import (
    TRACKER,
    TrackerSizes,
    _load,
    _tracker,
    _tracker_runtime,
    float64_casts,
)

SAM2_NECK = "backbone.vision_backbone.sam2_convs."

# sam3.model_builder.build_sam3_video_model, apply_temporal_disambiguation=True (its default):
# the heuristics' settings, passed to Sam3VideoBase as Meta passes them.
META_SETTINGS: dict[str, object] = {
    "score_threshold_detection": 0.5,
    "assoc_iou_thresh": 0.1,
    "det_nms_thresh": 0.1,
    "new_det_thresh": 0.7,
    "hotstart_delay": 15,
    "hotstart_unmatch_thresh": 8,
    "hotstart_dup_thresh": 8,
    "suppress_unmatched_only_within_hotstart": True,
    "min_trk_keep_alive": -1,
    "max_trk_keep_alive": 30,
    "init_trk_keep_alive": 30,
    "suppress_overlapping_based_on_recent_occlusion_threshold": 0.7,
    "suppress_det_close_to_boundary": False,
    "fill_hole_area": 16,
    "recondition_every_nth_frame": 16,
    "masklet_confirmation_enable": False,
    "decrease_trk_keep_alive_for_empty_masklets": False,
}
# ... and its tracker: memory selection on (build_tracker(apply_temporal_disambiguation=True)).
META_MEMORY_SELECTION = True
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)

WORKAROUNDS: tuple[str, ...] = (
    "reference/sam3_detector.original_runtime and reference/sam3_tracker's runtime (CPU device mode, "
    "pin_memory and .cuda() as no-ops)",
    "frames: Meta's loader stores them in float16 (on the GPU the model then runs under the bfloat16 autocast its "
    "tracker switches on for the whole process); on the CPU that autocast is off, so the stored float16 values are "
    "handed to the model in the run's dtype (every float16 value is exact in float32)",
    "tracker features: Meta casts the SAM2 neck's outputs to bfloat16 for its multi-GPU all-gather, which the same "
    "autocast absorbs on the GPU; on the CPU a float convolution refuses bfloat16 input, so they keep the run's dtype",
    "tracker state: stored with offload_state_to_cpu=True (Meta's default storage device is 'cuda')",
    "connected components (hole filling, sprinkle removal): Meta's CPU path needs scikit-image, which is not "
    "installed (and fails on an empty batch); an 8-connected labelling in torch (connected_components_8) gives the "
    "same component sizes",
    "float64 only: float32-typed buffers and default-dtype tensors are made in float64 on BOTH sides (float64_run); "
    "boxes from masks take Meta's torchvision path (its perflib version asserts float32; mask boxes are whole "
    "pixels either way)",
)


def connected_components_8(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Labels and per-pixel component sizes of the non-zero pixels of one 2D mask, 8-connected (the
    connectivity of scikit-image's `label` on a 2D image and of cc_torch); background is 0. Labels
    are dense from 1 but not in raster order: callers use the sizes only."""
    foreground = mask != 0
    height, width = foreground.shape
    ids = torch.arange(1, height * width + 1, dtype=torch.float64).reshape(1, 1, height, width)
    labels = ids * foreground
    while True:  # every pixel takes its neighbourhood's largest label until nothing changes
        spread = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * foreground
        if torch.equal(spread, labels):
            break
        labels = spread
    values, dense = torch.unique(labels[0, 0].long(), return_inverse=True)
    if int(values[0]) != 0:  # no background pixel: the first component would get 0
        dense = dense + 1
    counts = torch.bincount(dense.flatten())[dense] * foreground
    return dense, counts


class CaptionLanguageBackbone(TokenIdLanguageBackbone):
    """The student text encoder taking Meta's captions (strings), tokenized at the model's context
    by `tokenizer` (reference/tokenizer.CleanRoomTokenizer), as upstream's TextStudentEncoder does.
    The ids of the last call are kept: they are what this side fed its text encoder."""

    tokenizer: Callable | None = None
    context_length: int = 0
    last_ids: Tensor | None = None

    def forward(self, captions, input_boxes=None, device=None):
        ids = self.tokenizer(list(captions), self.context_length)
        self.last_ids = ids
        return super().forward(ids)


@dataclass
class OriginalVideo:
    model: nn.Module  # sam3.model.sam3_video_inference.Sam3VideoInference
    dtype: torch.dtype
    settings: dict
    memory_selection: bool
    loaded_keys: int
    workarounds: list[str] = field(default_factory=lambda: list(WORKAROUNDS))


def _video_detector(sizes: OriginalDetectorSizes, language_backbone: nn.Module):
    """build_sam3_video_model's detector: Sam3ImageOnVideoMultiGPU with the SAM2 neck, joint box scores."""
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
    from sam3.model.vl_combiner import SAM3VLBackbone

    backbone = SAM3VLBackbone(visual=_vision_backbone(sizes, sam2_neck=True), text=language_backbone, scalp=1)
    return Sam3ImageOnVideoMultiGPU(
        num_feature_levels=1,
        backbone=backbone,
        transformer=_transformer(sizes),
        segmentation_head=_segmentation_head(sizes),
        semantic_segmentation_head=None,
        input_geometry_encoder=_geometry_encoder(sizes),
        use_early_fusion=True,
        use_dot_prod_scoring=True,
        dot_prod_scoring=_dot_product_scoring(sizes),
        supervise_joint_box_scores=True,
    )


def build_original_video(state_dict: Mapping[str, Tensor], arch, tokenizer: Callable, *,
                         settings: Mapping[str, object] | None = None, memory_selection: bool = META_MEMORY_SELECTION,
                         dtype: torch.dtype = torch.float32) -> OriginalVideo:
    """Meta's Sam3VideoInference at the sizes of `arch`, every detector, neck and tracker key loaded
    strictly from the checkpoint's ORIGINAL keys. `settings` override META_SETTINGS (e.g. thresholds)."""
    from sam3.model.sam3_video_inference import Sam3VideoInference

    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the whole video pipeline runs in float32 or float64, not {dtype}")
    _import_sam3()
    chosen = {**META_SETTINGS, **(settings or {})}
    detector_keys, _ = _split_keys(state_dict)  # tracker.* and sam2_convs.* set aside there; taken below
    neck_keys = {k[len(DETECTOR_PREFIX):]: v for k, v in state_dict.items() if k.startswith(DETECTOR_PREFIX + SAM2_NECK)}
    sizes = OriginalDetectorSizes.from_architecture(arch, detector_keys)
    student = _student_text_encoder(detector_keys, arch, torch.float32)
    language = CaptionLanguageBackbone.wrapping(student)
    language.tokenizer, language.context_length = tokenizer, arch.context_length
    with original_runtime(dtype), _tracker_runtime(dtype):
        detector = _video_detector(sizes, language)
        tracker = _tracker(TrackerSizes.from_weights(arch, state_dict), backbone=None, memory_selection=memory_selection)
    loaded, _ = _load_strict(detector, {**detector_keys, **neck_keys})
    loaded += _load(tracker, TRACKER, state_dict)
    loaded += sum(1 for k in detector_keys if k.startswith(TEXT_PREFIX))
    with original_runtime(dtype), _tracker_runtime(dtype):
        model = Sam3VideoInference(detector=detector, tracker=tracker, image_size=sizes.image_size,
                                   image_mean=IMAGE_MEAN, image_std=IMAGE_STD, **chosen)
    model = _cast_real_tensors(model, dtype).eval().requires_grad_(False)
    if dtype == torch.float64:
        _float64_rope_tables(detector)
        _drop_float32_caches(detector)
    return OriginalVideo(model, dtype, chosen, memory_selection, loaded)


class _Float32Kwargs(torch.overrides.TorchFunctionMode):
    """float64 runs, both sides alike: a `dtype=torch.float32` argument (buffers both pipelines create
    in float32 whatever the model dtype: consolidated masks, pointers, scores) gives float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if kwargs.get("dtype") == torch.float32:
            kwargs["dtype"] = torch.float64
        return func(*args, **kwargs)


@contextlib.contextmanager
def float64_run(dtype: torch.dtype) -> Iterator[None]:
    """float64 runs only, applied to BOTH sides: float32-typed buffers and default-dtype tensors are made
    in float64, so that nothing rounds to float32 mid-pipeline (see also sam3_tracker.Float64Casts)."""
    if dtype != torch.float64:
        yield
        return
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with _Float32Kwargs(), float64_casts(dtype):
            yield
    finally:
        torch.set_default_dtype(saved)


class NoBfloat16Cast(torch.overrides.TorchFunctionMode):
    """`x.to(torch.bfloat16)` returns x (WORKAROUNDS: the tracker features' all-gather cast)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is Tensor.to and (torch.bfloat16 in args[1:] or kwargs.get("dtype") == torch.bfloat16):
            return args[0]
        return func(*args, **kwargs)


@contextlib.contextmanager
def video_runtime(video: OriginalVideo) -> Iterator[None]:
    """Everything Meta's video pipeline needs on a CPU, undone on exit."""
    import sam3.perflib.connected_components as cc

    detector = video.model.detector
    build_chunk = detector._build_multigpu_buffer_next_chunk

    def build_chunk_in_run_dtype(*args, **kwargs):
        with NoBfloat16Cast():
            return build_chunk(*args, **kwargs)

    def labelled(values: Tensor):  # [B, 1, H, W] or [B, H, W]; Meta's CPU path also fails on B = 0
        flat = values.reshape(-1, *values.shape[-2:])
        labels, counts = torch.zeros_like(flat, dtype=torch.long), torch.zeros_like(flat, dtype=torch.long)
        for index, mask in enumerate(flat):
            labels[index], counts[index] = connected_components_8(mask)
        return labels.reshape(values.shape), counts.reshape(values.shape)

    tracker = video.model.tracker
    init_state = tracker.init_state

    def init_state_on_cpu(*args, **kwargs):
        return init_state(*args, **{**kwargs, "offload_state_to_cpu": True})

    from sam3 import perflib

    saved = cc.connected_components_cpu
    saved_perflib = perflib.is_enabled
    cc.connected_components_cpu = labelled
    if video.dtype == torch.float64:  # perflib's masks_to_boxes asserts float32 boxes (WORKAROUNDS)
        perflib.is_enabled = False
    detector._build_multigpu_buffer_next_chunk = build_chunk_in_run_dtype
    tracker.init_state = init_state_on_cpu
    try:
        with original_runtime(video.dtype), _tracker_runtime(video.dtype), float64_run(video.dtype):
            yield
    finally:
        cc.connected_components_cpu = saved
        perflib.is_enabled = saved_perflib
        del detector._build_multigpu_buffer_next_chunk, tracker.init_state
