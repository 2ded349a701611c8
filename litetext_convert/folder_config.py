"""Reading a transformers folder someone else may have written: the one error path for its files.

Every file `audit` and `parity` read from a folder before transformers does (config.json, the
tokenizer's files, the processor settings, the weights, the card) is checked here first: by `stat`,
so a FIFO or a device is refused before it is opened (an open would block); by size, so a huge
file is never read whole; then as UTF-8 and JSON with bounded nesting; and config.json field by
field (types and ranges), so a string where an integer belongs is one line naming the field instead
of an error deep inside transformers. Nothing here writes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from litetext_convert.errors import LitetextError, printable

MB = 1 << 20
# Upper bounds far above any real file (full-size: config 6 kB, tokenizer.json 3.6 MB).
JSON_LIMIT = 8 * MB
TOKENIZER_LIMIT = 64 * MB
CARD_LIMIT = 16 * MB
MAX_JSON_DEPTH = 64  # real configs nest 4 deep; Python's own parser gives up near 1000 with RecursionError

CONFIG = "config.json"
# name -> (byte limit, kind): the small files transformers reads when it loads a folder.
TEXT_FILES = {
    CONFIG: (JSON_LIMIT, "json"),
    "tokenizer.json": (TOKENIZER_LIMIT, "json"),
    "tokenizer_config.json": (JSON_LIMIT, "json"),
    "special_tokens_map.json": (JSON_LIMIT, "json"),
    "added_tokens.json": (JSON_LIMIT, "json"),
    "vocab.json": (TOKENIZER_LIMIT, "json"),
    "merges.txt": (TOKENIZER_LIMIT, "text"),
    "processor_config.json": (JSON_LIMIT, "json"),
    "preprocessor_config.json": (JSON_LIMIT, "json"),
    "model.safetensors.index.json": (JSON_LIMIT, "json"),
}
CARD = "README.md"
MODEL_TYPES = ("sam3_lite_text", "sam3_video")


# ---------------------------------------------------------------- bounded, FIFO-safe reads


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


def check_regular(path: Path, limit: int | None = None) -> os.stat_result:
    """`path` is a regular file (a symlink to one counts) of at most `limit` bytes; decided by stat,
    before anything opens it."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise LitetextError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise LitetextError(f"{printable(path)} is a {_kind(info.st_mode)}, not a file (nothing was read from it)")
    if limit is not None and info.st_size > limit:
        raise LitetextError(f"{printable(path)} is {info.st_size / MB:,.0f} MB, more than the {limit // MB} MB such a file can be (not read)")
    return info


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking and checked
    again on the open descriptor, so a file swapped for a FIFO after the stat is refused too."""
    check_regular(path, limit)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise LitetextError(f"cannot read {printable(path)}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LitetextError(f"{printable(path)} is not a regular file (nothing was read from it)")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LitetextError(f"{printable(path)} grew past {limit // MB} MB while it was read")
    return data


def read_text(path: Path, limit: int) -> str:
    try:
        return read_bounded(path, limit).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LitetextError(f"{printable(path)} is not UTF-8 text (byte {exc.start})") from None


def _depth(value, limit: int) -> int:
    """Nesting depth of parsed JSON, level by level (a recursive walk is what we guard against).
    Only containers are carried to the next level: a tokenizer.json holds ~100k scalars, and visiting
    each one cost 0.2 s a read (1.4 s of a full-size parity)."""
    deepest, level = 0, [value] if type(value) in (dict, list) else []
    while level and deepest <= limit:
        deepest += 1
        deeper = []
        for node in level:
            deeper += [child for child in (node.values() if type(node) is dict else node) if type(child) in (dict, list)]
        level = deeper
    return deepest


def read_json(path: Path, limit: int = JSON_LIMIT):
    """Parsed JSON of a bounded file; damage, nesting and non-UTF-8 bytes are one line."""
    text = read_text(path, limit)
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    except ValueError as exc:
        raise LitetextError(f"{printable(path)} is damaged: not JSON ({printable(exc)})") from None
    else:
        depth = _depth(value, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise LitetextError(f"{printable(path)} nests more than {MAX_JSON_DEPTH} levels deep; no transformers file does")
    return value


def read_json_object(path: Path, limit: int = JSON_LIMIT) -> dict:
    value = read_json(path, limit)
    if not isinstance(value, dict):
        raise LitetextError(f"{printable(path)} holds a JSON {type(value).__name__}, not an object")
    return value


# ---------------------------------------------------------------- the folder's files, before transformers


def check_folder_files(folder: Path, *, card: bool = False, role: str = "transformers folder") -> None:
    """Every file transformers (and litetext) will read from `folder` is a regular, bounded, well-formed
    file; the weights are regular files; a tokenizer is there. `card`: README.md is read too (parity
    regenerates it), so it must be UTF-8 text. `role` names what the folder should be in messages."""
    folder = Path(folder)
    try:
        is_folder = stat.S_ISDIR(os.stat(folder).st_mode)
    except FileNotFoundError:
        raise LitetextError(f"{printable(folder)} is not a {role} (no such folder)") from None
    except OSError as exc:  # a name too long for the file system, a loop of links, no permission
        raise LitetextError(f"cannot use {printable(folder)}: {exc.strerror or exc}") from None
    if not is_folder:
        raise LitetextError(f"{printable(folder)} is not a {role} (it is a file)")
    if not os.path.lexists(folder / CONFIG):
        raise LitetextError(f"{printable(folder)} is not a {role} (no {CONFIG})")
    parsed = {}
    for name, (limit, kind) in TEXT_FILES.items():
        path = folder / name
        if os.path.lexists(path):
            parsed[name] = read_json_object(path, limit) if kind == "json" else read_text(path, limit)
    for shard in sorted(folder.glob("*.safetensors")):
        check_regular(shard)
    if card and os.path.lexists(folder / CARD):
        read_text(folder / CARD, CARD_LIMIT)
    _check_tokenizer_present(folder, parsed.get("tokenizer.json"))


def _check_tokenizer_present(folder: Path, tokenizer_json: dict | None) -> None:
    if tokenizer_json is None and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise LitetextError(f"{printable(folder)} has no tokenizer (tokenizer.json, or vocab.json with merges.txt)")
    if tokenizer_json is not None:
        model = tokenizer_json.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("merges"), list) or not isinstance(model.get("vocab"), dict):
            raise LitetextError(f"{printable(folder / 'tokenizer.json')} is not a BPE tokenizer (no model.vocab and model.merges)")


# ---------------------------------------------------------------- config.json, field by field

# Fields that size a tensor or a loop: a positive integer (never a bool, a string or a float).
POSITIVE_INTS = frozenset({
    "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "num_layers",
    "max_position_embeddings", "vocab_size", "projection_dim", "patch_size", "image_size", "num_channels",
    "fpn_hidden_size", "num_queries", "repmixer_kernel_size", "roi_size",
})
MAX_INT = 1 << 24  # far above any real width; stops a 10**30 before transformers allocates for it


def read_config(folder: Path) -> dict:
    """config.json of a SAM3-LiteText folder, every structural field checked: the one reader `audit`
    and `parity` use before transformers sees the file."""
    path = Path(folder) / CONFIG
    config = read_json_object(path)
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise LitetextError(
            f"{printable(path)} says model_type {printable(repr(model_type))}: not a SAM3-LiteText folder "
            f"({' or '.join(MODEL_TYPES)} expected); transformers would build another model from it"
        )
    detector = config.get("detector_config", config) if model_type == "sam3_video" else config
    if not isinstance(detector, dict) or not isinstance(detector.get("text_config"), dict):
        raise LitetextError(f"{printable(path)} has no text_config object: not a SAM3-LiteText config")
    _check_fields(path, config, "")
    return config


def _check_fields(path: Path, node: dict, prefix: str) -> None:
    for key, value in node.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_fields(path, value, where + ".")
        elif key in POSITIVE_INTS and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
                raise LitetextError(f"{printable(path)}: {printable(where)} is {_described(value)}; a positive integer is expected")
        elif key.endswith("_eps") and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 < value < 1):
                raise LitetextError(f"{printable(path)}: {printable(where)} is {_described(value)}; a number between 0 and 1 is expected")
    heads, width = node.get("num_attention_heads"), node.get("hidden_size")
    if isinstance(heads, int) and isinstance(width, int) and width % heads:
        raise LitetextError(
            f"{printable(path)}: {printable(prefix)}num_attention_heads {heads} does not divide hidden_size {width}"
        )


def _described(value) -> str:
    shown = printable(repr(value))
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{shown} (a {type(value).__name__})"
