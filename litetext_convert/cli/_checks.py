"""Checks a command runs before it reads any weights: each refuses in one line, in seconds.

The tokenizer's is write.processor.check_tokenizer; the output folder's is convert_folder's own."""

from __future__ import annotations

from litetext_convert.errors import LitetextError


def check_scope_extras(scope_name: str) -> None:
    """A scope that runs Meta's sam3 (and torchvision) says so before any work (configs/scopes.toml)."""
    from litetext_convert.targets import scope

    needed = scope(scope_name).needs_original
    if needed is None:
        return
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"--scope {scope_name} needs {needed}: {reason}")
