"""Hostile transformers folders through `audit` and `parity` (issue 25, item 6): config fields of the
wrong type, nesting, tokenizer and processor files missing, malformed, huge or FIFOs, weights that
are FIFOs, a card that is not UTF-8, a 300-byte name, and a folder and checkpoint that do not belong
together. Each is one `error:` line (exit 2), before anything is loaded; nothing in the folder
changes and nothing is left beside it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import HEADS, Workspace, assert_one_line_error
from litetext_convert.errors import EXIT_BAD_INPUT
from litetext_convert.terminal import shown

# ---------------------------------------------------------------------------------------------
# How each folder is damaged


def _config(edit: Callable[[dict], None]):
    def damage(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))

    return damage


def _text(field: str, value):
    return _config(lambda config: config["text_config"].__setitem__(field, value))


def _write(name: str, data: str | bytes):
    def damage(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return damage


def _remove(*names: str):
    return lambda folder: [(folder / name).unlink() for name in names]


def _fifo(name: str):
    def damage(folder: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name)

    return damage


def _huge(name: str, size: int = 3 << 30):
    """Sparse: 3 GB that take no disk and, read whole, would take 3 GB of memory."""

    def damage(folder: Path) -> None:
        with open(folder / name, "r+b") as handle:
            handle.truncate(size)

    return damage


NESTED = "[" * 100_000 + "]" * 100_000

# id -> (damage, fragments of the one line)
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "hidden_size a string": (_text("hidden_size", "8"), ("text_config.hidden_size is '8' (a str)", "positive integer")),
    "layer_norm_eps a string": (_text("layer_norm_eps", "1e-5"), ("text_config.layer_norm_eps is '1e-5' (a str)",)),
    "layer_norm_eps negative": (_text("layer_norm_eps", -1.0), ("text_config.layer_norm_eps is -1.0",)),
    "layer_norm_eps NaN": (_text("layer_norm_eps", float("nan")), ("text_config.layer_norm_eps is nan",)),
    "heads zero": (_text("num_attention_heads", 0), ("text_config.num_attention_heads is 0",)),
    "heads a bool": (_text("num_attention_heads", True), ("text_config.num_attention_heads is True (a bool)",)),
    "heads 10^30": (_text("num_attention_heads", 10**30), ("text_config.num_attention_heads is",)),
    "heads not dividing the width": (_text("num_attention_heads", 3), ("text_config.num_attention_heads 3 does not divide",)),
    "context a string": (_text("max_position_embeddings", "16"), ("max_position_embeddings is '16'",)),
    "context negative": (_text("max_position_embeddings", -4), ("max_position_embeddings is -4",)),
    "text_config a list": (_config(lambda c: c.__setitem__("text_config", [1])), ("no text_config object",)),
    "text_config missing": (_config(lambda c: c.pop("text_config")), ("no text_config object",)),
    "model_type bert": (_config(lambda c: c.__setitem__("model_type", "bert")), ("model_type 'bert'", "not a SAM3-LiteText folder")),
    "config a list": (_write("config.json", "[1, 2]"), ("config.json holds a JSON list",)),
    "config nested 10^5 deep": (_write("config.json", NESTED), ("nests more than 64 levels",)),
    "config not UTF-8": (_write("config.json", b'{"x": "\xff\xfe"}'), ("config.json is not UTF-8",)),
    "config a FIFO": (_fifo("config.json"), ("config.json is a FIFO", "nothing was read")),
    "config huge": (_huge("config.json"), ("config.json is 3,072 MB", "not read")),
    "tokenizer missing": (_remove("tokenizer.json"), ("has no tokenizer",)),
    "tokenizer.json not JSON": (_write("tokenizer.json", "{ nope"), ("tokenizer.json is damaged: not JSON",)),
    "tokenizer.json a list": (_write("tokenizer.json", "[]"), ("tokenizer.json holds a JSON list",)),
    "tokenizer.json without merges": (_write("tokenizer.json", '{"model": {"vocab": {}}}'), ("is not a BPE tokenizer",)),
    "tokenizer.json nested": (_write("tokenizer.json", NESTED), ("nests more than 64 levels",)),
    "tokenizer.json a FIFO": (_fifo("tokenizer.json"), ("tokenizer.json is a FIFO",)),
    "tokenizer.json huge": (_huge("tokenizer.json"), ("tokenizer.json is 3,072 MB",)),
    "tokenizer_config not JSON": (_write("tokenizer_config.json", "{ nope"), ("tokenizer_config.json is damaged",)),
    "tokenizer_config a FIFO": (_fifo("tokenizer_config.json"), ("tokenizer_config.json is a FIFO",)),
    "tokenizer_config a list": (_write("tokenizer_config.json", "[]"), ("tokenizer_config.json holds a JSON list",)),
    "processor config not JSON": (_write("processor_config.json", "{ nope"), ("processor_config.json is damaged",)),
    "processor config a FIFO": (_fifo("processor_config.json"), ("processor_config.json is a FIFO",)),
    "weights a FIFO": (_fifo("model.safetensors"), ("model.safetensors is a FIFO",)),
}
PARITY_ONLY = {  # parity regenerates the card, so it reads README.md; audit never does
    "README.md not UTF-8": (_write("README.md", b"\xff\xfe a card \x80"), ("README.md is not UTF-8",)),
    "README.md a FIFO": (_fifo("README.md"), ("README.md is a FIFO",)),
}


# ---------------------------------------------------------------------------------------------
# Evidence


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry: regular files by sha256 (sparse giants by size and mtime), others by type."""
    state = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        key = path.relative_to(folder).as_posix()
        if stat.S_ISREG(info.st_mode) and info.st_size < (64 << 20):
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[key] = (stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns)
    return state


def hostile_copy(verified: Path, ws: Workspace, case: str, damage) -> Path:
    parent = ws.fresh_parent("hostile")
    folder = parent / "folder"
    shutil.copytree(verified, folder)
    damage(folder)
    return folder


def run_and_check(cli, folder: Path, args: list, fragments: tuple[str, ...]) -> None:
    parent_before = corpus.listing(folder.parent)
    before = snapshot(folder)
    result = cli(*args)
    assert_one_line_error(result, EXIT_BAD_INPUT, *fragments)
    assert snapshot(folder) == before, "the folder changed"
    assert corpus.listing(folder.parent) == parent_before, "something was left beside the folder"


@pytest.mark.parametrize("case", list(CASES))
def test_audit_on_a_hostile_folder(ws, cli, verified, case):
    damage, fragments = CASES[case]
    folder = hostile_copy(verified, ws, case, damage)
    run_and_check(cli, folder, ["audit", folder, "-c", ws.good, *HEADS], fragments)


@pytest.mark.parametrize("case", [*CASES, *PARITY_ONLY])
def test_parity_on_a_hostile_folder(ws, cli, verified, case):
    damage, fragments = {**CASES, **PARITY_ONLY}[case]
    folder = hostile_copy(verified, ws, case, damage)
    run_and_check(cli, folder, ["parity", folder], fragments)


@pytest.mark.parametrize("command", ["audit", "parity"])
def test_a_folder_name_of_300_bytes(ws, cli, command):
    folder = ws.fresh_parent("long_name") / ("x" * 300)
    args = ["audit", folder, "-c", ws.good, *HEADS] if command == "audit" else ["parity", folder]
    assert_one_line_error(cli(*args), EXIT_BAD_INPUT, "File name too long")


def test_audit_with_a_checkpoint_the_folder_was_not_converted_from(ws, cli, verified):
    """Another architecture (wider text encoder): one line saying they do not belong together."""
    from litetext_convert.synthetic import builder as synthetic

    other = synthetic.tiny_checkpoint(ws.inputs("other_arch") / "tiny_mobileclip_s1_ctx16.pt", "s1", 16)
    folder = hostile_copy(verified, ws, "other checkpoint", lambda folder: None)
    heads = ["--num-heads", str(synthetic.TINY_TEXT_PRESETS["s1"].heads)]
    run_and_check(cli, folder, ["audit", folder, "-c", other, *heads], ("do not belong together",))


def test_the_escaped_folder_name_is_in_the_line(ws, cli, verified):
    folder = hostile_copy(verified, ws, "escaped", _fifo("config.json"))
    hostile = folder.with_name("f\x1b[2J\u202e")
    folder.rename(hostile)
    line = assert_one_line_error(cli("parity", hostile), EXIT_BAD_INPUT)
    assert shown(hostile) in line
