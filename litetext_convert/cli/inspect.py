"""`litetext inspect`: what a checkpoint holds and what litetext reads from it."""

from __future__ import annotations

from typing import Annotated

import typer

from litetext_convert.cli import _output
from litetext_convert.cli._options import (
    CheckpointOpt,
    ContextOpt,
    HeadsOpt,
    JsonOpt,
    RepoIdOpt,
    RevisionOpt,
    TargetOpt,
)


def command(
    checkpoint: CheckpointOpt,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    no_scan: Annotated[bool, typer.Option("--no-scan", help="Skip the NaN/Inf scan (it reads every byte).")] = False,
    target: TargetOpt = "image",
    as_json: JsonOpt = False,
) -> None:
    """Summarise a checkpoint: components, inferred architecture with sources, mapping coverage, NaN/Inf."""
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.plan.summary import summarize
    from litetext_convert.report import render_inspect

    out = _output.start(as_json)
    with out.status(f"reading {checkpoint}: architecture and mapping"):
        prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads,
                           target=target)
    if prepared.resolved.notice:  # e.g. an alias' file found under a new name
        out.note(f"note: {prepared.resolved.notice}")
    with out.status("scanning every tensor for NaN/Inf" if not no_scan else "summarising"):
        summary = summarize(prepared, scan=not no_scan)
    out.result(summary, lambda console: render_inspect(console, summary))
