"""A deterministic stand-in for CLIP's BPE vocabulary, so everything runs offline.

The merge list has exactly ``MAX_MERGES`` (48894) merges, so the vocabulary has CLIP's shape: 256 byte
symbols, 256 with ``</w>``, one per merge, and the specials at 49406 / 49407. Merges grow lower-case
words letter by letter, common letters first: ``(a, b</w>)`` and ``(a, b)`` for every letter pair, then
two-letter prefixes with a final letter, then three-letter ones, until the count is reached. Every
merge joins two symbols that exist by then, and every merge result is a new, distinct entry.

``write_hf_clip_tokenizer`` writes the same vocabulary for ``transformers.CLIPTokenizer``. Measured
against ``CleanRoomTokenizer`` with ``padding="max_length", truncation=True, max_length=context``
(tests/test_reference_tokenizer.py keeps this true), on the synthetic and on the real CLIP merges:

- padding: HF pads with ``<|endoftext|>`` (49407) where upstream pads with 0; every id before the
  padding is the same, including the end id, and truncation agrees (both keep the start id, the
  first ``context - 2`` text ids and put the end id last);
- cleaning: HF applies NFC, whitespace collapse and lower-casing only. Upstream also HTML-unescapes
  (twice), and runs ``ftfy.fix_text`` when installed: ``"&amp;"`` is ``&`` upstream but the
  characters ``& a m p ;`` in HF; mojibake, curly quotes, fullwidth letters and ligatures are
  repaired only upstream (and only with ftfy); decomposed accents are composed by HF and by ftfy,
  so without ftfy ``CleanRoomTokenizer`` differs from HF there;
- lower-casing: Python's ``str.lower`` turns a word-final ``Σ`` into ``ς``, HF's into ``σ``;
- special strings: a prompt containing ``<start_of_text>`` / ``<end_of_text>`` gets the special ids
  upstream; HF reserves ``<|startoftext|>`` / ``<|endoftext|>`` instead.

On plain ASCII prompts (3000 random ones) the ids are identical once HF's padding is mapped to 0; on
2023 prompts mixing the cases above, 1986 (context 77) are identical, with the real CLIP merges and
with these synthetic ones alike.
"""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from litetext_convert.reference.tokenizer import END_OF_WORD, MAX_MERGES, bytes_to_unicode

__all__ = ["synthetic_merges", "hf_vocab", "write_upstream_bpe_file", "write_hf_clip_tokenizer"]

# English letter frequency order, so the earliest (highest-priority) merges are the common ones.
_LETTERS = "etaoinshrdlcumwfgypbvkjxqz"
HF_START, HF_END = "<|startoftext|>", "<|endoftext|>"


def _letter_merges() -> Iterator[tuple[str, str]]:
    """Prefixes of growing length, each followed by a final letter as word end and word middle."""
    for prefix_length in itertools.count(1):
        for prefix in itertools.product(_LETTERS, repeat=prefix_length):
            for last in _LETTERS:
                yield "".join(prefix), last + END_OF_WORD
                yield "".join(prefix), last


@lru_cache(maxsize=1)
def synthetic_merges() -> tuple[tuple[str, str], ...]:
    return tuple(itertools.islice(_letter_merges(), MAX_MERGES))


def hf_vocab(merges: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocab.json for these merges, HF's special-token spelling."""
    byte_symbols = list(bytes_to_unicode().values())
    symbols = [*byte_symbols, *(symbol + END_OF_WORD for symbol in byte_symbols)]
    symbols += ["".join(merge) for merge in merges]
    symbols += [HF_START, HF_END]
    return {symbol: index for index, symbol in enumerate(symbols)}


def write_upstream_bpe_file(path: str | Path, merges: tuple[tuple[str, str], ...] | None = None) -> Path:
    """Upstream's gzip format: a header line, then one ``left right`` merge per line."""
    merges = synthetic_merges() if merges is None else merges
    path = Path(path)
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0))
    return path


def write_hf_clip_tokenizer(
    folder: str | Path, context_length: int, merges: tuple[tuple[str, str], ...] | None = None
) -> Path:
    """vocab.json, merges.txt and tokenizer_config.json, loadable by ``CLIPTokenizer.from_pretrained``."""
    merges = synthetic_merges() if merges is None else merges
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(hf_vocab(merges), ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2", *(f"{left} {right}" for left, right in merges)]
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": context_length,
        "bos_token": HF_START,
        "eos_token": HF_END,
        "unk_token": HF_END,
        "pad_token": HF_END,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
