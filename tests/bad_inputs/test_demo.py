"""Bad inputs through `litetext demo`."""

from __future__ import annotations

import pytest

from bad_inputs import corpus
from bad_inputs.common import (
    FullDisk,
    assert_one_line_error,
    fill_disk,
    folder_digest,
)
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
)

# ---------------------------------------------------------------------------------------------
# 8. demo


@pytest.mark.parametrize("under_file", [False, True], ids=["workdir is a file", "workdir under a file"])
def test_demo_workdir_that_cannot_be_a_folder(ws, cli, under_file):
    blocker = ws.fresh_parent("demo") / "blocker"
    blocker.write_text("a file")
    workdir = blocker / "sub" if under_file else blocker
    result = cli("demo", "--workdir", workdir)
    assert blocker.read_text() == "a file"
    assert_one_line_error(result, EXIT_BAD_INPUT, str(workdir))


def test_demo_disk_full_is_one_line(ws, cli, monkeypatch):
    """The demo writes its own checkpoint and converts it; a full disk while converting is one line."""
    workdir = ws.fresh_parent("demo_full")
    fill_disk(monkeypatch, FullDisk(free=100_000))
    result = cli("demo", "--workdir", workdir)
    monkeypatch.undo()
    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left")
    assert corpus.partial_leftovers(workdir) == []


def test_demo_never_replaces_what_is_in_its_workdir(ws, cli):
    """A workdir that holds anything (here: a user's converted/ and tokenizer/) gets a fresh demo-* subfolder."""
    workdir = ws.fresh_parent("demo_busy")
    for name in ("converted", "tokenizer"):
        (workdir / name).mkdir()
        (workdir / name / "mine.txt").write_text(f"the user's {name}")
    before = folder_digest(workdir)

    result = cli("demo", "--workdir", workdir)

    assert result.code == 0, result.stderr
    after = folder_digest(workdir)
    assert {path: digest for path, digest in after.items() if not path.startswith("demo-")} == before
    runs = [p for p in workdir.iterdir() if p.name.startswith("demo-")]
    assert len(runs) == 1 and (runs[0] / "converted" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Interrupted demo: it says what it left (issue 25, item 10)


def _interrupt_at_convert(monkeypatch):
    from litetext_convert import demo as demo_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_module, "convert_folder", interrupted)


def test_interrupted_demo_names_what_it_left_in_its_workdir(ws, cli, monkeypatch):
    workdir = ws.fresh_parent("demo_interrupted")
    _interrupt_at_convert(monkeypatch)
    result = cli("demo", "--workdir", workdir)
    line = assert_one_line_error(result, EXIT_INTERRUPTED, "interrupted", "the demo's files so far were left in", str(workdir))
    assert "nothing was left behind" not in line
    assert any(workdir.iterdir()), "the message names files that are not there"


def test_interrupted_demo_in_a_temporary_folder_leaves_nothing(cli, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TemporaryDirectory makes its folder
    _interrupt_at_convert(monkeypatch)
    result = cli("demo")
    assert_one_line_error(result, EXIT_INTERRUPTED, "interrupted; nothing was left behind")
    assert list(tmp_path.iterdir()) == []


def test_demo_json_prints_json_only(ws, cli):
    import json

    result = cli("demo", "--workdir", ws.fresh_parent("demo_json"), "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["passed"]
    assert result.stderr_lines == [], "under --json the human report goes nowhere (stdout is the JSON)"
