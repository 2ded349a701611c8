"""`litetext convert-all`: every LiteText checkpoint of the Hub folder (or a local folder), each in
its own subfolder, one failure never stopping the others."""

from __future__ import annotations

import json
import time
from pathlib import Path

from litetext_convert.errors import LitetextError
from litetext_convert.folder import PARITY_RECORD
from litetext_convert.parity.run import parity_record
from litetext_convert.parity.text import ParityOptions, run_text_parity
from litetext_convert.plan.prepare import prepare
from litetext_convert.source.resolve import load_registry
from litetext_convert.write.convert import convert


def list_checkpoints(source: str | None, repo_id: str | None, revision: str | None) -> list[tuple[str, str]]:
    """(display name, --checkpoint value) pairs, sorted."""
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise LitetextError(f"--source {source}: not a folder")
        files = sorted(folder.glob("*.pt"))
        if not files:
            raise LitetextError(f"--source {source}: no *.pt files")
        return [(path.name, str(path)) for path in files]
    registry = load_registry()
    repo_id = repo_id or registry.repo_id
    from huggingface_hub import list_repo_files
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        files = list_repo_files(repo_id, revision=revision or registry.revision)
    except RepositoryNotFoundError:
        raise LitetextError(f"repository {repo_id} not found or private") from None
    except Exception as exc:  # offline mode, HTTP errors and the HTTP client's own transport errors
        raise LitetextError(
            f"cannot list {repo_id} on the Hub ({type(exc).__name__})", hint="go online, or pass --source with a local folder"
        ) from None
    names = sorted(f for f in files if f.startswith(registry.folder + "/") and f.endswith(".pt"))
    return [(Path(name).name, f"{repo_id}:{name}") for name in names]


def convert_all(
    output_dir: Path,
    *,
    source: str | None,
    repo_id: str | None,
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
    target: str = "image",
) -> list[dict]:
    rows = []
    for name, checkpoint in list_checkpoints(source, repo_id, revision):
        rows.append(_convert_one(name, checkpoint, Path(output_dir), tokenizer, num_heads, dtype, force, verify, revision, target))
    if push:
        for row in rows:
            row["push"] = _push_one(row, namespace, private, token) if row["status"] == "ok" else "skipped"
    return rows


def _convert_one(name, checkpoint, output_dir, tokenizer, num_heads, dtype, force, verify, revision, target="image") -> dict:
    started = time.perf_counter()
    row: dict = {"checkpoint": name, "status": "ok", "target": target}
    try:
        prepared = prepare(checkpoint, revision=revision, num_heads=num_heads, target=target)
        folder = output_dir / Path(name).stem
        result = convert(prepared, folder, dtype=dtype, tokenizer=tokenizer, force=force)
        row.update(
            folder=str(folder),
            variant=result.record["variant"],
            context=result.record["context_length"],
            parameters=result.record["parameters"],
            mapped=result.record["keys"]["mapped"],
            dropped=sum(result.record["keys"]["dropped"].values()),
        )
        if verify:
            parity = parity_record(run_text_parity(prepared, folder, ParityOptions()), None, "text", [])
            (folder / PARITY_RECORD).write_text(json.dumps(parity, indent=2, default=str) + "\n")
            if not parity["passed"]:
                row.update(status="parity failed", error=parity["first_failure"] or "tokenizer")
    except LitetextError as exc:
        row.update(status="failed", error=exc.one_line())
    except Exception as exc:  # one broken file must not stop the others; the row says what happened
        row.update(status="failed", error=f"internal error: {type(exc).__name__}: {exc}"[:200])
    row["seconds"] = time.perf_counter() - started
    return row


def _push_one(row: dict, namespace: str | None, private: bool, token: str | None) -> str:
    from litetext_convert.publish.model_card import load_records
    from litetext_convert.publish.push import PushOptions, default_repo_id, push_folder

    folder = Path(row["folder"])
    repo_id = default_repo_id(namespace, load_records(folder)) if namespace else None
    result = push_folder(folder, PushOptions(repo_id=repo_id, private=private, token=token))
    return f"{result.status}: {result.repo_id or ''}".strip()
