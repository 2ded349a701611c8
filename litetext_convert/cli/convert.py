"""`litetext convert`: one checkpoint into a converted FOLDER."""

from __future__ import annotations

import typer

from litetext_convert.cli import _output
from litetext_convert.cli._options import (
    CheckpointOpt,
    ContextOpt,
    ConvertDtypeOpt,
    FolderArg,
    ForceOpt,
    HeadsOpt,
    JsonOpt,
    LegacyOutputOpt,
    MaxShardOpt,
    PrecisionOpt,
    RepoIdOpt,
    RevisionOpt,
    TargetOpt,
    TokenizerOpt,
    VerifyLoadOpt,
    one_folder,
)


def command(
    ctx: typer.Context,
    checkpoint: CheckpointOpt,
    folder: FolderArg = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    dtype: ConvertDtypeOpt = "keep",
    max_shard_size: MaxShardOpt = "5GB",
    tokenizer: TokenizerOpt = None,
    force: ForceOpt = False,
    verify_load: VerifyLoadOpt = False,
    target: TargetOpt = "image",
    precision: PrecisionOpt = "fp32",
    as_json: JsonOpt = False,
    output_dir: LegacyOutputOpt = None,
) -> None:
    """Convert one checkpoint into FOLDER, which Sam3LiteTextModel (--target video: Sam3VideoModel).from_pretrained loads."""
    # Only this module and workflows/convert.py are imported before the source's hash starts: no torch yet.
    from litetext_convert.workflows.convert import ConvertOptions, convert_folder

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, output_dir, required=True)
    if target == "onnx" or precision != "fp32":  # the image detector as ONNX graphs (litetext_convert/onnx)
        return _onnx(out, checkpoint, folder, target, precision, tokenizer, force, repo_id, revision, context_length, num_heads)
    options = ConvertOptions(
        repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads, target=target, dtype=dtype,
        max_shard_size=max_shard_size, tokenizer=tokenizer, force=force, verify_load=verify_load,
    )
    result = convert_folder(checkpoint, folder, options, progress=out)

    from litetext_convert.report import render_convert

    data = {"folder": str(result.folder), "seconds": result.seconds, "shards": result.shards, "record": result.record}
    out.result(data, lambda console: render_convert(console, result.record, str(result.folder), result.seconds, result.shards))


def _onnx(out, checkpoint, folder, target, precision, tokenizer, force, repo_id, revision, context_length, num_heads) -> None:
    """`--target onnx` (and --precision, which only that target takes): litetext_convert/onnx."""
    from litetext_convert.errors import LitetextError
    from litetext_convert.folder import remember_source
    from litetext_convert.onnx import missing_runtime
    from litetext_convert.workflows.convert import check_output_folder
    from litetext_convert.write.processor import check_tokenizer
    from litetext_convert.onnx.export import export_folder, parse_precisions
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.publish.model_card import write_folder_card

    if target != "onnx":
        raise LitetextError("--precision picks the rungs of --target onnx; the other targets take --dtype")
    check_output_folder(folder, force=force)  # everything refusable without the weights, refused first
    rungs = parse_precisions(precision)
    if missing_runtime():
        raise LitetextError(f"--target onnx needs the ONNX extra: {missing_runtime()}")
    with out.status("finding the tokenizer"):
        check_tokenizer(tokenizer, full=False)
    with out.status(f"reading {checkpoint}: architecture and mapping"):
        prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads)
    result = export_folder(prepared, folder, tokenizer=tokenizer, rungs=rungs, force=force, status=out.status)
    remember_source(result.folder, checkpoint, prepared, num_heads=num_heads, context_length=context_length)
    write_folder_card(result.folder)
    data = {"folder": str(result.folder), "graphs": result.graphs, "rungs": rungs, "seconds": result.seconds, "record": result.record}
    out.result(data, lambda console: console.print(
        f"wrote {result.folder}: {len(result.graphs)} ONNX graphs (rungs {', '.join(rungs)}) in {result.seconds['total']:.1f} s; "
        f"next: litetext parity {result.folder}"))
