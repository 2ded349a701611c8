"""Which int8-quantized weights cost the detections? (issue 24: the int8 rung's budget)

    python scripts/int8_sensitivity.py FOLDER --workdir /tmp/int8-sens [--groups decoder.heads,text]

FOLDER: an ONNX export holding the fp32 graphs. The reference is the fp32 graphs in onnxruntime on
parity's seeded image and ids (seed 0): parity proves them equal to Meta's detector within float32
rounding, and the cost of a quantized group is what it moves away from them. Each row swaps int8 in
for one part only (everything else fp32): a whole graph, or one group of weights inside a graph
(quantize_dynamic with only that group's MatMul nodes). Printed per row: top-10 kept, mask IoU
min/mean, box and score max abs, and how far the scores move per query against how far apart the
reference's top-10 scores are (the near-tie check). One JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Groups of weights inside the graphs: (graph, fnmatch patterns on the weight's name).
GROUPS = {
    "text": ("text_encoder", ["*"]),
    "text.attention": ("text_encoder", ["*self_attn*"]),
    "text.mlp": ("text_encoder", ["*mlp*"]),
    "text.projections": ("text_encoder", ["*projection*"]),
    "vision": ("vision_encoder", ["*"]),
    "vision.attention": ("vision_encoder", ["*attention*"]),
    "vision.mlp": ("vision_encoder", ["*mlp*"]),
    "decoder": ("detector_decoder", ["*"]),
    "decoder.geometry": ("detector_decoder", ["*geometry_encoder*"]),
    "decoder.detr_encoder": ("detector_decoder", ["*detr_encoder*"]),
    "decoder.detr_decoder.layers": ("detector_decoder", ["*detr_decoder.layers*"]),
    "decoder.detr_decoder.heads": ("detector_decoder", ["*detr_decoder.box*", "*detr_decoder.presence*", "*ref_point_head*"]),
    "decoder.scoring": ("detector_decoder", ["*dot_product_scoring*"]),
    "decoder.mask": ("detector_decoder", ["*mask_decoder*"]),
}


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_graph(graph: str, path: Path, feeds: dict, threads: int) -> dict[str, np.ndarray]:
    runner = session(path, threads)
    names = [o.name for o in runner.get_outputs()]
    wanted = {i.name for i in runner.get_inputs()}
    outputs = dict(zip(names, runner.run(names, {k: v for k, v in feeds.items() if k in wanted})))
    del runner
    return outputs


def quantized_group(fp32: Path, workdir: Path, name: str, patterns: list[str]) -> Path:
    """The graph with only the group's MatMul/Gemm weights quantized (the rung's own settings)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from litetext_convert.onnx.precision import INT8_OPS, is_external, nodes_reading

    out = workdir / f"{name}.onnx"
    whole = fp32.with_name(fp32.name.replace(".onnx", "_int8.onnx"))
    if patterns == ["*"] and whole.exists():
        return whole  # the export's own int8 graph: every weight of the graph quantized
    if not out.exists():
        nodes = nodes_reading(onnx.load(str(fp32), load_external_data=False), patterns)
        quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(INT8_OPS), nodes_to_quantize=nodes,
                         use_external_data_format=is_external(fp32), extra_options={"MatMulConstBOnly": True})
    return out


def rung_graph(fp32: Path, workdir: Path, keep: list[str]) -> Path:
    """The rung's graph as convert would write it with these patterns; the export's own int8 graph
    when no weight of this graph is kept (the same quantization)."""
    import onnx

    from litetext_convert.onnx.precision import nodes_reading, write_int8

    if not nodes_reading(onnx.load(str(fp32), load_external_data=False), keep):
        return fp32.with_name(fp32.name.replace(".onnx", "_int8.onnx"))
    out = workdir / ("keep-" + str(abs(hash(tuple(keep)))) + "-" + fp32.name)
    if not out.exists():
        write_int8(fp32, out, keep)
    return out


def graph_bytes(path: Path) -> int:
    data = Path(str(path) + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def stage_cosines(reference: dict, candidate: dict) -> dict:
    names = ("fpn_0", "fpn_1", "fpn_2", "text_features", "detr_encoder_hidden_states", "pred_boxes", "semantic_seg")
    return {f"cosine {name}": cosine(reference[name], candidate[name]) for name in names}


def detections(reference: dict, candidate: dict) -> dict:
    import torch

    from litetext_convert.parity.precision import detections_kept

    as_torch = lambda stages: {k: torch.from_numpy(np.ascontiguousarray(stages[k])) for k in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")}
    row = detections_kept(as_torch(reference), as_torch(candidate), 10)
    ref, cand = scores(reference), scores(candidate)
    top = np.sort(ref)[::-1]
    moved = (cand - ref) - (cand - ref).mean()  # per-query movement, the common shift taken out
    row.update(score_top10_spread=float(top[0] - top[9]), score_gap_10_11=float(top[9] - top[10]),
               score_move_std=float(moved.std()), score_spread_std=float(ref.std()),
               score_correlation=float(np.corrcoef(ref, cand)[0, 1]),
               logits_cosine=cosine(reference["pred_logits"], candidate["pred_logits"]),
               masks_cosine=cosine(reference["pred_masks"], candidate["pred_masks"]))
    return row


def scores(stages: dict) -> np.ndarray:
    logits = stages["pred_logits"][0].astype(np.float64).reshape(-1)
    presence = float(stages["presence_logits"].reshape(-1)[0])
    return 1 / (1 + np.exp(-logits)) / (1 + np.exp(-presence))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-float", help="comma-separated patterns: one row for the whole rung with these kept in float32")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from litetext_convert.parity.detector import seeded_image, seeded_input_ids

    manifest = json.loads((args.folder / "onnx" / "graphs.json").read_text())
    files = {g: args.folder / "onnx" / spec["files"]["fp32"] for g, spec in manifest["graphs"].items()}
    pixels = seeded_image(int(manifest["image_size"]), 0).numpy()
    ids = seeded_input_ids(int(manifest["context_length"]), 49408, 0).numpy()
    cache = args.workdir / "fp32.npz"
    if not cache.exists():
        np.savez(cache, **forward(files, pixels, ids, args.threads, {}))
    reference = dict(np.load(cache))
    print(json.dumps({"reference": "fp32 graphs", "scores_top11": np.sort(scores(reference))[::-1][:11].round(6).tolist()}), flush=True)
    if args.keep_float is not None:  # a candidate rung: every graph quantized except the kept patterns
        keep = [p for p in args.keep_float.split(",") if p]
        started = time.perf_counter()
        swapped = {graph: rung_graph(path, args.workdir, keep) for graph, path in files.items()}
        candidate = forward(files, pixels, ids, args.threads, swapped, reference, args.workdir)
        row = {"keep_float": keep, **detections(reference, candidate), **stage_cosines(reference, candidate),
               "int8_bytes": sum(graph_bytes(p) for p in swapped.values()), "fp32_bytes": sum(graph_bytes(p) for p in files.values()),
               "seconds": round(time.perf_counter() - started, 1)}
        row["share"] = row["int8_bytes"] / row["fp32_bytes"]
        print(json.dumps(row), flush=True)
        return
    for name in args.groups.split(","):
        graph, patterns = GROUPS[name]
        started = time.perf_counter()
        path = quantized_group(files[graph], args.workdir, name, patterns)
        candidate = forward(files, pixels, ids, args.threads, {graph: path}, reference, args.workdir)
        row = {"group": name, **detections(reference, candidate), "seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)


def cached_vision(path: Path, pixels, threads: int, workdir: Path | None) -> dict:
    """The vision graph's outputs, kept in workdir per graph file (the slow graph at full size)."""
    cache = workdir / f"vision-{path.name}.npz" if workdir else None
    if cache and cache.exists():
        return dict(np.load(cache))
    vision = run_graph("vision_encoder", path, {"pixel_values": pixels}, threads)
    if cache:
        np.savez(cache, **vision)
    return vision


def forward(files: dict, pixels, ids, threads: int, swapped: dict, reference: dict | None = None,
            workdir: Path | None = None) -> dict:
    """The three graphs; a graph not swapped reuses the reference's outputs when it has them."""
    reuse = reference is not None
    if reuse and "vision_encoder" not in swapped:
        vision = {k: reference[k] for k in ("fpn_0", "fpn_1", "fpn_2", "position_encoding")}
    else:
        vision = cached_vision(swapped.get("vision_encoder", files["vision_encoder"]), pixels, threads, workdir)
    if reuse and "text_encoder" not in swapped:
        text = {"text_features": reference["text_features"]}
    else:
        text = run_graph("text_encoder", swapped.get("text_encoder", files["text_encoder"]), {"input_ids": ids}, threads)
    feeds = {**vision, "text_features": text["text_features"], "text_mask": ids != 0}
    decoded = run_graph("detector_decoder", swapped.get("detector_decoder", files["detector_decoder"]), feeds, threads)
    return {**vision, "text_features": text["text_features"], **decoded}


if __name__ == "__main__":
    main()
