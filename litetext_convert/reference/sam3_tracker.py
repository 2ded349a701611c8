"""Meta's SAM3 video tracker, built from the ORIGINAL `tracker.*` keys (and the `sam2_convs` neck),
run frame by frame on seeded ViT features. The original side of `litetext parity --scope tracker`.

`sam3.model_builder.build_tracker` hard-codes the full sizes (d_model 256, 72x72 grid, image 1008),
so the tracker is assembled here from the same `sam3` classes with the same arguments, sizes read
from the weights (as reference/sam3_detector.py does for the detector). Only two harness pieces are
ours: a trunk stub that hands Meta's neck the ViT features we seed (the detector parity covers the
ViT), and a backbone stub so that Meta's own `forward_image` (conv_s0/conv_s1 projections) runs.

Stages are captured with forward hooks on Meta's modules, keeping only the tensors compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from litetext_convert.reference.sam3_detector import original_runtime

TRACKER = "tracker."
NECK = "detector.backbone.vision_backbone."


@contextlib.contextmanager
def _prompt_encoding_in_model_dtype(dtype: torch.dtype) -> Iterator[None]:
    """float64 runs only: Meta's random-Fourier prompt encoding builds its grid in float32 and casts
    point coordinates to float32 (`.to(torch.float)`), so float64 could not even multiply them by
    the float64 matrix. The same formulas, in the matrix's dtype."""
    if dtype != torch.float64:
        yield
        return
    import numpy as np
    from sam3.sam.prompt_encoder import PositionEmbeddingRandom as PE

    def pe_encoding(self, coords):
        coords = 2 * coords.to(self.positional_encoding_gaussian_matrix.dtype) - 1
        coords = 2 * np.pi * (coords @ self.positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size):
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y_embed, x_embed = (grid.cumsum(dim=0) - 0.5) / h, (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords_input, image_size):
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords)

    saved = (PE._pe_encoding, PE.forward, PE.forward_with_coords)
    PE._pe_encoding, PE.forward, PE.forward_with_coords = pe_encoding, forward, forward_with_coords
    try:
        yield
    finally:
        PE._pe_encoding, PE.forward, PE.forward_with_coords = saved


class Float64Casts(torch.overrides.TorchFunctionMode):
    """float64 runs only, applied to BOTH sides alike: both implementations cast with `.float()` /
    `.to(torch.float)` (upcasts meant for bfloat16 autocast outputs, RoPE's "force upscale to
    float32", bool masks turned into numbers) and build some constants with float32 aranges; in a
    float64 run each of those would round to float32 mid-graph. Here they give float64."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is Tensor.float:
            return args[0].to(torch.float64)
        if func is Tensor.to:
            if kwargs.get("dtype") == torch.float32:
                kwargs["dtype"] = torch.float64
            args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        if func is torch.arange and kwargs.get("dtype") == torch.float32:
            kwargs["dtype"] = torch.float64
        return func(*args, **kwargs)


class _NoCuda(torch.overrides.TorchFunctionMode):
    """Meta's tracker moves stored memories back with `.cuda()`: a no-op on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is Tensor.cuda:
            return args[0]
        return func(*args, **(kwargs or {}))


def float64_casts(dtype: torch.dtype):
    return Float64Casts() if dtype == torch.float64 else contextlib.nullcontext()


@contextlib.contextmanager
def _tracker_runtime(dtype: torch.dtype) -> Iterator[None]:
    with _prompt_encoding_in_model_dtype(dtype), _NoCuda(), float64_casts(dtype):
        yield


WORKAROUNDS = [
    "reference/sam3_detector.original_runtime: CPU device mode; float64 sine-encoding constants",
    "float64 only: the prompt encoder's random-Fourier encoding in float64 (Meta casts coordinates to float32)",
    ".cuda() is a no-op (stored memories are moved back to the device Meta assumes)",
    "float64 only, both sides: .float() / .to(torch.float32) / float32 aranges give float64 (Float64Casts)",
]


@dataclass(frozen=True)
class TrackerSizes:
    image_size: int
    patch: int
    vit_width: int
    d_model: int
    mem_dim: int
    num_maskmem: int
    memory_layers: int
    memory_ffn: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @classmethod
    def from_weights(cls, arch, state_dict: Mapping[str, Tensor]) -> TrackerSizes:
        from litetext_convert.plan.infer import tracker_sizes

        t = tracker_sizes(state_dict)
        d = arch.detector
        return cls(
            image_size=d.image_size.value,
            patch=d.patch_size.value,
            vit_width=d.vit_width.value,
            d_model=t["hidden"],
            mem_dim=t["mem_dim"],
            num_maskmem=t["num_maskmem"],
            memory_layers=t["memory_attention_layers"],
            memory_ffn=t["memory_attention_ffn"],
        )


class _FeatureTrunk(nn.Module):
    """Stands in for the ViT: returns the features it was given (Meta's neck takes `xs[-1]`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channel_list = [channels]

    def forward(self, features: Tensor) -> list[Tensor]:
        return [features]


class _NeckBackbone(nn.Module):
    """What Meta's tracker calls as `self.backbone.forward_image(img)`: the neck's SAM2 outputs."""

    def __init__(self, neck: nn.Module):
        super().__init__()
        self.neck = neck

    def forward_image(self, features: Tensor) -> dict:
        _, _, sam2_out, sam2_pos = self.neck(features)
        # build_tracker's SAM3VLBackbone(scalp=1) discards the lowest-resolution (0.5x) level
        return {"sam2_backbone_out": {"backbone_fpn": list(sam2_out[:-1]), "vision_pos_enc": list(sam2_pos[:-1])}}


def _neck(sizes: TrackerSizes):
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine

    return Sam3DualViTDetNeck(
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=sizes.d_model, normalize=True, scale=None, temperature=10000,
            precompute_resolution=sizes.image_size,
        ),
        d_model=sizes.d_model,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        trunk=_FeatureTrunk(sizes.vit_width),
        add_sam2_neck=True,
    )


def _memory_encoder(sizes: TrackerSizes):
    """model_builder._create_tracker_maskmem_backbone with the sizes of these weights. Meta's
    mask downsampler first resizes masks to 1152 = 16 x 72 (the 4x mask size, 4x again)."""
    from sam3.model.memory import (
        CXBlock,
        SimpleFuser,
        SimpleMaskDownSampler,
        SimpleMaskEncoder,
    )
    from sam3.model.position_encoding import PositionEmbeddingSine

    return SimpleMaskEncoder(
        out_dim=sizes.mem_dim,
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=sizes.mem_dim, normalize=True, scale=None, temperature=10000,
            precompute_resolution=sizes.image_size,
        ),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=sizes.d_model, kernel_size=3, stride=2, padding=1, interpol_size=[16 * sizes.grid] * 2
        ),
        fuser=SimpleFuser(
            layer=CXBlock(dim=sizes.d_model, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True),
            num_layers=2,
        ),
        in_dim=sizes.d_model,
    )


def _memory_attention(sizes: TrackerSizes):
    """model_builder._create_tracker_transformer with the sizes of these weights."""
    from sam3.model.decoder import (
        TransformerDecoderLayerv2,
        TransformerEncoderCrossAttention,
    )
    from sam3.model.model_misc import TransformerWrapper
    from sam3.sam.transformer import RoPEAttention

    grid = [sizes.grid, sizes.grid]
    common = dict(embedding_dim=sizes.d_model, num_heads=1, downsample_rate=1, dropout=0.1, rope_theta=10000.0,
                  feat_sizes=grid, use_fa3=False, use_rope_real=False)
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=sizes.memory_ffn, dropout=0.1,
        pos_enc_at_attn=False, pre_norm=True, self_attention=RoPEAttention(**common), d_model=sizes.d_model,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(**common, kv_in_dim=sizes.mem_dim, rope_k_repeat=True),
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[], batch_first=True, d_model=sizes.d_model, frozen=False,
        pos_enc_at_input=True, layer=layer, num_layers=sizes.memory_layers, use_act_checkpoint=False,
    )
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=sizes.d_model)


def _tracker(sizes: TrackerSizes, backbone: nn.Module, memory_selection: bool = False):
    """model_builder.build_tracker's arguments; `memory_selection` is its apply_temporal_disambiguation
    (False here by default: transformers' tracker has no memory selection)."""
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    return Sam3TrackerPredictor(
        image_size=sizes.image_size, num_maskmem=sizes.num_maskmem, backbone=backbone, backbone_stride=sizes.patch,
        transformer=_memory_attention(sizes), maskmem_backbone=_memory_encoder(sizes),
        multimask_output_in_sam=True, forward_backbone_per_frame_for_eval=True, trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False, max_cond_frames_in_attn=4, offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        clear_non_cond_mem_around_input=True, fill_hole_area=0, use_memory_selection=memory_selection,
    )


def _load(module: nn.Module, prefix: str, state_dict: Mapping[str, Tensor], only: tuple[str, ...] = ()) -> int:
    keys = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix) and (not only or k[len(prefix):].startswith(only))}
    missing, unexpected = module.load_state_dict(keys, strict=False)
    if unexpected or missing:
        raise ValueError(f"Meta's tracker does not take these weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return len(keys)


@dataclass
class Prompt:
    """One object, prompted on frame 0: points (pixel coordinates in the model's image, labels 1
    positive / 0 negative / 2, 3 box corners) or a binary mask."""

    points: Tensor | None = None  # [N, 2]
    labels: Tensor | None = None  # [N]
    mask: Tensor | None = None  # [H, W]


class _Capture:
    """Last output of each hooked module, per frame."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules, self.handles, self.seen = modules, [], {}

    def __enter__(self):
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._keep(name)))
        return self.seen

    def _keep(self, name):
        def hook(module, args, output):
            self.seen.setdefault(name, []).append(output)

        return hook

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def _consolidate_prompted_frame(tracker, out: dict, feats, feat_sizes) -> dict:
    """Sam3TrackerPredictor._consolidate_temp_output_across_obj for one object with run_mem_encoder:
    the frame's low-res mask brought to low_res_mask_size (a mask prompt gives image-size // stride * 4),
    upsampled to image_size, and encoded with is_mask_from_pts=True ("what the user interacted with")."""
    import torch.nn.functional as F

    side = tracker.low_res_mask_size
    low = out["pred_masks"]
    if low.shape[-2:] != (side, side):
        low = F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False, antialias=False)
    high = F.interpolate(low, size=(tracker.image_size, tracker.image_size), mode="bilinear", align_corners=False)
    high = tracker._apply_non_overlapping_constraints(high)
    memory, memory_pos = tracker._encode_new_memory(
        image=None, current_vision_feats=feats, feat_sizes=feat_sizes, pred_masks_high_res=high,
        object_score_logits=out["object_score_logits"], is_mask_from_pts=True,
    )
    return {**out, "pred_masks": low, "maskmem_features": memory, "maskmem_pos_enc": memory_pos}


def run_original_tracker(state_dict: Mapping[str, Tensor], arch, vit_features: Tensor, prompt: Prompt,
                         dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Frame 0 with the prompt, then track; returns the stages parity/tracker.py compares."""
    sizes = TrackerSizes.from_weights(arch, state_dict)
    with original_runtime(dtype), _tracker_runtime(dtype):
        neck = _neck(sizes)
        _load(neck, NECK, state_dict, only=("convs.", "sam2_convs."))  # every key taken, none missing
        tracker = _tracker(sizes, backbone=None)  # the tracker's own keys only; then the neck stub
        _load(tracker, TRACKER, state_dict)
        tracker.backbone = _NeckBackbone(neck)
        tracker = tracker.to(dtype).eval()
        stages: dict[str, Tensor] = {}
        output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        frames = vit_features.shape[0]
        modules = {
            "prompt_encoder": tracker.sam_prompt_encoder,
            "mask_decoder": tracker.sam_mask_decoder,
            "memory_attention": tracker.transformer.encoder,
            "memory_encoder": tracker.maskmem_backbone,
        }
        with torch.no_grad(), _Capture(modules) as seen:
            for frame in range(frames):
                backbone_out = tracker.forward_image(vit_features[frame : frame + 1].to(dtype))
                _, feats, pos, feat_sizes = tracker._prepare_backbone_features(backbone_out)
                if frame == 0:  # levels 4x, 2x (after conv_s0 / conv_s1) and 1x, as (HW)BC
                    for level, x in enumerate(feats):
                        stages[f"neck.level{level}"] = x
                point_inputs = mask_inputs = None
                if frame == 0 and prompt.points is not None:
                    point_inputs = {"point_coords": prompt.points[None].to(dtype), "point_labels": prompt.labels[None].int()}
                if frame == 0 and prompt.mask is not None:
                    mask_inputs = prompt.mask[None, None].to(dtype)
                # The predictor prompts frame 0 without the memory encoder (add_new_points / add_new_mask),
                # then encodes that frame's memory in propagate_in_video_preflight (below).
                out = tracker.track_step(
                    frame_idx=frame, is_init_cond_frame=frame == 0, current_vision_feats=feats,
                    current_vision_pos_embeds=pos, feat_sizes=feat_sizes, image=None, point_inputs=point_inputs,
                    mask_inputs=mask_inputs, output_dict=output_dict, num_frames=frames, run_mem_encoder=frame > 0,
                )
                if frame == 0:
                    out = _consolidate_prompted_frame(tracker, out, feats, feat_sizes)
                # Sam3TrackerPredictor stores memories in bfloat16 (_run_single_frame_inference, _run_memory_encoder).
                out["maskmem_features"] = out["maskmem_features"].to(torch.bfloat16)
                output_dict["cond_frame_outputs" if frame == 0 else "non_cond_frame_outputs"][frame] = out
                stages[f"frame{frame}.masks"] = out["pred_masks"]
                stages[f"frame{frame}.object_score"] = out["object_score_logits"]
                stages[f"frame{frame}.object_pointer"] = out["obj_ptr"]
                stages[f"frame{frame}.memory"] = out["maskmem_features"].float()
        if "prompt_encoder" in seen:
            sparse, dense = seen["prompt_encoder"][0]
            stages["frame0.prompt_sparse"], stages["frame0.prompt_dense"] = sparse, dense
        stages["frame0.memory_encoder"] = seen["memory_encoder"][0]["vision_features"]
        for frame, output in enumerate(seen.get("memory_attention", [])[-(frames - 1):], start=1):  # not on frame 0
            stages[f"frame{frame}.memory_attention"] = output["memory"]  # (HW)BC
    return stages
