"""The three graphs of an ONNX export, as torch modules around a loaded Sam3LiteTextModel.

Each wrapper computes what the ORIGINAL computes (the recipes text and detector parity proved for
transformers), so that a user who feeds ids and pixels to the graphs gets the original's answer:

- text: upstream's context, pad id 0, and padded positions ATTENDED to (no mask into the encoder);
- decoder: the detector masks padding (text_mask = ids != 0); it takes box prompts
  (`input_boxes` cxcywh normalised, `input_boxes_labels` 1 positive / 0 negative / -10 padding, the
  number of boxes dynamic), and a text-only prompt passes one masked dummy box (label -10), which
  runs the geometry encoder on nothing but its CLS token: Meta's text-only prompt.

ROI align: transformers calls `torchvision.ops.roi_align` in the geometry encoder. torchvision does
not import beside the core environment's torch, so during export that call is routed to a litetext
custom op (`litetext::roi_align`) that the exporter writes as ONNX's own `RoiAlign` (avg mode,
adaptive sampling, output_half_pixel = torchvision's aligned=False); tests/test_onnx.py proves that
form equal to torchvision's op. The exported decoder takes boxes (`with_boxes=True`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from litetext_convert.parity.recipes import DUMMY_BOX, MASKED_BOX_LABEL, masked_dummy_box

VISION_LEVELS = 3  # the model uses the first three FPN levels (it drops the last)


class TextGraph(nn.Module):
    """input_ids [B, T] int64 (0-padded) -> text_features [B, T, 256], pooled_output [B, P]."""

    def __init__(self, model):
        super().__init__()
        self.text_encoder, self.text_projection = model.text_encoder, model.text_projection

    def forward(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        encoded = self.text_encoder(input_ids=input_ids)  # no attention mask: upstream attends to padding
        return self.text_projection(encoded.last_hidden_state), encoded.pooler_output


class VisionGraph(nn.Module):
    """pixel_values [B, 3, S, S] -> the three FPN levels the decoder reads, and the last one's
    sine position encoding (a function of the shape only, kept so the decoder takes no constant)."""

    def __init__(self, model):
        super().__init__()
        self.vision_encoder = model.vision_encoder

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, ...]:
        vision = self.vision_encoder(pixel_values)
        levels = tuple(vision.fpn_hidden_states[:VISION_LEVELS])
        return (*levels, vision.fpn_position_encoding[VISION_LEVELS - 1])


class DecoderGraph(nn.Module):
    """FPN levels + position encoding + text features + text mask + boxes and labels -> detections.

    `with_boxes=True` (the exported graph): the caller gives the boxes, the masked dummy box for a
    text-only prompt. `with_boxes=False`: the text-only recipe baked in (one masked dummy box per
    image), for eager timing of the text-only call."""

    def __init__(self, model, with_boxes: bool = True):
        super().__init__()
        self.model, self.with_boxes = model, with_boxes

    def forward(self, fpn_0: Tensor, fpn_1: Tensor, fpn_2: Tensor, position_encoding: Tensor,
                text_features: Tensor, text_mask: Tensor, input_boxes: Tensor | None = None,
                input_boxes_labels: Tensor | None = None) -> tuple[Tensor, ...]:
        from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextVisionEncoderOutput

        if not self.with_boxes or input_boxes is None:  # the text-only recipe: Meta's geometry CLS token
            input_boxes, input_boxes_labels = masked_dummy_box(fpn_0.shape[0], fpn_0.dtype)
        # The model drops the last FPN level; a placeholder keeps its indexing unchanged.
        vision = Sam3LiteTextVisionEncoderOutput(
            fpn_hidden_states=(fpn_0, fpn_1, fpn_2, fpn_2), fpn_position_encoding=(position_encoding,) * 4)
        captured = {}
        hook = self.model.detr_encoder.register_forward_hook(
            lambda module, args, output: captured.__setitem__("encoder", output.last_hidden_state))
        try:
            outputs = self.model(vision_embeds=vision, text_embeds=SimpleNamespace(pooler_output=text_features),
                                 attention_mask=text_mask, input_boxes=input_boxes, input_boxes_labels=input_boxes_labels)
        finally:
            hook.remove()
        return (xyxy_to_cxcywh(outputs.pred_boxes), outputs.pred_logits, outputs.presence_logits,
                outputs.pred_masks, outputs.semantic_seg, captured["encoder"])


# Axes other than the batch that stay dynamic in the exported graphs, by input name.
DYNAMIC_AXES = {"input_boxes": {1: "boxes"}, "input_boxes_labels": {1: "boxes"}}
EXAMPLE_BOXES = ((0.40, 0.45, 0.30, 0.50), (0.70, 0.30, 0.20, 0.25), (0.5, 0.5, 1.0, 1.0))
EXAMPLE_LABELS = (1, 0, -10)  # positive, negative, padding: every branch of the label handling traced


def example_boxes(batch: int) -> tuple[Tensor, Tensor]:
    """Boxes to trace the decoder with: three per image (one or two would let the exporter specialise
    the box count), labelled positive, negative and padding."""
    boxes = torch.tensor([EXAMPLE_BOXES], dtype=torch.float32).expand(batch, -1, -1).contiguous()
    return boxes, torch.tensor([EXAMPLE_LABELS], dtype=torch.long).expand(batch, -1).contiguous()


def dynamic_shapes(inputs: list[str], batch) -> dict[str, dict]:
    """torch.export's dynamic_shapes: the batch on every input, and the box count of the box inputs."""
    named = {}
    shapes = {}
    for name in inputs:
        shapes[name] = {0: batch}
        for axis, dim in DYNAMIC_AXES.get(name, {}).items():
            named.setdefault(dim, torch.export.Dim(dim, min=1, max=1024))
            shapes[name][axis] = named[dim]
    return shapes


def text_only_boxes() -> dict:
    """What graphs.json tells a caller to pass for a text-only prompt (one row; repeat it per batch row)."""
    return {"input_boxes": [[list(DUMMY_BOX)]], "input_boxes_labels": [[MASKED_BOX_LABEL]],
            "meaning": "one masked dummy box per batch row (label -10: padding): the geometry encoder then "
                       "contributes its CLS token alone, which is Meta's text-only prompt"}


def name_dynamic_axes(model) -> None:
    """The exported graph's symbolic input dims get the names graphs.json uses ("batch", "boxes")."""
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value"):
                dim.dim_param = DYNAMIC_AXES.get(value.name, {}).get(axis, "batch")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


# ----------------------------------------------------------------------------------------------
# ROI align as a custom op: ONNX RoiAlign in the graph, no torchvision needed to export


@torch.library.custom_op("litetext::roi_align", mutates_args=())
def roi_align(features: Tensor, rois: Tensor, output_size: int) -> Tensor:
    """rois [K, 5]: batch index, x0, y0, x1, y1 (feature-map pixels). Eager: torchvision's op."""
    import torchvision

    return torchvision.ops.roi_align(features, rois, output_size)


@roi_align.register_fake
def _roi_align_shape(features: Tensor, rois: Tensor, output_size: int) -> Tensor:
    return features.new_empty((rois.shape[0], features.shape[1], output_size, output_size))


def _encode_boxes(self, boxes, boxes_mask, boxes_labels, vision_features):
    """transformers' Sam3LiteTextGeometryEncoder._encode_boxes, step for step, with one change: the
    ROI list is built with a batch-index column instead of a Python list per image (unbinding the
    batch would fix the graph's batch size), and pooled by the custom op."""
    from transformers.models.sam3_lite_text.modeling_sam3_lite_text import box_cxcywh_to_xyxy

    batch_size, num_boxes = boxes.shape[:2]
    height, width = vision_features.shape[-2:]
    boxes_embed = self.boxes_direct_project(boxes)
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype).view(1, 1, 4)
    boxes_xyxy = (box_cxcywh_to_xyxy(boxes) * scale).reshape(-1, 4)
    # Broadcast, not repeat_interleave: the exporter's repeat_interleave kept the traced box count.
    image_index = (torch.zeros_like(boxes[..., :1]) + torch.arange(batch_size, dtype=boxes.dtype).view(-1, 1, 1)).reshape(-1, 1)
    sampled = torch.ops.litetext.roi_align(vision_features, torch.cat((image_index, boxes_xyxy), dim=1), self.roi_size)
    boxes_embed = boxes_embed + self.boxes_pool_project(sampled).view(batch_size, num_boxes, self.hidden_size)
    center_x, center_y, box_width, box_height = boxes.unbind(-1)
    position = self._encode_box_coordinates(center_x.flatten(), center_y.flatten(), box_width.flatten(), box_height.flatten())
    boxes_embed = boxes_embed + self.boxes_pos_enc_project(position.view(batch_size, num_boxes, position.shape[-1]))
    return self.label_embed(boxes_labels.long()) + boxes_embed, boxes_mask


def onnx_roi_align(features, rois, output_size: int):
    """The custom op's ONNX form: RoiAlign with torchvision's defaults (aligned=False, adaptive sampling)."""
    from onnxscript import INT64
    from onnxscript import opset18 as op

    batch_indices = op.Cast(op.Reshape(op.Slice(rois, [0], [1], [1], [1]), [-1]), to=INT64.dtype)
    boxes = op.Slice(rois, [1], [5], [1], [1])
    return op.RoiAlign(features, boxes, batch_indices, mode="avg", output_height=output_size,
                       output_width=output_size, sampling_ratio=0, spatial_scale=1.0,
                       coordinate_transformation_mode="output_half_pixel")


@contextlib.contextmanager
def roi_align_as_custom_op() -> Iterator[None]:
    """While active, the geometry encoder pools boxes with the custom op (see _encode_boxes)."""
    from transformers.models.sam3_lite_text.modeling_sam3_lite_text import Sam3LiteTextGeometryEncoder

    original = Sam3LiteTextGeometryEncoder._encode_boxes
    Sam3LiteTextGeometryEncoder._encode_boxes = _encode_boxes
    try:
        yield
    finally:
        Sam3LiteTextGeometryEncoder._encode_boxes = original
