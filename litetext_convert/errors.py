"""One exception family for everything a user can cause or fix.

The CLI turns these into a one-line message on stderr and an exit code; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import sys

from litetext_convert.terminal import shown

EXIT_OK = 0
EXIT_PARITY_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class LitetextError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} ({self.hint})"
        return " ".join(printable(text).split())


# Text that came from a file (a key, a name) made safe for a terminal line: terminal.shown is the
# one renderer; this name stays for the modules that import it from here.
printable = shown


def note(message: str) -> None:
    """A one-line notice on stderr that is not an error (e.g. a stale leftover removed)."""
    sys.stderr.write(f"note: {' '.join(printable(message).split())}\n")


class CheckpointError(LitetextError):
    """The checkpoint cannot be found, read, or is not a SAM3-LiteText checkpoint."""


class MappingError(LitetextError):
    """The key-mapping table does not cover the checkpoint totally and injectively."""

    def __init__(self, message: str, problems: list[str] | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.problems = problems or []


class OutputError(LitetextError):
    """The output folder cannot be written as asked."""


class HubError(LitetextError):
    """The Hub refused or could not be reached."""


class ParityFailure(LitetextError):
    """The converted model does not compute what the original computes (exit 1)."""

    exit_code = EXIT_PARITY_FAILED


class Interrupted(LitetextError):
    """Ctrl-C or SIGTERM after a command had already written something it keeps (e.g. `demo
    --workdir`): the line says what, instead of the usual "nothing was left behind". Not a
    KeyboardInterrupt, which click would turn into a bare Abort and lose the message."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, left: str):
        super().__init__(f"interrupted; {left}")
