"""`convert --target onnx`: the image target's folder (config, tokenizer, processor, records), with
the detector as ONNX graphs in `onnx/` instead of safetensors weights.

The image target's conversion runs first, into a scratch folder (the same mapping, the same
checks); the model is loaded from it with eager attention (with SDPA the exporter fails on a
reshape in the DETR decoder's cross-attention) and the three graphs of graphs.py are exported with
`torch.onnx.export(dynamo=True)`, batch dynamic. Everything is written inside `atomic_folder`: an
error leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from litetext_convert.errors import LitetextError
from litetext_convert.folder import CONVERSION_RECORD
from litetext_convert.onnx import GRAPHS_DIR, MANIFEST, missing_runtime
from litetext_convert.onnx.precision import fold_weight_transposes, save_model
from litetext_convert.paths import read_config

EXAMPLE_BATCH = 2  # export traces at batch 2 (batch 1 would let the exporter specialise it)
# The image folder's files an ONNX folder does not carry: the weights live in the graphs.
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", CONVERSION_RECORD)


def target_settings() -> dict:
    return read_config("targets/onnx.toml")


RUNGS = tuple(target_settings()["rungs"])  # fp32, fp16, int8


@dataclass
class OnnxExportResult:
    folder: Path
    record: dict
    graphs: list[str]
    seconds: dict[str, float]


def parse_precisions(text: str) -> list[str]:
    """`--precision fp32,fp16,int8`: the rungs asked for, fp32 always first (the others derive from it)."""
    asked = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in asked if name not in RUNGS]
    if unknown or not asked:
        raise LitetextError(f"--precision {text!r}: choose among {', '.join(RUNGS)} (comma-separated)")
    return ["fp32", *[name for name in RUNGS if name in asked and name != "fp32"]]


def load_eager_model(folder: Path):
    from transformers import Sam3LiteTextModel

    model = Sam3LiteTextModel.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32)
    return model.eval().requires_grad_(False)


def example_inputs(model) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs to trace with: zero-padded ids at the model's context, a seeded image."""
    config = model.config
    context = config.text_config.max_position_embeddings
    size = config.vision_config.backbone_config.image_size
    ids = torch.zeros(EXAMPLE_BATCH, context, dtype=torch.long)
    ids[:, :4] = torch.tensor([49406, 320, 1929, 49407])
    pixels = torch.randn(EXAMPLE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    return {"input_ids": (ids,), "pixel_values": (pixels,)}


def graph_names(settings: dict, graph: str) -> tuple[list[str], list[str]]:
    spec = settings["graphs"][graph]
    return list(spec["inputs"]), list(spec["outputs"])


def export_graph(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], external_bytes: int) -> None:
    """One graph, batch dynamic on every input; its weights beside it when they pass protobuf's limit."""
    from litetext_convert.onnx import graphs

    batch = torch.export.Dim("batch", min=1, max=1024)
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    with graphs.roi_align_as_custom_op():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=inputs, output_names=outputs,
            dynamic_shapes=graphs.dynamic_shapes(inputs, batch), verbose=False, report=False,
            custom_translation_table={torch.ops.litetext.roi_align.default: graphs.onnx_roi_align},
            optimize=False,  # the optimizer renames folded weights; precision.py folds them traceably
        )
    model = program.model_proto
    graphs.name_dynamic_axes(model)
    fold_weight_transposes(model)
    save_model(model, path, external=weights > external_bytes)


def export_graphs(model, graphs_dir: Path, settings: dict) -> dict[str, float]:
    """text_encoder, vision_encoder, detector_decoder: fp32, in `graphs_dir`."""
    from litetext_convert.onnx import graphs

    limit = settings["folder"]["external_data_bytes"]
    inputs = example_inputs(model)
    seconds = {}
    text, vision = graphs.TextGraph(model), graphs.VisionGraph(model)
    with torch.no_grad():
        text_features, _ = text(*inputs["input_ids"])
        levels = vision(*inputs["pixel_values"])
    text_mask = inputs["input_ids"][0] != 0
    modules = {
        "text_encoder": (text, inputs["input_ids"]),
        "vision_encoder": (vision, inputs["pixel_values"]),
        "detector_decoder": (graphs.DecoderGraph(model, with_boxes=True),
                             (*levels, text_features, text_mask, *graphs.example_boxes(EXAMPLE_BATCH))),
    }
    for name, (module, args) in modules.items():
        started = time.perf_counter()
        export_graph(module, args, graphs_dir / settings["graphs"][name]["file"], *graph_names(settings, name), limit)
        seconds[f"export_{name}"] = time.perf_counter() - started
    return seconds


def describe_graphs(graphs_dir: Path, settings: dict, rungs: list[str]) -> dict:
    """graphs.json: every graph's inputs and outputs with dtype, shape (read from the graph) and meaning."""
    import onnx

    described = {}
    for name, spec in settings["graphs"].items():
        model = onnx.load(str(graphs_dir / spec["file"]), load_external_data=False)
        described[name] = {
            "files": {rung: rung_file(spec["file"], settings, rung) for rung in rungs},
            "meaning": spec["meaning"],
            "inputs": [_value_info(v, spec["inputs"]) for v in model.graph.input],
            "outputs": [_value_info(v, spec["outputs"]) for v in model.graph.output],
        }
    return described


def rung_file(file: str, settings: dict, rung: str) -> str:
    return file.replace(".onnx", f"{settings['rungs'][rung]['suffix']}.onnx")


def _value_info(value, meanings: dict[str, str]) -> dict:
    import onnx

    tensor = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else _axis_name(value.name, axis) for axis, d in enumerate(tensor.shape.dim)]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return {"name": value.name, "dtype": dtype, "shape": shape, "meaning": meanings.get(value.name, "")}


# ----------------------------------------------------------------------------------------------
# The folder


def export_folder(prepared, folder: Path, *, tokenizer: str | None = None, rungs: list[str] | None = None,
                  force: bool = False, status=None) -> OnnxExportResult:
    """The image conversion into a scratch folder, then the graphs and the rungs into `folder`,
    atomically. `prepared`: plan.prepare's result for the image target."""
    import contextlib

    from litetext_convert.write.convert import convert
    from litetext_convert.folder.ownership import atomic_folder

    reason = missing_runtime()
    if reason:
        raise LitetextError(f"--target onnx needs the ONNX extra: {reason}")
    status = status or (lambda message: contextlib.nullcontext())
    rungs = rungs or ["fp32"]
    settings = target_settings()
    started = time.perf_counter()
    with atomic_folder(folder, force=force, keep=[prepared.resolved.path]) as out, \
            tempfile.TemporaryDirectory(prefix="litetext-onnx-") as scratch:
        with status("converting the image model (the graphs' source)"):
            image = convert(prepared, Path(scratch) / "image", tokenizer=tokenizer, dtype="float32")
        _copy_folder_files(image.folder, out)
        graphs_dir = out / GRAPHS_DIR
        graphs_dir.mkdir()
        with status("exporting the ONNX graphs (torch.onnx, dynamo)"):
            seconds = export_graphs(load_eager_model(image.folder), graphs_dir, settings)
        seconds.update(write_rungs(graphs_dir, settings, rungs, status))
        described = describe_graphs(graphs_dir, settings, rungs)
        (out / MANIFEST).write_text(json.dumps(_manifest(described, prepared, rungs), indent=2) + "\n")
        record = onnx_record(image.record, out, described, rungs, seconds)
        (out / CONVERSION_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    seconds["total"] = time.perf_counter() - started
    return OnnxExportResult(Path(folder), record, [f"{GRAPHS_DIR}/{f}" for g in described.values() for f in g["files"].values()], seconds)


def write_rungs(graphs_dir: Path, settings: dict, rungs: list[str], status) -> dict[str, float]:
    """The reduced rungs, each derived from the fp32 graphs (onnx/precision.py)."""
    seconds = {}
    for rung in rungs:
        if rung == "fp32":
            continue
        from litetext_convert.onnx.precision import write_rung

        started = time.perf_counter()
        with status(f"writing the {rung} graphs"):
            for spec in settings["graphs"].values():
                write_rung(graphs_dir / spec["file"], graphs_dir / rung_file(spec["file"], settings, rung), rung)
        seconds[f"rung_{rung}"] = time.perf_counter() - started
    return seconds


def _copy_folder_files(image_folder: Path, out: Path) -> None:
    """Config, tokenizer, processor: everything of the image folder but its weights and record."""
    for path in sorted(image_folder.iterdir()):
        if path.is_file() and not any(path.match(pattern) for pattern in WEIGHT_FILES):
            shutil.copyfile(path, out / path.name)


def _axis_name(name: str, axis: int) -> str:
    from litetext_convert.onnx.graphs import DYNAMIC_AXES

    return DYNAMIC_AXES.get(name, {}).get(axis, "batch")


def _manifest(described: dict, prepared, rungs: list[str]) -> dict:
    from litetext_convert.onnx.graphs import text_only_boxes

    arch = prepared.arch
    return {
        "format": "litetext onnx export",
        "context_length": arch.context_length,
        "image_size": arch.detector.image_size.value,
        "pad_id": 0,
        "rungs": rungs,
        "text_only_prompt": "pass text_only_boxes to the decoder: one masked dummy box, which runs the geometry "
                            "encoder on its CLS token alone (Meta's text-only prompt)",
        "text_only_boxes": text_only_boxes(),
        "graphs": described,
    }


def onnx_record(image_record: dict, out: Path, described: dict, rungs: list[str], seconds: dict) -> dict:
    """The image conversion's record, re-aimed at the ONNX target, with every file it wrote."""
    import onnx

    record = dict(image_record)
    record["target"] = {**image_record["target"], "name": "onnx", "runtime": "onnxruntime",
                        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}, onnx {onnx.__version__}",
                        "attention": "eager"}
    record["onnx"] = {"rungs": rungs, "graphs": {name: g["files"] for name, g in described.items()}, "seconds": seconds}
    record["files"] = sorted([*(p.name for p in out.iterdir()), CONVERSION_RECORD])
    return record
