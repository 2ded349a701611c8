"""prove_folder: the only code that runs the parity scopes on a folder and keeps the record and card.

The order is what makes a record trustworthy:
1. refuse, before the weights are read, what cannot be proven: a folder litetext did not write
   (no conversion record: `litetext audit` is the tool for it), a damaged one, a `-c` that is not the
   checkpoint the folder was converted from (by size, then by sha256 against the conversion record);
2. hash the folder's content files (folder/content.binding): what this run verifies;
3. measure (parity/run.measure: the same checks for `parity`, `parity -c`, demo and convert-all);
4. check that nothing changed during the run, then write the record (bound to those digests and to
   the conversion record's digest) and the card through the one atomic writer.
Nothing is written when any step fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import ContextManager

from litetext_convert.errors import LitetextError, OutputError, printable
from litetext_convert.folder import content, safe_io
from litetext_convert.folder.names import CARD, CONVERSION_RECORD, PARITY_DIR
from litetext_convert.folder.ownership import CARD_MARK
from litetext_convert.folder.records import ConversionRecord, read_conversion_record, write_parity_record
from litetext_convert.parity.run import ParityRequest, check_converted_folder, check_folder_structure, measure
from litetext_convert import dtypes
from litetext_convert.plan.prepare import Prepared, prepare
from litetext_convert.publish.model_card import write_folder_card
from litetext_convert.scratch import scratch_folder
from litetext_convert.targets import Target, scope_target, target as find_target
from litetext_convert.write.convert import convert

Status = Callable[[str], ContextManager]


def check_provable(folder: Path) -> ConversionRecord:
    """The folder's conversion record; one line for a folder litetext cannot prove (nothing written)."""
    folder = Path(folder)
    check_converted_folder(folder)
    if not os.path.lexists(folder / CONVERSION_RECORD):
        raise LitetextError(
            f"{printable(folder)} is a transformers folder that litetext did not write (no conversion_record.json); "
            "nothing was written", hint=f"check it against its checkpoint with `litetext audit {printable(folder)} CKPT`")
    conversion = read_conversion_record(folder)
    check_writable(folder)
    return conversion


def check_writable(folder: Path) -> None:
    """What this run will write (the record under parity/, the card) can be written without following a
    link or replacing a file litetext did not write: checked before the run, so a refusal costs nothing."""
    folder = Path(folder)
    hint = "move it away and run again"
    records = folder / PARITY_DIR
    if os.path.lexists(records) and (records.is_symlink() or not records.is_dir()):
        raise OutputError(f"{printable(records)} is not a folder litetext made (a link or a file); nothing was written", hint=hint)
    for path in [*(records.iterdir() if records.is_dir() else []), folder / CARD]:
        if path.is_symlink() or (os.path.lexists(path) and not path.is_file()):
            raise OutputError(f"{printable(path)} is a link or not a regular file; litetext never writes through it, "
                              "nothing was written", hint=hint)
    card = folder / CARD
    if card.is_file() and CARD_MARK not in safe_io.read_bounded(card):
        raise OutputError(f"{printable(card)} was not written by litetext; the card would replace it, nothing was written",
                          hint=hint)


def check_same_source(conversion: ConversionRecord, folder: Path, checkpoint_path: Path,
                      sha256: Callable[[], str] | None = None) -> None:
    """A checkpoint other than the folder's source would make the record meaningless (and, kept, would
    replace a passing record with a failure): refused by size first (no read), then, when `sha256`
    is given, by sha256."""
    source = conversion.source
    recorded_bytes, recorded_sha = source.get("bytes"), source.get("sha256")
    size = Path(checkpoint_path).stat().st_size
    mismatch = recorded_bytes is not None and recorded_bytes != size
    if not mismatch and recorded_sha and sha256 is not None:
        mismatch = sha256() != recorded_sha
    if mismatch:
        raise LitetextError(
            f"{printable(folder)} was converted from {printable(source.get('filename'))} "
            f"(sha256 {str(recorded_sha)[:12]}, {recorded_bytes} bytes), not from {printable(Path(checkpoint_path).name)}; "
            "nothing was written", hint="pass the checkpoint it was converted from with -c, or convert this one")


def prove_folder(checkpoint: str, *, folder: Path | None, request: ParityRequest, tokenizer: str | None = None,
                 repo_id: str | None = None, revision: str | None = None, context_length: int | None = None,
                 num_heads: int | None = None, target: str = "image", status: Status | None = None) -> dict:
    """Prove `folder` against `checkpoint` and keep the record and card in it; without a folder,
    convert into a temporary one first (the record is returned, not kept)."""
    from transformers.utils import logging as hf_logging

    status = status or (lambda message: contextlib.nullcontext())
    hf_logging.disable_progress_bar()
    request.dtype = dtypes.canonical(request.dtype)
    conversion = check_provable(folder) if folder is not None else None
    chosen = scope_target(request.scope, folder, target)  # refuses a folder whose target lacks the scope
    with status(f"reading {checkpoint}: architecture and mapping"):
        prepared = prepare(checkpoint, repo_id=repo_id, revision=revision, context_length=context_length,
                           num_heads=num_heads, target=chosen.id)
    if folder is None:
        return _prove_temporary(prepared, request, tokenizer, chosen, status)
    return _prove_kept(prepared, Path(folder), conversion, request, chosen, status)


def _prove_temporary(prepared: Prepared, request: ParityRequest, tokenizer: str | None, target: Target, status: Status) -> dict:
    with scratch_folder("parity") as scratch:  # named by pid: the next run removes it if this one is killed
        folder = Path(scratch) / "converted"
        # A reduced dtype is proven on a folder converted to it; float32/float64 on the source's own.
        with status("converting into a temporary folder"):
            convert(prepared, folder, tokenizer=tokenizer, dtype=request.dtype if dtypes.is_reduced(request.dtype) else "keep")
        return measure(prepared, folder, request, ["converted into a temporary folder for this run"], target, status)


def _prove_kept(prepared: Prepared, folder: Path, conversion: ConversionRecord, request: ParityRequest, target: Target,
                status: Status) -> dict:
    from litetext_convert.source.digest import SourceHash

    # Both hashes (the source's 2.2 GB and the folder's) run in threads while parity measures: together
    # they were ~4 s of a 16 s full-size text parity when run first. Neither result is trusted before
    # it is in: a different source is refused, and nothing written, before the record is kept.
    source_hash = SourceHash(prepared.resolved.path)
    check_same_source(conversion, folder, prepared.resolved.path)  # the size now; the sha256 below
    if conversion.context_length != prepared.arch.context_length:
        raise LitetextError(
            f"{printable(folder)} was converted for context {conversion.context_length}, but the checkpoint's context is "
            f"{prepared.arch.context_length}", hint="pass the same --context-length used for the conversion")
    check_folder_structure(folder)
    binding = content.BindingInBackground(folder, conversion)
    try:
        record = measure(prepared, folder, request, [], target, status)
    except LitetextError:  # another source explains a failure better than the failure itself
        check_same_source(conversion, folder, prepared.resolved.path, source_hash.result)
        raise
    with status("checking the source and the folder's digests"):
        check_same_source(conversion, folder, prepared.resolved.path, source_hash.result)
        verified = binding.result()
    keep(folder, record, verified, conversion)
    return record


def keep(folder: Path, record: dict, verified: dict, conversion: ConversionRecord) -> None:
    """Bind `record` to what was verified, refuse when the folder changed during the run, write it and the card."""
    changed = content.binding_problem(folder, conversion, verified, "this run")
    if changed:
        raise LitetextError(f"{printable(folder)} changed while parity ran ({changed}); nothing was written",
                            hint="run parity again")
    public = {key: value for key, value in record.items() if not key.startswith("_")}
    write_parity_record(folder, {**public, "verified": verified})
    record["verified"] = verified
    write_folder_card(folder)


def prove_converted(prepared: Prepared, folder: Path, request: ParityRequest | None = None) -> dict:
    """A folder the caller just converted from `prepared` (demo, convert-all): the same checks as
    `litetext parity` (precision and the bit-exact tensor check included), bound, kept, carded."""
    request = request or ParityRequest()
    conversion = read_conversion_record(folder)
    binding = content.BindingInBackground(folder, conversion)  # hashed while parity measures
    record = measure(prepared, folder, request, [], find_target(prepared.target))
    keep(folder, record, binding.result(), conversion)
    return record
