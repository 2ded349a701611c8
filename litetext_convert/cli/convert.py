"""`litetext convert`: one checkpoint into a converted FOLDER."""

from __future__ import annotations

import typer

from litetext_convert.cli import _output
from litetext_convert.cli._checks import check_output_folder, check_tokenizer
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
    from litetext_convert.source.digest import SourceHash
    from litetext_convert.source.resolve import already_here

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, output_dir, required=True)
    # Everything that can be refused without the weights is refused before they are read.
    check_output_folder(folder, force=force)
    if target == "onnx" or precision != "fp32":  # the image detector as ONNX graphs (litetext_convert/onnx)
        return _onnx(out, checkpoint, folder, target, precision, tokenizer, force, repo_id, revision, context_length, num_heads)
    # The record's sha256, hashed on the second core while this one imports torch (~1.3 s overlapped).
    here = already_here(checkpoint, repo_id=repo_id, revision=revision)
    early_hash = SourceHash(here) if here is not None else True
    from litetext_convert.folder import remember_source
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.publish.model_card import write_folder_card
    from litetext_convert.report import render_convert
    from litetext_convert.write.convert import convert, target_entries
    from litetext_convert.write.processor import TOKENIZER_CLASSES
    from litetext_convert.write.shards import parse_size

    parse_size(max_shard_size)
    with out.status("finding the tokenizer"):
        check_tokenizer(tokenizer, full=False)
    with out.status(f"reading {checkpoint}: architecture and mapping"):
        prepared = prepare(
            checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads, hash_source=early_hash,
            target=target, defer_model_check=True,  # the meta model is built while the shards are written; checked before publishing
            preload=TOKENIZER_CLASSES,  # imported beside the model, not after the writing
        )
    if prepared.resolved.notice:  # e.g. an alias' file found under a new name
        out.note(f"note: {prepared.resolved.notice}")
    total = sum(entry.nbytes for entry in target_entries(prepared, dtype))
    with out.bytes_progress("writing", total) as on_bytes:
        result = convert(
            prepared, folder, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer,
            force=force, verify_load=verify_load, on_bytes=on_bytes,
        )
    remember_source(result.folder, checkpoint, prepared, num_heads=num_heads, context_length=context_length)
    write_folder_card(result.folder)
    data = {"folder": str(result.folder), "seconds": result.seconds, "shards": result.shards, "record": result.record}
    out.result(data, lambda console: render_convert(console, result.record, str(result.folder), result.seconds, result.shards))


def _onnx(out, checkpoint, folder, target, precision, tokenizer, force, repo_id, revision, context_length, num_heads) -> None:
    """`--target onnx` (and --precision, which only that target takes): litetext_convert/onnx."""
    from litetext_convert.errors import LitetextError
    from litetext_convert.folder import remember_source
    from litetext_convert.onnx import missing_runtime
    from litetext_convert.onnx.export import export_folder, parse_precisions
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.publish.model_card import write_folder_card

    if target != "onnx":
        raise LitetextError("--precision picks the rungs of --target onnx; the other targets take --dtype")
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
