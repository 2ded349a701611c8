"""One vocabulary each: dtypes (names, torch, safetensors codes) and every tolerance in
configs/tolerances.toml, read by the parity modules through one accessor."""

from __future__ import annotations

import pytest
import torch

from litetext_convert import dtypes
from litetext_convert.errors import LitetextError


def test_the_safetensors_code_table_reads_both_ways_and_matches_safetensors_itself():
    from safetensors.torch import _TYPES  # safetensors' own code -> torch dtype table

    for name, code in dtypes.SAFETENSORS_CODES.items():
        torch_dtype = getattr(torch, name)
        assert dtypes.safetensors_code(torch_dtype) == code
        assert dtypes.from_safetensors_code(code) is torch_dtype
        assert _TYPES[code] is torch_dtype
    assert dtypes.from_safetensors_code("F8_E4M3") is None


@pytest.mark.parametrize("scope", ["text", "tracker", "video"])
@pytest.mark.parametrize("dtype", dtypes.COMPUTE)
def test_every_comparing_scope_has_a_tolerance_for_every_compute_dtype(scope, dtype):
    atol, rtol = dtypes.tolerances(dtype, scope)
    assert 0 <= atol <= 1e-4 and 0 <= rtol <= 1e-4


def test_the_moved_tables_keep_their_numbers():
    """The detector, tracker and video numbers left code for configs/tolerances.toml unchanged."""
    assert dtypes.stage_tolerances("float32", "detector")[0] == ("^pred_boxes$", "abs", 1e-4)
    assert dtypes.stage_tolerances("float32", "detector")[-1] == (".*", "rel", 1e-4)
    assert dtypes.stage_tolerances("float64", "detector") == ((".*", "rel", 1e-9),)
    assert dtypes.tolerances("float64", "tracker") == dtypes.tolerances("float64", "video") == (1e-9, 1e-9)
    assert dtypes.tolerance_value("tracker", "memory", "rtol") == 2.0**-7  # one bfloat16 step
    with pytest.raises(LitetextError, match=r"no \[detector.bfloat16\] stage tolerances"):
        dtypes.stage_tolerances("bf16", "detector")


def test_the_markdown_table_escapes_pipes_and_newlines_in_every_cell():
    from litetext_convert.markdown import table

    rendered = table(("stage", "note"), [("a|b", "two\nlines"), (1.5, None)])
    assert rendered.splitlines() == ["| stage | note |", "|---|---|", "| a\\|b | two lines |", "| 1.5 | None |"]
