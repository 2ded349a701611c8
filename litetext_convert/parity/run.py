"""`litetext parity`: find or make the converted folder, run the scopes asked for, keep the record.

A folder's own parity records live under parity/ (one per scope, dtype and prompt set; see
folder.py), and its model card is refreshed after each run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import ContextManager

from litetext_convert.errors import LitetextError
from litetext_convert.folder import (  # noqa: F401 - SOURCE_MEMO, folder_source, remember_source: re-exported (their old home)
    CONVERSION_RECORD,
    SOURCE_MEMO,
    folder_source,
    prompt_set,
    record_key,
    remember_source,
    verdict,
    write_parity_record,
)
from litetext_convert.parity import precision
from litetext_convert.parity.text import ParityOptions, run_text_parity
from litetext_convert import dtypes
from litetext_convert.plan import validate
from litetext_convert.plan.hf_config import transformers_class
from litetext_convert.targets import folder_target, scope_target
from litetext_convert.plan.prepare import Prepared, prepare
from litetext_convert.scratch import scratch_folder
from litetext_convert.write.convert import convert


def check_converted_folder(folder: Path) -> int:
    """The folder's context, from its config.json; refuses what is not a converted folder."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise LitetextError(f"{folder} is not a converted folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
        config = config.get("detector_config", config)  # a video folder: its detector's text encoder
        return int(config["text_config"]["max_position_embeddings"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LitetextError(f"{folder}/config.json is damaged ({type(exc).__name__}: {exc})") from None


def check_converted_matches(prepared: Prepared, folder: Path) -> list[str]:
    """A folder converted from another file or for another context would make parity meaningless."""
    context = check_converted_folder(folder)
    if context != prepared.arch.context_length:
        raise LitetextError(
            f"{folder} was converted for context {context}, but the checkpoint's context is {prepared.arch.context_length}",
            hint="pass the same --context-length used for the conversion",
        )
    check_folder_structure(folder)
    notes = []
    record_path = folder / CONVERSION_RECORD
    if record_path.is_file():
        source = json.loads(record_path.read_text()).get("source", {})
        if source.get("bytes") not in (None, prepared.loaded.bytes) or source.get("filename") != prepared.resolved.filename:
            notes.append(
                f"{folder.name} records its source as {source.get('filename')} ({source.get('bytes')} bytes), "
                f"not {prepared.resolved.filename} ({prepared.loaded.bytes} bytes)"
            )
    else:
        notes.append(f"{folder.name} has no {CONVERSION_RECORD}: its source cannot be checked")
    return notes


def check_folder_structure(folder: Path) -> None:
    """A folder whose config cannot run one forward (e.g. heads that do not divide a width, edited
    after conversion) is never verified, even where the scope checked does not use that part."""
    config_class = transformers_class(folder_target(folder).config_class)
    try:
        config = config_class.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise LitetextError(f"{folder}/config.json is damaged ({type(exc).__name__}: {exc})") from None
    validate.check_config(config)


def run_parity(
    checkpoint: str,
    *,
    converted: Path | None,
    tokenizer: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    context_length: int | None = None,
    num_heads: int | None = None,
    scope: str = "text",
    dtype: str = "float32",
    batch: int = 2,
    seed: int = 0,
    prompts: list[str] | None = None,
    image: Path | None = None,
    boxes: list[list[float]] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    status: Callable[[str], ContextManager] | None = None,
    keep_outputs: bool = False,
    target: str = "image",
) -> dict:
    """The parity record. With `converted`, the record is also kept in the folder and its card refreshed.
    `keep_outputs`: the detector's masks and boxes stay on the record under `_outputs` (for --plot)."""
    from transformers.utils import logging as hf_logging

    status = status or (lambda message: contextlib.nullcontext())
    prompts = prompts or []
    hf_logging.disable_progress_bar()
    dtype = dtypes.canonical(dtype)
    # The target: the given folder's, else --target (tracker parity needs a video folder).
    chosen = scope_target(scope, converted, target)  # refuses a folder whose target lacks the scope
    with status(f"reading {checkpoint}: architecture and mapping"):
        prepared = prepare(
            checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads, target=chosen.id
        )
    with scratch_folder("parity") as scratch:  # named by pid: the next run removes it if this one is killed
        if converted is None:
            folder = Path(scratch) / "converted"
            # A reduced dtype is proven on a folder converted to it; float32/float64 on the source's own.
            with status("converting into a temporary folder"):
                convert(prepared, folder, tokenizer=tokenizer, dtype=dtype if dtypes.is_reduced(dtype) else "keep")
            notes = ["converted into a temporary folder for this run"]
        else:
            folder = Path(converted)
            notes = check_converted_matches(prepared, folder)
        dtype, dtype_notes = precision.parity_dtype(dtype, precision.folder_dtype(folder))
        notes += dtype_notes
        options = ParityOptions(dtype=dtype, batch=batch, seed=seed, prompts=prompts, atol=atol, rtol=rtol)
        # The detector report carries the text stages too: they are what the detector is fed.
        with status(f"text parity, {dtype}: original and converted side by side"):
            result = run_text_parity(prepared, folder, options)
        with status(f"exactness of the folder's tensors ({dtype})"):
            checks = precision.precision_checks(prepared, folder, dtype, batch=batch, seed=seed)
        detector, outputs, tracker = None, None, None
        if chosen.runs(scope, "detector"):
            with status(f"whole-detector parity, {dtype} (the slow part)"):
                detector, outputs = _detector_scope(prepared, folder, dtype, seed, image, boxes or [])
        if chosen.runs(scope, "tracker"):
            with status("tracker parity, float64: Meta's tracker and the converted one on a seeded clip"):
                tracker = _tracker_scope(prepared, folder, seed)
    record = precision.attach(parity_record(result, detector, scope, notes, prompts, tracker=tracker), checks)
    if converted is not None:
        from litetext_convert.publish.model_card import write_folder_card

        write_parity_record(Path(converted), record)
        write_folder_card(Path(converted))
    if keep_outputs and outputs is not None:
        record = {**record, "_detector_outputs": outputs}  # in memory only: tensors for --plot
    return record


def _detector_scope(prepared, folder, dtype, seed, image, boxes) -> tuple[dict, object]:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"whole-detector parity needs the original detector: {reason}")
    if dtypes.is_reduced(dtype):  # exactness in float64 with rounded weights, and the dtype's cost
        return precision.detector_scope(prepared, folder, dtype, seed, image, boxes), None
    from litetext_convert.parity.detector import run_detector_parity

    result = run_detector_parity(prepared, folder, dtype=dtype, seed=seed, image=image, boxes=boxes or None)
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
    tracker: dict | None = None,
) -> dict:
    """The record as kept in the folder: the text result, the detector's, the tracker's, and the one verdict."""
    record = text_result.to_json()
    record["scope"] = scope
    record["detector"] = detector
    record["tracker"] = tracker
    if tracker is not None:
        record["tracker_dtype"] = tracker.get("dtype")  # the tracker runs in float64 whatever `dtype` is
    record["prompt_set"] = prompt_set(prompts or [])
    record["notes"] = notes + record.get("notes", [])
    record.update(verdict(record).to_json())
    record["key"] = record_key(record)
    return record
