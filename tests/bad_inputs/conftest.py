"""Fixtures of the bad-input package: one workspace (a tiny upstream-layout checkpoint and an
offline tokenizer) for every module, and converted folders built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from bad_inputs import corpus
from bad_inputs.common import HEADS, Workspace
from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer


@pytest.fixture(scope="package")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("bad-inputs")
    state = corpus.tiny_state()
    good = corpus.save_wrapped(root / "tiny_s0_ctx16.pt", state)
    tokenizer = write_hf_clip_tokenizer(root / "tokenizer", 16)
    return Workspace(root, state, good, tokenizer)


@pytest.fixture(scope="package")
def verified(ws) -> Path:
    """A converted folder with a passing parity record (what push needs); push tests work on copies."""
    folder = ws.root / "verified" / "tiny_s0_ctx16"
    for args in (["convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, folder], ["parity", "-c", ws.good, *HEADS, folder]):
        result = run_cli(args)
        assert result.code == 0, result.stderr
    assert (folder / "parity" / "text-float32-default.json").is_file()
    return folder


@pytest.fixture(scope="package")
def sharded_folder(ws) -> Path:
    """A converted folder in several shards (not the suite's `converted`: damage needs shards)."""
    folder = ws.root / "converted-pristine"
    result = run_cli(["convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, folder, "--max-shard-size", "1MB"])
    assert result.code == 0, result.stderr
    return folder
