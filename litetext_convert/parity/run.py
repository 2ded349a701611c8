"""Run the parity scopes asked for on a converted folder and return the record: measures, never writes.

workflows/prove.py decides which folder, binds the record to the folder's files and keeps it
(folder/records.py); this module only compares the original with the converted model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

from litetext_convert import __version__
from litetext_convert.errors import LitetextError, printable
from litetext_convert.folder import safe_io
from litetext_convert.folder.names import CONFIG
from litetext_convert.folder.records import PARITY_SCHEMA, prompt_set, record_key
from litetext_convert.folder.verdict import record_verdict
from litetext_convert.parity import precision
from litetext_convert.parity.text import ParityOptions, run_text_parity
from litetext_convert import dtypes
from litetext_convert.plan import validate
from litetext_convert.plan.hf_config import transformers_class
from litetext_convert.plan.prepare import Prepared
from litetext_convert.targets import Target, folder_target


@dataclass
class ParityRequest:
    """What to compare: the scope, the dtype, the inputs and the tolerances."""

    scope: str = "text"
    dtype: str = "float32"
    batch: int = 2
    seed: int = 0
    prompts: list[str] = field(default_factory=list)
    image: Path | None = None
    boxes: list[list[float]] = field(default_factory=list)
    atol: float | None = None
    rtol: float | None = None
    keep_outputs: bool = False  # the detector's masks and boxes stay on the record under `_detector_outputs` (--plot)
    # An ONNX folder: also export debug graphs with every text and DETR decoder layer as outputs (parity/onnx.py).
    debug_intermediates: bool = False


def check_converted_folder(folder: Path) -> int:
    """The folder's context, from its config.json; refuses what is not a converted folder."""
    config_path = Path(folder) / CONFIG
    if not config_path.exists() and not config_path.is_symlink():
        raise LitetextError(f"{printable(folder)} is not a converted folder (no config.json)")
    try:
        config = safe_io.read_json_object(config_path)
    except safe_io.RecordError as err:
        raise LitetextError(f"{printable(config_path)} is damaged ({err.message})") from None
    try:
        config = config.get("detector_config", config)  # a video folder: its detector's text encoder
        context = config["text_config"]["max_position_embeddings"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise LitetextError(f"{printable(config_path)} is damaged ({type(exc).__name__}: {exc})") from None
    if isinstance(context, bool) or not isinstance(context, int) or context <= 0:
        raise LitetextError(f"{printable(config_path)} is damaged (max_position_embeddings is {context!r})")
    return context


def check_folder_structure(folder: Path) -> None:
    """A folder whose config cannot run one forward (e.g. heads that do not divide a width, edited
    after conversion) is never verified, even where the scope checked does not use that part."""
    config_class = transformers_class(folder_target(folder).config_class)
    try:
        config = config_class.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise LitetextError(f"{printable(folder)}/config.json is damaged ({type(exc).__name__}: {exc})") from None
    validate.check_config(config)


def measure(
    prepared: Prepared, folder: Path, request: ParityRequest, notes: list[str], target: Target,
    status: Callable[[str], ContextManager] | None = None,
) -> dict:
    """The parity record of `folder` against the original `prepared` (not bound, not written)."""
    status = status or (lambda message: contextlib.nullcontext())
    if target.id == "onnx":  # its graphs in onnxruntime (parity/onnx.py)
        from litetext_convert.parity.onnx import measure_onnx

        return measure_onnx(prepared, folder, request, notes, status)
    dtype, dtype_notes = precision.parity_dtype(request.dtype, precision.folder_dtype(folder))
    options = ParityOptions(dtype=dtype, batch=request.batch, seed=request.seed, prompts=request.prompts,
                            atol=request.atol, rtol=request.rtol)
    # The detector report carries the text stages too: they are what the detector is fed.
    with status(f"text parity, {dtype}: original and converted side by side"):
        result = run_text_parity(prepared, folder, options)
    with status(f"exactness of the folder's tensors ({dtype})"):
        checks = precision.precision_checks(prepared, folder, dtype, batch=request.batch, seed=request.seed)
    detector, outputs, tracker = None, None, None
    if target.runs(request.scope, "detector"):
        with status(f"whole-detector parity, {dtype} (the slow part)"):
            detector, outputs = _detector_scope(prepared, folder, dtype, request)
    if target.runs(request.scope, "tracker"):
        with status("tracker parity, float64: Meta's tracker and the converted one on a seeded clip"):
            tracker = _tracker_scope(prepared, folder, request.seed)
    record = parity_record(result, detector, request.scope, notes + dtype_notes, request.prompts, tracker=tracker,
                           precision=checks)
    if request.keep_outputs and outputs is not None:
        record["_detector_outputs"] = outputs  # in memory only: tensors for --plot
    return record


def _detector_scope(prepared, folder, dtype, request: ParityRequest) -> tuple[dict, object]:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"whole-detector parity needs the original detector: {reason}")
    if dtypes.is_reduced(dtype):  # exactness in float64 with rounded weights, and the dtype's cost
        return precision.detector_scope(prepared, folder, dtype, request.seed, request.image, request.boxes), None
    from litetext_convert.parity.detector import run_detector_parity

    result = run_detector_parity(prepared, folder, dtype=dtype, seed=request.seed, image=request.image,
                                 boxes=request.boxes or None)
    return result.to_json(), getattr(result, "outputs", None)


def _tracker_scope(prepared, folder, seed) -> dict:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"tracker parity needs Meta's tracker: {reason}")
    from litetext_convert.parity.tracker import run_tracker_parity

    # float64 always: in float32 the bfloat16-stored memories of the two sides can round one step
    # apart, and the later frames then differ by that step's consequence (README: video).
    return run_tracker_parity(prepared, folder, dtype="float64", seed=seed).to_json()


def parity_record(
    text_result, detector: dict | None, scope: str, notes: list[str], prompts: list[str] | None = None,
    tracker: dict | None = None, precision: dict | None = None,
) -> dict:
    """The record as kept in the folder: the text result, the detector's, the tracker's, the precision
    checks, and the one verdict (folder/verdict.record_verdict) over all of them."""
    record = {"tool": {"name": "litetext", "version": __version__}, "schema": PARITY_SCHEMA, **text_result.to_json()}
    record["scope"] = scope
    record["detector"] = detector
    record["tracker"] = tracker
    if tracker is not None:
        record["tracker_dtype"] = tracker.get("dtype")  # the tracker runs in float64 whatever `dtype` is
    record["prompt_set"] = prompt_set(prompts or [])
    record["notes"] = notes + record.get("notes", [])
    if precision is not None:
        record["precision"] = fold_precision(record, precision)
    record.update(record_verdict(record).to_json())
    record["key"] = record_key(record)
    return record


def fold_precision(record: dict, checks: dict) -> dict:
    """The precision checks as the record keeps them: the same-dtype exactness is this record's own
    text stages; a reduced detector run's cost moves under precision."""
    exactness = checks["exactness"]
    if record.get("detector") and "precision_cost" in record["detector"]:
        checks["detector_cost"] = record["detector"].pop("precision_cost")
    if checks["reduced"]:
        exactness["same_dtype"]["passed"] = all(stage["passed"] for stage in record["stages"])
        exactness["passed"] = exactness["passed"] and exactness["same_dtype"]["passed"]
    return checks
