"""Parity of an ONNX folder: its graphs in onnxruntime (CPU) against the ORIGINAL sides.

- text (core environment): the original text encoder (upstream fork, else the clean-room
  reference) on zero-padded ids at the model's context, against text_encoder.onnx: the
  detector-facing features and the pooled output, float32 tolerances of configs/tolerances.toml;
- detector (original environment): Meta's sam3 detector built from the checkpoint exactly as
  parity/detector.py builds it, against the three graphs on the same image and ids: every FPN
  level, the text features, the DETR encoder output, boxes, logits, presence, masks, semantic seg,
  at the float32 detector tolerances;
- every rung: exactness of every weight (onnx/exactness.py, a verdict) and, for fp16/int8, what
  the rung costs against the original in float32, judged against the rung's budget
  ([onnx.<rung>] in configs/tolerances.toml).

What is proven at what precision: float32 only. onnxruntime's CPU kernels have no float64 for
every operator the graphs use, so the float64 meaning check of the transformers folder has no ONNX
counterpart; float32 parity bounds rounding of two implementations, as for the transformers folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from litetext_convert.errors import LitetextError
from litetext_convert.parity.compare import StageDiff, compare
from litetext_convert import dtypes

TOP_K = 10
DETECTOR_STAGES = ("vision.fpn.0", "vision.fpn.1", "vision.fpn.2", "text.features", "detr.encoder",
                   "pred_boxes", "pred_logits", "presence_logits", "pred_masks", "semantic_seg")
RUNG_DTYPE = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


def verdict_row(name: str, passed: bool, note: str) -> StageDiff:
    """A pass/fail row (exactness, a budget) in the shape of a compared stage."""
    return StageDiff(name, 0.0, 0.0, 0.0, 1.0, 0.0, [], passed, 0.0, 0.0, note)


SMALL_VIT_WIDTH = 256  # below it, a synthetic test model (tiny: 48 wide); every released model is 1024 wide


def budgets(rung: str, small: bool = False) -> dict:
    """[onnx.<rung>] of configs/tolerances.toml; for a small synthetic model its [onnx.<rung>.small]
    replaces what it names (8-wide layers and 32 x 32 masks quantize far worse than a real model)."""
    from litetext_convert.paths import read_config

    table = dict(read_config("tolerances.toml").get("onnx", {}).get(rung, {}))
    smaller = table.pop("small", {})
    return {**table, **smaller} if small else table


def is_small(prepared) -> bool:
    return int(prepared.config.vision_config.backbone_config.hidden_size) < SMALL_VIT_WIDTH


def expected_weights(prepared) -> dict[str, np.ndarray]:
    """Target name -> numpy array: the source re-read from its file and passed through the mapping's
    operations (what the image folder's safetensors would hold, computed again from the checkpoint)."""
    from litetext_convert.parity.precision import reread_source
    from litetext_convert.plan import ops

    source = reread_source(prepared)
    expected = {}
    for step in prepared.plan.steps:
        outputs = ops.apply_gathered(list(step.ops), [source[key] for key in step.sources], prepared.ctx)
        for target, output in zip(step.targets, outputs):
            expected[target] = output.detach().contiguous().numpy().copy()
    return expected


# ----------------------------------------------------------------------------------------------
# Inputs


def text_inputs(context: int, vocab: int, batch: int, seed: int) -> torch.Tensor:
    """Zero-padded rows of different lengths (padding is where the recipes matter) and one full row."""
    from litetext_convert.parity.detector import seeded_input_ids
    from litetext_convert.parity.text import dummy_ids

    rows = [seeded_input_ids(context, vocab, seed + row, words=1 + 2 * row) for row in range(batch)]
    return torch.cat([*rows, dummy_ids(1, context, seed)])


# ----------------------------------------------------------------------------------------------
# The ONNX side (numpy; what the torch-free example computes)


def onnx_side(graphs, pixel_values: np.ndarray | None, input_ids: np.ndarray, boxes: np.ndarray | None = None,
              box_labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stage name -> array, as parity names them: text only when pixel_values is None. Without boxes
    the decoder gets the text-only prompt (graphs.json's masked dummy box)."""
    text = graphs.text(input_ids)
    stages = {"text.features": text["text_features"], "text.pooled": text["pooled_output"]}
    if pixel_values is None:
        return stages
    vision = graphs.vision(pixel_values)
    detections = graphs.decoder(vision, text["text_features"], input_ids != 0, boxes, box_labels)
    stages.update({f"vision.fpn.{level}": vision[f"fpn_{level}"] for level in range(3)})
    stages["detr.encoder"] = detections["detr_encoder_hidden_states"]
    stages["pred_boxes"] = cxcywh_to_xyxy(detections["pred_boxes"])  # Meta's stage is xyxy
    stages["pred_boxes_cxcywh"] = detections["pred_boxes"]
    for name in ("pred_logits", "presence_logits", "pred_masks", "semantic_seg"):
        stages[name] = detections[name]
    return stages


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.moveaxis(boxes, -1, 0)
    return np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), axis=-1)


# ----------------------------------------------------------------------------------------------
# Text


def original_text(prepared, ids: torch.Tensor):
    from litetext_convert.parity.text import original_text_side, text_state_dict

    side = original_text_side(text_state_dict(prepared), prepared.arch, torch.float32, [ids])
    return side.outputs[0], side.info


def prompt_part(prepared, folder: Path, graphs, prompts: list[str]) -> tuple[list[StageDiff], dict, list]:
    """`--prompt`: each side tokenizes the prompts with its own tokenizer (the original: upstream's
    algorithm on the folder's merges; the ONNX side: the folder's tokenizer.json, padded with 0 at the
    model's context, as the torch-free example does), then the original text encoder against
    text_encoder.onnx. Rows, the tokenizer report, the folder tokenizer's ids."""
    from litetext_convert.parity.text import hf_tokenizer, load_original_tokenizer, tokenize_hf, tokenizer_equivalence

    context = prepared.arch.context_length
    report = tokenizer_equivalence(folder, context, prompts)
    original_tokenizer, _ = load_original_tokenizer(folder)
    ours_ids, _ = tokenize_hf(hf_tokenizer(folder, context), prompts, context)
    trace, _ = original_text(prepared, original_tokenizer(prompts, context))
    rows = text_stages(trace, onnx_side(graphs, None, ours_ids.numpy()), prefix="onnx.prompts")
    return rows, report, ours_ids.tolist()


def text_stages(trace, ours: dict[str, np.ndarray], prefix: str = "onnx") -> list[StageDiff]:
    atol, rtol = dtypes.tolerances("float32", "text")
    return [
        compare(f"{prefix}.text.features (detector-facing)", trace.text_features, torch.from_numpy(ours["text.features"]),
                atol=atol, rtol=rtol),
        compare(f"{prefix}.text.pooled (CLIP-style)", trace.pooled, torch.from_numpy(ours["text.pooled"]), atol=atol, rtol=rtol),
    ]


# ----------------------------------------------------------------------------------------------
# Detector


def original_detector(prepared, pixel_values: torch.Tensor, ids: torch.Tensor, boxes: torch.Tensor | None = None):
    """Meta's detector exactly as detector parity runs it (parity/detector.py: run_original); boxes
    [1, N, 4] cxcywh normalised, labelled positive, or None for the text-only prompt."""
    from litetext_convert.parity.detector import run_original

    return run_original(prepared, torch.float32, pixel_values, ids, boxes, None)


def detector_stages(reference: dict[str, torch.Tensor], ours: dict[str, np.ndarray]) -> list[StageDiff]:
    from litetext_convert.parity.detector import compare_stages

    wanted = {name: reference[name] for name in DETECTOR_STAGES if name in reference}
    return compare_stages(wanted, {name: torch.from_numpy(np.ascontiguousarray(ours[name])) for name in wanted}, "float32")


def rung_cost(reference: dict[str, torch.Tensor], ours: dict[str, np.ndarray]) -> dict:
    """A reduced rung against the original in float32: per stage numbers, and detections when the detector ran."""
    from litetext_convert.parity.precision import detections_kept, measure

    candidate = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in ours.items()}
    names = [name for name in (*DETECTOR_STAGES, "text.pooled") if name in reference and name in candidate]
    cost = {"against": "original, float32", "stages": [measure(name, reference[name], candidate[name]) for name in names]}
    if "pred_logits" in reference:
        cost["detections"] = {**detections_kept(reference, candidate, TOP_K),
                              "score_correlation": score_correlation(reference, candidate)}
    return cost


def score_correlation(reference: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> float:
    """Pearson correlation of the per-query scores (sigmoid(logit) x sigmoid(presence)) over every
    query: whether the rung keeps which queries score above which, as a whole. Unlike top-k kept it
    does not hang on near-ties at the k-th place (synthetic weights score every query alike)."""
    def scores(stages):
        presence = stages["presence_logits"].double().reshape(-1)[:1].sigmoid()
        return (stages["pred_logits"][0].double().reshape(-1).sigmoid() * presence).numpy()

    return float(np.corrcoef(scores(reference), scores(candidate))[0, 1])


def budget_rows(cost: dict, rung: str, small: bool = False) -> list[StageDiff]:
    """Each budget of [onnx.<rung>] as a pass/fail row; a rung without a budget fails (never silently free)."""
    budget = budgets(rung, small)
    if not budget:
        return [verdict_row(f"{rung}.budget", False, f"no [onnx.{rung}] budget in configs/tolerances.toml")]
    cosines = {row["name"]: row["cosine"] for row in cost["stages"]}
    rows = []
    for stage, minimum in budget.get("cosine_min", {}).items():
        if stage in cosines:
            value = cosines[stage]
            rows.append(verdict_row(f"{rung}.budget {stage} cosine", value >= minimum, f"{value:.6f} (budget >= {minimum})"))
    detections = cost.get("detections")
    checks = (("kept", "top_k_kept_min", ">="), ("mask_iou_min", "mask_iou_min", ">="),
              ("score_correlation", "score_correlation_min", ">="),
              ("box_max_abs", "box_max_abs", "<="), ("score_max_abs", "score_max_abs", "<="))
    for field, key, sense in checks if detections else ():
        if key in budget:
            value, limit = detections[field], budget[key]
            passed = value >= limit if sense == ">=" else value <= limit
            rows.append(verdict_row(f"{rung}.budget detections {field}", passed, f"{value:.6g} (budget {sense} {limit})"))
    return rows


# ----------------------------------------------------------------------------------------------
# Memory: one rung's sessions at a time


class OneRungAtATime:
    """`graphs[rung]`: that rung's sessions, built on first use; any other rung's are freed first
    (so use it in place: a variable still naming the last rung keeps it alive while the next loads).
    A full-size rung holds its weights (1.8 GB for the fp32 vision encoder; fp16's about as much:
    onnxruntime folds its Casts of constant weights to float32 at load) and its sessions' working memory, so every rung alive at once, next to
    Meta's model, was most of the 18.6 GB peak. Built with every rung checked (interfaces, loadable
    data) one at a time, before anything runs; sessions without onnxruntime's arena, which would keep
    each graph's largest activations (the vision encoder's attention) after its run."""

    def __init__(self, folder: Path, rungs: list[str]):
        self.folder, self.rungs, self.held = folder, list(rungs), None
        for rung in self.rungs:
            self[rung]
        self.release()

    def __getitem__(self, rung: str):
        from litetext_convert.onnx.runtime import OnnxGraphs

        if self.held is None or self.held.rung != rung:
            self.release()
            self.held = OnnxGraphs(self.folder, rung, arena=False)
        return self.held

    def __iter__(self):
        return iter(self.rungs)

    def release(self) -> None:
        import gc

        self.held = None
        gc.collect()


# ----------------------------------------------------------------------------------------------
# Entry point


def run_onnx_parity(prepared, folder: Path, *, scope: str, seed: int = 0, batch: int = 2, image: Path | None = None,
                    status=None, prompts: list[str] | None = None, boxes: list[list[float]] | None = None,
                    keep_outputs: bool = False, debug: bool = False) -> dict:
    """The record of one parity run on an ONNX folder (every rung it holds), in the record shape of
    the other targets: `stages` (text + exactness + budgets), `detector` (when the scope runs it).
    `prompts`: also real prompts through both tokenizers and text encoders; `boxes`: the detector's
    box prompts (else the text-only prompt); `keep_outputs`: the pictures --plot draws, in memory."""
    import contextlib

    from litetext_convert.onnx.exactness import check_export
    from litetext_convert.onnx.runtime import read_manifest

    status = status or (lambda message: contextlib.nullcontext())
    started = time.perf_counter()
    manifest = read_manifest(folder)
    check_context(manifest, prepared, folder)
    rungs = list(manifest.get("rungs", ["fp32"]))
    graphs = OneRungAtATime(folder, rungs)  # every interface checked before anything runs
    with status("exactness of every graph's weights"):
        exactness = check_export(expected_weights(prepared), set(prepared.plan.filled), folder,
                                 {g: v["files"] for g, v in manifest["graphs"].items()}, rungs)
    stages = [verdict_row("onnx.weights (exactness, every rung)", exactness["passed"],
                          f"{exactness['checked']} weights checked, {exactness['mismatched']} differ")]
    vocab = int(prepared.config.text_config.vocab_size)
    ids = text_inputs(prepared.arch.context_length, vocab, batch, seed)
    with status("text: the original encoder and text_encoder.onnx"):
        trace, original_info = original_text(prepared, ids)
        ours = {rung: onnx_side(graphs[rung], None, ids.numpy()) for rung in rungs}
        graphs.release()
    stages += text_stages(trace, ours["fp32"])
    tokenizer, prompt_ids = None, None
    if prompts:
        with status("prompts: both tokenizers, the original encoder and text_encoder.onnx"):
            prompt_rows, tokenizer, prompt_ids = prompt_part(prepared, folder, graphs["fp32"], prompts)
        stages += prompt_rows
    text_reference = {"text.features": trace.text_features, "text.pooled": trace.pooled}
    costs = {rung: rung_cost(text_reference, ours[rung]) for rung in rungs[1:]}
    detector, picture = None, None
    if scope in ("detector", "all"):
        with status("whole detector: Meta's sam3 and the three graphs (the slow part)"):
            detector, picture = detector_part(prepared, manifest, graphs, seed, image, costs, boxes)
    for rung in rungs[1:]:
        stages += budget_rows(costs[rung], rung, is_small(prepared))
    debug_record = debug_part(prepared, folder, graphs["fp32"], scope=scope, seed=seed, batch=batch, image=image,
                              boxes=boxes, status=status) if debug else None
    if debug_record:
        stages.append(debug_row(debug_record))
    tolerance = dtypes.tolerances("float32", "text")
    record = {
        "scope": scope, "dtype": "float32", "target": "onnx", "rungs": rungs, "atol": tolerance[0], "rtol": tolerance[1],
        "original": original_info, "runtime": runtime_name(),
        "inputs": record_inputs(prepared, ids, seed, prompts, prompt_ids),
        "stages": [s.to_json() for s in stages], "tokenizer": tokenizer, "padded_prompts": None, "detector": detector,
        "onnx": {"exactness": exactness, "costs": costs, "precision_proven": PRECISION_NOTE, "debug": debug_record},
        "notes": list(prepared.arch.notes), "seconds": time.perf_counter() - started,
    }
    if keep_outputs and picture is not None:
        record["_detector_outputs"] = picture  # in memory only: what --plot draws
    return record


def record_inputs(prepared, ids: torch.Tensor, seed: int, prompts: list[str] | None, prompt_ids: list | None) -> dict:
    inputs = {"kind": "zero-padded seeded ids and one full row", "batch": int(ids.shape[0]), "seed": seed,
              "context_length": prepared.arch.context_length, "input_ids": ids.tolist()}
    if prompts:
        inputs.update(prompts=list(prompts), prompt_ids=prompt_ids)
    return inputs


PRECISION_NOTE = ("float32: onnxruntime (CPU) against the original in float32, at the float32 tolerances of the "
                  "transformers folder; no float64 run (onnxruntime lacks float64 kernels for several operators "
                  "these graphs use). fp16/int8: exactness of the stored weights (bit for bit) and their cost against "
                  "the float32 original, within the rung's budget.")


def detector_part(prepared, manifest: dict, graphs: dict, seed: int, image: Path | None, costs: dict,
                  boxes: list[list[float]] | None = None) -> tuple[dict, dict]:
    """Meta's detector and the graphs on one image and ids, with `boxes` (positive, cxcywh normalised)
    or the text-only prompt. The detector's part of the record, and the pictures --plot draws."""
    from litetext_convert.parity.detector import describe_tolerances, load_image, seeded_image, seeded_input_ids
    from litetext_convert.parity.plot import picture_inputs
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"whole-detector parity needs the original detector: {reason}")
    size = int(manifest["image_size"])
    pixels = load_image(image, size) if image else seeded_image(size, seed)
    ids = seeded_input_ids(prepared.arch.context_length, int(prepared.config.text_config.vocab_size), seed)
    box_tensor = torch.tensor([boxes], dtype=torch.float32) if boxes else None  # [1, N, 4]; labels: positive
    original = original_detector(prepared, pixels, ids, box_tensor)
    reference = original.outputs
    box_array = box_tensor.numpy() if boxes else None
    ours = {rung: onnx_side(graphs[rung], pixels.numpy(), ids.numpy(), box_array) for rung in graphs}  # no name keeps a rung alive
    graphs.release()
    stages = detector_stages(reference, ours["fp32"])
    for rung in list(graphs)[1:]:  # the detector's numbers join the text's (text.pooled is the text run's own)
        detector_cost = rung_cost(reference, ours[rung])
        text_rows = [row for row in costs[rung]["stages"] if row["name"] == "text.pooled"]
        costs[rung] = {**detector_cost, "stages": detector_cost["stages"] + text_rows}
    picture = picture_inputs(pixels, reference, {name: torch.from_numpy(np.ascontiguousarray(ours["fp32"][name]))
                                                 for name in ("pred_logits", "pred_masks", "pred_boxes")})
    return {
        "scope": "detector", "dtype": "float32", "passed": all(s.passed for s in stages),
        "original": original.info["name"], "candidate": f"onnxruntime {runtime_name()}, {manifest['graphs']['detector_decoder']['files']['fp32']}",
        "stages": [s.to_json() for s in stages],
        "naive_text_only": {"meaning": "not applicable: the decoder graph always runs the geometry encoder (text-only "
                                       "callers pass the masked dummy box)", "stages": []},
        "tolerances": describe_tolerances("float32"), "workarounds": list(original.info["workarounds"]),
        "seconds": dict(original.seconds),
        "facts": {"image": str(image) if image else f"seeded random 8-bit image, seed {seed}", "image_size": size,
                  "input_ids": ids.tolist(), "boxes": boxes or [],
                  "onnx_prompt": "user boxes, labelled positive" if boxes else "text only: graphs.json's masked dummy box",
                  "pred_boxes": "the graph's cxcywh converted to xyxy (numpy) to meet Meta's xyxy"},
    }, picture


def check_context(manifest: dict, prepared, folder: Path) -> None:
    """The graphs' context is the checkpoint's: a text graph exported for another context is refused."""
    context = prepared.arch.context_length
    shape = next(i["shape"] for i in manifest["graphs"]["text_encoder"]["inputs"] if i["name"] == "input_ids")
    if manifest.get("context_length") != context or shape[-1] != context:
        raise LitetextError(f"{folder}: the text graph takes {shape[-1]} tokens but the checkpoint's context is {context}",
                            hint="export again from this checkpoint (convert --target onnx)")


def runtime_name() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"


def parity_on_folder(prepared, folder: Path, *, scope: str, seed: int, batch: int, image: Path | None,
                     prompts: list[str], notes: list[str] | None = None, status=None,
                     boxes: list[list[float]] | None = None, keep_outputs: bool = False, debug: bool = False) -> dict:
    """The parity record of an ONNX folder (not bound, not written: workflows/prove.py keeps it)."""
    from litetext_convert import __version__
    from litetext_convert.folder import prompt_set, record_key
    from litetext_convert.folder.verdict import record_verdict
    from litetext_convert.onnx import missing_runtime
    from litetext_convert.folder.records import PARITY_SCHEMA

    reason = missing_runtime()
    if reason:
        raise LitetextError(f"parity of an ONNX export needs the ONNX extra: {reason}")
    record = {"tool": {"name": "litetext", "version": __version__}, "schema": PARITY_SCHEMA,
              **run_onnx_parity(prepared, folder, scope=scope, seed=seed, batch=batch, image=image, status=status,
                                prompts=prompts, boxes=boxes, keep_outputs=keep_outputs, debug=debug)}
    record["prompt_set"] = prompt_set(prompts)
    record["notes"] = list(notes or []) + record.get("notes", [])
    record.update(record_verdict(record).to_json())
    record["key"] = record_key(record)
    return record


def measure_onnx(prepared, folder: Path, request, notes: list[str], status=None) -> dict:
    """`litetext parity FOLDER` on an ONNX export (parity/run.measure sends it here). What this target
    cannot do is refused in one line, never ignored."""
    refused = {"--dtype other than float32 (onnxruntime proves float32)": dtypes.canonical(request.dtype) != "float32",
               "--atol/--rtol (the ONNX folder is proven at the configured float32 tolerances)":
                   request.atol is not None or request.rtol is not None}
    for option, asked in refused.items():
        if asked:
            raise LitetextError(f"{option} is not supported on an ONNX folder")
    if request.boxes and request.scope not in ("detector", "all"):
        raise LitetextError("--box prompts the detector: give --scope detector too")
    return parity_on_folder(prepared, Path(folder), scope=request.scope, seed=request.seed, batch=request.batch,
                            image=request.image, prompts=request.prompts, notes=notes, status=status,
                            boxes=request.boxes, keep_outputs=request.keep_outputs, debug=request.debug_intermediates)


# ----------------------------------------------------------------------------------------------
# --debug-intermediates: per-layer rows from debug graphs (onnx/debug.py), named as the transformers
# folder's report names them, row for row


DEBUG_PRECISION = ("float32: onnxruntime (CPU) against the original in float32, at the transformers folder's float32 "
                   "tolerances; no float64 (onnxruntime lacks float64 kernels for several operators these graphs use)")
DEBUG_GRAPHS = ("text_encoder (and, for the detector scope, detector_decoder) re-exported from the checkpoint with every "
                "text layer and every DETR decoder layer as outputs, into a temporary folder removed after the run; "
                "the FPN levels are the folder's own vision_encoder's; the folder's graphs are only read")


def debug_part(prepared, folder: Path, graphs, *, scope: str, seed: int, batch: int, image: Path | None,
               boxes: list[list[float]] | None, status) -> dict:
    """Export the debug graphs, run them beside the original on parity's own inputs, and check that
    their production outputs equal the folder's graphs' (so the per-layer rows speak for the folder)."""
    import contextlib

    from litetext_convert.onnx.debug import DebugGraphs, export_debug_graphs
    from litetext_convert.parity.compare import first_failure
    from litetext_convert.scratch import scratch_folder

    status = status or (lambda message: contextlib.nullcontext())
    started = time.perf_counter()
    with_detector = scope in ("detector", "all")
    with scratch_folder("onnx-debug") as scratch:  # removed on the way out, errors included
        export = export_debug_graphs(prepared, scratch, tokenizer=str(folder), with_decoder=with_detector, status=status)
        debug = DebugGraphs(export)
        with status("debug graphs: every text layer against the original"):
            text_rows, tie = debug_text_rows(prepared, graphs, debug, batch, seed)
        detector_rows = []
        if with_detector:
            with status("debug graphs: every DETR decoder layer against Meta's detector"):
                detector_rows, detector_tie = debug_detector_rows(prepared, graphs, debug, seed, image, boxes)
            tie += detector_tie
        del debug  # the sessions hold the scratch files open
    failure = first_failure([*text_rows, *detector_rows, *tie])
    return {
        "graphs": DEBUG_GRAPHS, "precision": DEBUG_PRECISION, "layer_kinds": export.layer_kinds,
        "text": {"stages": [row.to_json() for row in text_rows]},
        "detector": {"stages": [row.to_json() for row in detector_rows]} if with_detector else None,
        "same_as_folder": [row.to_json() for row in tie],
        "passed": failure is None, "first_failure": failure.name if failure else None,
        "seconds": {**export.seconds, "total": time.perf_counter() - started},
    }


def debug_text_rows(prepared, graphs, debug, batch: int, seed: int) -> tuple[list[StageDiff], list[StageDiff]]:
    """The text parity's ids (padded rows and a full one): every stage of parity/text.py's compare_text,
    the padding mask being the one the ONNX detector gets (text_mask = ids != 0)."""
    from litetext_convert.parity.text import compare_text

    ids = text_inputs(prepared.arch.context_length, int(prepared.config.text_config.vocab_size), batch, seed)
    trace, _ = original_text(prepared, ids)
    ours = debug.text(ids.numpy())
    atol, rtol = dtypes.tolerances("float32", "text")
    rows = compare_text(trace, ours, ids != 0, debug.export.layer_kinds, atol, rtol)
    folder_side = graphs.text(ids.numpy())
    tie = [compare(f"debug graph = folder graph: text_encoder {name}", torch.from_numpy(folder_side[name]), ours[key],
                   atol=atol, rtol=rtol) for name, key in (("text_features", "text_features"), ("pooled_output", "pooled"))]
    return rows, tie


def debug_detector_rows(prepared, graphs, debug, seed: int, image: Path | None,
                        boxes: list[list[float]] | None) -> tuple[list[StageDiff], list[StageDiff]]:
    """detector_part's image, ids and boxes (else the text-only prompt); every stage Meta's detector reports, compared as parity/detector.py
    compares the transformers side (so the rows and their tolerances are the same)."""
    from litetext_convert.onnx.debug import DECODER_OUTPUTS, decoder_stages
    from litetext_convert.onnx.runtime import box_feeds
    from litetext_convert.parity.detector import compare_stages, load_image, seeded_image, seeded_input_ids
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"whole-detector parity needs the original detector: {reason}")
    size = int(graphs.manifest["image_size"])
    pixels = load_image(image, size) if image else seeded_image(size, seed)
    ids = seeded_input_ids(prepared.arch.context_length, int(prepared.config.text_config.vocab_size), seed)
    box_tensor = torch.tensor([boxes], dtype=torch.float32) if boxes else None  # [1, N, 4]; labels: positive
    reference = original_detector(prepared, pixels, ids, box_tensor).outputs
    vision = graphs.vision(pixels.numpy())
    text_features = debug.text(ids.numpy())["text_features"].numpy()
    box_array = box_tensor.numpy() if boxes else None
    outputs = debug.decoder(vision, text_features, ids.numpy() != 0, box_feeds(graphs.manifest, 1, box_array, None))
    ours = {**{f"vision.fpn.{level}": vision[f"fpn_{level}"] for level in range(3)}, "text.features": text_features,
            **decoder_stages(outputs), "pred_boxes": cxcywh_to_xyxy(outputs["pred_boxes"])}
    ours.update({name: outputs[name] for name in ("pred_logits", "presence_logits", "pred_masks", "semantic_seg")})
    rows = compare_stages(reference, {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in ours.items()}, "float32")
    folder_side = graphs.decoder(vision, text_features, ids.numpy() != 0, box_array)
    tie = compare_stages({f"debug graph = folder graph: detector_decoder {name}": torch.from_numpy(folder_side[name])
                          for name in DECODER_OUTPUTS},
                         {f"debug graph = folder graph: detector_decoder {name}": torch.from_numpy(outputs[name])
                          for name in DECODER_OUTPUTS}, "float32")
    return rows, tie


def debug_row(debug: dict) -> StageDiff:
    """The debug graphs' verdict as one row of the record's stages: a failure names its first stage."""
    rows = len(debug["text"]["stages"]) + len((debug["detector"] or {}).get("stages", []))
    if debug["passed"]:
        return verdict_row("onnx.debug (every per-layer stage)", True, f"{rows} stages pass; outputs = the folder's")
    return verdict_row(f"onnx.debug {debug['first_failure']}", False, f"first failure of {rows} debug stages")
