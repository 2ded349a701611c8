"""Usage errors of every command (click's own parsing) are one line."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bad_inputs.common import (
    HEADS,
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
    extra = [parent / "out", "--tokenizer", ws.tokenizer] if command == "convert" else []
    result = cli(command, "-c", parent / "absent_ctx16.pt", *extra, "--json")
    assert_one_line_error(result, EXIT_BAD_INPUT, "checkpoint file not found")
    assert json.loads(result.stdout)["exit_code"] == EXIT_BAD_INPUT
    assert_nothing_left(parent)


# ---------------------------------------------------------------------------------------------
# Error text cannot be forged: whatever a file holds, one error is one plain line


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_in_an_error_stays_one_plain_line(text):
    from litetext_convert.errors import LitetextError, printable

    line = LitetextError(f"unmapped source key: {text}", hint=text).one_line()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line)
    assert all(not 0xD800 <= ord(c) < 0xE000 for c in printable(text))  # printable on any terminal encoding


def test_forged_mapping_problems_are_one_line(ws, cli):
    from bad_inputs import corpus as bad

    checkpoint = bad.save_wrapped(ws.inputs("forged_many") / "forged_ctx16.pt",
                                  {**ws.state, bad.FORGED_KEY: torch.zeros(2), "x\r\nerror: second": torch.zeros(2)})
    line = assert_one_line_error(cli("inspect", "-c", checkpoint, *HEADS), EXIT_BAD_INPUT, "unmapped source key")
    assert "\\x1b[31m" in line and "\\r\\nerror: second" in line
