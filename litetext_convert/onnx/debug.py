"""`parity --debug-intermediates` on an ONNX folder: debug variants of the text and decoder graphs
whose extra outputs are the stages the transformers folder's per-layer report shows.

The folder's graphs expose only what a user needs (text features, FPN levels, detections), so a
per-layer report needs other graphs. They are exported here, from the folder's source checkpoint,
the way `convert --target onnx` exports the folder's own (export.py: the image conversion into a
scratch folder, the model loaded with eager attention, `torch.onnx.export(dynamo=True)`), with the
production outputs first and then, captured by forward hooks at the points parity/text.py and
parity/detector.py hook on the transformers side:

- text: the embeddings, every encoder layer's output, the final norm;
- decoder: the geometry encoder's output and mask, the prompt tokens and mask the DETR encoder gets,
  every DETR decoder layer's output, the reference boxes.

The vision encoder is not re-exported: the transformers report has no per-layer vision stage, and the
FPN levels come from the folder's own vision graph. The folder's graphs are only read, never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from litetext_convert.onnx.graphs import DecoderGraph

TEXT_FILE, DECODER_FILE = "text_encoder_debug.onnx", "detector_decoder_debug.onnx"
TEXT_OUTPUTS = ("text_features", "pooled_output")  # as the folder's text graph, then the stages
DECODER_OUTPUTS = ("pred_boxes", "pred_logits", "presence_logits", "pred_masks", "semantic_seg",
                   "detr_encoder_hidden_states")  # as the folder's decoder graph, then the stages
DECODER_STAGES = ("geometry_prompt", "geometry_mask", "prompt_tokens", "prompt_mask", "decoder_layers", "reference_boxes")


def text_output_names(layers: int) -> list[str]:
    return [*TEXT_OUTPUTS, "embeddings", *(f"layer_{index}" for index in range(layers)), "final_norm"]


class DebugTextGraph(nn.Module):
    """input_ids -> the text graph's two outputs, then the embeddings, each layer, the final norm
    (the hook points of parity/text.py's HFTextTrace)."""

    def __init__(self, model):
        super().__init__()
        self.text_encoder, self.text_projection = model.text_encoder, model.text_projection

    def forward(self, input_ids: Tensor) -> tuple[Tensor, ...]:
        encoder = self.text_encoder
        captured: dict[str, Tensor] = {}
        layers: list[Tensor] = []

        def keep(name):
            return lambda module, args, output: captured.__setitem__(name, _first(output))

        handles = [encoder.embeddings.register_forward_hook(keep("embeddings")),
                   encoder.final_layer_norm.register_forward_hook(keep("final_norm"))]
        handles += [layer.register_forward_hook(lambda m, a, o: layers.append(_first(o))) for layer in encoder.layers]
        try:
            encoded = encoder(input_ids=input_ids)  # no attention mask: upstream attends to padding
        finally:
            for handle in handles:
                handle.remove()
        features = self.text_projection(encoded.last_hidden_state)
        return (features, encoded.pooler_output, captured["embeddings"], *layers, captured["final_norm"])


def _first(output):
    return output[0] if isinstance(output, tuple) else output


class DebugDecoderGraph(DecoderGraph):
    """The folder's decoder graph (boxes in; the text-only prompt is the masked dummy box), then the stages
    parity/detector.py captures on the transformers side with the same hooks (ForwardCapture)."""

    def __init__(self, model):
        super().__init__(model, with_boxes=True)

    def forward(self, fpn_0: Tensor, fpn_1: Tensor, fpn_2: Tensor, position_encoding: Tensor, text_features: Tensor,
                text_mask: Tensor, input_boxes: Tensor, input_boxes_labels: Tensor) -> tuple[Tensor, ...]:
        from litetext_convert.reference.sam3_detector import ForwardCapture

        model = self.model
        hooks = {"geometry": model.geometry_encoder, "encoder": model.detr_encoder, "decoder": model.detr_decoder}
        with ForwardCapture(hooks) as seen:
            outputs = super().forward(fpn_0, fpn_1, fpn_2, position_encoding, text_features, text_mask,
                                      input_boxes, input_boxes_labels)
        geometry, (encoder_kwargs, _), decoder = seen["geometry"][1], seen["encoder"], seen["decoder"][1]
        return (*outputs, geometry.last_hidden_state, geometry.attention_mask, encoder_kwargs["text_features"],
                encoder_kwargs["text_mask"], decoder.intermediate_hidden_states, decoder.reference_boxes)


# ----------------------------------------------------------------------------------------------
# Export


@dataclass
class DebugExport:
    folder: Path
    layer_kinds: list[str]  # "repmixer" / "attention" per text layer, as parity/text.py names them
    text: Path
    decoder: Path | None
    seconds: dict[str, float]


def load_source_model(folder: Path):
    """The model the debug graphs are exported from (export.py's loader; tests plant defects here)."""
    from litetext_convert.onnx.export import load_eager_model

    return load_eager_model(folder)


def export_debug_graphs(prepared, scratch: Path, *, tokenizer: str, with_decoder: bool, status) -> DebugExport:
    """The debug graphs in `scratch` (a temporary folder the caller removes), exported from `prepared`
    exactly as export.export_folder exports the folder's graphs; the decoder only when asked."""
    import time

    from litetext_convert.onnx import graphs
    from litetext_convert.onnx.export import example_inputs, export_graph, target_settings
    from litetext_convert.parity.text import layer_kinds
    from litetext_convert.write.convert import convert

    with status("debug graphs: converting the image model (their source)"):
        image = convert(prepared, scratch / "image", tokenizer=tokenizer, dtype="float32")
    model = load_source_model(image.folder)
    limit = target_settings()["folder"]["external_data_bytes"]
    inputs, seconds = example_inputs(model), {}
    text = DebugTextGraph(model).eval()
    started = time.perf_counter()
    with status("debug graphs: exporting the text encoder with every layer as an output"):
        export_graph(text, inputs["input_ids"], scratch / TEXT_FILE, ["input_ids"],
                     text_output_names(len(model.text_encoder.layers)), limit)
    seconds["export_text_encoder_debug"] = time.perf_counter() - started
    decoder = None
    if with_decoder:
        started = time.perf_counter()
        with torch.no_grad():
            text_features = text(*inputs["input_ids"])[0]
            levels = graphs.VisionGraph(model).eval()(*inputs["pixel_values"])
        args = (*levels, text_features, inputs["input_ids"][0] != 0, *graphs.example_boxes(len(text_features)))
        decoder = scratch / DECODER_FILE
        with status("debug graphs: exporting the decoder with every DETR decoder layer as an output (the slow part)"):
            export_graph(DebugDecoderGraph(model).eval(), args, decoder, decoder_input_names(),
                         [*DECODER_OUTPUTS, *DECODER_STAGES], limit)
        seconds["export_detector_decoder_debug"] = time.perf_counter() - started
    return DebugExport(scratch, layer_kinds(model), scratch / TEXT_FILE, decoder, seconds)


def decoder_input_names() -> list[str]:
    from litetext_convert.onnx.export import graph_names, target_settings

    return graph_names(target_settings(), "detector_decoder")[0]


# ----------------------------------------------------------------------------------------------
# Running them (onnxruntime, numpy): the stages under the transformers report's names


class DebugGraphs:
    def __init__(self, export: DebugExport):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.export = export
        self.text_session = ort.InferenceSession(str(export.text), options, providers=["CPUExecutionProvider"])
        self.decoder_session = (ort.InferenceSession(str(export.decoder), options, providers=["CPUExecutionProvider"])
                                if export.decoder else None)

    def text(self, input_ids: np.ndarray) -> dict:
        """HFTextTrace's layout (parity/text.py): embeddings, layers, final_norm, text_features, pooled."""
        names = [o.name for o in self.text_session.get_outputs()]
        out = dict(zip(names, self.text_session.run(names, {"input_ids": input_ids.astype(np.int64)})))
        layers = [torch.from_numpy(out[f"layer_{index}"]) for index in range(len(self.export.layer_kinds))]
        return {"embeddings": torch.from_numpy(out["embeddings"]), "layers": layers,
                "final_norm": torch.from_numpy(out["final_norm"]),
                "text_features": torch.from_numpy(out["text_features"]), "pooled": torch.from_numpy(out["pooled_output"])}

    def decoder(self, vision: dict[str, np.ndarray], text_features: np.ndarray, text_mask: np.ndarray,
                boxes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output name -> array: the folder decoder's outputs, then DECODER_STAGES. `boxes`: runtime.box_feeds."""
        session = self.decoder_session
        feeds = {i.name: vision[i.name] for i in session.get_inputs() if i.name in vision}
        feeds.update(text_features=text_features.astype(np.float32), text_mask=text_mask.astype(bool), **boxes)
        names = [*DECODER_OUTPUTS, *DECODER_STAGES]
        return dict(zip(names, session.run(names, feeds)))


def decoder_stages(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The decoder's stages named as parity/detector.py names the transformers side's (_hf_stages):
    valid tokens only where it keeps valid tokens only."""
    stages = {"geometry.prompt": valid_tokens(outputs["geometry_prompt"], outputs["geometry_mask"]),
              "prompt.tokens": valid_tokens(outputs["prompt_tokens"], outputs["prompt_mask"]),
              "detr.encoder": outputs["detr_encoder_hidden_states"]}
    for layer, hidden in enumerate(outputs["decoder_layers"]):
        stages[f"detr.decoder.layer{layer}"] = hidden
    stages["detr.reference_boxes"] = outputs["reference_boxes"]
    return stages


def valid_tokens(batch_first: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[B, N, C] -> [B, n_valid, C] (every batch item has n_valid valid tokens), as _valid in parity/detector.py."""
    return np.stack([batch_first[b][valid[b].astype(bool)] for b in range(batch_first.shape[0])])
