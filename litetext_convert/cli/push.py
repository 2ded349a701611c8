"""`litetext push`: publish a converted FOLDER with its regenerated model card."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from litetext_convert.cli import _output
from litetext_convert.terminal import shown
from litetext_convert.cli._options import (
    FolderArg,
    JsonOpt,
    NamespaceOpt,
    PrivateOpt,
    TokenOpt,
    one_folder,
)


def command(
    ctx: typer.Context,
    folder: FolderArg = None,
    repo_id: Annotated[
        Optional[str],
        typer.Option("--repo-id", metavar="ORG/NAME", help="Target repository; default sam3-litetext-VARIANT-ctxN under --namespace."),
    ] = None,
    namespace: NamespaceOpt = None,
    private: PrivateOpt = False,
    revision: Annotated[Optional[str], typer.Option("--revision", metavar="BRANCH", help="Branch to push to (created if missing).")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    commit_message: Annotated[Optional[str], typer.Option("--commit-message", metavar="TEXT", help="Commit message.")] = None,
    token: TokenOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the exact plan; no network.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Publish without passing parity records (the card says so).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish a converted FOLDER to the Hub with a model card carrying all its parity records."""
    from litetext_convert.errors import LitetextError
    from litetext_convert.publish.push import PushOptions, push_folder, render_plan

    out = _output.start(as_json)
    folder = one_folder(ctx, folder, None, required=True)
    if repo_id and namespace:
        raise LitetextError("give --repo-id or --namespace, not both")
    options = PushOptions(
        repo_id=repo_id, namespace=namespace, private=private, revision=revision, create_pr=create_pr,
        commit_message=commit_message, token=token, dry_run=dry_run, allow_unverified=allow_unverified,
    )
    with out.status("hashing the folder's files" if dry_run else "comparing with the Hub and pushing"):
        result = push_folder(folder, options)

    def render(console) -> None:
        if result.plan is not None:
            console.print(render_plan(result.plan, width=console.width), markup=False, highlight=False)
        if result.status not in ("failed", "refused"):
            console.print(shown(f"{result.status}: {result.message}"), markup=False)

    out.result(result.to_json(), render)
    if result.error is not None:
        raise result.error
