"""The one Markdown table renderer (model card, precision section, bench tables): the ground floor,
so every writer of Markdown escapes cells the same way."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    """A value as one Markdown cell: a pipe would split the cell, a newline would end the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table, no trailing newline."""
    lines = ["| " + " | ".join(cell(name) for name in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
