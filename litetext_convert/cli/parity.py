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
        bool, typer.Option("--debug-intermediates", help="Show every stage (per layer), not only the verdict.")
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
    from litetext_convert.folder_config import check_folder_files, read_config
    from litetext_convert.parity.detector import parse_box
    from litetext_convert.parity.run import (
        check_converted_folder,
        folder_source,
        run_parity,
    )
    from litetext_convert.report import render_parity
    from litetext_convert.targets import folder_target

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, converted, required=False)
    if folder is not None:  # a folder someone else may have written: its files checked before anything reads them
        check_folder_files(folder, card=True, role="converted folder")
        read_config(folder)
    # Everything that can be refused without the weights, refused first.
    if scope == "tracker" and folder is not None:
        from litetext_convert.targets import scope_target

        check_converted_folder(folder)
        scope_target(scope, folder, "image")  # a folder whose target lacks the scope is refused now
    check_scope_extras(scope)
    boxes = [list(parse_box(b)) for b in box or []]
    if image is not None and not Path(image).is_file():
        raise LitetextError(f"--image {image}: no such file")
    if plot is not None:
        from litetext_convert.parity.plot import check_plot_target

        check_plot_target(plot)
    if folder is not None:
        check_converted_folder(folder)
        if checkpoint is None:
            source = folder_source(folder)
            checkpoint = source["checkpoint"]
            revision = revision or source.get("revision")
            num_heads = num_heads if num_heads is not None else source.get("num_heads")
            context_length = context_length if context_length is not None else source.get("context_length")
    elif checkpoint is None:
        raise LitetextError("give the converted FOLDER, or -c CKPT to convert into a temporary folder first")
    else:
        from litetext_convert.write.processor import check_tokenizer

        with out.status("finding the tokenizer"):
            check_tokenizer(tokenizer)

    prove = run_parity
    if folder is not None and folder_target(folder).id == "onnx":  # its graphs in onnxruntime (parity/onnx.py)
        from litetext_convert.parity.onnx import prove_onnx_folder as prove
    record = prove(
        checkpoint, converted=folder, tokenizer=tokenizer, repo_id=repo_id, revision=revision,
        context_length=context_length, num_heads=num_heads, scope=scope, dtype=dtype, batch=batch, seed=seed,
        prompts=prompt or [], image=image, boxes=boxes, atol=atol, rtol=rtol, status=out.status,
        keep_outputs=plot is not None, target=target,
    )
    if plot is not None:
        from litetext_convert.parity.plot import plot_record

        plot_record(record, plot)
        record["plot"] = str(plot)
    public = {key: value for key, value in record.items() if not key.startswith("_")}
    out.result(public, lambda console: render_parity(console, public, debug=debug_intermediates))
    if not record["passed"]:
        raise ParityFailure(f"parity failed: first diverging stage {record['first_failure']}")
