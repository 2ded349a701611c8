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
    as_json: JsonOpt = False,
    output_dir: LegacyOutputOpt = None,
) -> None:
    """Convert one checkpoint into FOLDER, which Sam3LiteTextModel (--target video: Sam3VideoModel).from_pretrained loads."""
    # Only this module and workflows/convert.py are imported before the source's hash starts: no torch yet.
    from litetext_convert.workflows.convert import ConvertOptions, convert_folder

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, output_dir, required=True)
    options = ConvertOptions(
        repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads, target=target, dtype=dtype,
        max_shard_size=max_shard_size, tokenizer=tokenizer, force=force, verify_load=verify_load,
    )
    result = convert_folder(checkpoint, folder, options, progress=out)

    from litetext_convert.report import render_convert

    data = {"folder": str(result.folder), "seconds": result.seconds, "shards": result.shards, "record": result.record}
    out.result(data, lambda console: render_convert(console, result.record, str(result.folder), result.seconds, result.shards))
