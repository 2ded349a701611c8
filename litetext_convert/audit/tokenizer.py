"""Processor/tokenizer level: pad id, context, special-token handling and the image processor of the
folder, against upstream's (configs/processor.toml, write/processor.py)."""

from __future__ import annotations

import json
from pathlib import Path

from litetext_convert.audit.findings import Finding
from litetext_convert.errors import LitetextError
from litetext_convert.parity.text import EOT, PROMPT_CORPUS, vocabulary_problems
from litetext_convert.plan.prepare import Prepared
from litetext_convert.targets.image import image_processor_fields

UPSTREAM_PAD_ID = 0
RECONVERT = "re-convert with `litetext convert` (it saves the tokenizer upstream's way)"


def load_folder_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        raise LitetextError(f"{folder} has no usable tokenizer: {' '.join(str(exc).split())[:160]}") from None


def audit_tokenizer(prepared: Prepared, folder: Path, tokenizer, upstream, prompts: list[str]) -> list[Finding]:
    context = prepared.arch.context_length
    findings: list[Finding] = []
    if tokenizer.pad_token_id != UPSTREAM_PAD_ID:
        findings.append(Finding(
            level="tokenizer", kind="pad id", subjects=[f"pad_token={tokenizer.pad_token!r}"],
            affects="text features of real tokens (upstream attends to padded positions, so the pad token's "
            "embedding reaches every token) and the detector's padding mask (upstream masks ids == 0)",
            cause=f"pads with id {tokenizer.pad_token_id} (the CLIP tokenizer's default <|endoftext|>); upstream pads with 0",
            fix="usage: replace padded ids with 0 (ids[attention_mask == 0] = 0), or re-convert with litetext",
            recipe="pad_zero", detail=f"folder {tokenizer.pad_token_id}, upstream {UPSTREAM_PAD_ID}",
        ))
    if tokenizer.model_max_length != context:
        findings.append(Finding(
            level="tokenizer", kind="context", subjects=[f"model_max_length={tokenizer.model_max_length}"],
            affects="how many positions padding='max_length' produces: extra padded positions upstream never sees",
            cause=f"the tokenizer's length is {tokenizer.model_max_length}; the original's context is {context}",
            fix=f"usage: tokenize with max_length={context}, truncation=True (or re-convert with litetext)",
            recipe="context", detail=f"folder {tokenizer.model_max_length}, original {context}",
        ))
    findings += _token_differences(folder, tokenizer, upstream, context, prompts)
    findings += _image_processor(prepared, folder)
    return findings


def _token_differences(folder: Path, tokenizer, upstream, context: int, prompts: list[str]) -> list[Finding]:
    """Ids of every corpus prompt, padding aside: the folder's tokenizer against upstream's algorithm."""
    _, problems = vocabulary_problems(folder)
    corpus = list(dict.fromkeys(PROMPT_CORPUS + prompts))
    up_ids = upstream(corpus, context).tolist()
    theirs = tokenizer(corpus, padding="max_length", truncation=True, max_length=context)["input_ids"]
    different = []
    for prompt, ours, their in zip(corpus, up_ids, theirs):
        if _unpadded(ours) != _unpadded(their):
            different.append(prompt)
    findings = []
    if problems:
        findings.append(Finding(
            level="tokenizer", kind="vocabulary", subjects=["merges"], affects="every token id, so every output",
            cause=problems[0]["why"], fix=RECONVERT,
        ))
    if different:
        special = tokenizer.pad_token == "!" and not getattr(tokenizer, "split_special_tokens", False)
        cause = ("'!' is the pad token and special, so the tokenizer cuts it out of text; upstream keeps it as BPE"
                 if special else "the folder's tokenizer splits these prompts differently from upstream's")
        findings.append(Finding(
            level="tokenizer", kind="token ids", subjects=[repr(p) for p in different],
            affects="every output for these prompts", cause=cause, fix=RECONVERT,
            detail=f"{len(different)} of {len(corpus)} prompts differ beyond padding",
        ))
    return findings


def _unpadded(ids: list[int]) -> list[int]:
    """Start token through the first end token: what both tokenizers agree on when they agree."""
    end = ids.index(EOT) + 1 if EOT in ids else len(ids)
    return ids[:end]


def _image_processor(prepared: Prepared, folder: Path) -> list[Finding]:
    stored = _stored_image_processor(folder)
    if stored is None:
        return [Finding(
            level="tokenizer", kind="image processor", subjects=["processor_config.json"],
            affects="users cannot load the processor (AutoProcessor fails)", cause="no image processor settings saved",
            fix="re-convert with `litetext convert` (it writes the processor)",
        )]
    findings = []
    for field, ours in image_processor_fields(prepared.arch).items():
        if field == "image_processor_type":
            continue
        theirs = stored.get(field)
        if not _same(theirs, ours):
            findings.append(Finding(
                level="tokenizer", kind="image processor", subjects=[field],
                affects="pixel values, so every detector output", cause=f"{field} differs from the original's preprocessing",
                fix=f"usage: image processor {field}={ours!r} (or re-convert with litetext)", detail=f"folder {theirs!r}, original {ours!r}",
            ))
    return findings


def _stored_image_processor(folder: Path) -> dict | None:
    processor = folder / "processor_config.json"
    if processor.is_file():
        data = json.loads(processor.read_text())
        if isinstance(data.get("image_processor"), dict):
            return data["image_processor"]
    legacy = folder / "preprocessor_config.json"
    return json.loads(legacy.read_text()) if legacy.is_file() else None


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b
