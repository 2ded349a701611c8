"""`litetext parity`: find or make the converted folder, run the scopes asked for, keep the record."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rich.console import Console

from litetext_convert.errors import LitetextError
from litetext_convert.folder import CONVERSION_RECORD, PARITY_RECORD
from litetext_convert.parity.text import ParityOptions, run_text_parity
from litetext_convert.plan.prepare import Prepared, prepare
from litetext_convert.report import render_parity
from litetext_convert.write.convert import convert


def check_converted_matches(prepared: Prepared, folder: Path) -> list[str]:
    """A folder converted from another file or for another context would make parity meaningless."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise LitetextError(f"{folder} is not a converted folder (no config.json)")
    try:
        config = json.loads(config_path.read_text())
        config = config.get("detector_config", config)  # a video folder: its detector's text encoder
        context = config["text_config"]["max_position_embeddings"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LitetextError(f"{folder}/config.json is damaged ({type(exc).__name__}: {exc})") from None
    if context != prepared.arch.context_length:
        raise LitetextError(
            f"{folder} was converted for context {context}, but the checkpoint's context is {prepared.arch.context_length}",
            hint="pass the same --context-length used for the conversion",
        )
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


def run_parity(
    checkpoint: str,
    *,
    converted: Path | None,
    tokenizer: str | None,
    repo_id: str | None,
    revision: str | None,
    context_length: int | None,
    num_heads: int | None,
    scope: str,
    dtype: str,
    batch: int,
    seed: int,
    prompts: list[str],
    image: Path | None,
    boxes: list[list[float]],
    atol: float | None,
    rtol: float | None,
    json_path: Path | None,
    console: Console | None,
    debug: bool,
    target: str = "image",
) -> dict:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from litetext_convert.plan.hf_config import folder_target

    # The target: the given folder's, else --target (tracker parity needs a video folder).
    target = folder_target(converted) if converted is not None else ("video" if scope == "tracker" else target)
    if scope == "tracker" and target != "video":
        raise LitetextError(f"{converted} is an image folder: tracker parity needs a folder converted with --target video")
    prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads,
                       target=target)
    options = ParityOptions(dtype=dtype, batch=batch, seed=seed, prompts=prompts, atol=atol, rtol=rtol)
    with tempfile.TemporaryDirectory(prefix="litetext-parity-") as scratch:
        if converted is None:
            folder = Path(scratch) / "converted"
            convert(prepared, folder, tokenizer=tokenizer)
            notes = ["converted into a temporary folder for this run"]
        else:
            folder = Path(converted)
            notes = check_converted_matches(prepared, folder)
        # The detector report carries the text stages too: they are what the detector is fed.
        result = run_text_parity(prepared, folder, options)
        detector = _detector_scope(prepared, folder, dtype, seed, image, boxes) if scope in ("detector", "all") else None
        tracker = _tracker_scope(prepared, folder, seed) if scope == "tracker" or (scope == "all" and target == "video") else None
    record = parity_record(result, detector, scope, notes, tracker)
    if converted is not None:
        (Path(converted) / PARITY_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if json_path is not None:
        json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if console is not None:
        render_parity(console, record, debug=debug)
    return record


def _detector_scope(prepared, folder, dtype, seed, image, boxes) -> dict:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"whole-detector parity needs the original detector: {reason}")
    try:
        from litetext_convert.parity.detector import run_detector_parity
    except ImportError as exc:  # pragma: no cover - the module itself imports without sam3
        raise LitetextError(f"whole-detector parity is unavailable: {exc}") from None
    result = run_detector_parity(prepared, folder, dtype=dtype, seed=seed, image=image, boxes=boxes or None)
    return result.to_json()


def _tracker_scope(prepared, folder, seed) -> dict:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"tracker parity needs Meta's tracker: {reason}")
    from litetext_convert.parity.tracker import run_tracker_parity

    # float64 always: in float32 the bfloat16-stored memories of the two sides can round one step
    # apart, and the later frames then differ by that step's consequence (README: video).
    return run_tracker_parity(prepared, folder, dtype="float64", seed=seed).to_json()


def parity_record(text_result, detector: dict | None, scope: str, notes: list[str], tracker: dict | None = None) -> dict:
    record = text_result.to_json()
    record["scope"] = scope
    record["detector"] = detector
    record["tracker"] = tracker
    record["notes"] = notes + record.get("notes", [])
    text_ok = all(stage["passed"] for stage in record["stages"]) and (record["tokenizer"] or {"equal": True})["equal"]
    record["passed"] = text_ok and (detector is None or detector["passed"]) and (tracker is None or tracker["passed"])
    if detector is not None and not detector["passed"] and record["first_failure"] is None:
        record["first_failure"] = next((s["name"] for s in detector["stages"] if not s["passed"]), "detector")
    if tracker is not None and not tracker["passed"] and record["first_failure"] is None:
        record["first_failure"] = f"tracker:{tracker['first_failure']}"
    return record
