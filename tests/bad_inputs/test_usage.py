"""Usage errors of every command (click's own parsing) are one line."""

from __future__ import annotations

import json

import pytest

from bad_inputs.common import (
    assert_nothing_left,
    assert_one_line_error,
)
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
)

# ---------------------------------------------------------------------------------------------
# 3. Usage errors (click's own parsing)


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "--bogus"],
        ["inspect", "-c", "x.pt", "--context-length", "0"],
        ["convert", "-c", "x.pt"],  # no --output-dir
        ["convert-all"],  # no --output-dir
        ["demo", "--bogus"],
    ],
    ids=["inspect unknown option", "inspect context 0", "convert no -o", "convert-all no -o", "demo unknown option"],
)
def test_usage_error_is_one_line(cli, args):
    assert_one_line_error(cli(*args), EXIT_BAD_INPUT, "--help")


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_a_failing_json_run_still_prints_json(ws, cli, command):
    parent = ws.fresh_parent("json_fail")
    extra = ["-o", parent / "out"] if command == "convert" else []
    result = cli(command, "-c", parent / "absent_ctx16.pt", *extra, "--json")
    assert_one_line_error(result, EXIT_BAD_INPUT, "checkpoint file not found")
    assert json.loads(result.stdout)["exit_code"] == EXIT_BAD_INPUT
    assert_nothing_left(parent)
