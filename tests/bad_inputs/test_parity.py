"""Bad inputs through `litetext parity`: damaged converted folders, foreign tokenizers."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import (
    HEADS,
    Workspace,
    assert_one_line_error,
    folder_digest,
)
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
    EXIT_PARITY_FAILED,
    LitetextError,
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


def _decoder_heads_not_dividing(folder: Path) -> None:
    """An edit text-scope parity would not exercise: only the detector's decoder splits into these heads."""
    config = json.loads((folder / "config.json").read_text())
    config["detr_decoder_config"]["num_attention_heads"] = 3
    (folder / "config.json").write_text(json.dumps(config))


def _truncate_a_shard(folder: Path) -> None:
    shard = min(folder.glob("model-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


DAMAGED_FOLDERS = [
    pytest.param(_drop_a_shard, ("cannot be loaded", "model-00002-of"), id="missing shard"),
    pytest.param(_drop_the_index, ("cannot be loaded",), id="missing index"),
    pytest.param(_edit_hidden_size, ("mismatch",), id="hidden size edited"),
    pytest.param(_break_config_json, ("config.json is damaged",), id="config.json not json"),
    pytest.param(_truncate_a_shard, ("cannot be loaded",), id="truncated shard"),
    pytest.param(_decoder_heads_not_dividing, ("num_attention_heads 3 does not divide",), id="decoder heads edited"),
]


@pytest.mark.parametrize("damage, fragments", DAMAGED_FOLDERS)
def test_parity_on_a_damaged_folder(ws, cli, sharded_folder, damage, fragments):
    folder = _damaged(sharded_folder, ws, damage.__name__, damage)
    before = folder_digest(folder)
    source_before = corpus.sha256(ws.good)

    result = cli("parity", "-c", ws.good, *HEADS, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, *fragments)
    assert folder_digest(folder) == before, "parity wrote into or changed a damaged folder"
    assert corpus.sha256(ws.good) == source_before


def test_parity_on_a_folder_that_is_not_converted(ws, cli):
    result = cli("parity", "-c", ws.good, *HEADS, ws.root / "no-such-folder")
    assert_one_line_error(result, EXIT_BAD_INPUT, "is not a converted folder")


def test_parity_with_another_context_than_the_folder(ws, cli, sharded_folder):
    result = cli("parity", "-c", ws.good, *HEADS, sharded_folder, "--context-length", "8")
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
    assert cli("convert", "-c", ws.good, *HEADS, "--tokenizer", tokenizer, folder).code == 0

    result = cli("parity", "-c", ws.good, *HEADS, folder)

    assert_one_line_error(result, EXIT_PARITY_FAILED, "parity failed")
    assert "tokenizer ids" in result.stdout and "different tokens" in result.stdout


def test_parity_with_a_foreign_but_consistent_vocabulary_fails(ws, cli):
    tokenizer = write_hf_clip_tokenizer(ws.inputs("tokenizer_foreign") / "tokenizer", 16, tuple(reversed(synthetic_merges())))
    folder = ws.fresh_parent("foreign") / "out"
    assert cli("convert", "-c", ws.good, *HEADS, "--tokenizer", tokenizer, folder).code == 0
    result = cli("parity", "-c", ws.good, *HEADS, folder)
    assert_one_line_error(result, EXIT_PARITY_FAILED, "tokenizer")


# ---------------------------------------------------------------------------------------------
# --plot FILE.png never writes over a file litetext did not write


def test_parity_plot_never_overwrites_a_users_file(ws, cli, sharded_folder):
    target = ws.fresh_parent("plot_foreign") / "figure.png"
    target.write_bytes(b"\x89PNG\r\n\x1a\n a user's picture")
    converted = _damaged(sharded_folder, ws, "plot_foreign", lambda folder: None)  # a copy

    result = cli("parity", "-c", ws.good, *HEADS, converted, "--plot", target)

    assert_one_line_error(result, EXIT_BAD_INPUT, "exists and is not a plot litetext wrote")
    assert target.read_bytes() == b"\x89PNG\r\n\x1a\n a user's picture"


def test_a_plot_litetext_wrote_may_be_replaced(ws):
    from litetext_convert.parity.plot import PLOT_MARK, check_plot_target

    target = ws.fresh_parent("plot_own") / "figure.png"
    target.write_bytes(b"\x89PNG\r\n\x1a\n...tEXt" + PLOT_MARK + b"...")
    try:
        check_plot_target(target)
    except LitetextError as err:  # without matplotlib the check goes on to say so; never about the file
        assert "matplotlib" in err.one_line()


# ---------------------------------------------------------------------------------------------
# An original side that cannot be imported


def _fake_fork(root: Path, broken_import: str) -> Path:
    """The upstream fork's layout (sam3.backbones.mobile_clip, sam3.model.text_encoder_student),
    whose model module imports something this environment lacks."""
    package = root / "sam3"
    for sub in ("backbones", "model"):
        (package / sub).mkdir(parents=True, exist_ok=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "backbones" / "mobile_clip.py").write_text("")
    (package / "model" / "text_encoder_student.py").write_text(f"import {broken_import}\n")
    (package / "model" / "tokenizer_ve.py").write_text(f"import {broken_import}\n")
    return root


def test_fork_with_a_missing_dependency_falls_back_to_the_clean_room_reference(ws, cli, sharded_folder, monkeypatch):
    fork = _fake_fork(ws.inputs("fake_fork"), "torchvision_is_not_installed_here")
    monkeypatch.syspath_prepend(str(fork))
    for name in [m for m in sys.modules if m == "sam3" or m.startswith("sam3.")]:
        monkeypatch.delitem(sys.modules, name)
    converted = _damaged(sharded_folder, ws, "fork_fallback", lambda folder: None)  # a copy

    result = cli("parity", "-c", ws.good, *HEADS, converted, "--json")

    for name in [m for m in sys.modules if m == "sam3" or m.startswith("sam3.")]:
        del sys.modules[name]
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    notes = [line for line in result.stderr_lines if line.startswith("note:")]
    assert notes == [
        (
            "note: the upstream fork on the path cannot be imported (module 'torchvision_is_not_installed_here' "
            "is missing); the clean-room reference is used instead"
        )
    ]
    assert "clean-room" in json.dumps(json.loads(result.stdout))


def test_broken_meta_sam3_is_one_line(ws, monkeypatch):
    from litetext_convert.errors import LitetextError
    from litetext_convert.reference import sam3_detector

    root = ws.inputs("broken_sam3")
    (root / "sam3").mkdir(exist_ok=True)
    (root / "sam3" / "__init__.py").write_text("")
    (root / "sam3" / "model_builder.py").write_text("import a_module_that_is_missing\n")
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "sam3" or m.startswith("sam3.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(LitetextError) as caught:
        sam3_detector._import_sam3()
    for name in [m for m in sys.modules if m == "sam3" or m.startswith("sam3.")]:
        del sys.modules[name]
    assert "Meta's sam3 is installed but cannot be imported" in caught.value.one_line()
    assert "'a_module_that_is_missing' is missing" in caught.value.one_line()
