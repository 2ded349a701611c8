"""Checks a command runs before it reads any weights: each refuses in one line, in seconds."""

from __future__ import annotations

from pathlib import Path

from litetext_convert.errors import LitetextError, OutputError


def check_output_folder(folder: Path, *, force: bool) -> None:
    """The same refusals the writer makes, made before loading: an existing folder without --force,
    a file in the way, a parent that cannot hold a folder."""
    target = Path(folder).absolute()
    if target.exists() and not target.is_dir():
        raise OutputError(f"output path {target} exists and is not a folder")
    if target.exists() and not force:
        raise OutputError(f"output folder {target} already exists", hint="pass --force to replace it")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create the output folder in {target.parent}: {ancestor} is a file")


def check_tokenizer(source: str | None, *, full: bool = True) -> None:
    """Load (and so download or find in the cache) the tokenizer now, not after the weights.

    `full=False` (convert): when its files are already here, stop at that; convert loads the
    tokenizer itself after writing the shards and before anything is published (a damaged one is
    refused then, in one line), and imports its classes beside the model, off the main thread:
    loading it here first cost ~1 s of imports before any weight was read."""
    from litetext_convert.write.processor import load_tokenizer, tokenizer_files_here

    if not full and tokenizer_files_here(source):
        return
    load_tokenizer(source, 77)


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
