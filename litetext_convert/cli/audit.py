"""`litetext audit TARGET -c CKPT`: check a transformers LiteText folder or Hub repo against the original."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from litetext_convert.cli import _output
from litetext_convert.cli._options import CheckpointOpt, ContextOpt, HeadsOpt, JsonOpt, RepoIdOpt, RevisionOpt
from litetext_convert.errors import LitetextError, ParityFailure
from litetext_convert import dtypes


def command(
    target: Annotated[
        str, typer.Argument(metavar="TARGET", help="A transformers folder, or a Hub repo REPO_ID or REPO_ID@REVISION (downloaded through the HF cache).")
    ],
    checkpoint: CheckpointOpt,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", metavar="TEXT", help="Extra prompt for the behaviour level (repeatable).")] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", metavar="DTYPE", help="float64 | float32 for the behaviour level (and the detector scope).")
    ] = "float64",
    scope: Annotated[
        str, typer.Option("--scope", metavar="SCOPE", help="text | all (all: whole-detector parity too; needs Meta's sam3).")
    ] = "text",
    vision: Annotated[
        bool, typer.Option("--vision", help="Also measure vision-config findings on the FPN (two ViT forwards: slow at full size).")
    ] = False,
    debug_intermediates: Annotated[bool, typer.Option("--debug-intermediates", help="Every text layer in the table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Audit a published conversion: tensors, config, tokenizer and behaviour against the original; exit 1 when it
    does not compute what the original computes."""
    from litetext_convert.audit.render import render_audit
    from litetext_convert.audit.run import audit

    out = _output.start(as_json)
    dtype = dtypes.canonical(dtype)
    if dtypes.is_reduced(dtype):  # the audit compares meaning; a reduced dtype would only add rounding
        raise LitetextError(f"--dtype {dtype}: audit runs in float64 or float32")
    if scope not in ("text", "all"):
        raise LitetextError(f"--scope {scope!r}: choose text or all")
    with out.status(f"auditing {target}"):
        result = audit(target, checkpoint, repo_id=repo_id, revision=revision, context_length=context_length,
                       num_heads=num_heads, prompts=prompt or [], dtype=dtype, vision=vision, detector=scope == "all")
    out.result(result.to_json(), lambda console: render_audit(console, result, debug=debug_intermediates))
    if not result.passed:
        raise ParityFailure(f"audit: {len(result.deviations)} findings change what {target} computes")
