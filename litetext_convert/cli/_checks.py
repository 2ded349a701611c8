"""Checks a command runs before it reads any weights: each refuses in one line, in seconds.

The tokenizer's is write.processor.check_tokenizer; the output folder's is convert_folder's own."""

from __future__ import annotations

from litetext_convert.errors import LitetextError


def check_scope_extras(scope: str) -> None:
    """Whole-detector parity needs Meta's sam3 (and torchvision): say so before any work."""
    if scope not in ("detector", "tracker", "all"):
        return
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        what = "Meta's tracker" if scope == "tracker" else "the original detector"
        raise LitetextError(f"--scope {scope} needs {what}: {reason}")
