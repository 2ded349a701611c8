"""One exception family for everything a user can cause or fix.

The CLI turns these into a one-line message on stderr and an exit code; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import sys

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


def printable(text: object) -> str:
    """Text that came from a file (a key, a name) made safe for a terminal line.

    Control characters (ANSI escapes, newlines, carriage returns, NUL ...) and bytes that are not
    UTF-8 (surrogate escapes in file names) are shown as Python escapes, so a crafted key can
    neither colour the terminal nor forge a second `error:` line. Ordinary Unicode stays readable.
    """
    out = []
    for char in str(text):
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code < 0xE000 or code in (0x2028, 0x2029):
            out.append(" " if char in " \t" else ascii(char)[1:-1])
        else:
            out.append(char)
    return "".join(out)


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
