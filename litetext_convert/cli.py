"""The `litetext` command line: parse, call a stage, render. No conversion logic lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .errors import EXIT_INTERRUPTED, LitetextError, MappingError

app = typer.Typer(
    name="litetext",
    help="Convert SAM3-LiteText checkpoints to Hugging Face Transformers and prove parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)

# Shared options, declared once.
CheckpointOpt = Annotated[
    str, typer.Option("--checkpoint", "-c", help="Alias (s0_ctx16, ...), REPO_ID:PATH/IN/REPO, or a local file.")
]
RepoIdOpt = Annotated[Optional[str], typer.Option("--repo-id", help="Hub repo holding the alias' file.")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Hub revision (branch, tag or commit).")]
ContextOpt = Annotated[
    Optional[int], typer.Option("--context-length", min=1, help="Effective context; default: ctxNN in the name, else the table.")
]
HeadsOpt = Annotated[Optional[int], typer.Option("--num-heads", min=1, help="Text attention heads (not in the weights).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _emit_json(data: dict) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command("inspect")
def inspect_command(
    checkpoint: CheckpointOpt,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    no_scan: Annotated[bool, typer.Option("--no-scan", help="Skip the NaN/Inf scan (it reads every byte).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Summarise a checkpoint: components, inferred architecture with sources, mapping coverage, NaN/Inf."""
    from .convert import prepare
    from .report import render_inspect
    from .summary import summarize

    prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads)
    summary = summarize(prepared, scan=not no_scan)
    if as_json:
        _emit_json(summary)
    else:
        render_inspect(stdout, summary)


@app.command("convert")
def convert_command(
    checkpoint: CheckpointOpt,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder to create.")],
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    dtype: Annotated[str, typer.Option(help="keep | float32 | bfloat16 | float16")] = "keep",
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 5GB, 500MB.")] = "5GB",
    tokenizer: Annotated[
        Optional[str], typer.Option(help="CLIP tokenizer folder or Hub repo (default openai/clip-vit-base-patch32).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output folder.")] = False,
    verify_load: Annotated[bool, typer.Option("--verify-load", help="Also reload with from_pretrained.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Convert one checkpoint into a folder that Sam3LiteTextModel.from_pretrained loads."""
    from .convert import convert, prepare, target_entries
    from .report import render_convert

    prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads)
    total = sum(entry.nbytes for entry in target_entries(prepared, dtype)) if dtype in ("keep", "float32", "bfloat16", "float16") else 0
    with _byte_progress(total, disable=as_json) as on_bytes:
        result = convert(
            prepared,
            output_dir,
            dtype=dtype,
            max_shard_size=max_shard_size,
            tokenizer=tokenizer,
            force=force,
            verify_load=verify_load,
            on_bytes=on_bytes,
        )
    if as_json:
        _emit_json({"folder": str(result.folder), "seconds": result.seconds, "shards": result.shards, "record": result.record})
    else:
        render_convert(stdout, result.record, str(result.folder), result.seconds, result.shards)


class _byte_progress:
    """A Rich progress bar on stderr, fed with bytes written."""

    def __init__(self, total: int, disable: bool):
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            disable=disable or not stderr.is_terminal,
            transient=True,
        )
        self.task = self.progress.add_task("writing", total=total or None)

    def __enter__(self):
        self.progress.start()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        self.progress.stop()
        return False


def main() -> None:
    """Entry point: user errors become one line on stderr and an exit code; no tracebacks
    unless LITETEXT_DEBUG is set."""
    debug = bool(os.environ.get("LITETEXT_DEBUG"))
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except LitetextError as exc:
        if debug:
            raise
        stderr.print(f"error: {_one_line(exc)}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("error: interrupted; nothing was left behind", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # usage errors and real bugs
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors (typer vendors click)
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        stderr.print(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (set LITETEXT_DEBUG=1 for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(3)


def _one_line(exc: LitetextError) -> str:
    line = exc.one_line()
    if isinstance(exc, MappingError) and exc.problems:
        shown = "; ".join(exc.problems[:3])
        more = f"; and {len(exc.problems) - 3} more" if len(exc.problems) > 3 else ""
        line = f"{line}: {shown}{more}"
    return line


if __name__ == "__main__":  # pragma: no cover
    main()
