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
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    name = repo_id + (f"@{revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_PATTERNS))
    except RepositoryNotFoundError:
        raise LitetextError(f"Hub repo {repo_id} not found (or private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise LitetextError(f"Hub repo {repo_id} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise LitetextError(
            f"{name} is not in the Hugging Face cache and the Hub cannot be reached (offline?)",
            hint="download it once online, or pass a local folder",
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise LitetextError(f"cannot download {name}: {' '.join(str(exc).split())[:160]}") from None
