"""Bad inputs through `litetext demo`."""

from __future__ import annotations

import pytest

from bad_inputs import corpus
from bad_inputs.common import *
from bad_inputs.common import _main_quiet  # noqa: F401
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
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
    _fill_disk(monkeypatch, _FullDisk(free=100_000))
    result = cli("demo", "--workdir", workdir)
    monkeypatch.undo()
    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left")
    assert corpus.partial_leftovers(workdir) == []
