"""The graphs of an ONNX folder in onnxruntime (CPU): numpy in, numpy out, no torch.

`OnnxGraphs(folder, rung)` checks every graph's interface (input names, dtypes and shapes) against
the folder's graphs.json and its config before anything runs: a graph edited or swapped after
export is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from litetext_convert.errors import LitetextError
from litetext_convert.onnx import GRAPHS_DIR, MANIFEST

GRAPHS = ("text_encoder", "vision_encoder", "detector_decoder")
TEXT_OUTPUTS = ("text_features", "pooled_output")
DECODER_OUTPUTS = ("pred_boxes", "pred_logits", "presence_logits", "pred_masks", "semantic_seg", "detr_encoder_hidden_states")
ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(float16)": "float16"}


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LitetextError(f"{folder} is not an ONNX export (no {MANIFEST})", hint="convert with --target onnx")
    try:
        manifest = json.loads(path.read_text())
        manifest["graphs"][GRAPHS[0]]["inputs"]
        return manifest
    except (ValueError, KeyError, TypeError) as exc:
        raise LitetextError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None


def expected_inputs(manifest: dict, graph: str) -> list[tuple[str, str, list]]:
    """(name, dtype, shape) of a graph's inputs as litetext wrote them, with the context and image
    size the folder's config says (so a graph exported for another context is refused)."""
    return [(i["name"], i["dtype"], i["shape"]) for i in manifest["graphs"][graph]["inputs"]]


class OnnxGraphs:
    def __init__(self, folder: Path, rung: str = "fp32", threads: int | None = None):
        import onnxruntime as ort

        self.folder, self.rung = Path(folder), rung
        self.manifest = read_manifest(folder)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its constant-folding notes are not the user's business
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {name: self._session(name, options) for name in GRAPHS}
        for name in GRAPHS:
            check_interface(self.sessions[name], self.manifest, name, self.path(name))

    def path(self, graph: str) -> Path:
        files = self.manifest["graphs"][graph]["files"]
        if self.rung not in files:
            raise LitetextError(f"{self.folder} has no {self.rung} graphs (it holds {', '.join(files)})",
                                hint="convert with --precision including it")
        return self.folder / GRAPHS_DIR / files[self.rung]

    def _session(self, graph: str, options):
        import onnxruntime as ort

        path = self.path(graph)
        if not path.is_file():
            raise LitetextError(f"{path} is missing: the export is incomplete")
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged graph or data file
            reason = " ".join(str(exc).split())[:200]
            raise LitetextError(f"{path.name} cannot be loaded by onnxruntime: {reason}") from None

    def text(self, input_ids: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.sessions["text_encoder"].run(list(TEXT_OUTPUTS), {"input_ids": input_ids.astype(np.int64)})
        return dict(zip(TEXT_OUTPUTS, outputs))

    def vision(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        session = self.sessions["vision_encoder"]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {"pixel_values": pixel_values.astype(np.float32)})))

    def decoder(self, vision: dict[str, np.ndarray], text_features: np.ndarray, text_mask: np.ndarray,
                boxes: np.ndarray | None = None, box_labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Without boxes: the text-only prompt graphs.json names (one masked dummy box per row)."""
        session = self.sessions["detector_decoder"]
        feeds = {i.name: vision[i.name] for i in session.get_inputs() if i.name in vision}
        feeds.update(text_features=text_features.astype(np.float32), text_mask=text_mask.astype(bool))
        if any(i.name == "input_boxes" for i in session.get_inputs()):
            feeds.update(box_feeds(self.manifest, len(text_features), boxes, box_labels))
        elif boxes is not None:  # an export made before the decoder took boxes
            raise LitetextError(f"{self.path('detector_decoder').name} takes no box prompts (exported by an older litetext)",
                                hint="convert again with --target onnx")
        return dict(zip(DECODER_OUTPUTS, session.run(list(DECODER_OUTPUTS), feeds)))


def box_feeds(manifest: dict, batch: int, boxes: np.ndarray | None, box_labels: np.ndarray | None) -> dict[str, np.ndarray]:
    """input_boxes [batch, boxes, 4] float32 and input_boxes_labels [batch, boxes] int64; without boxes,
    graphs.json's text-only boxes repeated per row; labels default to 1 (positive)."""
    if boxes is None:
        text_only = manifest["text_only_boxes"]
        boxes, box_labels = (np.repeat(np.asarray(text_only[key]), batch, axis=0)
                             for key in ("input_boxes", "input_boxes_labels"))
    boxes = np.asarray(boxes, dtype=np.float32)
    if box_labels is None:
        box_labels = np.ones(boxes.shape[:2], dtype=np.int64)
    return {"input_boxes": boxes, "input_boxes_labels": np.asarray(box_labels, dtype=np.int64)}


def check_interface(session, manifest: dict, graph: str, path: Path) -> None:
    """The graph's inputs are the ones graphs.json names, with their dtypes and shapes."""
    actual = [(i.name, ORT_DTYPES.get(i.type, i.type), [d if isinstance(d, int) else _axis(d) for d in i.shape])
              for i in session.get_inputs()]
    expected = expected_inputs(manifest, graph)
    if actual != expected:
        differing = next(((a, e) for a, e in zip(actual, expected) if a != e), (actual, expected))
        raise LitetextError(f"{path.name}: inputs {_describe(differing[0])} where graphs.json says {_describe(differing[1])}",
                            hint="the graph was edited or replaced after export; convert again")


def _axis(dim) -> str:
    """A symbolic dim as graphs.json names it: "boxes" kept, any other name is the batch."""
    return dim if dim == "boxes" else "batch"


def _describe(value) -> str:
    if isinstance(value, tuple):
        name, dtype, shape = value
        return f"{name} {dtype} {shape}"
    return "; ".join(_describe(v) for v in value) or "none"
