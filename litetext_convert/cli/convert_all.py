"""`litetext convert-all`: every LiteText checkpoint into FOLDER/<name>/, one failure never stopping the rest."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from litetext_convert.cli import _output
from litetext_convert.cli._options import (
    ConvertDtypeOpt,
    FolderArg,
    ForceOpt,
    HeadsOpt,
    JsonOpt,
    LegacyOutputOpt,
    MaxShardOpt,
    NamespaceOpt,
    PrivateOpt,
    RepoIdOpt,
    RevisionOpt,
    TargetOpt,
    TokenizerOpt,
    TokenOpt,
    VerifyLoadOpt,
    one_folder,
)


def command(
    ctx: typer.Context,
    folder: FolderArg = None,
    source: Annotated[
        Optional[str], typer.Option("--source", metavar="DIR", help="A local folder of *.pt files; default: every family's Hub folder (*.pt).")
    ] = None,
    family: Annotated[
        Optional[str], typer.Option("--family", metavar="ID", help="Only this family's Hub folder: sam3_litetext | sam3p1_litetext (default: all).")
    ] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    tokenizer: TokenizerOpt = None,
    num_heads: HeadsOpt = None,
    dtype: ConvertDtypeOpt = "keep",
    max_shard_size: MaxShardOpt = "5GB",
    force: ForceOpt = False,
    verify_load: VerifyLoadOpt = False,
    target: TargetOpt = "image",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Run text parity on each and keep its record.")] = True,
    push_to_hub: Annotated[bool, typer.Option("--push-to-hub", help="Push each converted, verified folder.")] = False,
    namespace: NamespaceOpt = None,
    private: PrivateOpt = False,
    token: TokenOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --push-to-hub: plan each push, send nothing.")] = False,
    as_json: JsonOpt = False,
    output_dir: LegacyOutputOpt = None,
) -> None:
    """Convert every LiteText checkpoint of every family's Hub folder (or a local folder) into FOLDER/<name>/."""
    from litetext_convert.convert_all import convert_all, failure_of, list_checkpoints
    from litetext_convert.report import render_convert_all
    from litetext_convert.write.processor import check_tokenizer
    from litetext_convert.write.shards import parse_size

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, output_dir, required=True)
    parse_size(max_shard_size)
    with out.status("finding the tokenizer"):
        check_tokenizer(tokenizer)
    with out.status("listing the checkpoints"):
        checkpoints = list_checkpoints(source, repo_id, revision, family)
    rows = convert_all(
        folder, checkpoints=checkpoints, revision=revision, tokenizer=tokenizer, num_heads=num_heads, dtype=dtype,
        max_shard_size=max_shard_size, force=force, verify_load=verify_load, verify=verify, push=push_to_hub,
        namespace=namespace, private=private, token=token, dry_run=dry_run, status=out.status, target=target,
    )
    out.result({"results": rows}, lambda console: render_convert_all(console, rows))
    error = failure_of(rows)
    if error is not None:
        raise error
