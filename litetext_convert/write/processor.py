"""The tokenizer saved beside the weights: a CLIP tokenizer cut to the context, and the vocabulary it is.
The processor around it is the target's (targets/<id>.py `save_processor`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from litetext_convert.errors import LitetextError, printable
from litetext_convert.paths import read_config


# The transformers classes `load_tokenizer` uses: conversion imports them in the target model's
# background thread (TargetModel.start_in_background), not on the main one after the writing.
TOKENIZER_CLASSES = ("CLIPTokenizer",)


def processor_settings() -> dict:
    return read_config("processor.toml")


# What CLIPTokenizer.from_pretrained needs: either set of files is enough.
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def tokenizer_files_here(source: str | None) -> bool:
    """Whether the tokenizer's files are on this machine already (a local folder, or the Hub cache),
    found without importing transformers and without the network. Only whether they are *there*:
    `load_tokenizer` still decides whether they are a CLIP tokenizer."""
    source = source or processor_settings()["tokenizer"]["default_source"]
    folder = Path(source)
    if folder.is_dir():
        return any(all((folder / name).is_file() for name in files) for files in TOKENIZER_FILES)
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(all(isinstance(try_to_load_from_cache(source, name), str) for name in files) for files in TOKENIZER_FILES)
    except Exception:  # noqa: BLE001 - not a repo id, or an unusable cache: the full load says why
        return False


def check_tokenizer(source: str | None, *, full: bool = True) -> None:
    """Load (and so download or find in the cache) the tokenizer now, not after the weights.

    `full=False` (convert): when its files are already here, stop at that; convert loads the
    tokenizer itself after writing the shards and before anything is published (a damaged one is
    refused then, in one line), and imports its classes beside the model, off the main thread:
    loading it here first cost ~1 s of imports before any weight was read."""
    if not full and tokenizer_files_here(source):
        return
    load_tokenizer(source, 77)


def load_tokenizer(source: str | None, context_length: int):
    """A CLIP tokenizer from a folder or a Hub repo (through the HF cache), cut to the context."""
    from transformers import CLIPTokenizer

    from litetext_convert.hub import cache_only_if_unreachable, quiet

    settings = processor_settings()["tokenizer"]
    source = source or settings["default_source"]
    online = Path(source).is_dir() or cache_only_if_unreachable()  # no retry loop when the Hub is away
    try:
        # split_special_tokens: the pad token "!" must stay an ordinary character inside text
        # ("bird!" ends in "!</w>" upstream); only padding uses its id.
        with quiet():
            tokenizer = CLIPTokenizer.from_pretrained(
                source, model_max_length=context_length, split_special_tokens=settings["split_special_tokens"]
            )
    except Exception as exc:  # a corrupt folder makes the `tokenizers` library raise a bare Exception
        offline = not online or any(word in str(exc).lower() for word in ("offline", "connect", "cache"))
        damaged = "" if isinstance(exc, (OSError, ValueError)) else f" (damaged: {' '.join(printable(exc).split())[:120]})"
        raise LitetextError(
            f"cannot load the tokenizer {printable(source)!r}"
            + (" (not in the Hugging Face cache and the Hub cannot be reached)" if offline else damaged),
            hint="pass --tokenizer with a local folder holding vocab.json and merges.txt",
        ) from None
    if len(tokenizer) < 1000 and not online:
        raise LitetextError(
            f"cannot load the tokenizer {source!r}: not in the Hugging Face cache and the Hub cannot be reached",
            hint="go online once (it is then cached), or pass --tokenizer with a local folder holding vocab.json and merges.txt",
        )
    if len(tokenizer) < 1000:
        # transformers builds an empty tokenizer rather than failing when the files are missing.
        raise LitetextError(
            f"cannot load the tokenizer {source!r}: no vocabulary found (not a folder with vocab.json/merges.txt or "
            "tokenizer.json, and not in the Hugging Face cache; offline?)",
            hint="pass --tokenizer with a local folder holding vocab.json and merges.txt",
        )
    if tokenizer.convert_tokens_to_ids(settings["pad_token"]) != 0:
        raise LitetextError(f"tokenizer {source!r} is not a CLIP vocabulary: {settings['pad_token']!r} is not id 0")
    tokenizer.pad_token = settings["pad_token"]
    return tokenizer


def merges_fingerprint(merges: list[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(f"{a} {b}" for a, b in merges).encode()).hexdigest()


def vocabulary_name(fingerprint: str) -> str | None:
    """Which known vocabulary a merge list is: upstream's CLIP one, or the synthetic stand-in the
    offline tests and demo use; None for anything else."""
    from litetext_convert.reference.synthetic_vocab import synthetic_merges

    if fingerprint == processor_settings()["vocabulary"]["clip_merges_sha256"]:
        return "CLIP (upstream's bpe_simple_vocab_16e6)"
    if fingerprint == merges_fingerprint(list(synthetic_merges())):
        return "litetext synthetic test vocabulary (offline stand-in for CLIP's)"
    return None
