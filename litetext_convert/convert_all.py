"""`litetext convert-all`: every checkpoint of every family's Hub folder (`--family` for one), or of a
local folder, each in its own subfolder, one failure never stopping the others."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import ContextManager

from litetext_convert.errors import LitetextError, OutputError, ParityFailure, printable
from litetext_convert.families import family_by_id, load_families
from litetext_convert.plan.prepare import Prepared, prepare
from litetext_convert.source.resolve import list_family_folder
from litetext_convert.workflows.convert import ConvertOptions, convert_folder


def list_checkpoints(
    source: str | None, repo_id: str | None, revision: str | None, family: str | None = None
) -> list[tuple[str, str]]:
    """(display name, --checkpoint value) pairs, sorted: every family's Hub folder, or `family`'s only."""
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise LitetextError(f"--source {source}: not a folder")
        files = sorted(folder.glob("*.pt"))
        if not files:
            raise LitetextError(f"--source {source}: no *.pt files")
        return [(path.name, str(path)) for path in files]
    families = [family_by_id(family)] if family else list(load_families())
    names: list[tuple[str, str]] = []
    for each in families:
        repo = repo_id or each.repo_id
        names += [(Path(name).name, f"{repo}:{name}") for name in list_family_folder(
            repo, revision or each.revision, each, hint="go online, or pass --source with a local folder"
        )]
    return sorted(names, key=lambda pair: pair[1])


# An output folder's name: what a Hub repo name allows, starting with a letter or digit (so never
# ".", "..", a hidden name or an absolute path), without separators, controls or look-alike slashes.
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def output_folder(output_dir: Path, name: str) -> Path:
    """FOLDER/<stem of name>, refused in one line unless the stem is a plain name and the path,
    resolved (a link at that name followed), lies directly inside FOLDER."""
    stem = name.removesuffix(".pt") if name.endswith(".pt") else Path(name).stem
    if not SAFE_STEM.fullmatch(stem):
        raise OutputError(
            f"cannot name an output folder after '{printable(name)}': a name needs letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit", hint="rename the file",
        )
    folder = output_dir / stem
    if folder.resolve().parent != output_dir.resolve():
        raise OutputError(f"{printable(folder)} leads outside {printable(output_dir)}; nothing written there")
    return folder


def convert_all(
    output_dir: Path,
    *,
    checkpoints: list[tuple[str, str]],
    revision: str | None,
    tokenizer: str | None,
    num_heads: int | None,
    dtype: str,
    force: bool,
    verify: bool,
    push: bool,
    namespace: str | None,
    private: bool,
    token: str | None,
    max_shard_size: str = "5GB",
    verify_load: bool = False,
    dry_run: bool = False,
    status: Callable[[str], ContextManager] | None = None,
    target: str = "image",
) -> list[dict]:
    status = status or (lambda message: contextlib.nullcontext())
    options = ConvertOptions(
        revision=revision, num_heads=num_heads, target=target, dtype=dtype, max_shard_size=max_shard_size,
        tokenizer=tokenizer, force=force, verify_load=verify_load,
    )
    rows = []
    for index, (name, checkpoint) in enumerate(checkpoints, 1):
        with status(f"[{index}/{len(checkpoints)}] {name}: converting" + (" and verifying" if verify else "")):
            rows.append(_convert_one(name, checkpoint, Path(output_dir), options, verify))
    if push:
        for row in rows:
            row["push"] = _push_one(row, namespace, private, token, dry_run) if row["status"] == "ok" else "skipped"
    return rows


def _convert_one(name: str, checkpoint: str, output_dir: Path, options: ConvertOptions, verify: bool) -> dict:
    started = time.perf_counter()
    row: dict = {"checkpoint": name, "status": "ok", "target": options.target}
    try:
        folder = output_folder(output_dir, name)  # before anything is read or written
        # Read and checked here, not inside convert_folder: the text parity below compares the same reading.
        prepared = prepare(checkpoint, revision=options.revision, num_heads=options.num_heads, target=options.target)
        if options.target == "onnx":  # the image detector as ONNX graphs, fp32 (litetext_convert/onnx)
            record = _export_onnx(checkpoint, folder, options, prepared)
        else:
            record = convert_folder(checkpoint, folder, options, prepared=prepared).record
        row.update(
            folder=str(folder),
            family=record["family"]["name"],
            variant=record["variant"],
            context=record["context_length"],
            parameters=record["parameters"],
            mapped=record["keys"]["mapped"],
            dropped=sum(record["keys"]["dropped"].values()),
            dtype=record["dtype"],
        )
        if verify:
            _verify(row, prepared, folder)
    except LitetextError as exc:
        row.update(status="failed", error=exc.one_line())
    except Exception as exc:  # one broken file must not stop the others; the row says what happened
        row.update(status="failed", error=f"internal error: {type(exc).__name__}: {exc}"[:200])
    row["seconds"] = time.perf_counter() - started
    return row


def _export_onnx(checkpoint: str, folder: Path, options: ConvertOptions, prepared: Prepared) -> dict:
    """`--target onnx`: the export (litetext_convert/onnx), its source memo and card, as convert_folder does."""
    from litetext_convert.folder import remember_source
    from litetext_convert.onnx.export import export_folder
    from litetext_convert.publish.model_card import write_folder_card

    result = export_folder(prepared, folder, tokenizer=options.tokenizer, force=options.force)
    remember_source(folder, checkpoint, prepared, num_heads=options.num_heads, context_length=None)
    write_folder_card(folder)
    return result.record


def _verify(row: dict, prepared: Prepared, folder: Path) -> None:
    """Parity's own checks on the converted folder (in its dtype when reduced), kept in the folder with
    its card (workflows/prove.py); the row says THE folder verdict, as push will judge the folder."""
    from litetext_convert.folder.view import load_records
    from litetext_convert.workflows.prove import prove_converted

    prove_converted(prepared, folder)
    found = load_records(folder).verdict
    if not found.passed:
        row.update(status="parity failed", error=found.first_failure or found.problem)


def failure_of(rows: list[dict]) -> LitetextError | None:
    """The run's one error, naming every checkpoint that did not convert, verify or push: a parity
    failure (exit 1) when every failure is one, else a bad input (exit 2); None when all went well."""
    failed = [row for row in rows if row["status"] != "ok" or row.get("push", "").startswith(("failed", "refused"))]
    if not failed:
        return None
    names = ", ".join(f"{row['checkpoint']} ({row['status'] if row['status'] != 'ok' else row['push']})" for row in failed)
    message = f"{len(failed)} of {len(rows)} checkpoints did not convert, verify or push: {names}"
    if all(row["status"] == "parity failed" for row in failed):
        return ParityFailure(message)
    return LitetextError(message)


def _push_one(row: dict, namespace: str | None, private: bool, token: str | None, dry_run: bool) -> str:
    from litetext_convert.publish.push import PushOptions, push_folder

    result = push_folder(Path(row["folder"]), PushOptions(namespace=namespace, private=private, token=token, dry_run=dry_run))
    return f"{result.status}: {result.repo_id or ''}".strip()
