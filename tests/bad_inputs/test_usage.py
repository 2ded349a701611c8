"""Usage errors of every command (click's own parsing) are one line."""

from __future__ import annotations

import pytest

from bad_inputs.common import (
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
