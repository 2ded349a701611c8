"""convert_folder: the one code path that writes a converted folder.

prepare -> convert (shards, config, processor, record, atomically) -> source memo -> model card.
`litetext convert`, `convert-all`, the demo, parity's temporary folder and the scripts call it; they
only choose the options and show the progress.

It also owns the overlap that makes a conversion cost little more than copying the file and
importing torch (docs/design/architecture.md):
1. the source's sha256 starts before torch is imported (this module imports nothing heavy when it
   is loaded), on the second core while the first imports torch and transformers;
2. the target's meta model is built in a background thread while the shards are written from the
   table's plan; the plan is checked against it before the folder is published;
3. the tokenizer's transformers classes are imported in that same thread, after the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager, Protocol

from litetext_convert.errors import OutputError

if TYPE_CHECKING:  # each imports torch: loaded inside convert_folder, after the hash has started
    from litetext_convert.plan.prepare import Prepared
    from litetext_convert.source.digest import SourceHash
    from litetext_convert.write.convert import ConversionResult


@dataclass(frozen=True)
class ConvertOptions:
    """What `litetext convert` lets a user choose, with its defaults."""

    repo_id: str | None = None  # the source's Hub repo (an alias' default: its family's)
    revision: str | None = None
    context_length: int | None = None
    num_heads: int | None = None
    target: str = "image"
    dtype: str = "keep"
    max_shard_size: str = "5GB"
    tokenizer: str | None = None
    force: bool = False
    verify_load: bool = False


class Progress(Protocol):
    """What convert_folder tells the person watching (the CLI's Output object is one)."""

    def status(self, message: str) -> ContextManager[None]: ...

    def bytes_progress(self, description: str, total: int) -> ContextManager[Callable[[int], None]]: ...

    def note(self, message: str) -> None: ...


class Silent:
    """No status lines, no progress bar, no notes: convert-all's rows, the demo, parity's temporary folder."""

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def bytes_progress(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        yield lambda count: None

    def note(self, message: str) -> None:
        pass


def convert_folder(
    checkpoint: str,
    folder: Path,
    options: ConvertOptions = ConvertOptions(),
    *,
    progress: Progress | None = None,
    prepared: Prepared | None = None,
) -> ConversionResult:
    """Convert `checkpoint` into `folder` (created, or replaced with `force` when litetext wrote it).

    `prepared`: the checkpoint already read and checked by the caller (the demo inspects it first,
    parity compares it), converted as it is; `options`' source fields are then only recorded."""
    progress = progress or Silent()
    folder = Path(folder)
    # Everything that can be refused without the weights is refused before they are read.
    check_output_folder(folder, force=options.force)
    early_hash = _early_hash(checkpoint, options) if prepared is None else None

    from litetext_convert.dtypes import check_dtype
    from litetext_convert.write.convert import convert, target_entries
    from litetext_convert.write.processor import check_tokenizer
    from litetext_convert.write.shards import parse_size

    dtype = check_dtype(options.dtype)
    parse_size(options.max_shard_size)
    with progress.status("finding the tokenizer"):
        check_tokenizer(options.tokenizer, full=False)
    if prepared is None:
        with progress.status(f"reading {checkpoint}: architecture and mapping"):
            prepared = _read_while_the_model_builds(checkpoint, options)
    if prepared.resolved.notice:  # e.g. an alias' file found under a new name
        progress.note(f"note: {prepared.resolved.notice}")
    total = sum(entry.nbytes for entry in target_entries(prepared, dtype))
    with progress.bytes_progress("writing", total) as on_bytes:
        result = convert(
            prepared, folder, dtype=dtype, max_shard_size=options.max_shard_size, tokenizer=options.tokenizer,
            force=options.force, verify_load=options.verify_load, on_bytes=on_bytes,
            source_hash=hash_of_resolved(early_hash, prepared.resolved.path),
        )
    _describe_folder(result.folder, checkpoint, prepared, options)
    return result


def _early_hash(checkpoint: str, options: ConvertOptions) -> SourceHash | None:
    """The record's sha256 of the source, started before torch is imported when the file is
    already on this machine: ~1.3 s of hashing a full-size file, on the other core."""
    from litetext_convert.source.digest import SourceHash
    from litetext_convert.source.resolve import already_here

    here = already_here(checkpoint, repo_id=options.repo_id, revision=options.revision)
    return SourceHash(here) if here is not None else None


def hash_of_resolved(early: SourceHash | None, resolved_path: Path) -> SourceHash:
    """The early hash when it hashes the file the checkpoint resolved to; otherwise (not started,
    or another file: a Hub cache refreshed since) the resolved file's, started now."""
    from litetext_convert.source.digest import SourceHash

    if early is not None and os.path.realpath(early.path) == os.path.realpath(resolved_path):
        return early
    return SourceHash(resolved_path)


def _read_while_the_model_builds(checkpoint: str, options: ConvertOptions) -> Prepared:
    """The checkpoint read and its plan drafted from the table, with the target model building in
    the background (checked by `convert` before anything is published); checked at once when the
    table's plan alone cannot be written (Prepared.must_check_before_writing)."""
    from litetext_convert.plan.prepare import read_checkpoint
    from litetext_convert.write.processor import TOKENIZER_CLASSES

    prepared = read_checkpoint(
        checkpoint, repo_id=options.repo_id, revision=options.revision, context_length=options.context_length,
        num_heads=options.num_heads, target=options.target,
    )
    prepared.target_model.start_in_background(preload=TOKENIZER_CLASSES)  # not after the writing
    if prepared.must_check_before_writing:
        prepared.check_against_model()
    return prepared


def _describe_folder(folder: Path, checkpoint: str, prepared: Prepared, options: ConvertOptions) -> None:
    """The source memo (what parity and push read to find the source again) and the model card."""
    from litetext_convert.folder import remember_source
    from litetext_convert.publish.model_card import write_folder_card

    remember_source(folder, checkpoint, prepared, num_heads=options.num_heads, context_length=options.context_length)
    write_folder_card(folder)


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
