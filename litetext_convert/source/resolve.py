"""Resolve `--checkpoint` (alias, `REPO_ID:PATH/IN/REPO`, or a local file) to a file on disk.

Aliases come from every family (configs/families/<id>/family.toml). When the repository no longer
has an alias' file under its name, the family's folder is listed and the file with the same
family, variant and context is used, with a notice that says so.

Hub files come through `huggingface_hub.hf_hub_download`, so its cache, `HF_HUB_OFFLINE` and
its progress bars apply unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from litetext_convert.errors import CheckpointError
from litetext_convert.families import all_aliases, load_families

_HUB_REFERENCE = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+):(?P<path>.+)")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where the bytes are, and where they came from (for the conversion record)."""

    path: Path
    repo_id: str | None
    filename: str
    revision: str | None
    alias: str | None
    license: str | None
    notice: str | None = None  # said to the user: e.g. the alias' file was found under a new name

    def to_json(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "alias": self.alias,
            "license": self.license,
            **({"notice": self.notice} if self.notice else {}),
        }


def resolve(
    checkpoint: str, *, repo_id: str | None = None, revision: str | None = None
) -> ResolvedCheckpoint:
    aliases = all_aliases()
    if checkpoint in aliases:
        family, filename = aliases[checkpoint]
        repo = repo_id or family.repo_id
        revision = revision or family.revision
        license = family.license if repo_id in (None, family.repo_id) else None
        return _download_alias(repo, filename, revision, alias=checkpoint, family=family, license=license)
    local = Path(checkpoint).expanduser()
    if local.exists():
        return _local(local)
    hub = _HUB_REFERENCE.fullmatch(checkpoint)
    if hub:
        owner = next((f for f in load_families() if f.repo_id == hub["repo"]), None)
        return _download(hub["repo"], hub["path"], revision, alias=None, license=owner.license if owner else None)
    if "/" in checkpoint or checkpoint.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise CheckpointError(f"checkpoint file not found: {checkpoint}")
    raise CheckpointError(
        f"unknown checkpoint alias {checkpoint!r}",
        hint=f"known aliases: {', '.join(aliases)}; or give a local path or REPO_ID:PATH",
    )


def already_here(checkpoint: str, *, repo_id: str | None = None, revision: str | None = None) -> Path | None:
    """The file `resolve` will most likely give, when it is on this machine already: a local file,
    or the Hub cache's copy of an alias or REPO_ID:PATH (looked up without the network). None when
    it is not here or not known; never raises. Only a hint (convert hashes it early): `resolve`
    decides, and a file it resolves otherwise is hashed again."""
    try:
        local = Path(checkpoint).expanduser()
        if local.is_file():
            return local.resolve()
        aliases = all_aliases()
        if checkpoint in aliases:
            family, filename = aliases[checkpoint]
            repo, revision = repo_id or family.repo_id, revision or family.revision
        elif hub := _HUB_REFERENCE.fullmatch(checkpoint):
            repo, filename = hub["repo"], hub["path"]
        else:
            return None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, filename, revision=revision)
        return Path(cached) if isinstance(cached, str) else None
    except Exception:  # noqa: BLE001 - a hint only: resolve() reports every problem itself
        return None


def _download_alias(repo_id: str, filename: str, revision: str, *, alias: str, family, license):
    """An alias' file; if the repository no longer has it under that name, the file of the same
    family, variant and context in the family's folder (and the resolution says so)."""
    from litetext_convert.hub import MissingInRepo

    try:
        return _download(repo_id, filename, revision, alias=alias, license=license)
    except MissingInRepo:
        pass
    listing = list_family_folder(repo_id, revision, family)
    wanted = family.file_identity(Path(filename).name)
    candidates = [name for name in listing if family.file_identity(Path(name).name) == wanted]
    if len(candidates) != 1:
        found = ", ".join(candidates) if candidates else "none"
        raise CheckpointError(
            f"{repo_id}:{filename}@{revision}: no such file in the repository, and the {family.folder}/ folder has "
            f"{'no' if not candidates else 'more than one'} {family.name} file for {wanted[0]} ctx{wanted[1]} ({found})",
            hint="pass REPO_ID:PATH of the file you want",
        )
    renamed = candidates[0]
    resolved = _download(repo_id, renamed, revision, alias=alias, license=license)
    notice = f"{alias}: {filename} is not in {repo_id}; using {renamed} (same family, variant and context)"
    return dataclasses.replace(resolved, notice=notice)


def list_family_folder(
    repo_id: str, revision: str | None, family, *, hint: str = "go online, or pass a local file or REPO_ID:PATH"
) -> list[str]:
    """The *.pt files of a family's folder in a Hub repository."""
    from huggingface_hub import list_repo_files

    from litetext_convert import hub

    if not hub.cache_only_if_unreachable():
        raise hub.unreachable_error(f"list {repo_id}", hint=hint)
    try:
        files = hub.with_retries(lambda: list_repo_files(repo_id, revision=revision))
    except Exception as exc:  # noqa: BLE001 - the Hub table says what happened; bugs keep their type
        raise hub.as_litetext_error(exc, repo_id) from None
    return sorted(name for name in files if name.startswith(family.folder + "/") and name.endswith(".pt"))


def _local(path: Path) -> ResolvedCheckpoint:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    return ResolvedCheckpoint(path.resolve(), None, path.name, None, None, None)


def _download(repo_id: str, filename: str, revision: str | None, *, alias: str | None, license: str | None):
    # Imported here: huggingface_hub is only needed when something lives on the Hub.
    from litetext_convert.hub import download


    path = download(repo_id, filename, revision)  # fast and one line when offline or unreachable
    return ResolvedCheckpoint(Path(path), repo_id, filename, revision, alias, license)
