"""The audit's engine: resolve the target, prepare the original, run every level, collect findings."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from litetext_convert.audit.behaviour import (
    USAGE_FINDINGS,
    audit_behaviour,
    vision_costs,
)
from litetext_convert.audit.config import audit_config
from litetext_convert.audit.findings import AuditResult, Finding
from litetext_convert.audit.target import resolve_target
from litetext_convert.audit.tensors import FolderTensors, audit_tensors
from litetext_convert.audit.tokenizer import audit_tokenizer, load_folder_tokenizer
from litetext_convert.errors import LitetextError
from litetext_convert.plan.prepare import prepare
from litetext_convert.reference import load_original_tokenizer


def audit(
    target: str,
    checkpoint: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    context_length: int | None = None,
    num_heads: int | None = None,
    prompts: list[str] | None = None,
    dtype: str = "float64",
    behaviour: bool = True,
    vision: bool = False,
    detector: bool = False,
) -> AuditResult:
    started = time.perf_counter()
    folder = resolve_target(target)
    if not (folder / "config.json").is_file():
        raise LitetextError(f"{folder} is not a transformers folder (no config.json)")
    prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads)
    prompts = prompts or []

    tensors = audit_tensors(prepared, FolderTensors(folder))
    config_findings, overrides = audit_config(prepared, folder)
    tokenizer = load_folder_tokenizer(folder)
    upstream, _ = load_original_tokenizer(folder)  # upstream's algorithm on the folder's vocabulary
    tokenizer_findings = audit_tokenizer(prepared, folder, tokenizer, upstream, prompts)
    findings: list[Finding] = tensors.findings + config_findings + tokenizer_findings + list(USAGE_FINDINGS.values())
    notes = list(prepared.arch.notes)
    original = _original_info(prepared)

    behaviour_result = None
    detector_result = None
    if behaviour:
        model = _load_model(folder, dtype, notes)
        if model is None:
            findings.append(Finding(level="behaviour", kind="cannot load", subjects=[str(folder)],
                                    affects="everything: transformers cannot load the folder", cause=notes[-1],
                                    fix="re-convert with `litetext convert`"))
        else:
            behaviour_result = audit_behaviour(prepared, model, tokenizer, upstream, findings, tensors.fixes, overrides, prompts, dtype)
            if vision:
                vision_costs(model, findings, overrides)
            if detector:
                del model  # one model at a time: detector parity loads the folder itself
                from litetext_convert.audit.detector import audit_detector

                detector_result = audit_detector(prepared, folder, tensors.fixes, overrides, dtype)
            if not behaviour_result.recipe_passed:
                notes.append("the recipe does not reproduce the original: some finding has no usage fix (re-convert)")
    return AuditResult(
        target=target,
        folder=str(folder),
        checkpoint=str(prepared.resolved.path),
        original=original,
        context_length=prepared.arch.context_length,
        findings=findings,
        tensors=tensors.summary,
        behaviour=behaviour_result.to_json() if behaviour_result else None,
        detector=detector_result,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


def _load_model(folder: Path, dtype: str, notes: list[str]):
    """The folder as users load it; missing tensors are initialised (seeded) so the behaviour of a
    damaged folder is still measured, and the tensor level names them."""
    from transformers import Sam3LiteTextModel
    from transformers.utils import logging as hf_logging

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    try:
        return Sam3LiteTextModel.from_pretrained(str(folder), dtype=torch_dtype).eval()
    except Exception as exc:  # a damaged folder fails inside transformers in many ways
        notes.append(f"transformers cannot load the folder: {' '.join(str(exc).split())[:200]}")
        return None
    finally:
        hf_logging.set_verbosity(verbosity)


def _original_info(prepared) -> dict:
    from litetext_convert.reference import original_heads, upstream_fork_available

    heads, source = original_heads(prepared.arch)
    kind = "upstream fork" if upstream_fork_available() else "clean-room reference (litetext_convert.reference)"
    return {"text": kind, "num_heads": heads, "num_heads_source": source, "context_length": prepared.arch.context_length}
