"""80 columns (issue 25, item 10): help and reports keep every word whole, nothing is cropped to `…`."""

from __future__ import annotations

import pytest

COMMANDS = ["", "inspect", "convert", "parity", "audit", "push", "convert-all", "demo"]


@pytest.fixture
def narrow(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


@pytest.mark.parametrize("command", COMMANDS, ids=[c or "litetext" for c in COMMANDS])
def test_help_at_80_columns_crops_nothing(cli, narrow, command):
    result = cli(*([command] if command else []), "--help")
    assert result.code == 0, result.stderr
    assert "…" not in result.stdout, [line for line in result.stdout.splitlines() if "…" in line]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_audit_at_80_columns_keeps_code_whole(ws, cli, narrow, verified):
    from bad_inputs.common import HEADS

    result = cli("audit", verified, "-c", ws.good, *HEADS)
    assert result.code == 0, result.stderr
    assert "…" not in result.stdout
    assert "Sam3LiteTextModel.forward(attention_mask=...)" in result.stdout  # a subject, not folded in two
