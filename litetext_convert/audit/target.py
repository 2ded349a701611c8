"""TARGET: a local folder, or a Hub repo `REPO_ID[@REVISION]` downloaded through the HF cache."""

from __future__ import annotations

import re
from pathlib import Path

from litetext_convert.errors import LitetextError

_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^@\s]+))?$")
# Only what a transformers folder needs: weights, configs, tokenizer files.
_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def resolve_target(target: str) -> Path:
    local = Path(target).expanduser()
    try:
        is_dir, exists = local.is_dir(), local.exists()
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise LitetextError(f"cannot use {target}: {exc.strerror or exc}") from None
    if is_dir:
        return local
    if exists:
        raise LitetextError(f"{target} is a file; the audit needs a transformers folder or a Hub repo id")
    match = _REPO_ID.match(target)
    if match is None or target.startswith((".", "/", "~")):
        raise LitetextError(f"{target}: no such folder, and not a Hub repo id (REPO_ID[@REVISION])")
    return _download(match.group("repo"), match.group("revision"))


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    from litetext_convert import hub  # the one Hub transport and error table

    name = repo_id + (f"@{revision}" if revision else "")
    try:
        return Path(hub.with_retries(lambda: snapshot_download(repo_id, revision=revision, allow_patterns=_PATTERNS)))
    except Exception as err:  # noqa: BLE001 - the table translates Hub failures; a bug keeps its type
        raise hub.as_litetext_error(err, name, kind=LitetextError) from None
