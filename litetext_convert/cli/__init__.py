"""The `litetext` command line: the app, its entry point, and the ONE table that turns exceptions
into a message and an exit code. Each command lives in its own module and only parses, calls a
stage and renders; no conversion logic lives in this package."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from litetext_convert import __version__
from litetext_convert.cli import _output
from litetext_convert.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    LitetextError,
    MappingError,
    printable,
)
from litetext_convert.terminal import shown

EXIT_INTERNAL = 3


def _clean_params(params):
    # Flags take no value and an argument's name says what it is: no `<bool>` or `<path>` beside them.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
    return params


class _Command(TyperCommand):
    def get_params(self, ctx):
        return _clean_params(super().get_params(ctx))


class _Group(TyperGroup):
    command_class = _Command

    def get_params(self, ctx):
        return _clean_params(super().get_params(ctx))


app = typer.Typer(
    name="litetext",
    cls=_Group,
    help="Convert SAM3-LiteText checkpoints to Hugging Face Transformers and prove parity.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"litetext {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Convert SAM3-LiteText checkpoints to Hugging Face Transformers and prove parity."""
    if ctx.invoked_subcommand is None:  # bare `litetext`: the help, and success (git, hf and cargo do the same)
        typer.echo(ctx.get_help())
        raise typer.Exit(EXIT_OK)


def _register() -> None:
    from litetext_convert.cli import audit, convert, convert_all, demo, inspect, parity, push

    for name, module in (("inspect", inspect), ("convert", convert), ("parity", parity),
                         ("convert-all", convert_all), ("push", push), ("demo", demo), ("audit", audit)):
        app.command(name, cls=_Command)(module.command)


_register()


# ---------------------------------------------------------------- exceptions -> message + exit code


def _litetext_error(exc: LitetextError) -> tuple[int, str | None]:
    line = exc.one_line()
    if isinstance(exc, MappingError) and exc.problems:
        shown = "; ".join(printable(problem) for problem in exc.problems[:3])
        more = f"; and {len(exc.problems) - 3} more" if len(exc.problems) > 3 else ""
        line = f"{line}: {shown}{more}"
    return exc.exit_code, f"error: {line}"


def _usage_error(exc) -> tuple[int, str | None]:
    command = getattr(getattr(exc, "ctx", None), "command_path", "litetext")
    message = " ".join(printable(exc.format_message()).split())
    return exc.exit_code, f"error: {message} (see '{command} --help')"


def _interrupted(exc) -> tuple[int, str | None]:
    return EXIT_INTERRUPTED, "error: interrupted; nothing was left behind"


def _broken_pipe(exc) -> tuple[int, str | None]:
    # The reader (`| head`) has what it wanted: not an error. Point stdout at /dev/null so the
    # interpreter's final flush does not fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK, None


def _internal(exc) -> tuple[int, str | None]:
    detail = " ".join(printable(exc).split())[:300]
    return EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {detail} (set LITETEXT_DEBUG=1 for the traceback)"


def _is_usage_error(exc: BaseException) -> bool:
    return hasattr(exc, "format_message") and hasattr(exc, "exit_code")  # click's errors (typer vendors click)


# The one table, first match wins. Each entry: (predicate, handler -> (exit code, line for stderr)).
EXCEPTION_TABLE = (
    (lambda e: isinstance(e, LitetextError), _litetext_error),
    (lambda e: isinstance(e, BrokenPipeError), _broken_pipe),
    (lambda e: isinstance(e, (KeyboardInterrupt, typer.Abort)), _interrupted),
    (_is_usage_error, _usage_error),
    (lambda e: True, _internal),
)
# Debugging shows the traceback of everything but what the user is meant to see as a usage message.
_NO_TRACEBACK = (BrokenPipeError, KeyboardInterrupt, typer.Abort)


def handle(exc: BaseException) -> int:
    """Print the one line for `exc` (and its JSON under --json); return the exit code."""
    for matches, handler in EXCEPTION_TABLE:
        if matches(exc):
            code, line = handler(exc)
            break
    out = _output.current()
    if line:
        try:
            # shown() again: whatever built the line, a name in it can never start a second line.
            out.stderr.print(shown(line), markup=False, soft_wrap=True)
        except BrokenPipeError:  # pragma: no cover - stderr closed too
            pass
        if out.as_json and not out.emitted and not isinstance(exc, BrokenPipeError):
            try:  # machine readers get the failure as JSON too, with every mapping problem
                out.json({"error": line.removeprefix("error: "), "exit_code": code, "problems": getattr(exc, "problems", [])})
            except BrokenPipeError:
                _broken_pipe(exc)
    return code


def main() -> None:
    """Entry point: user errors become one line on stderr and an exit code; tracebacks only with
    LITETEXT_DEBUG set."""
    _output.reset()
    debug = bool(os.environ.get("LITETEXT_DEBUG"))
    signal.signal(signal.SIGTERM, _interrupt)  # a killed conversion cleans up like Ctrl-C does
    if getattr(sys.unraisablehook, "func", None) is not _interrupt_lost_in_del:  # once, around the hook there
        sys.unraisablehook = functools.partial(_interrupt_lost_in_del, sys.unraisablehook)
    try:
        code = app(standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130), which standalone_mode=False returns
            code = handle(KeyboardInterrupt())
        sys.stdout.flush()
    except BaseException as exc:  # noqa: BLE001 - the table decides; SystemExit passes through below
        if isinstance(exc, SystemExit):
            raise
        if debug and not isinstance(exc, _NO_TRACEBACK) and not _is_usage_error(exc):
            raise
        code = handle(exc)
    if isinstance(code, int) and code:
        sys.exit(code)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupt_lost_in_del(previous_hook, unraisable) -> None:
    """An interrupt that lands while a finaliser runs (`__del__`, e.g. regex's Group while the
    tokenizer is built) is swallowed by Python, which prints a traceback and carries on: the command
    would finish and exit 0. Ask again instead: a moment later, from another thread, so that the
    signal lands once the finaliser has returned (raised here, it would be swallowed again); so
    Ctrl-C and SIGTERM are honoured to the last step."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and signal.getsignal(signal.SIGTERM) is _interrupt:
        again = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGTERM))
        again.daemon = True
        again.start()
        return
    previous_hook(unraisable)


def run() -> None:
    """The `litetext` script and `python -m litetext_convert.cli`: `main()`, then leave without the
    interpreter's teardown. Everything litetext writes is closed by then (folders are renamed into
    place inside their context managers), so the teardown only frees memory the kernel frees anyway:
    tearing down torch's and transformers' modules took 0.5-0.8 s of a ~7 s full-size conversion.
    Tests call `main()` itself, which returns or raises as usual."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):  # a closed reader or stream: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
