"""Bad inputs through `litetext parity`: damaged converted folders, foreign tokenizers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import *
from bad_inputs.common import _main_quiet  # noqa: F401
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
    EXIT_PARITY_FAILED,
)
from litetext_convert.reference.synthetic_vocab import (
    synthetic_merges,
    write_hf_clip_tokenizer,
)

# ---------------------------------------------------------------------------------------------
# 6. parity on damaged converted folders


def _damaged(pristine: Path, ws: Workspace, name: str, damage: Callable[[Path], None]) -> Path:
    folder = ws.root / "damaged" / name
    shutil.copytree(pristine, folder)
    damage(folder)
    return folder


def _drop_a_shard(folder: Path) -> None:
    sorted(folder.glob("model-*.safetensors"))[1].unlink()


def _drop_the_index(folder: Path) -> None:
    (folder / "model.safetensors.index.json").unlink()


def _edit_hidden_size(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["hidden_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))


def _break_config_json(folder: Path) -> None:
    (folder / "config.json").write_text("{ not json")


def _truncate_a_shard(folder: Path) -> None:
    shard = min(folder.glob("model-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


DAMAGED_FOLDERS = [
    pytest.param(_drop_a_shard, ("cannot be loaded", "model-00002-of"), id="missing shard"),
    pytest.param(_drop_the_index, ("cannot be loaded",), id="missing index"),
    pytest.param(_edit_hidden_size, ("mismatch",), id="hidden size edited"),
    pytest.param(_break_config_json, ("config.json is damaged",), id="config.json not json"),
    pytest.param(_truncate_a_shard, ("cannot be loaded",), id="truncated shard"),
]


@pytest.mark.parametrize("damage, fragments", DAMAGED_FOLDERS)
def test_parity_on_a_damaged_folder(ws, cli, sharded_folder, damage, fragments):
    folder = _damaged(sharded_folder, ws, damage.__name__, damage)
    before = folder_digest(folder)
    source_before = corpus.sha256(ws.good)

    result = cli("parity", "-c", ws.good, *HEADS, "--converted", folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, *fragments)
    assert folder_digest(folder) == before, "parity wrote into or changed a damaged folder"
    assert corpus.sha256(ws.good) == source_before


def test_parity_on_a_folder_that_is_not_converted(ws, cli):
    result = cli("parity", "-c", ws.good, *HEADS, "--converted", ws.root / "no-such-folder")
    assert_one_line_error(result, EXIT_BAD_INPUT, "is not a converted folder")


def test_parity_with_another_context_than_the_folder(ws, cli, sharded_folder):
    result = cli("parity", "-c", ws.good, *HEADS, "--converted", sharded_folder, "--context-length", "8")
    assert_one_line_error(result, EXIT_BAD_INPUT, "converted for context 16", "--context-length")


def test_parity_bad_scope(ws, cli):
    assert_one_line_error(cli("parity", "-c", ws.good, "--scope", "everything"), EXIT_BAD_INPUT, "--scope 'everything'")


def _swap_ids(vocab_file: Path, first: str, second: str) -> None:
    vocab = json.loads(vocab_file.read_text())
    vocab[first], vocab[second] = vocab[second], vocab[first]
    vocab_file.write_text(json.dumps(vocab))


def test_parity_with_a_tokenizer_whose_ids_differ_exits_1(ws, cli):
    """The folder's tokenizer maps words to other ids than its own merges say (another
    vocabulary file beside the merges): the weights match, the tokenizer check fails, exit 1."""
    tokenizer = ws.inputs("tokenizer_swapped") / "tokenizer"
    shutil.copytree(ws.tokenizer, tokenizer)
    _swap_ids(tokenizer / "vocab.json", "a</w>", "c</w>")
    folder = ws.fresh_parent("swapped") / "out"
    assert cli("convert", "-c", ws.good, *HEADS, "--tokenizer", tokenizer, "-o", folder).code == 0

    result = cli("parity", "-c", ws.good, *HEADS, "--converted", folder)

    assert_one_line_error(result, EXIT_PARITY_FAILED, "parity failed")
    assert "tokenizer ids" in result.stdout and "different tokens" in result.stdout


def test_parity_with_a_foreign_but_consistent_vocabulary_fails(ws, cli):
    tokenizer = write_hf_clip_tokenizer(ws.inputs("tokenizer_foreign") / "tokenizer", 16, tuple(reversed(synthetic_merges())))
    folder = ws.fresh_parent("foreign") / "out"
    assert cli("convert", "-c", ws.good, *HEADS, "--tokenizer", tokenizer, "-o", folder).code == 0
    result = cli("parity", "-c", ws.good, *HEADS, "--converted", folder)
    assert_one_line_error(result, EXIT_PARITY_FAILED, "tokenizer")
