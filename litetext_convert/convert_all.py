"""`litetext convert-all`: every checkpoint of every family's Hub folder (`--family` for one), or of a
local folder, each in its own subfolder, one failure never stopping the others."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import ContextManager

from litetext_convert.errors import LitetextError
from litetext_convert.families import family_by_id, load_families
from litetext_convert.folder import remember_source
from litetext_convert.plan.prepare import prepare
from litetext_convert.source.resolve import list_family_folder
from litetext_convert.write.convert import convert


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
    rows = []
    for index, (name, checkpoint) in enumerate(checkpoints, 1):
        with status(f"[{index}/{len(checkpoints)}] {name}: converting" + (" and verifying" if verify else "")):
            rows.append(_convert_one(name, checkpoint, Path(output_dir), tokenizer, num_heads, dtype, force, verify, revision,
                                     max_shard_size, verify_load, target))
    if push:
        for row in rows:
            row["push"] = _push_one(row, namespace, private, token, dry_run) if row["status"] == "ok" else "skipped"
    return rows


def _convert_one(name, checkpoint, output_dir, tokenizer, num_heads, dtype, force, verify, revision, max_shard_size, verify_load,
                 target="image") -> dict:
    from litetext_convert.publish.model_card import write_folder_card
    started = time.perf_counter()
    row: dict = {"checkpoint": name, "status": "ok", "target": target}
    try:
        prepared = prepare(checkpoint, revision=revision, num_heads=num_heads, target=target)
        folder = output_dir / Path(name).stem
        result = convert(prepared, folder, dtype=dtype, tokenizer=tokenizer, force=force,
                         max_shard_size=max_shard_size, verify_load=verify_load)
        remember_source(folder, checkpoint, prepared, num_heads=num_heads, context_length=None)
        row.update(
            folder=str(folder),
            family=result.record["family"]["name"],
            variant=result.record["variant"],
            context=result.record["context_length"],
            parameters=result.record["parameters"],
            mapped=result.record["keys"]["mapped"],
            dropped=sum(result.record["keys"]["dropped"].values()),
            dtype=result.record["dtype"],
        )
        write_folder_card(folder)
        if verify:
            from litetext_convert.folder.view import load_records
            from litetext_convert.workflows.prove import prove_converted

            prove_converted(prepared, folder)  # parity's own checks, in the folder's dtype when reduced; kept and carded
            found = load_records(folder).verdict  # THE folder verdict, as push will judge the folder
            if not found.passed:
                row.update(status="parity failed", error=found.first_failure or found.problem)
    except LitetextError as exc:
        row.update(status="failed", error=exc.one_line())
    except Exception as exc:  # one broken file must not stop the others; the row says what happened
        row.update(status="failed", error=f"internal error: {type(exc).__name__}: {exc}"[:200])
    row["seconds"] = time.perf_counter() - started
    return row


def _push_one(row: dict, namespace: str | None, private: bool, token: str | None, dry_run: bool) -> str:
    from litetext_convert.publish.push import PushOptions, push_folder

    result = push_folder(Path(row["folder"]), PushOptions(namespace=namespace, private=private, token=token, dry_run=dry_run))
    return f"{result.status}: {result.repo_id or ''}".strip()
