"""Signals honoured to the last step (issue 25, item 10): an interrupt that lands while a finaliser
runs (Python swallows it there, prints `Exception ignored in ... __del__` and carries on) still
stops the command with the one `interrupted` line and exit 130."""

from __future__ import annotations

import signal
import time

from bad_inputs.common import assert_one_line_error
from litetext_convert.errors import EXIT_INTERRUPTED, LitetextError


class _InterruptedWhileFinalised:
    """What SIGTERM during regex's `Group.__del__` looks like to the interpreter."""

    def __del__(self):
        raise KeyboardInterrupt


def test_an_interrupt_swallowed_by_a_finaliser_still_stops_parity(ws, cli, monkeypatch, verified):
    from litetext_convert.workflows import prove

    def prove_folder(*args, **kwargs):
        _InterruptedWhileFinalised()  # dropped at once: its __del__ raises inside the finaliser
        time.sleep(5)  # ordinary code resumes: the interrupt asked again lands here
        raise LitetextError("ran to the end: the interrupt was lost")

    monkeypatch.setattr(prove, "prove_folder", prove_folder)
    result = cli("parity", verified)

    assert_one_line_error(result, EXIT_INTERRUPTED, "interrupted")
    assert "Exception ignored" not in result.stderr
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
