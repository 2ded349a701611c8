"""Bad inputs through `litetext convert-all`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import CliResult

from bad_inputs import corpus
from bad_inputs.common import (
    HEADS,
    assert_nothing_left,
    assert_one_line_error,
)
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
)
from litetext_convert.publish import push as publish

# ---------------------------------------------------------------------------------------------
# 7. convert-all


@pytest.mark.parametrize(
    "make_source, fragment",
    [
        (lambda ws: ws.root / "no-such-source", "not a folder"),
        (lambda ws: ws.good, "not a folder"),
        (lambda ws: ws.inputs("empty_source"), "no *.pt files"),
    ],
    ids=["source missing", "source is a file", "source without .pt"],
)
def test_convert_all_bad_source(ws, cli, make_source, fragment):
    parent = ws.fresh_parent("all")
    result = cli("convert-all", parent / "all", "--source", make_source(ws), "--tokenizer", ws.tokenizer, *HEADS)
    assert_one_line_error(result, EXIT_BAD_INPUT, fragment)
    assert_nothing_left(parent)


@pytest.fixture
def mixed_source(ws) -> Path:
    source = ws.inputs("mixed_source")
    shutil.copy(ws.good, source / "good_ctx16.pt")
    corpus.random_bytes_file(source / "broken_ctx16.pt", 1024)
    return source


def _convert_all_mixed(ws, cli, source: Path) -> tuple[CliResult, Path]:
    parent = ws.fresh_parent("mixed")
    result = cli("convert-all", parent / "all", "--source", source, "--tokenizer", ws.tokenizer, *HEADS,
                 "--no-verify", "--json")
    return result, parent


def test_convert_all_one_broken_file_does_not_stop_the_rest(ws, cli, mixed_source):
    before = {p.name: corpus.sha256(p) for p in mixed_source.iterdir()}
    result, parent = _convert_all_mixed(ws, cli, mixed_source)

    assert result.code == EXIT_BAD_INPUT and "Traceback" not in result.stderr
    rows = {row["checkpoint"]: row for row in json.loads(result.stdout)["results"]}
    assert rows["good_ctx16.pt"]["status"] == "ok"
    assert rows["broken_ctx16.pt"]["status"] == "failed" and "is not a checkpoint" in rows["broken_ctx16.pt"]["error"]
    assert corpus.listing(parent / "all") == {"good_ctx16"}, "the broken file left a folder behind"
    assert {p.name: corpus.sha256(p) for p in mixed_source.iterdir()} == before


def test_convert_all_failure_says_so_on_stderr(ws, cli, mixed_source):
    result, _ = _convert_all_mixed(ws, cli, mixed_source)
    assert_one_line_error(result, EXIT_BAD_INPUT, "broken_ctx16.pt")


def test_convert_all_hub_offline_listing(ws, cli, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    def offline(*args, **kwargs):
        raise OfflineModeIsEnabled("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", offline)
    parent = ws.fresh_parent("all_offline")
    result = cli("convert-all", parent / "all", "--tokenizer", ws.tokenizer)
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot list", "--source")
    assert_nothing_left(parent)


def test_convert_all_hub_unreachable(ws, cli, monkeypatch):
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise publish._http.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", unreachable)
    parent = ws.fresh_parent("all_unreachable")
    result = cli("convert-all", parent / "all", "--tokenizer", ws.tokenizer)
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot list", "--source")


def test_convert_all_force_keeps_a_users_subfolder(ws, cli):
    """--force replaces a subfolder only when litetext wrote it; a user's folder of the same name stays."""
    source = ws.inputs("all_force_source")
    shutil.copy(ws.good, source / "good_ctx16.pt")
    parent = ws.fresh_parent("all_force")
    mine = parent / "all" / "good_ctx16"
    mine.mkdir(parents=True)
    (mine / "mine.txt").write_text("the user's")

    result = cli("convert-all", parent / "all", "--source", source, "--tokenizer", ws.tokenizer, *HEADS,
                 "--no-verify", "--force", "--json")

    assert_one_line_error(result, EXIT_BAD_INPUT, "good_ctx16.pt")
    row = json.loads(result.stdout)["results"][0]
    assert row["status"] == "failed" and "'mine.txt'" in row["error"]
    assert corpus.listing(mine) == {"mine.txt"} and corpus.listing(parent / "all") == {"good_ctx16"}
