"""`litetext parity`: prove, stage by stage, that FOLDER computes what its source checkpoint computes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litetext_convert.cli import _output
from litetext_convert.cli._checks import check_scope_extras
from litetext_convert.cli._options import (
    ContextOpt,
    FolderArg,
    HeadsOpt,
    JsonOpt,
    LegacyConvertedOpt,
    ParityDtypeOpt,
    RepoIdOpt,
    RevisionOpt,
    ScopeOpt,
    TargetOpt,
    TokenizerOpt,
    one_folder,
)
from litetext_convert.errors import LitetextError, ParityFailure


DEBUG_HELP = ("Show every stage (per layer), not only the verdict. On an ONNX folder, debug graphs with every text "
              "and DETR decoder layer as outputs are exported first, into a temporary folder (slow).")


def command(
    ctx: typer.Context,
    folder: FolderArg = None,
    checkpoint: Annotated[
        Optional[str],
        typer.Option("--checkpoint", "-c", metavar="CKPT",
                     help="The original checkpoint. Default: the one FOLDER was converted from. "
                     "Without FOLDER, it is converted into a temporary folder first."),
    ] = None,
    tokenizer: TokenizerOpt = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    scope: ScopeOpt = "text",
    target: TargetOpt = "image",
    dtype: ParityDtypeOpt = "float32",
    batch: Annotated[int, typer.Option("--batch", min=1, metavar="N", help="Rows of seeded token ids compared.")] = 2,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the token ids (and of the detector's noise image).")] = 0,
    prompt: Annotated[
        Optional[list[str]], typer.Option("--prompt", metavar="TEXT", help="A real prompt to compare too (repeatable).")
    ] = None,
    image: Annotated[
        Optional[Path], typer.Option("--image", metavar="FILE", help="Image for --scope detector (default: seeded noise).")
    ] = None,
    box: Annotated[Optional[list[str]], typer.Option("--box", metavar="CX,CY,W,H", help="Box prompt, normalised (repeatable).")] = None,
    atol: Annotated[Optional[float], typer.Option("--atol", metavar="X", help="Absolute tolerance (default by dtype).")] = None,
    rtol: Annotated[Optional[float], typer.Option("--rtol", metavar="X", help="Relative tolerance (default by dtype).")] = None,
    debug_intermediates: Annotated[
        bool, typer.Option("--debug-intermediates", help=DEBUG_HELP)
    ] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option("--plot", metavar="FILE.png",
                     help="Also draw the per-stage differences (and the detector's masks) as a PNG; needs matplotlib (the plot extra)."),
    ] = None,
    as_json: JsonOpt = False,
    converted: LegacyConvertedOpt = None,
) -> None:
    """Prove the converted model computes what the original computes, stage by stage. Exit 1 on mismatch."""
    from litetext_convert.parity.run import ParityRequest
    from litetext_convert.workflows.prove import prove_folder
    from litetext_convert.write.processor import check_tokenizer

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, converted, required=False)
    # Everything that can be refused without the weights, refused first: the folder, then the options.
    if folder is not None:
        checkpoint, revision, num_heads, context_length = _folder_source(folder, scope, checkpoint, revision, num_heads, context_length)
    boxes = _refuse_early(scope, box, image, plot)
    if folder is None and checkpoint is None:
        raise LitetextError("give the converted FOLDER, or -c CKPT to convert into a temporary folder first")
    if folder is None:
        with out.status("finding the tokenizer"):
            check_tokenizer(tokenizer)
    request = ParityRequest(scope=scope, dtype=dtype, batch=batch, seed=seed, prompts=prompt or [], image=image, boxes=boxes,
                            atol=atol, rtol=rtol, keep_outputs=plot is not None, debug_intermediates=debug_intermediates)
    record = prove_folder(checkpoint, folder=folder, request=request, tokenizer=tokenizer, repo_id=repo_id, revision=revision,
                          context_length=context_length, num_heads=num_heads, target=target, status=out.status)
    _report(out, record, plot, debug_intermediates)


def _refuse_early(scope: str, box: list[str] | None, image: Path | None, plot: Path | None) -> list[list[float]]:
    from litetext_convert.parity.detector import parse_box

    check_scope_extras(scope)
    boxes = [list(parse_box(b)) for b in box or []]
    if image is not None and not Path(image).is_file():
        raise LitetextError(f"--image {image}: no such file")
    if plot is not None:
        from litetext_convert.parity.plot import check_plot_target

        check_plot_target(plot)
    return boxes


def _report(out, record: dict, plot: Path | None, debug: bool) -> None:
    from litetext_convert.folder.verdict import record_verdict
    from litetext_convert.report import render_parity

    if plot is not None:
        from litetext_convert.parity.plot import plot_record

        plot_record(record, plot)
        record["plot"] = str(plot)
    public = {key: value for key, value in record.items() if not key.startswith("_")}
    out.result(public, lambda console: render_parity(console, public, debug=debug))
    found = record_verdict(record)  # THE verdict, as the record, the report and the card show it
    if not found.passed:
        raise ParityFailure(f"parity failed: first diverging stage {found.first_failure}")


def _folder_source(folder: Path, scope: str, checkpoint, revision, num_heads, context_length) -> tuple:
    """The folder is checked first (a foreign or damaged one is one line, nothing read); the checkpoint
    defaults to the one it was converted from (its memo)."""
    from litetext_convert.folder.records import folder_source
    from litetext_convert.folder_config import check_folder_files, read_config
    from litetext_convert.targets import scope_target
    from litetext_convert.workflows.prove import check_provable

    check_folder_files(folder, card=True, role="converted folder")  # someone else's files: checked before anything reads them
    read_config(folder)
    check_provable(folder)
    scope_target(scope, folder, "image")  # a folder whose target lacks the scope is refused now
    if checkpoint is not None:
        return checkpoint, revision, num_heads, context_length
    source = folder_source(folder)
    return (source.checkpoint, revision or source.revision,
            num_heads if num_heads is not None else source.num_heads,
            context_length if context_length is not None else source.context_length)
