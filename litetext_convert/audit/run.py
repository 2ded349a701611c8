"""The audit's engine: resolve the target, prepare the original, run every level, collect findings."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from litetext_convert.audit.behaviour import (
    USAGE_FINDINGS,
    audit_behaviour,
    original_reference,
    vision_costs,
)
from litetext_convert.audit.config import audit_config, check_belongs
from litetext_convert.audit.findings import AuditResult, Finding
from litetext_convert.audit.target import resolve_target
from litetext_convert.audit.tensors import FolderTensors, audit_tensors
from litetext_convert.audit.tokenizer import audit_tokenizer, load_folder_tokenizer
from litetext_convert.folder_config import check_folder_files, read_config
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
    # Every file transformers will read is checked first (stat before open, bounded, typed fields).
    check_folder_files(folder)
    stored_config = read_config(folder)
    prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads)
    check_belongs(prepared, folder, stored_config)
    prompts = prompts or []
    tensors, findings, overrides, tokenizer, upstream = _file_levels(prepared, folder, prompts)
    notes = list(prepared.arch.notes)
    original = _original_info(prepared)

    behaviour_result = None
    detector_result = None
    if behaviour:
        # One side at a time, as text parity: the original runs and is freed before the folder loads.
        reference = original_reference(prepared, upstream, prompts, dtype)
        model = _load_model(folder, dtype, notes, widen_vision=vision)
        if model is None:
            findings.append(Finding(level="behaviour", kind="cannot load", subjects=[str(folder)],
                                    affects="everything: transformers cannot load the folder", cause=notes[-1],
                                    fix="re-convert with `litetext convert`"))
        else:
            behaviour_result = audit_behaviour(prepared, model, tokenizer, reference, findings, tensors.fixes, overrides, dtype)
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


def _file_levels(prepared, folder: Path, prompts: list[str]):
    """What the files say before anything runs: tensors, config, tokenizer and processor findings."""
    tensors = audit_tensors(prepared, FolderTensors(folder))
    config_findings, overrides = audit_config(prepared, folder)
    tokenizer = load_folder_tokenizer(folder)
    upstream, _ = load_original_tokenizer(folder)  # upstream's algorithm on the folder's vocabulary
    tokenizer_findings = audit_tokenizer(prepared, folder, tokenizer, upstream, prompts)
    findings: list[Finding] = tensors.findings + config_findings + tokenizer_findings + list(USAGE_FINDINGS.values())
    return tensors, findings, overrides, tokenizer, upstream


def _load_model(folder: Path, dtype: str, notes: list[str], widen_vision: bool = False):
    """The folder as users load it; missing tensors are initialised (seeded) so the behaviour of a
    damaged folder is still measured, and the tensor level names them.

    float64 is widened as parity does it: loaded as stored, then only the modules that are run
    (the text side; the vision side with --vision) widened. Loading the whole model in float64
    costs 8 bytes for every ViT weight that the text audit never uses (9.7 GB at full size)."""
    from transformers import Sam3LiteTextModel
    from transformers.utils import logging as hf_logging

    from litetext_convert.parity.text import TEXT_MODULES

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    try:
        model = Sam3LiteTextModel.from_pretrained(str(folder), dtype="auto" if dtype == "float64" else torch_dtype)
    except Exception as exc:  # a damaged folder fails inside transformers in many ways
        notes.append(f"transformers cannot load the folder: {' '.join(str(exc).split())[:200]}")
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
    for name in (*TEXT_MODULES, *(("vision_encoder",) if widen_vision else ())):
        _widen(getattr(model, name), torch_dtype, folder)  # float16/bfloat16/float32 -> float64 is exact
    return model.eval()


WIDEN_CHUNK = 1 << 24  # elements: 128 MB in float64


def _widen(module, dtype: torch.dtype, folder: Path) -> None:
    """`module.to(dtype)` a part at a time, each part's stored pages released once it is widened:
    the widened copy no longer reads them (the folder stays mapped for the rest, so only clean
    pages go). Peak: the widened module plus one part as stored, not the whole module twice."""
    from litetext_convert.parity.runtime import release_folder_pages

    children = list(module.children())
    if children and sum(p.numel() for p in module.parameters()) > WIDEN_CHUNK:
        for child in children:
            _widen(child, dtype, folder)
    module.to(dtype)  # its own tensors (the children's are widened already)
    if dtype == torch.float64:
        release_folder_pages(folder)


def _original_info(prepared) -> dict:
    from litetext_convert.reference import original_heads, upstream_fork_available

    heads, source = original_heads(prepared.arch)
    kind = "upstream fork" if upstream_fork_available() else "clean-room reference (litetext_convert.reference)"
    return {"text": kind, "num_heads": heads, "num_heads_source": source, "context_length": prepared.arch.context_length}
