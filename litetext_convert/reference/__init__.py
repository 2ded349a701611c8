"""The original side of parity, chosen once, named in every report.

Order of preference: the upstream efficientsam3 fork when importable (it provides
`sam3.backbones.mobile_clip`), else our clean-room re-implementation. Neither imports transformers
or reads the mapping table: both take the ORIGINAL checkpoint keys.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from litetext_convert import __version__
from litetext_convert.reference.text_encoder import CleanRoomTextEncoder, TextTrace
from litetext_convert.reference.tokenizer import CleanRoomTokenizer

CLEAN_ROOM = f"clean-room reference (litetext_convert.reference, litetext {__version__})"

# Head counts of the released students, as upstream's `_create_student_text_encoder` builds them.
# Kept here, apart from configs/variants.toml (what the converter uses), so that parity checks the
# converter's head count against an independent statement instead of sharing it.
UPSTREAM_HEADS = {("mct", 512, 6): 8, ("base", 512, 12): 8, ("base", 768, 12): 12}


def upstream_fork_available() -> bool:
    # find_spec imports the parent package; the fork's sam3/__init__ can fail on its own imports,
    # and Meta's PyPI `sam3` has the same name without the student text encoder.
    try:
        return importlib.util.find_spec("sam3.backbones.mobile_clip") is not None
    except Exception:
        return False


def original_heads(arch) -> tuple[int, str]:
    """The original's head count: upstream's own for a released shape, else the converter's (say so)."""
    text = arch.text
    shape = (text.family.value, text.hidden_size.value, text.num_layers.value)
    if shape in UPSTREAM_HEADS:
        return UPSTREAM_HEADS[shape], "upstream variant builder"
    return text.num_heads.value, f"not a released shape: taken from the conversion ({text.num_heads.source}), so not independently checked"


def load_original_text_encoder(state_dict: dict[str, torch.Tensor], arch, dtype: torch.dtype):
    """(callable ids -> TextTrace, description) for the original student text encoder."""
    heads, heads_source = original_heads(arch)
    fallback = None
    if upstream_fork_available():
        try:
            from litetext_convert.reference.upstream import load_upstream_text_encoder

            encoder, info = load_upstream_text_encoder(state_dict, arch, dtype, heads)
            return encoder, {**info, "num_heads": heads, "num_heads_source": heads_source}
        except (ImportError, OSError) as exc:
            fallback = fork_fallback(exc)
    encoder = CleanRoomTextEncoder.from_original_state_dict(
        state_dict, variant=arch.text.family.value, num_heads=heads, context_length=arch.context_length, dtype=dtype
    )
    info = {"name": CLEAN_ROOM, "kind": "clean-room", "version": __version__}
    if fallback:
        info["fallback"] = fallback
    return encoder, {**info, "num_heads": heads, "num_heads_source": heads_source}


def fork_fallback(exc: BaseException) -> str:
    """The upstream fork is on the path but cannot be used (e.g. one of its imports is missing in
    this environment): say so once, and use the clean-room reference instead of failing."""
    from litetext_convert.errors import note, printable

    missing = f"module {exc.name!r} is missing" if isinstance(exc, ModuleNotFoundError) and exc.name else printable(exc)
    reason = f"the upstream fork on the path cannot be imported ({missing}); the clean-room reference is used instead"
    if reason not in _FALLBACKS_SAID:
        _FALLBACKS_SAID.add(reason)
        note(reason)
    return reason


_FALLBACKS_SAID: set[str] = set()


def merges_from_folder(folder: Path) -> list[tuple[str, str]]:
    """The BPE merges saved with the converted tokenizer (tokenizer.json, else merges.txt)."""
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        merges = json.loads(tokenizer_json.read_text())["model"]["merges"]
        return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    merges_txt = folder / "merges.txt"
    if merges_txt.is_file():
        lines = merges_txt.read_text(encoding="utf-8").split("\n")
        return [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    raise FileNotFoundError(f"{folder} holds neither tokenizer.json nor merges.txt")


def load_original_tokenizer(folder: Path):
    """(callable (texts, context) -> ids, description). The vocabulary is data shared by both
    sides; the algorithm (cleaning, pre-tokenizing, BPE, padding, truncation) is upstream's."""
    if upstream_fork_available():
        try:
            from litetext_convert.reference.upstream import load_fork_tokenizer

            return load_fork_tokenizer()
        except (ImportError, OSError) as exc:
            fork_fallback(exc)
    return CleanRoomTokenizer(merges_from_folder(folder)), f"{CLEAN_ROOM}: upstream SimpleTokenizer semantics, vocabulary from {folder.name}"


__all__ = ["CLEAN_ROOM", "CleanRoomTextEncoder", "TextTrace", "load_original_text_encoder", "load_original_tokenizer"]
