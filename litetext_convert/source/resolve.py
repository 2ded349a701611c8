"""Resolve `--checkpoint` (alias, `REPO_ID:PATH/IN/REPO`, or a local file) to a file on disk.

Hub files come through `huggingface_hub.hf_hub_download`, so its cache, `HF_HUB_OFFLINE` and
its progress bars apply unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from litetext_convert.errors import CheckpointError
from litetext_convert.paths import read_config

_HUB_REFERENCE = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+):(?P<path>.+)")


@dataclass(frozen=True)
class Registry:
    repo_id: str
    revision: str
    folder: str
    license: str | None
    aliases: dict[str, str]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where the bytes are, and where they came from (for the conversion record)."""

    path: Path
    repo_id: str | None
    filename: str
    revision: str | None
    alias: str | None
    license: str | None

    def to_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "alias": self.alias,
            "license": self.license,
        }


def load_registry() -> Registry:
    data = read_config("checkpoints.toml")
    hub = data["hub"]
    return Registry(hub["repo_id"], hub["revision"], hub["folder"], hub.get("license"), dict(data["aliases"]))


def resolve(
    checkpoint: str, *, repo_id: str | None = None, revision: str | None = None
) -> ResolvedCheckpoint:
    registry = load_registry()
    if checkpoint in registry.aliases:
        return _download(
            repo_id or registry.repo_id,
            registry.aliases[checkpoint],
            revision or registry.revision,
            alias=checkpoint,
            license=registry.license if repo_id in (None, registry.repo_id) else None,
        )
    local = Path(checkpoint).expanduser()
    if local.exists():
        return _local(local)
    hub = _HUB_REFERENCE.fullmatch(checkpoint)
    if hub:
        license = registry.license if hub["repo"] == registry.repo_id else None
        return _download(hub["repo"], hub["path"], revision, alias=None, license=license)
    if "/" in checkpoint or checkpoint.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise CheckpointError(f"checkpoint file not found: {checkpoint}")
    raise CheckpointError(
        f"unknown checkpoint alias {checkpoint!r}",
        hint=f"known aliases: {', '.join(registry.aliases)}; or give a local path or REPO_ID:PATH",
    )


def _local(path: Path) -> ResolvedCheckpoint:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    return ResolvedCheckpoint(path.resolve(), None, path.name, None, None, None)


def _download(repo_id: str, filename: str, revision: str | None, *, alias: str | None, license: str | None):
    # Imported here: huggingface_hub is only needed when something lives on the Hub.
    from litetext_convert.publish.hub import download

    path = download(repo_id, filename, revision)  # fast and one line when offline or unreachable
    return ResolvedCheckpoint(Path(path), repo_id, filename, revision, alias, license)
