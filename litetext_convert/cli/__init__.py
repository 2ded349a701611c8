"""The `litetext` command line: parse, call a stage, render. No conversion logic lives here."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from litetext_convert.errors import EXIT_INTERRUPTED, LitetextError, MappingError, ParityFailure

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
TargetOpt = Annotated[
    str, typer.Option("--target", help="image: Sam3LiteTextModel | video: Sam3VideoModel (detector + tracker).")
]


_json_emitted = False


def _emit_json(data: dict) -> None:
    global _json_emitted
    _json_emitted = True
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
    target: TargetOpt = "image",
) -> None:
    """Summarise a checkpoint: components, inferred architecture with sources, mapping coverage, NaN/Inf."""
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.plan.summary import summarize
    from litetext_convert.report import render_inspect

    prepared = prepare(
        checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads, target=target
    )
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
    target: TargetOpt = "image",
) -> None:
    """Convert one checkpoint into a folder that Sam3LiteTextModel.from_pretrained loads."""
    from litetext_convert.plan.prepare import check_dtype, prepare
    from litetext_convert.report import render_convert
    from litetext_convert.write.convert import convert, target_entries

    check_dtype(dtype)
    prepared = prepare(
        checkpoint, repo_id=repo_id, revision=revision, context_length=context_length, num_heads=num_heads,
        hash_source=True, target=target,
    )
    total = sum(entry.nbytes for entry in target_entries(prepared, dtype))
    with ByteProgress(total, disable=as_json) as on_bytes:
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


@app.command("parity")
def parity_command(
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="Alias, REPO_ID:PATH or local file.")] = "s0_ctx16",
    converted: Annotated[
        Optional[Path], typer.Option(help="An existing converted folder; else convert into a temporary one.")
    ] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer for the temporary conversion.")] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    context_length: ContextOpt = None,
    num_heads: HeadsOpt = None,
    scope: Annotated[str, typer.Option(help="text | detector | tracker | all (all includes tracker for a video folder)")] = "text",
    dtype: Annotated[str, typer.Option(help="float32 | float64 (both sides)")] = "float32",
    batch: Annotated[int, typer.Option(min=1)] = 2,
    seed: int = 0,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="Real prompt (repeatable).")] = None,
    image: Annotated[Optional[Path], typer.Option(help="Image for --scope detector (default: seeded noise).")] = None,
    box: Annotated[Optional[list[str]], typer.Option("--box", help="Box prompt cx,cy,w,h (repeatable).")] = None,
    atol: Annotated[Optional[float], typer.Option(help="Absolute tolerance (default by dtype).")] = None,
    rtol: Annotated[Optional[float], typer.Option(help="Relative tolerance (default by dtype).")] = None,
    debug_intermediates: Annotated[bool, typer.Option("--debug-intermediates", help="Per-layer table.")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the whole record to this file.")] = None,
    target: TargetOpt = "image",
) -> None:
    """Prove the converted model computes what the original computes, stage by stage. Exit 1 on mismatch."""
    from litetext_convert.parity.detector import parse_box
    from litetext_convert.parity.run import run_parity

    if scope not in ("text", "detector", "tracker", "all"):
        raise LitetextError(f"--scope {scope!r}: choose text, detector, tracker or all")
    if dtype not in ("float32", "float64"):
        raise LitetextError(f"--dtype {dtype!r}: choose float32 or float64")
    record = run_parity(
        checkpoint,
        converted=converted,
        tokenizer=tokenizer,
        repo_id=repo_id,
        revision=revision,
        context_length=context_length,
        num_heads=num_heads,
        scope=scope,
        dtype=dtype,
        batch=batch,
        seed=seed,
        prompts=prompt or [],
        image=image,
        boxes=[list(parse_box(b)) for b in box or []],
        atol=atol,
        rtol=rtol,
        json_path=json_path,
        console=stdout,
        debug=debug_intermediates,
        target=target,
    )
    if not record["passed"]:
        raise ParityFailure(f"parity failed: first diverging stage {record['first_failure'] or 'tokenizer/detector'}")


@app.command("convert-all")
def convert_all_command(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="One subfolder per checkpoint.")],
    source: Annotated[
        Optional[str], typer.Option(help="A local folder of *.pt files; default: the Hub repo's sam3_litetext/*.pt.")
    ] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="CLIP tokenizer folder or Hub repo.")] = None,
    num_heads: HeadsOpt = None,
    dtype: Annotated[str, typer.Option(help="keep | float32 | bfloat16 | float16")] = "keep",
    force: Annotated[bool, typer.Option("--force", help="Replace existing subfolders.")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Run text parity on each and keep its record.")] = True,
    push_to_hub: Annotated[bool, typer.Option("--push-to-hub", help="Push each converted, verified folder.")] = False,
    namespace: Annotated[Optional[str], typer.Option(help="Hub user/org for pushed repos (default: whoami).")] = None,
    private: Annotated[bool, typer.Option("--private")] = False,
    token: Annotated[Optional[str], typer.Option(help="Hub token (else HF_TOKEN or the login cache).")] = None,
    as_json: JsonOpt = False,
    target: TargetOpt = "image",
) -> None:
    """Convert every LiteText checkpoint of the Hub folder (or a local folder); one failure does not stop the rest."""
    from litetext_convert.convert_all import convert_all
    from litetext_convert.report import render_convert_all

    rows = convert_all(
        output_dir,
        source=source,
        repo_id=repo_id,
        revision=revision,
        tokenizer=tokenizer,
        num_heads=num_heads,
        dtype=dtype,
        force=force,
        verify=verify,
        push=push_to_hub,
        namespace=namespace,
        private=private,
        token=token,
        target=target,
    )
    if as_json:
        _emit_json({"results": rows})
    else:
        render_convert_all(stdout, rows)
    failed = [row for row in rows if row["status"] != "ok" or row.get("push", "").startswith(("failed", "refused"))]
    if failed:
        names = ", ".join(f"{row['checkpoint']} ({row['status'] if row['status'] != 'ok' else row['push']})" for row in failed)
        error = LitetextError(f"{len(failed)} of {len(rows)} checkpoints did not convert, verify or push: {names}")
        if all(row["status"] == "parity failed" for row in failed):
            error = ParityFailure(error.message)
        raise error


@app.command("push")
def push_command(
    folder: Annotated[Path, typer.Argument(help="A converted folder.")],
    repo_id: Annotated[
        Optional[str], typer.Option("--repo-id", help="ORG/NAME; default <whoami>/sam3-litetext-<variant>-ctx<N>.")
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to push to (created if missing).")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    commit_message: Annotated[Optional[str], typer.Option(help="Commit message.")] = None,
    token: Annotated[Optional[str], typer.Option(help="Hub token (else HF_TOKEN or the login cache); never printed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the exact plan; no network.")] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="Publish without a passing parity record (the card says so).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish a converted folder to the Hub with a model card carrying its parity record."""
    from litetext_convert.publish.push import PushOptions, push_folder, render_plan

    options = PushOptions(
        repo_id=repo_id,
        private=private,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        token=token,
        dry_run=dry_run,
        allow_unverified=allow_unverified,
    )
    result = push_folder(folder, options)
    if as_json:
        _emit_json(result.to_json())
    else:
        if result.plan is not None:
            stdout.print(render_plan(result.plan), markup=False, highlight=False, soft_wrap=True)
        if result.status != "failed" and result.status != "refused":
            stdout.print(f"{result.status}: {result.message}", markup=False)
    if result.error is not None:
        raise result.error


@app.command("demo")
def demo_command(
    workdir: Annotated[Optional[Path], typer.Option(help="Keep the demo files here (default: a temporary folder).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Offline end to end on an embedded default: build a small upstream-layout S0 checkpoint, inspect,
    convert, and prove parity (float32 and float64)."""
    from litetext_convert.demo import run_demo

    # With --json the human report goes to stderr and stdout carries only the JSON.
    result = run_demo(stderr if as_json else stdout, workdir)
    if as_json:
        _emit_json(result)
    if not result["passed"]:
        raise ParityFailure("demo parity failed")


class ByteProgress:
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
    global _json_emitted
    _json_emitted = False
    debug = bool(os.environ.get("LITETEXT_DEBUG"))
    signal.signal(signal.SIGTERM, _interrupt)  # a killed conversion cleans up like Ctrl-C does
    try:
        code = app(standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130), which standalone_mode=False returns
            stderr.print("error: interrupted; nothing was left behind", markup=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except LitetextError as exc:
        if debug:
            raise
        stderr.print(f"error: {_one_line(exc)}", markup=False, soft_wrap=True)
        if "--json" in sys.argv and not _json_emitted:  # machine readers get every mapping problem too
            _emit_json({"error": exc.one_line(), "exit_code": exc.exit_code, "problems": getattr(exc, "problems", [])})
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # click turns Ctrl-C into Abort
        stderr.print("error: interrupted; nothing was left behind", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # usage errors and real bugs
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors (typer vendors click)
            command = getattr(getattr(exc, "ctx", None), "command_path", "litetext")
            message = " ".join(exc.format_message().split())
            stderr.print(f"error: {message} (see '{command} --help')", markup=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        if debug:
            raise
        stderr.print(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (set LITETEXT_DEBUG=1 for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(3)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _one_line(exc: LitetextError) -> str:
    line = exc.one_line()
    if isinstance(exc, MappingError) and exc.problems:
        shown = "; ".join(exc.problems[:3])
        more = f"; and {len(exc.problems) - 3} more" if len(exc.problems) > 3 else ""
        line = f"{line}: {shown}{more}"
    return line


if __name__ == "__main__":  # pragma: no cover
    main()
