"""Every output name from a sanitised stem (issue 25): `convert-all --source DIR` refuses a file
whose name would not make a plain folder name inside FOLDER ("...pt" once wrote beside FOLDER,
"..pt" turned FOLDER itself into a converted folder), and a name that resolves outside FOLDER."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import HEADS, assert_one_line_error
from litetext_convert.errors import EXIT_BAD_INPUT

BAD_NAMES = {
    "three dots": "...pt",
    "two dots": "..pt",
    "only the suffix": ".pt",
    "hidden": ".hidden_ctx16.pt",
    "newline": "a\nerror: forged_ctx16.pt",
    "escape": "e\x1b[31m_ctx16.pt",
    "division slash": "a\u2215..\u2215b_ctx16.pt",
    "fullwidth solidus": "a\uff0fb_ctx16.pt",
    "backslash": "a\\..\\b_ctx16.pt",
    "right-to-left override": "x\u202egnp_ctx16.pt",
    "zero-width space": "a\u200bb_ctx16.pt",
    "space": "my model_ctx16.pt",
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: corpus.sha256(p) for p in folder.iterdir() if p.is_file()}


def _run(ws, cli, source: Path, parent: Path, *extra: str):
    return cli("convert-all", parent / "all", "--source", source, "--tokenizer", ws.tokenizer, *HEADS, "--no-verify", *extra)


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_a_name_that_is_no_plain_folder_name_is_refused(ws, cli, tmp_path, case):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ws.good, source / BAD_NAMES[case])
    before = _digests(source)
    parent = tmp_path / "parent"
    parent.mkdir()

    result = _run(ws, cli, source, parent)

    # (the table on stdout and bidi characters are the terminal-escaping work of issue 25, item 7)
    assert_one_line_error(result, EXIT_BAD_INPUT, "1 of 1 checkpoints did not convert")
    assert sorted(p.name for p in parent.rglob("*")) == []  # nothing beside, in or as FOLDER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parent", "source"]
    assert _digests(source) == before


def test_the_json_row_says_why_and_the_good_file_still_converts(ws, cli, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ws.good, source / "good_ctx16.pt")
    shutil.copy(ws.good, source / "..pt")
    before = _digests(source)
    parent = tmp_path / "parent"
    parent.mkdir()

    result = _run(ws, cli, source, parent, "--json")

    assert result.code == EXIT_BAD_INPUT and "Traceback" not in result.stderr
    rows = {row["checkpoint"]: row for row in json.loads(result.stdout)["results"]}
    assert rows["good_ctx16.pt"]["status"] == "ok"
    assert rows["..pt"]["status"] == "failed" and "cannot name an output folder after '..pt'" in rows["..pt"]["error"]
    assert sorted(p.name for p in parent.iterdir()) == ["all"]
    assert sorted(p.name for p in (parent / "all").iterdir()) == ["good_ctx16"]
    assert _digests(source) == before


def test_a_link_at_the_output_name_that_leads_outside_is_refused(ws, cli, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ws.good, source / "model_ctx16.pt")
    outside = tmp_path / "users_folder"
    outside.mkdir()
    (outside / "thesis.txt").write_text("mine")
    folder = tmp_path / "all"
    folder.mkdir()
    (folder / "model_ctx16").symlink_to(outside)

    result = cli("convert-all", folder, "--source", source, "--tokenizer", ws.tokenizer, *HEADS, "--no-verify", "--force")

    assert_one_line_error(result, EXIT_BAD_INPUT, "1 of 1 checkpoints did not convert")
    assert sorted(p.name for p in outside.iterdir()) == ["thesis.txt"]
    assert (outside / "thesis.txt").read_text() == "mine"
    assert (folder / "model_ctx16").is_symlink()
