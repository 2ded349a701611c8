"""Reduced precision (bfloat16, float16): is the conversion exact, and what does the precision cost?

A bfloat16 folder cannot match the float32 original at float32 tolerances: its weights were
rounded. So two questions are asked separately, and both are answered in the parity record:

Exactness (a verdict): the conversion did nothing but the mapping's operations and the cast.
- tensors: every tensor in the folder equals the ORIGINAL source tensor (re-read from the file
  here, not taken from the writer) passed through the mapping's operations (plan/ops.py) and
  cast by torch to the folder's dtype, bit for bit. Nothing is shared with write/convert.py.
- same dtype: the original implementation, run in the folder's dtype, agrees with the converted
  model stage by stage within that dtype's tolerance (configs/tolerances.toml) -- the ordinary
  text parity, run in the reduced dtype.
- rounded weights in float64: the original, given the weights rounded to the folder's dtype and
  run in float64, agrees with the converted model run in float64 at float64 tolerance. Both sides
  then hold identical weights and compute in float64, so any difference is meaning, not rounding.

Cost (numbers, never a verdict): the converted model in its dtype against the original in
float32 and in float64, stage by stage: max/mean abs, max abs relative to the stage's magnitude,
cosine. On a float32 folder the same record carries only the tensor check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from litetext_convert.errors import LitetextError
from litetext_convert.folder.names import CONFIG, CONVERSION_RECORD
from litetext_convert.parity.compare import StageDiff, compare
from litetext_convert import dtypes
from litetext_convert.plan import ops
from litetext_convert.source.load import SAFETENSORS, TORCH_ZIP

if TYPE_CHECKING:
    from litetext_convert.plan.prepare import Prepared

COST_BASELINES = ("float32", "float64")
MISMATCHES_KEPT = 10  # the record names this many mismatching tensors, then counts the rest


# ----------------------------------------------------------------------------------------------
# Which dtype a folder holds


def folder_dtype(folder: Path) -> str:
    """The dtype the conversion was asked for: the conversion record's, else config.json's."""
    from litetext_convert.folder import safe_io

    for name, fields in ((CONVERSION_RECORD, ("dtype",)), (CONFIG, ("dtype", "torch_dtype"))):
        path = Path(folder) / name
        if path.exists() or path.is_symlink():
            data = safe_io.read_json_object(path)
            recorded = next((data[f] for f in fields if isinstance(data.get(f), str)), None)
            if recorded:
                return dtypes.canonical(recorded)
    return "float32"


def parity_dtype(requested: str, folder_holds: str | None) -> tuple[str, list[str]]:
    """The dtype a parity run uses, and a note when it is not the one asked for.

    A reduced-precision folder is always proven in its own dtype (against float32 it can only
    fail by rounding); a reduced dtype asked of a folder that holds another one is an error.
    """
    requested = dtypes.canonical(requested)
    if folder_holds is None or folder_holds == requested:
        return requested, []
    if dtypes.is_reduced(folder_holds):
        return folder_holds, [
            f"the folder holds {folder_holds}: parity proves exactness in {folder_holds} and reports the "
            f"precision cost against the original in {' and '.join(COST_BASELINES)} (not --dtype {requested})"
        ]
    if dtypes.is_reduced(requested):
        raise LitetextError(
            f"--dtype {requested} proves a {requested} folder, but this folder holds {folder_holds}",
            hint=f"convert with --dtype {requested}, or leave --converted out to convert into a temporary folder",
        )
    return requested, []


# ----------------------------------------------------------------------------------------------
# Exactness 1: every tensor, bit for bit


def reread_source(prepared: Prepared) -> dict[str, torch.Tensor]:
    """The source's tensors read again from its file (weights only, memory-mapped), unwrapped as
    the loader recorded it: the expected tensors never come from the objects the writer used."""
    loaded = prepared.loaded
    path = loaded.path
    if loaded.format == SAFETENSORS:
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=loaded.format == TORCH_ZIP)
    state = raw[loaded.wrapper] if loaded.wrapper else raw
    prefix = loaded.stripped_prefix or ""
    return {key: state[prefix + key] for key in prepared.loaded.tensors}


def _release(prepared: Prepared, tensor: torch.Tensor) -> None:
    """Drop a memory-mapped source tensor's resident pages (torch zip files only: the others are heap)."""
    from litetext_convert.source.load import release_source_pages

    if prepared.loaded.format == TORCH_ZIP:
        release_source_pages(tensor)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, as 8-byte words where its length and alignment allow: torch.equal on
    uint8 compares a byte at a time (2.2 GB took ~4 s), on int64 eight at a time."""
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    try:
        return raw.view(torch.int64)
    except RuntimeError:  # a length or storage offset that is not a multiple of 8 bytes
        return raw




class _ShardReader:
    """One tensor at a time from a safetensors file by plain reads (header offsets), not a memory
    map: a mapped shard's pages stay resident while it is open, which made every parity run hold
    the whole folder (2.2 GB at full size) just to compare it bit for bit."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        self.entries = header
        self.data_start = 8 + length

    def keys(self) -> list[str]:
        return list(self.entries)

    def get_tensor(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        start, end = entry["data_offsets"]
        with self.path.open("rb") as handle:
            handle.seek(self.data_start + start)
            raw = bytearray(handle.read(end - start))
        dtype = dtypes.from_safetensors_code(entry["dtype"])
        if dtype is None or len(raw) != end - start:
            raise LitetextError(f"{self.path.name}: {name} cannot be read back ({entry['dtype']}, {len(raw)} bytes)")
        return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(entry["shape"]) if raw else torch.empty(entry["shape"], dtype=dtype)


def check_tensors(prepared: Prepared, folder: Path, dtype: str) -> dict:
    """Folder tensor == cast(ops(source), dtype), dtype, shape and bits, for every planned target;
    the folder may hold nothing else."""
    folder = Path(folder)
    handles = {}
    where: dict[str, str] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        handles[shard.name] = _ShardReader(shard)
        where.update(dict.fromkeys(handles[shard.name].keys(), shard.name))
    source = reread_source(prepared)
    planned = set(prepared.plan.step_of_target)
    mismatches: list[dict] = []
    checked = 0
    for step in prepared.plan.steps:
        # A gathering step (video target) reads several sources; every other step reads one.
        outputs = ops.apply_gathered(list(step.ops), [source[key] for key in step.sources], prepared.ctx)
        for target, output in zip(step.targets, outputs):
            expected = dtypes.cast(output, dtype)
            if target not in where:
                mismatches.append({"tensor": target, "why": "missing from the folder"})
                continue
            actual = handles[where[target]].get_tensor(target)
            checked += 1
            why = _difference(expected, actual)
            if why:
                mismatches.append({"tensor": target, "source": step.source, "ops": list(step.ops), "why": why})
        for key in step.sources:
            _release(prepared, source[key])  # a full-size source costs one tensor of RSS, not the file
    # A filled target (expected-missing, e.g. SAM3.1's absent 0.5x neck level) has no source to equal:
    # the original never reads it, so any values will do; it must be there with the model's shape/dtype.
    filled = prepared.plan.filled
    for target, fill in filled.items():
        if target not in where:
            mismatches.append({"tensor": target, "why": "filled target missing from the folder"})
            continue
        actual = handles[where[target]].get_tensor(target)
        if tuple(actual.shape) != fill.shape or actual.dtype != dtypes.target_dtype(fill.dtype, dtype):
            mismatches.append({"tensor": target, "why": f"filled target is {list(actual.shape)} {actual.dtype}"})
    for extra in sorted(set(where) - planned - set(filled)):
        mismatches.append({"tensor": extra, "why": "in the folder but not in the plan"})
    return {
        "passed": not mismatches and checked == len(planned),
        "dtype": dtype,
        "rule": f"folder tensor == torch cast to {dtype} (floating tensors only) of the source tensor "
        "through the mapping's operations, bit for bit",
        "checked": checked,
        "planned": len(planned),
        "mismatched": len(mismatches),
        "mismatches": mismatches[:MISMATCHES_KEPT],
    }


def _difference(expected: torch.Tensor, actual: torch.Tensor) -> str | None:
    if actual.dtype != expected.dtype:
        return f"dtype {dtypes.name_of(actual.dtype)}, expected {dtypes.name_of(expected.dtype)}"
    if tuple(actual.shape) != tuple(expected.shape):
        return f"shape {list(actual.shape)}, expected {list(expected.shape)}"
    actual_bits, expected_bits = _bits(actual), _bits(expected)
    if actual_bits.dtype != expected_bits.dtype:  # one aligned, the other not: compare bytes
        actual_bits, expected_bits = actual_bits.view(torch.uint8), expected_bits.view(torch.uint8)
    if not torch.equal(actual_bits, expected_bits):
        differing = int((actual.double() != expected.double()).sum())
        return f"{differing} of {expected.numel()} values differ from the cast source"
    return None


# ----------------------------------------------------------------------------------------------
# Exactness 3 and cost: the text encoder in float64 with rounded weights, and against float32/64


def rounded_weights_float64(prepared: Prepared, folder: Path, dtype: str, batch: int, seed: int) -> list[StageDiff]:
    """Original with its weights rounded to `dtype`, run in float64, vs the converted model in float64."""
    from litetext_convert.parity.text import compare_text, converted_text_side, dummy_ids, original_text_side, text_state_dict

    atol, rtol = dtypes.tolerances("float64", "text")
    rounded = {key: dtypes.cast(value, dtype) for key, value in text_state_dict(prepared).items()}
    ids = dummy_ids(batch, prepared.arch.context_length, seed)
    original = original_text_side(rounded, prepared.arch, torch.float64, [ids])
    converted = converted_text_side(folder, torch.float64, [(ids, None)])
    return compare_text(original.outputs[0], converted.outputs[0], None, converted.info, atol, rtol,
                        prefix=f"float64, weights rounded to {dtype}: text")


def text_cost(prepared: Prepared, folder: Path, dtype: str, batch: int, seed: int) -> dict:
    """The converted model in `dtype` against the original (source weights) in float32 and float64."""
    from litetext_convert.parity.text import compare_text, converted_text_side, dummy_ids, original_text_side, text_state_dict

    ids = dummy_ids(batch, prepared.arch.context_length, seed)
    converted = converted_text_side(folder, dtypes.torch_dtype(dtype), [(ids, None)])
    baselines = {}
    for baseline in COST_BASELINES:
        original = original_text_side(text_state_dict(prepared), prepared.arch, dtypes.torch_dtype(baseline), [ids])
        stages = compare_text(original.outputs[0], converted.outputs[0], None, converted.info, float("inf"), 0.0, prefix="text")
        baselines[baseline] = [cost_row(stage) for stage in stages if not stage.name.endswith("padding_mask")]
    return {
        "inputs": {"kind": "dummy ids", "batch": batch, "seed": seed, "context_length": prepared.arch.context_length},
        "against": baselines,
    }


def cost_row(stage: StageDiff) -> dict:
    """What a stage's difference costs, without a verdict (the dtype, not the conversion, decides it)."""
    return {
        "name": stage.name,
        "max_abs": stage.max_abs,
        "mean_abs": stage.mean_abs,
        "max_rel": stage.max_rel,
        "cosine": stage.cosine,
        "reference_max": stage.reference_max,
    }


def measure(name: str, reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    return cost_row(compare(name, reference, candidate, atol=float("inf"), rtol=0.0))


# ----------------------------------------------------------------------------------------------
# Cost, whole detector: the converted model in its dtype against Meta's detector in float32

DETECTOR_OUTPUTS = ("vision.fpn.0", "text.features", "detr.encoder", "pred_logits", "presence_logits", "pred_boxes",
                    "pred_masks", "semantic_seg")
TOP_K = 10


def detector_cost(prepared: Prepared, folder: Path, dtype: str, *, seed: int = 0, image: Path | None = None,
                  against: str = "float32", top_k: int = TOP_K) -> dict:
    """What `dtype` costs on the detector's outputs, and on what a user sees: the top-k detections
    (by score), their boxes, scores and thresholded masks. Needs Meta's sam3 (.venv-original)."""
    import gc

    from transformers import AutoConfig

    from litetext_convert.parity import detector as det

    config = AutoConfig.from_pretrained(str(folder))
    size = config.vision_config.backbone_config.image_size
    pixels = det.load_image(image, size) if image else det.seeded_image(size, seed)
    ids = det.seeded_input_ids(prepared.arch.context_length, config.text_config.vocab_size, seed)
    reference = det.run_original(prepared, dtypes.torch_dtype(against), pixels, ids, None, None).outputs
    gc.collect()
    model = det.load_converted(folder, dtypes.torch_dtype(dtype))
    converted = det.run_transformers(model, pixels.to(dtypes.torch_dtype(dtype)), ids, None, None).faithful
    del model
    gc.collect()
    stages = [measure(name, reference[name], converted[name]) for name in DETECTOR_OUTPUTS
              if name in reference and name in converted]
    return {
        "against": against,
        "inputs": f"{'image ' + str(image) if image else f'seeded image {size}x{size}, seed {seed}'}, one seeded prompt",
        "stages": stages,
        "detections": detections_kept(reference, converted, top_k),
    }


def detector_scope(prepared: Prepared, folder: Path, dtype: str, seed: int, image: Path | None, boxes) -> dict:
    """--scope detector on a reduced-precision folder. Exactness: Meta's detector given the weights
    rounded to `dtype` against the converted model, both in float64 (the float64 detector
    tolerances); cost: the converted model in `dtype` against Meta's detector in float32."""
    import dataclasses

    from litetext_convert.parity.detector import run_detector_parity

    rounded_tensors = {}
    for key, value in prepared.loaded.tensors.items():
        rounded_tensors[key] = dtypes.cast(value, dtype)
        _release(prepared, value)  # the rounded copy is what this check reads; the file's pages can go
    rounded = dataclasses.replace(prepared, loaded=dataclasses.replace(prepared.loaded, tensors=rounded_tensors))
    result = run_detector_parity(rounded, folder, dtype="float64", seed=seed, image=image, boxes=boxes or None).to_json()
    del rounded
    result["meaning"] = (f"float64 on both sides, the original given the weights rounded to {dtype}: "
                         f"exactness of the {dtype} conversion (meaning, not rounding)")
    result["precision_cost"] = detector_cost(prepared, folder, dtype, seed=seed, image=image)
    return result


def detections_kept(reference: dict, converted: dict, top_k: int) -> dict:
    """Top-k queries by score on each side: how many the reduced dtype keeps, and how far their
    boxes, scores and masks (logits > 0) move."""
    ref_scores, cand_scores = _scores(reference), _scores(converted)
    k = min(top_k, ref_scores.numel())
    ref_top = ref_scores.topk(k).indices
    kept = len(set(ref_top.tolist()) & set(cand_scores.topk(k).indices.tolist()))
    ref_boxes, cand_boxes = reference["pred_boxes"][0].double(), converted["pred_boxes"][0].double()
    ref_masks, cand_masks = reference["pred_masks"][0] > 0, converted["pred_masks"][0] > 0
    ious = []
    for query in ref_top.tolist():
        union = (ref_masks[query] | cand_masks[query]).sum()
        ious.append(float((ref_masks[query] & cand_masks[query]).sum() / union) if union else 1.0)
    return {
        "k": k,
        "kept": kept,
        "box_max_abs": float((ref_boxes[ref_top] - cand_boxes[ref_top]).abs().max()),
        "score_max_abs": float((ref_scores - cand_scores).abs().max()),
        "mask_iou_min": min(ious),
        "mask_iou_mean": sum(ious) / len(ious),
    }


def _scores(stages: dict) -> torch.Tensor:
    """Per-query detection score: sigmoid(logit) x sigmoid(presence), as SAM3's post-processing."""
    logits = stages["pred_logits"][0].double().reshape(-1)
    presence = stages["presence_logits"].double().reshape(-1)[:1]
    return logits.sigmoid() * presence.sigmoid()


# ----------------------------------------------------------------------------------------------
# The record


def precision_checks(prepared: Prepared, folder: Path, dtype: str, *, batch: int, seed: int) -> dict:
    """Everything this module adds to a parity record for a folder of `dtype`."""
    tensors = check_tensors(prepared, folder, folder_dtype(folder))
    if not dtypes.is_reduced(dtype):
        return {"dtype": dtype, "reduced": False, "exactness": {"passed": tensors["passed"], "tensors": tensors}}
    rounded = rounded_weights_float64(prepared, folder, dtype, batch, seed)
    return {
        "dtype": dtype,
        "reduced": True,
        "exactness": {
            "passed": tensors["passed"] and all(stage.passed for stage in rounded),
            "tensors": tensors,
            "same_dtype": {
                "stages": f"the text stages of this record: original and converted both in {dtype}",
                "tolerance": f"configs/{dtypes.TOLERANCES_FILE} [text.{dtype}]",
                "atol_of_max": dtypes.atol_of_max(dtype, "text"),
            },
            "rounded_weights_float64": [stage.to_json() for stage in rounded],
        },
        "cost": text_cost(prepared, folder, dtype, batch, seed),
    }


# ----------------------------------------------------------------------------------------------
# Words for the report and the model card


def cost_headline(precision: dict) -> dict | None:
    """The detector-facing text features against float32: the one number a user asks for."""
    rows = ((precision.get("cost") or {}).get("against") or {}).get("float32") or []
    return next((row for row in rows if "features" in row["name"]), rows[-1] if rows else None)


def summary_lines(precision: dict | None) -> list[str]:
    if not precision:
        return []
    tensors = precision["exactness"]["tensors"]
    lines = [
        f"tensors: {tensors['checked']}/{tensors['planned']} equal the source cast to {tensors['dtype']}, bit for bit"
        if tensors["passed"] else f"tensors: {tensors['mismatched']} NOT the cast source: "
        + "; ".join(f"{m['tensor']}: {m['why']}" for m in tensors["mismatches"][:3])
    ]
    if not precision["reduced"]:
        return lines
    rounded = precision["exactness"]["rounded_weights_float64"]
    worst = max(rounded, key=lambda s: s["max_abs"]) if rounded else None
    failed = [s["name"] for s in rounded if not s["passed"]]
    lines.append(
        f"float64 with weights rounded to {precision['dtype']}: "
        + (f"FAIL at {failed[0]}" if failed else f"{len(rounded)} stages pass, largest max abs {worst['max_abs']:.2e}")
    )
    same = precision["exactness"]["same_dtype"]
    lines.append(f"original in {precision['dtype']} vs converted: {'pass' if same.get('passed') else 'FAIL'} "
                 f"(atol grows by {same['atol_of_max']:g} x the stage's magnitude; {same['tolerance']})")
    lines.append(f"exactness: {'PASS' if precision['exactness']['passed'] else 'FAIL'}")
    for baseline, rows in precision["cost"]["against"].items():
        head = next((row for row in rows if "features" in row["name"]), rows[-1])
        lines.append(
            f"cost of {precision['dtype']} vs the original in {baseline} ({head['name']}): max abs {head['max_abs']:.2e}, "
            f"mean abs {head['mean_abs']:.2e}, max rel {head['max_rel']:.2e}, cosine {head['cosine']:.6f}"
        )
    detector = precision.get("detector_cost")
    if detector:
        kept = detector["detections"]
        lines.append(
            f"detector cost vs the original in {detector['against']}: top-{kept['k']} detections kept {kept['kept']}, "
            f"box max abs {kept['box_max_abs']:.2e}, score max abs {kept['score_max_abs']:.2e}, "
            f"mask IoU min {kept['mask_iou_min']:.4f} mean {kept['mask_iou_mean']:.4f}"
        )
        lines += [f"  {row['name']}: max abs {row['max_abs']:.2e}, max rel {row['max_rel']:.2e}, cosine {row['cosine']:.6f}"
                  for row in detector["stages"]]
    return lines


def card_section(conversion: dict, parity: dict | None) -> str:
    """## Precision for the model card: the dtype, the exactness verdict, what the dtype costs."""
    precision = (parity or {}).get("precision")
    held = conversion.get("dtype")
    if not precision or not precision.get("reduced"):
        if held and dtypes.is_reduced(held):
            return f"## Precision\n\nWeights in {held}; exactness of the {held} conversion was **not checked**."
        return ""
    dtype = precision["dtype"]
    tensors = precision["exactness"]["tensors"]
    verdict = "exact" if precision["exactness"]["passed"] else "NOT exact"
    parts = [
        "## Precision",
        f"Weights in **{dtype}**. Conversion: **{verdict}**: {tensors['checked']} of {tensors['planned']} tensors equal "
        f"the original checkpoint's tensors cast to {dtype} (after the mapping's own reshaping), bit for bit; "
        f"the original implementation run in {dtype} matches stage by stage (the parity table above; in {dtype} "
        f"the tolerance also grows by {_same_dtype_share(precision):g} x each stage's largest value, as rounding "
        f"does), and with the weights rounded to {dtype} both sides agree in float64 "
        f"(largest difference {_rounded_max(precision):.1e}).",
        f"What {dtype} costs (the converted model in {dtype} against the original float32 checkpoint run in "
        "float32, text encoder, seeded token ids); differences of the dtype, not of the conversion:",
    ]
    rows = precision["cost"]["against"].get("float32", [])
    parts.append(_table(
        ("Stage", "max abs", "mean abs", "max abs / max abs(stage)", "cosine"),
        [(f"`{r['name']}`", f"{r['max_abs']:.2e}", f"{r['mean_abs']:.2e}", f"{r['max_rel']:.2e}", f"{r['cosine']:.6f}")
         for r in rows],
    ))
    detector = precision.get("detector_cost")
    if detector:
        parts.append(f"The whole-detector table above compares both sides in float64 with the weights rounded to "
                     f"{dtype} (exactness of the conversion, not rounding).")
        parts.append(detector_cost_lines(detector))
    return "\n\n".join(parts)


def _same_dtype_share(precision: dict) -> float:
    return precision["exactness"].get("same_dtype", {}).get("atol_of_max", 0.0)


def _rounded_max(precision: dict) -> float:
    return max((s["max_abs"] for s in precision["exactness"].get("rounded_weights_float64", [])), default=0.0)


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(value).replace("|", "\\|") for value in row) + " |" for row in rows]
    return "\n".join(lines)


def detector_cost_lines(detector: dict) -> str:
    rows = [(f"`{r['name']}`", f"{r['max_abs']:.2e}", f"{r['max_rel']:.2e}", f"{r['cosine']:.6f}") for r in detector["stages"]]
    table = _table(("Detector output", "max abs", "max rel", "cosine"), rows)
    kept = detector["detections"]
    return (
        f"Whole detector ({detector['inputs']}), against the original in {detector['against']}:\n\n{table}\n\n"
        f"Top-{kept['k']} detections kept: {kept['kept']} of {kept['k']}; box max abs {kept['box_max_abs']:.2e}; "
        f"score max abs {kept['score_max_abs']:.2e}; mask IoU (thresholded at 0) min {kept['mask_iou_min']:.4f}, "
        f"mean {kept['mask_iou_mean']:.4f}."
    )
