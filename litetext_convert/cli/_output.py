"""One output object per command: the result on stdout (tables for people, or JSON with --json),
everything else (status lines, progress, notes, errors) on stderr.

Status and progress lines appear only when stderr is a terminal and never under --json, so pipes
and machine readers see data only.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console

from litetext_convert.terminal import markup_safe, shown


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich exits 1 here; the reader leaving early (`| head`) is not a failure: cli's table exits 0.
        self.quiet = True
        raise BrokenPipeError


class Output:
    def __init__(self, as_json: bool = False):
        self.as_json = as_json
        self.stdout = _Console(highlight=False, soft_wrap=False)
        self.stderr = _Console(stderr=True, highlight=False)
        self.emitted = False

    @property
    def interactive(self) -> bool:
        """Status lines and progress bars: a person watching a terminal, not a pipe or a JSON reader."""
        return not self.as_json and self.stderr.is_terminal

    def result(self, data: Any, render: Callable[[Console], None] | None = None) -> None:
        """The command's result: JSON on stdout under --json, else the rendered report."""
        if self.as_json:
            self.json(data)
        elif render is not None:
            render(self.stdout)

    def json(self, data: Any) -> None:
        self.emitted = True
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """One line on stderr; names quoted in it are escaped (a newline in a name stays `\\n`)."""
        self.stderr.print(shown(message), markup=False, soft_wrap=True)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner line on stderr for a step that may take more than a couple of seconds."""
        if not self.interactive:
            yield
            return
        with self.stderr.status(markup_safe(message)):  # a name like `[/x]` is text, not a Rich tag
            yield

    @contextlib.contextmanager
    def bytes_progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A progress bar on stderr fed with byte counts."""
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=self.stderr, disable=not self.interactive, transient=True,
        )
        task = progress.add_task(description, total=total or None)
        with progress:
            yield lambda n: progress.advance(task, n)


_current = Output()


def current() -> Output:
    """The output object of the command running now (the error handler needs to know about --json)."""
    return _current


def start(as_json: bool) -> Output:
    global _current
    _current = Output(as_json)
    return _current


def reset() -> None:
    global _current
    _current = Output()
