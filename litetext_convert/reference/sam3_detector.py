"""The ORIGINAL image detector: Meta's `sam3` classes at the checkpoint's sizes, original keys.

What runs is Meta's own code (`sam3` 0.1.4 from PyPI): ViT trunk, dual neck, geometry encoder,
DETR encoder/decoder, segmentation head and dot-product scoring, built with the arguments of
`sam3.model_builder` (the `_create_*` functions) except for the sizes, which come from the weights,
so a reduced ("tiny") checkpoint builds the same modules smaller. The language backbone is the
LiteText student text encoder: upstream's `TextStudentEncoder` needs the upstream fork, which is not
on PyPI, so this module uses our clean-room `CleanRoomTextEncoder`, which loads the same original
keys (see reference/text_encoder.py); the result says so in `original_name`.

Key layout decision: the detector is built WITHOUT the interactive-instance predictor and WITHOUT
the SAM2 neck (`enable_inst_interactivity=False`, Meta's default for `build_sam3_image_model`).
Neither runs on the text/box-prompted detection path (`forward_grounding`), and the tracker's sizes
are hard-coded to the full model. Their keys are accounted for as ignored, with that reason.
Every other key is loaded strictly, unchanged except for the stripped `detector.` prefix.

CPU / precision workarounds all live in `original_runtime` and are listed in `WORKAROUNDS`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from litetext_convert.reference import upstream_fork_available
from litetext_convert.reference.text_encoder import CleanRoomTextEncoder

DETECTOR_PREFIX = "detector."
TEXT_PREFIX = "backbone.language_backbone."
ORIGINAL_NAME = "{package} {version} + clean-room student text encoder (litetext CleanRoomTextEncoder)"
UNAVAILABLE_REASON = (
    "Meta's sam3 is not installed: pip install -e '.[original]' with torch==2.14.1 torchvision==0.29.1 (see README)"
)

# Keys of an upstream file that the image detector does not own, with the reason.
IGNORED_KEYS: dict[str, str] = {
    r"^tracker\.": "video tracker / interactive-instance predictor weights (Meta's loader maps them to "
    "inst_interactive_predictor.model.*); not on the text/box detection path",
    r"^detector\.backbone\.vision_backbone\.sam2_convs\.": "SAM2-style second neck that only feeds the "
    "interactive-instance predictor; not on the text/box detection path",
}

WORKAROUNDS: tuple[str, ...] = (
    "construction: a TorchFunctionMode rewrites device='cuda' to CPU (PositionEmbeddingSine precompute "
    "cache, TransformerDecoder box-RPB coordinate cache)",
    "forward: Tensor.pin_memory() is the identity (geometry encoder box scale; pinning needs an accelerator)",
    "import: torch.backends TF32 flags saved before importing sam3.model_builder and restored after",
    "import/forward: sam3's 'CUDA is not available, disabling autocast' warnings silenced",
    "float64 only: ViT RoPE in float64: vitdet.apply_rotary_enc without its float32 cast of q/k, and each "
    "stored complex64 freqs_cis table (checked to equal vitdet.compute_axial_cis) recomputed by that formula "
    "in float64",
    "float64 only: constants Meta computes in float32 whatever the model dtype (torch.arange(dtype=float32) "
    "in the sine position encodings, their frequency tables and the box-RPB coordinates) made in float64, "
    "and the float32 caches built at construction emptied",
    "float64 only: roi_align's boxes are cast to the features' dtype (Meta passes boxes.float(), which the "
    "float64 kernel refuses); the coordinates were rounded to float32 by Meta's code",
    "float64 only: the Prompt's empty default point/box coordinate tensors (float32) are cast to float64",
    "text: the BPE file Meta's builder needs is never touched: the language backbone is replaced and fed "
    "token ids, passed through Meta's SAM3VLBackbone.forward_text as its 'captions'",
)


def original_unavailable_reason() -> str | None:
    """None when Meta's sam3 (and the torchvision it needs) can be imported here."""
    if importlib.util.find_spec("sam3") is None or importlib.util.find_spec("torchvision") is None:
        return UNAVAILABLE_REASON
    return None


# ----------------------------------------------------------------------------------------------
# Runtime workarounds: every one of them is here, and listed in WORKAROUNDS.


def _op_name(func) -> str:
    """'torchvision::roi_align' for the op packet or one of its overloads, '' for anything else."""
    name = getattr(func, "_qualified_op_name", None) or getattr(func, "_name", None)
    return name if isinstance(name, str) else ""


class _CpuDeviceMode(torch.overrides.TorchFunctionMode):
    """Meta's code on a CPU: 'cuda' tensors are created on the CPU, pin_memory is a no-op, and
    roi_align gets its boxes in the features' dtype (Meta passes boxes.float(): float64 runs only).
    With `float64_constants`, float32 aranges (sine position encodings, their frequencies, box-RPB
    coordinates) are made in float64."""

    def __init__(self, float64_constants: bool = False):
        super().__init__()
        self.float64_constants = float64_constants

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.float64_constants and func is torch.arange and kwargs.get("dtype") == torch.float32:
            kwargs["dtype"] = torch.float64
        if func is torch.Tensor.pin_memory:
            return args[0]
        if _op_name(func) == "torchvision::roi_align" and args[1].dtype != args[0].dtype:
            args = (args[0], args[1].to(args[0].dtype), *args[2:])
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


@contextlib.contextmanager
def original_runtime(dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """Everything Meta's sam3 needs to build and run on a CPU (and in float64), undone on exit."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*")
        stack.enter_context(_CpuDeviceMode(float64_constants=dtype == torch.float64))
        if dtype == torch.float64:
            stack.enter_context(_rope_in_model_dtype())
        yield


@contextlib.contextmanager
def _rope_in_model_dtype() -> Iterator[None]:
    """vitdet.apply_rotary_enc rounds q and k to float32 (`.float()`); float64 runs keep float64."""
    from sam3.model import vitdet

    def apply_rotary_enc(xq: Tensor, xk: Tensor, freqs_cis: Tensor, repeat_freqs_k: bool = False):
        assert not repeat_freqs_k and xk.shape[-2] != 0  # the ViT never uses these branches
        xq_ = torch.view_as_complex(xq.reshape(*xq.shape[:-1], -1, 2))
        xk_ = torch.view_as_complex(xk.reshape(*xk.shape[:-1], -1, 2))
        freqs_cis = vitdet.reshape_for_broadcast(freqs_cis, xq_)
        return torch.view_as_real(xq_ * freqs_cis).flatten(3), torch.view_as_real(xk_ * freqs_cis).flatten(3)

    original = vitdet.apply_rotary_enc
    vitdet.apply_rotary_enc = apply_rotary_enc
    try:
        yield
    finally:
        vitdet.apply_rotary_enc = original


def _axial_cis(head_dim: int, side: int, scale_pos: float, theta: float, dtype: torch.dtype) -> Tensor:
    """vitdet.compute_axial_cis (+ init_t_xy) evaluated in `dtype` instead of float32."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].to(dtype) / head_dim))
    t = torch.arange(side * side, dtype=dtype)
    t_x, t_y = (t % side) * scale_pos, torch.div(t, side, rounding_mode="floor") * scale_pos
    angles = [torch.outer(t_x, freqs), torch.outer(t_y, freqs)]
    return torch.cat([torch.polar(torch.ones_like(a), a) for a in angles], dim=-1)


def _float64_rope_tables(model: nn.Module) -> None:
    """Replace each stored complex64 RoPE table by the same formula in float64, after checking
    that the formula reproduces the stored table to float32 precision."""
    for block in model.backbone.vision_backbone.trunk.blocks:
        attn = block.attn
        side = math.isqrt(attn.freqs_cis.shape[0])
        scale_pos = attn.rope_pt_size[0] / attn.input_size[0] if attn.rope_interp else 1.0
        table = _axial_cis(attn.head_dim, side, scale_pos, attn.rope_theta, torch.float64)
        drift = float((table.to(torch.complex64) - attn.freqs_cis).abs().max())
        if drift > 1e-5:
            raise ValueError(f"stored RoPE table differs from vitdet's formula by {drift:.2e}")
        attn.freqs_cis = table


def _import_sam3():
    """Import Meta's builder module without keeping the global flags it may switch on."""
    from litetext_convert.errors import LitetextError, printable

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        with original_runtime():
            import sam3
            import sam3.model_builder as builder
    except Exception as exc:  # a broken install fails in its own ways; the detector has no other original
        missing = f"module {exc.name!r} is missing" if isinstance(exc, ModuleNotFoundError) and exc.name else printable(exc)[:160]
        raise LitetextError(
            f"Meta's sam3 is installed but cannot be imported ({type(exc).__name__}: {missing})",
            hint="whole-detector parity needs it; repair the environment (README: the original environment)",
        ) from None
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return sam3, builder


# ----------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class OriginalDetectorSizes:
    """The constructor arguments of Meta's detector that differ between a full and a reduced one
    (not synthetic.builder.DetectorSizes, which shapes the keys a synthetic checkpoint holds)."""

    image_size: int
    pretrain_image_size: int
    patch: int
    vit_width: int
    vit_depth: int
    vit_heads: int
    vit_mlp: int
    window_size: int
    global_blocks: tuple[int, ...]
    d_model: int
    heads: int
    geometry_layers: int
    geometry_ffn: int
    roi_size: int
    encoder_layers: int
    encoder_ffn: int
    decoder_layers: int
    decoder_ffn: int
    num_queries: int
    scoring_ffn: int
    upsampling_stages: int

    @classmethod
    def from_architecture(cls, arch, state_dict: Mapping[str, Tensor]) -> OriginalDetectorSizes:
        d = arch.detector
        scoring = state_dict["dot_prod_scoring.prompt_mlp.layers.0.weight"]  # not in Architecture
        return cls(
            image_size=d.image_size.value,
            pretrain_image_size=d.pretrain_image_size.value,
            patch=d.patch_size.value,
            vit_width=d.vit_width.value,
            vit_depth=d.vit_depth.value,
            vit_heads=d.vit_heads.value,
            vit_mlp=d.vit_mlp.value,
            window_size=d.window_size.value,
            global_blocks=tuple(d.global_attn_indexes.value),
            d_model=d.d_model.value,
            heads=d.attention_heads.value,
            geometry_layers=d.geometry_layers.value,
            geometry_ffn=d.geometry_ffn.value,
            roi_size=d.roi_size.value,
            encoder_layers=d.detr_encoder_layers.value,
            encoder_ffn=d.detr_encoder_ffn.value,
            decoder_layers=d.detr_decoder_layers.value,
            decoder_ffn=d.detr_decoder_ffn.value,
            num_queries=d.num_queries.value,
            scoring_ffn=scoring.shape[0],
            upsampling_stages=d.mask_upsampling_stages.value,
        )


# ----------------------------------------------------------------------------------------------
# Construction: sam3.model_builder's `_create_*` arguments, sizes from the weights.
# (dropout / drop-path / activation-checkpoint arguments are kept as Meta passes them; eval() disables them.)


def _position_encoding(sizes: OriginalDetectorSizes, precompute: bool):
    from sam3.model.position_encoding import PositionEmbeddingSine

    return PositionEmbeddingSine(
        num_pos_feats=sizes.d_model,
        normalize=True,
        scale=None,
        temperature=10000,
        precompute_resolution=sizes.image_size if precompute else None,
    )


def _vit(sizes: OriginalDetectorSizes):
    from sam3.model.vitdet import ViT

    mlp_ratio = sizes.vit_mlp / sizes.vit_width
    if int(sizes.vit_width * mlp_ratio) != sizes.vit_mlp:
        raise ValueError(f"ViT MLP width {sizes.vit_mlp} is not int({sizes.vit_width} * ratio) for any ratio")
    return ViT(
        img_size=sizes.image_size,
        pretrain_img_size=sizes.pretrain_image_size,
        patch_size=sizes.patch,
        embed_dim=sizes.vit_width,
        depth=sizes.vit_depth,
        num_heads=sizes.vit_heads,
        mlp_ratio=mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=0.1,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=sizes.global_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=sizes.window_size,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        compile_mode=None,
    )


def _vision_backbone(sizes: OriginalDetectorSizes, sam2_neck: bool = False):
    """`sam2_neck`: also the tracker's SAM2 neck (`sam2_convs`), as Meta's video model builds it."""
    from sam3.model.necks import Sam3DualViTDetNeck

    return Sam3DualViTDetNeck(
        position_encoding=_position_encoding(sizes, precompute=True),
        d_model=sizes.d_model,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        trunk=_vit(sizes),
        add_sam2_neck=sam2_neck,  # image detector: False (module docstring: sam2_convs.* are ignored keys)
    )


def _mha(sizes: OriginalDetectorSizes, dropout: float, **kwargs):
    from sam3.model.model_misc import MultiheadAttentionWrapper

    return MultiheadAttentionWrapper(num_heads=sizes.heads, dropout=dropout, embed_dim=sizes.d_model, **kwargs)


def _fusion_layer(sizes: OriginalDetectorSizes, ffn: int, *, batch_first: bool, pos_at_attn: bool, pos_at_keys: bool):
    from sam3.model.encoder import TransformerEncoderLayer

    return TransformerEncoderLayer(
        activation="relu",
        d_model=sizes.d_model,
        dim_feedforward=ffn,
        dropout=0.1,
        pos_enc_at_attn=pos_at_attn,
        pos_enc_at_cross_attn_keys=pos_at_keys,
        pos_enc_at_cross_attn_queries=False,
        pre_norm=True,
        self_attention=_mha(sizes, 0.1, batch_first=batch_first),
        cross_attention=_mha(sizes, 0.1, batch_first=batch_first),
    )


def _transformer(sizes: OriginalDetectorSizes):
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion
    from sam3.model.model_misc import TransformerWrapper

    encoder = TransformerEncoderFusion(
        layer=_fusion_layer(sizes, sizes.encoder_ffn, batch_first=True, pos_at_attn=True, pos_at_keys=False),
        num_layers=sizes.encoder_layers,
        d_model=sizes.d_model,
        num_feature_levels=1,
        frozen=False,
        use_act_checkpoint=True,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder_layer = TransformerDecoderLayer(
        activation="relu",
        d_model=sizes.d_model,
        dim_feedforward=sizes.decoder_ffn,
        dropout=0.1,
        cross_attention=_mha(sizes, 0.1),
        n_heads=sizes.heads,
        use_text_cross_attention=True,
    )
    decoder = TransformerDecoder(
        layer=decoder_layer,
        num_layers=sizes.decoder_layers,
        num_queries=sizes.num_queries,
        return_intermediate=True,
        box_refine=True,
        num_o2m_queries=0,
        dac=True,
        boxRPB="log",
        d_model=sizes.d_model,
        frozen=False,
        interaction_layer=None,
        dac_use_selfatt_ln=True,
        resolution=sizes.image_size,
        stride=sizes.patch,
        use_act_checkpoint=True,
        presence_token=True,
    )
    return TransformerWrapper(encoder=encoder, decoder=decoder, d_model=sizes.d_model)


def _dot_product_scoring(sizes: OriginalDetectorSizes):
    from sam3.model.model_misc import MLP, DotProductScoring

    prompt_mlp = MLP(
        input_dim=sizes.d_model,
        hidden_dim=sizes.scoring_ffn,
        output_dim=sizes.d_model,
        num_layers=2,
        dropout=0.1,
        residual=True,
        out_norm=nn.LayerNorm(sizes.d_model),
    )
    return DotProductScoring(d_model=sizes.d_model, d_proj=sizes.d_model, prompt_mlp=prompt_mlp)


def _segmentation_head(sizes: OriginalDetectorSizes):
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead

    pixel_decoder = PixelDecoder(
        num_upsampling_stages=sizes.upsampling_stages,
        interpolation_mode="nearest",
        hidden_dim=sizes.d_model,
        compile_mode=None,
    )
    return UniversalSegmentationHead(
        hidden_dim=sizes.d_model,
        upsampling_stages=sizes.upsampling_stages,
        aux_masks=False,
        presence_head=False,
        dot_product_scorer=None,
        act_ckpt=True,
        cross_attend_prompt=_mha(sizes, 0),
        pixel_decoder=pixel_decoder,
    )


def _geometry_encoder(sizes: OriginalDetectorSizes):
    from sam3.model.geometry_encoders import SequenceGeometryEncoder

    return SequenceGeometryEncoder(
        pos_enc=_position_encoding(sizes, precompute=False),
        encode_boxes_as_points=False,
        points_direct_project=True,
        points_pool=True,
        points_pos_enc=True,
        boxes_direct_project=True,
        boxes_pool=True,
        boxes_pos_enc=True,
        d_model=sizes.d_model,
        num_layers=sizes.geometry_layers,
        layer=_fusion_layer(sizes, sizes.geometry_ffn, batch_first=False, pos_at_attn=False, pos_at_keys=True),
        roi_size=sizes.roi_size,
        use_act_ckpt=True,
        add_cls=True,
        add_post_encode_proj=True,
    )


class TokenIdLanguageBackbone(CleanRoomTextEncoder):
    """The student text encoder behind SAM3VLBackbone's language-backbone interface.

    Upstream's TextStudentEncoder tokenizes `captions` itself and returns (padding mask where
    ids == 0, features [T, B, 256], embeddings [T, B, D]); here the captions ARE token ids.
    """

    @classmethod
    def wrapping(cls, student: CleanRoomTextEncoder) -> TokenIdLanguageBackbone:
        return cls(student.encoder, student.projector)  # same modules, so the same original keys

    def forward(self, input_ids: Tensor, input_boxes=None, device=None) -> tuple[Tensor, Tensor, Tensor]:
        trace = super().forward(input_ids)
        return trace.padding_mask, trace.text_features.transpose(0, 1), trace.embeddings.transpose(0, 1)


def _sam3_image(sizes: OriginalDetectorSizes, language_backbone: nn.Module):
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.vl_combiner import SAM3VLBackbone

    backbone = SAM3VLBackbone(visual=_vision_backbone(sizes), text=language_backbone, scalp=1)
    return Sam3Image(  # _create_sam3_model's arguments, eval mode (no matcher)
        backbone=backbone,
        transformer=_transformer(sizes),
        input_geometry_encoder=_geometry_encoder(sizes),
        segmentation_head=_segmentation_head(sizes),
        num_feature_levels=1,
        o2m_mask_predict=True,
        dot_prod_scoring=_dot_product_scoring(sizes),
        use_instance_query=False,
        multimask_output=True,
        inst_interactive_predictor=None,
        matcher=None,
    )


# ----------------------------------------------------------------------------------------------
# Loading


@dataclass
class KeyAccount:
    loaded: int
    ignored: dict[str, int]  # reason -> count
    text_positional_note: str = ""
    left_at_init: dict[str, int] = field(default_factory=dict)  # original model keys with no source: reason -> count

    def to_json(self) -> dict:
        return {
            "loaded": self.loaded,
            "ignored": dict(self.ignored),
            "left_at_init": dict(self.left_at_init),
            "text_positional_note": self.text_positional_note,
        }


def _split_keys(
    state_dict: Mapping[str, Tensor], family_ignored: Mapping[str, str] | None = None
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Detector keys with 'detector.' stripped, and the count of ignored keys per reason."""
    kept: dict[str, Tensor] = {}
    ignored: dict[str, int] = {}
    unknown = []
    patterns = {**IGNORED_KEYS, **(family_ignored or {})}
    for key, tensor in state_dict.items():
        reason = next((why for pattern, why in patterns.items() if re.match(pattern, key)), None)
        if reason:
            ignored[reason] = ignored.get(reason, 0) + 1
        elif key.startswith(DETECTOR_PREFIX):
            kept[key[len(DETECTOR_PREFIX):]] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys are neither detector nor known extras, e.g. {unknown[:3]}")
    return kept, ignored


def _load_strict(
    model: nn.Module, detector_keys: dict[str, Tensor], left_at_init: Mapping[str, str] | None = None
) -> tuple[int, dict[str, int]]:
    """Load every non-text key; the text keys were loaded by the student encoder already. Model keys
    matching `left_at_init` (a family's declared gaps, e.g. SAM 3.1's absent 0.5x neck level) may be
    absent and keep their initial values, as upstream's non-strict load leaves them; counted per reason."""
    non_text = {k: v for k, v in detector_keys.items() if not k.startswith(TEXT_PREFIX)}
    expected = {k for k in model.state_dict() if not k.startswith(TEXT_PREFIX)}
    missing, unexpected = sorted(expected - non_text.keys()), sorted(non_text.keys() - expected)
    at_init: dict[str, int] = {}
    for pattern, why in (left_at_init or {}).items():
        gaps = [k for k in missing if re.match(pattern, k)]
        if gaps:
            at_init[why] = len(gaps)
            missing = [k for k in missing if k not in gaps]
    if missing or unexpected:
        raise ValueError(f"original detector keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    # assign: the model takes the checkpoint's own tensors (memory-mapped, no copy) instead of
    # copying them into its randomly initialised ones; a float64 run casts them afterwards.
    result = model.load_state_dict(non_text, strict=False, assign=True)
    assert not result.unexpected_keys
    return len(non_text), at_init


# ----------------------------------------------------------------------------------------------
# The detector and one run


@dataclass
class OriginalDetector:
    model: nn.Module  # sam3.model.sam3_image.Sam3Image
    dtype: torch.dtype
    keys: KeyAccount
    original_name: str
    workarounds: list[str] = field(default_factory=lambda: list(WORKAROUNDS))

    @torch.no_grad()
    def run(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        boxes: Tensor | None = None,
        box_labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Meta's inference path (Sam3Processor.set_image + set_text_prompt / add_geometric_prompt).

        boxes: [B, N, 4] normalized cx, cy, w, h; box_labels: [B, N] 1 positive / 0 negative.
        Every stage is returned batch-first.
        """
        # forward_grounding drops these modules' results, so hooks keep them
        hooked = {"geometry": self.model.geometry_encoder, "encoder": self.model.transformer.encoder,
                  "decoder": self.model.transformer.decoder}
        with original_runtime(self.dtype), ForwardCapture(hooked) as captured:
            backbone_out = {"img_batch_all_stages": pixel_values}
            backbone_out.update(self.model.backbone.forward_image(pixel_values.to(self.dtype)))
            backbone_out.update(self.model.backbone.forward_text(input_ids, device=pixel_values.device))
            out = self.model.forward_grounding(
                backbone_out=backbone_out,
                find_input=_find_stage(pixel_values.shape[0]),
                find_target=None,
                geometric_prompt=self._prompt(pixel_values.shape[0], boxes, box_labels),
            )
        return _stages(backbone_out, out, captured)

    def _prompt(self, batch: int, boxes: Tensor | None, labels: Tensor | None):
        from sam3.model.geometry_encoders import Prompt

        if boxes is None:
            prompt = self.model._get_dummy_prompt(batch)  # what Sam3Processor uses for text-only prompts
        else:
            labels = torch.ones(boxes.shape[:2], dtype=torch.long) if labels is None else labels.long()
            prompt = Prompt(
                box_embeddings=boxes.transpose(0, 1),
                box_mask=torch.zeros(boxes.shape[:2], dtype=torch.bool),
                box_labels=labels.transpose(0, 1),
            )
        # Prompt creates its empty defaults in float32; the coordinate projections need the model dtype.
        prompt.box_embeddings = prompt.box_embeddings.to(self.dtype)
        prompt.point_embeddings = prompt.point_embeddings.to(self.dtype)
        return prompt


def _find_stage(batch: int):
    from sam3.model.data_misc import FindStage

    ids = torch.arange(batch, dtype=torch.long)
    return FindStage(img_ids=ids, text_ids=ids, input_boxes=None, input_boxes_mask=None,
                     input_boxes_label=None, input_points=None, input_points_mask=None)


class ForwardCapture:
    """Forward hooks keeping (kwargs, output) of named submodules while the block runs."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self.seen: dict[str, tuple[dict, object]] = {}
        self.handles = []

    def __enter__(self) -> dict[str, tuple[dict, object]]:
        for name, module in self.modules.items():
            self.handles.append(module.register_forward_hook(self._keep(name), with_kwargs=True))
        return self.seen

    def _keep(self, name: str):
        def hook(module, args, kwargs, output):
            self.seen[name] = (kwargs, output)

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def _valid_tokens(sequence_first: Tensor, padding_mask: Tensor) -> Tensor:
    """[N, B, C] with a [B, N] padding mask -> [B, n_valid, C] (every batch item has n_valid)."""
    batch_first = sequence_first.transpose(0, 1)
    return torch.stack([batch_first[b][~padding_mask[b]] for b in range(batch_first.shape[0])])


def _stages(backbone_out: dict, out: dict, captured: dict) -> dict[str, Tensor]:
    stages: dict[str, Tensor] = {}
    for level, feature in enumerate(backbone_out["backbone_fpn"]):
        stages[f"vision.fpn.{level}"] = feature
    stages["text.features"] = backbone_out["language_features"].transpose(0, 1)
    _, (geometry, geometry_padding) = captured["geometry"]
    stages["geometry.prompt"] = _valid_tokens(geometry, geometry_padding)
    encoder_kwargs, encoder = captured["encoder"]
    stages["prompt.tokens"] = _valid_tokens(encoder_kwargs["prompt"], encoder_kwargs["prompt_key_padding_mask"])
    stages["detr.encoder"] = encoder["memory"].transpose(0, 1)
    _, (hidden, reference_boxes, _, _) = captured["decoder"]
    for layer in range(hidden.shape[0]):
        stages[f"detr.decoder.layer{layer}"] = hidden[layer].transpose(0, 1)
    stages["detr.reference_boxes"] = reference_boxes.transpose(1, 2)
    stages["pred_boxes"] = out["pred_boxes_xyxy"]
    stages["pred_logits"] = out["pred_logits"].squeeze(-1)
    stages["presence_logits"] = out["presence_logit_dec"]
    stages["pred_masks"] = out["pred_masks"]
    stages["semantic_seg"] = out["semantic_seg"]
    return {name: tensor.detach() for name, tensor in stages.items()}


def _student_text_encoder(detector_keys: dict[str, Tensor], arch, dtype: torch.dtype) -> CleanRoomTextEncoder:
    text = {k[len(TEXT_PREFIX):]: v for k, v in detector_keys.items() if k.startswith(TEXT_PREFIX)}
    return CleanRoomTextEncoder.from_original_state_dict(
        text,
        variant=arch.text.family.value,
        num_heads=arch.text.num_heads.value,
        context_length=arch.context_length,
        dtype=dtype,
    )


def _cast_real_tensors(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Module.to(dtype) would also cast the complex RoPE tables to real (dropping the imaginary
    part); .float()/.double() touch floating-point tensors only."""
    casts = {torch.float32: model.float, torch.float64: model.double}
    if dtype not in casts:
        raise ValueError(f"the original detector runs in float32 or float64, not {dtype}")
    return casts[dtype]()


def _drop_float32_caches(model: nn.Module) -> None:
    """Position encodings and box-RPB coordinates cached in float32 at construction; emptied so a
    float64 run recomputes them (in float64, see _CpuDeviceMode)."""
    model.backbone.vision_backbone.position_encoding.cache.clear()
    model.geometry_encoder.pos_enc.cache.clear()
    decoder = model.transformer.decoder
    decoder.compilable_cord_cache, decoder.compilable_stored_size = None, None
    decoder.coord_cache.clear()


def build_original_detector(state_dict: Mapping[str, Tensor], arch, *, dtype: torch.dtype = torch.float32) -> OriginalDetector:
    """Meta's Sam3Image at the sizes of `arch` (litetext's inferred Architecture), original keys loaded.

    `state_dict` holds the checkpoint's keys as stored (`detector.*`, `tracker.*`).
    """
    if original_unavailable_reason():
        raise RuntimeError(original_unavailable_reason())
    sam3, _ = _import_sam3()
    family = getattr(arch, "family", None)
    detector_keys, ignored = _split_keys(state_dict, family.original_ignored if family else None)
    sizes = OriginalDetectorSizes.from_architecture(arch, detector_keys)
    student = _student_text_encoder(detector_keys, arch, torch.float32)
    with original_runtime():
        model = _sam3_image(sizes, TokenIdLanguageBackbone.wrapping(student))
    loaded, at_init = _load_strict(model, detector_keys, family.original_left_at_init if family else None)
    text_keys = sum(1 for k in detector_keys if k.startswith(TEXT_PREFIX))
    model = _cast_real_tensors(model, dtype).eval().requires_grad_(False)
    if dtype == torch.float64:
        _float64_rope_tables(model)
        _drop_float32_caches(model)
    stored_rows = detector_keys[TEXT_PREFIX + "encoder.positional_embedding.pos_embed.pos_embed"].shape[2]
    note = (f"text positional table sliced from {stored_rows} to {arch.context_length} rows (upstream inference)"
            if stored_rows != arch.context_length else "")
    return OriginalDetector(
        model=model,
        dtype=dtype,
        keys=KeyAccount(loaded=loaded + text_keys, ignored=ignored, text_positional_note=note, left_at_init=at_init),
        original_name=ORIGINAL_NAME.format(package="LiteText fork sam3" if upstream_fork_available() else "Meta sam3",
                                           version=sam3.__version__),
    )
