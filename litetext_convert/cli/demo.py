"""`litetext demo`: the whole job offline on an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from litetext_convert.cli import _output
from litetext_convert.cli._options import JsonOpt
from litetext_convert.errors import ParityFailure


def command(
    workdir: Annotated[
        Optional[Path], typer.Option("--workdir", metavar="DIR", help="Keep the demo files here (default: a temporary folder).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Offline end to end on an embedded default: build a small upstream-layout S0 checkpoint, inspect,
    convert, and prove parity (float32 and float64)."""
    from litetext_convert.demo import run_demo

    out = _output.start(as_json)
    # With --json, stdout carries only the JSON and the human report goes nowhere, as every command does.
    result = run_demo(Console(quiet=True) if as_json else out.stdout, workdir)
    out.result(result)
    if not result["passed"]:
        raise ParityFailure("demo parity failed")
