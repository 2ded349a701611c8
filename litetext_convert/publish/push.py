"""Publish a converted, verified folder to the Hugging Face Hub.

plan_push() works out what a push would do (offline for --dry-run); push_folder() does it,
sending only files whose content differs from the remote, retrying transient Hub failures and
turning every other Hub failure into a one-line HubError. The token is never put into any
message, plan or result.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id

from litetext_convert import __version__
from litetext_convert.errors import EXIT_OK, HubError, LitetextError, printable
from litetext_convert.terminal import shown
from litetext_convert.folder.content import FileDigest, content_files, digest_bytes, digest_file
from litetext_convert.folder.names import CONFIG, CONVERSION_RECORD, MEMO_DIR
from litetext_convert.folder.ownership import CARD_MARK
from litetext_convert.folder.view import FolderRecords, load_records
from litetext_convert import hub
from litetext_convert.publish.model_card import (
    CARD_FILENAME,
    USER_PLACEHOLDER,
    default_repo_id,
    parity_problem,
    render_model_card,
    unverified_refusal,
)

_http = hub._http  # the HTTP client huggingface_hub talks through (tests build its errors)

# Retries, timeouts and the error table live in hub.py (the one Hub transport); re-exported here.
MAX_ATTEMPTS = hub.MAX_ATTEMPTS
MAX_DELAY_S = hub.MAX_DELAY_S
backoff_delay = hub.backoff_delay
DEFAULT_BRANCH = "main"
LOGIN_HINT = hub.LOGIN_HINT
ACCESS_HINT = hub.ACCESS_HINT

Status = Literal["pushed", "unchanged", "refused", "failed", "planned"]
T = TypeVar("T")


@dataclass
class PushOptions:
    repo_id: str | None = None
    namespace: str | None = None  # NAMESPACE/sam3-litetext-<variant>-ctx<N> when repo_id is not given
    private: bool = False
    revision: str | None = None
    create_pr: bool = False
    commit_message: str | None = None
    token: str | None = field(default=None, repr=False)  # repr=False: keeps it out of logs and tracebacks
    dry_run: bool = False
    allow_unverified: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "namespace": self.namespace,
            "private": self.private,
            "revision": self.revision,
            "create_pr": self.create_pr,
            "commit_message": self.commit_message,
            "token": "provided" if self.token else None,
            "dry_run": self.dry_run,
            "allow_unverified": self.allow_unverified,
        }


@dataclass
class PlannedFile:
    path: str
    size: int
    sha256: str
    git_sha1: str  # kept for comparing with small remote files; not part of the printed plan
    action: Literal["upload", "unchanged"]

    @property
    def digest(self) -> FileDigest:
        return FileDigest(self.size, self.sha256, self.git_sha1)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "action": self.action}


@dataclass
class PushPlan:
    folder: Path
    repo_id: str
    branch: str
    create_pr: bool
    private: bool
    commit_message: str
    files: list[PlannedFile]
    card: str
    verified: bool
    unverified_reason: str | None
    remote_checked: bool  # False in a dry run: every file is listed as an upload
    repo_exists: bool | None = None
    branch_exists: bool | None = None
    remote_only: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # in the folder, not verified: never uploaded
    notes: list[str] = field(default_factory=list)

    @property
    def to_send(self) -> list[str]:
        return [f.path for f in self.files if f.action == "upload"]

    @property
    def repo_creation(self) -> Literal["yes", "no", "if missing"]:
        if self.repo_exists is None:
            return "if missing"
        return "no" if self.repo_exists else "yes"

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "repo_id": self.repo_id,
            "branch": self.branch,
            "create_pr": self.create_pr,
            "private": self.private,
            "create_repo": self.repo_creation,
            "create_branch": None if self.branch_exists is None else not self.branch_exists,
            "commit_message": self.commit_message,
            "verified": self.verified,
            "unverified_reason": self.unverified_reason,
            "remote_checked": self.remote_checked,
            "files": [f.to_json() for f in self.files],
            "to_send": self.to_send,
            "remote_only": self.remote_only,
            "left_out": self.left_out,
            "notes": self.notes,
        }


@dataclass
class PushResult:
    status: Status
    folder: Path
    repo_id: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    files_sent: list[str] = field(default_factory=list)
    message: str = ""
    plan: PushPlan | None = None
    error: LitetextError | None = field(default=None, repr=False)  # for the CLI: raise it to get its exit code

    @property
    def exit_code(self) -> int:
        return self.error.exit_code if self.error else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "folder": str(self.folder),
            "repo_id": self.repo_id,
            "commit_url": self.commit_url,
            "pr_url": self.pr_url,
            "files_sent": self.files_sent,
            "message": self.message,
            "plan": self.plan.to_json() if self.plan else None,
        }


# ---------------------------------------------------------------- content identity


def remote_digest(entry: RepoFile) -> FileDigest:
    sha256 = entry.lfs.sha256 if entry.lfs else None
    return FileDigest(entry.size, sha256, entry.blob_id)


def files_to_upload(
    local: Mapping[str, tuple[int, str | None, str | None]], remote: Mapping[str, tuple[int, str | None, str | None]]
) -> list[str]:
    """Local paths whose content the remote does not already hold, sorted.

    Both maps are {path: (size, sha256, git_sha1)}; FileDigest is such a tuple.
    """
    return sorted(path for path, digest in local.items() if not _same_content(digest, remote.get(path)))


def _same_content(
    local: tuple[int, str | None, str | None], remote: tuple[int, str | None, str | None] | None
) -> bool:
    if remote is None:
        return False
    local_size, local_sha256, local_git_sha1 = local
    remote_size, remote_sha256, remote_git_sha1 = remote
    if remote_size != local_size:
        return False
    if remote_sha256 is not None:  # LFS/Xet file: its pointer records the content's sha256
        return remote_sha256 == local_sha256
    return remote_git_sha1 is not None and remote_git_sha1 == local_git_sha1


# ---------------------------------------------------------------- secrets


_TOKEN_PATTERN = re.compile(r"\bhf_(?:oauth_)?[A-Za-z0-9]{20,}\b")


def redact(text: str, token: str | None) -> str:
    """`text` without `token` and without anything shaped like a Hugging Face token."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_PATTERN.sub("***", text)


def _redact_all(text: str, options: PushOptions) -> str:
    # The Hub may echo whichever token was used: the explicit one or the one from HF_TOKEN / the login cache.
    for secret in (options.token, *_ambient_tokens()):
        text = redact(text, secret)
    return text


def _ambient_tokens() -> list[str]:
    # Read directly: huggingface_hub.get_token() may refresh an OAuth token over the network.
    tokens = [os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    try:
        tokens.append(Path(constants.HF_TOKEN_PATH).read_text(encoding="utf-8"))
    except OSError:
        pass  # not logged in
    return [t.strip() for t in tokens if t and t.strip()]


# ---------------------------------------------------------------- the folder


def publishable_files(records: FolderRecords) -> list[str]:
    """Exactly what was verified: the content files the parity records name by digest (all records of
    a verified folder name the same ones), the conversion record and the parity records. The card is
    added from memory. Without a bound record (--allow-unverified), the folder's content files."""
    bound = [record.binding for record in records.parities if record.binding]
    named = set().union(*(b["files"] for b in bound)) if bound else set(content_files(records.folder, records.conversion))
    return sorted(named | {CONVERSION_RECORD} | {record.file for record in records.parities})


def _check_publishable(folder: Path, path: str) -> None:
    """A file to publish is a regular file of the folder with one link: never a symbolic link (it could
    point at a token), never a hard link (its other name may be outside), never a FIFO."""
    info = os.lstat(folder / path)
    where = f"refusing to publish {printable(folder)}: {printable(path)}"
    if stat.S_ISLNK(info.st_mode):
        raise LitetextError(f"{where} is a symbolic link (to {printable(os.readlink(folder / path))}); only regular "
                            "files inside the folder are published", hint="remove the link or copy the file in")
    if not stat.S_ISREG(info.st_mode):
        raise LitetextError(f"{where} is not a regular file")
    if info.st_nlink > 1:
        raise LitetextError(f"{where} has {info.st_nlink} hard links: its other name may be a file outside the folder",
                            hint="copy it in (cp) so the folder holds its own file")


def left_out(folder: Path, published: list[str]) -> list[str]:
    """Everything in the folder that is not published (never uploaded), as posix paths; links are not entered."""
    skipped = set(published) | {CARD_FILENAME}
    found = []
    for root, folders, files in os.walk(folder):  # os.walk lists a linked folder but never enters it
        folders.sort()
        base = Path(root).relative_to(folder)
        for name in sorted([*files, *(f for f in folders if os.path.islink(os.path.join(root, f)))]):
            path = (base / name).as_posix()
            if path not in skipped and not path.startswith(f"{MEMO_DIR}/"):
                found.append(path)
    return sorted(found)


def _check_card_is_ours(folder: Path) -> None:
    """The card is rewritten in the folder after a push: never over a README.md a user wrote."""
    card = folder / CARD_FILENAME
    if os.path.lexists(card) and (card.is_symlink() or not card.is_file()
                                  or CARD_MARK.decode() not in card.read_text(encoding="utf-8", errors="replace")):
        raise LitetextError(
            f"refusing to publish {printable(folder)}: its {CARD_FILENAME} was not written by litetext "
            "and would be replaced by the model card",
            hint=f"move {CARD_FILENAME} out of the folder",
        )


def _check_complete(folder: Path, paths: list[str]) -> None:
    # A half-written folder (interrupted conversion) must not reach the Hub.
    weights = any(p.startswith("model") and p.endswith(".safetensors") for p in paths)
    graphs = any(p.startswith("onnx/") and p.endswith(".onnx") for p in paths)  # an ONNX export's weights
    if CONFIG not in paths or not (weights or graphs):
        raise LitetextError(
            f"refusing to publish {folder}: it lacks config.json or its weights (model*.safetensors, or onnx/*.onnx)",
            hint="re-run the conversion into this folder",
        )


def _default_commit_message(records: FolderRecords) -> str:
    return f"Upload {records.card_wording['title']} {records.variant} ctx{records.context_length} (litetext {__version__})"


# ---------------------------------------------------------------- planning


def plan_push(
    folder: Path, options: PushOptions, api: HfApi | None = None, sleep: Callable[[float], None] = time.sleep
) -> PushPlan:
    """What a push would do. A dry run touches no network: `api` is not used at all.

    Raises LitetextError for a folder that must not be published, HubError when the Hub fails.
    """
    folder = Path(folder)
    records = load_records(folder)
    if parity_problem(records) and not options.allow_unverified:
        raise unverified_refusal(records, folder)  # before any Hub call: refusing costs nothing
    if options.dry_run:
        return _local_plan(folder, records, options, _dry_run_repo_id(options, records))
    api = api or HfApi(token=options.token)
    repo_id = options.repo_id or default_repo_id(options.namespace or _whoami(api, options, sleep), records)
    plan = _local_plan(folder, records, options, repo_id)
    return _with_remote_state(plan, api, options, sleep)


def _dry_run_repo_id(options: PushOptions, records: FolderRecords) -> str:
    # whoami needs the network, so a dry run without --repo-id shows the default with a placeholder user.
    return options.repo_id or default_repo_id(options.namespace or USER_PLACEHOLDER, records)


def _local_plan(folder: Path, records: FolderRecords, options: PushOptions, repo_id: str) -> PushPlan:
    if USER_PLACEHOLDER not in repo_id:
        _validate_repo_id(repo_id)
    paths = publishable_files(records)
    for path in paths:
        _check_publishable(folder, path)
    _check_complete(folder, paths)
    _check_card_is_ours(folder)
    problem = parity_problem(records)
    card = render_model_card(folder, repo_id=repo_id, allow_unverified=options.allow_unverified, records=records)
    files = [_planned(path, digest_file(folder / path)) for path in paths]
    files.append(_planned(CARD_FILENAME, digest_bytes(card.encode("utf-8"))))
    notes = []
    if USER_PLACEHOLDER in repo_id:
        notes.append(
            f"{USER_PLACEHOLDER} becomes your Hub user name at push time (a dry run does not call whoami); "
            f"the {CARD_FILENAME} hash changes with it. Pass --repo-id for an exact plan."
        )
    if options.dry_run:
        notes.append("dry run: the remote was not consulted, so every file is listed as an upload")
    return PushPlan(
        folder=folder,
        repo_id=repo_id,
        branch=options.revision or DEFAULT_BRANCH,
        create_pr=options.create_pr,
        private=options.private,
        commit_message=options.commit_message or _default_commit_message(records),
        files=sorted(files, key=lambda f: f.path),
        card=card,
        verified=problem is None,
        unverified_reason=problem,
        remote_checked=False,
        left_out=left_out(folder, paths),
        notes=notes,
    )


def _planned(path: str, digest: FileDigest) -> PlannedFile:
    return PlannedFile(path, digest.size, digest.sha256 or "", digest.git_sha1 or "", action="upload")


def _validate_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"invalid repo id {repo_id!r}: {err}", hint="use ORG/NAME") from None
    if "/" not in repo_id:
        raise HubError(f"invalid repo id {repo_id!r}", hint="use ORG/NAME")


def _with_remote_state(plan: PushPlan, api: HfApi, options: PushOptions, sleep: Callable[[float], None]) -> PushPlan:
    repo_exists, branch_exists, remote = _remote_files(api, plan.repo_id, options, sleep)
    if options.private and repo_exists and not _is_private(api, plan.repo_id, options, sleep):
        # create_repo only sets visibility on creation: without this, --private would publish in public.
        raise LitetextError(
            f"refusing to push to {plan.repo_id}: it exists and is public, and --private cannot change that",
            hint="make it private on the Hub first, or drop --private",
        )
    local = {f.path: f.digest for f in plan.files}
    changed = set(files_to_upload(local, remote))
    for planned in plan.files:
        planned.action = "upload" if planned.path in changed else "unchanged"
    plan.remote_checked = True
    plan.repo_exists = repo_exists
    plan.branch_exists = branch_exists
    plan.remote_only = sorted(set(remote) - set(local) - {".gitattributes"})
    return plan


def _remote_files(
    api: HfApi, repo_id: str, options: PushOptions, sleep: Callable[[float], None]
) -> tuple[bool, bool, dict[str, FileDigest]]:
    """(repo exists, branch exists, {path: digest}) of the target branch."""
    branch = options.revision or DEFAULT_BRANCH

    def list_tree() -> list[Any]:
        return list(api.list_repo_tree(repo_id, recursive=True, revision=branch, token=options.token))

    try:
        entries = _with_retries(list_tree, sleep)
    except GatedRepoError as err:
        raise _hub_error(err, repo_id, options) from None
    except RepositoryNotFoundError as err:
        if _status(err) == 401:
            raise _hub_error(err, repo_id, options) from None
        return False, False, {}
    except RevisionNotFoundError:
        return True, False, {}
    except Exception as err:
        raise _as_hub_error(err, repo_id, options) from None
    files = {e.path: remote_digest(e) for e in entries if isinstance(e, RepoFile)}
    return True, True, files


def _is_private(api: HfApi, repo_id: str, options: PushOptions, sleep: Callable[[float], None]) -> bool:
    try:
        return bool(_with_retries(lambda: api.repo_info(repo_id, token=options.token), sleep).private)
    except Exception as err:
        raise _as_hub_error(err, repo_id, options) from None


def _whoami(api: HfApi, options: PushOptions, sleep: Callable[[float], None]) -> str:
    try:
        # cache=True: convert-all asks once per folder, and whoami is tightly rate-limited.
        return str(_with_retries(lambda: api.whoami(token=options.token, cache=True), sleep)["name"])
    except Exception as err:
        raise _as_hub_error(err, None, options) from None


# ---------------------------------------------------------------- pushing


def push_folder(
    folder: Path, options: PushOptions, api: HfApi | None = None, sleep: Callable[[float], None] = time.sleep
) -> PushResult:
    """Plan, then push what differs. Returns a result for every expected outcome; only bugs raise."""
    folder = Path(folder)
    api = api or HfApi(token=options.token)  # constructing it is offline; a dry run never calls it
    try:
        plan = plan_push(folder, options, api, sleep)
    except HubError as err:
        return _failed(folder, options.repo_id, err, options)
    except LitetextError as err:  # unverified, incomplete or not a converted folder
        return PushResult("refused", folder, options.repo_id, message=_redact_all(err.one_line(), options), error=err)
    if options.dry_run:
        return PushResult("planned", folder, plan.repo_id, message=_plan_message(plan), plan=plan)
    if not plan.to_send:
        _write_card(folder, plan.card)
        return PushResult("unchanged", folder, plan.repo_id, message="the Hub already holds these files", plan=plan)
    try:
        commit = _send(api, plan, options, sleep)
    except HubError as err:
        return _failed(folder, plan.repo_id, err, options, plan)
    except LitetextError as err:  # a file changed between planning and sending
        return PushResult("refused", folder, plan.repo_id, message=_redact_all(err.one_line(), options), plan=plan, error=err)
    _write_card(folder, plan.card)  # only once the Hub has it: a failed push leaves the folder as it was
    return PushResult(
        "pushed",
        folder,
        plan.repo_id,
        commit_url=commit.commit_url,
        pr_url=commit.pr_url,
        files_sent=plan.to_send,
        message=f"sent {len(plan.to_send)} of {len(plan.files)} files" + (" in a pull request" if commit.pr_url else ""),
        plan=plan,
    )


def _send(api: HfApi, plan: PushPlan, options: PushOptions, sleep: Callable[[float], None]) -> Any:
    try:
        if not plan.repo_exists:
            _with_retries(
                lambda: api.create_repo(plan.repo_id, private=options.private, exist_ok=True, token=options.token),
                sleep,
            )
        if not plan.branch_exists and plan.branch != DEFAULT_BRANCH:
            _with_retries(
                lambda: api.create_branch(plan.repo_id, branch=plan.branch, exist_ok=True, token=options.token), sleep
            )
        # Fresh operations per attempt: an add operation carries upload state from the attempt that made it.
        # A retried commit cannot duplicate one that landed: huggingface_hub drops adds the remote already holds.
        return _with_retries(lambda: _commit(api, plan, options), sleep)
    except Exception as err:
        raise _as_hub_error(err, plan.repo_id, options) from None


def _commit(api: HfApi, plan: PushPlan, options: PushOptions) -> Any:
    """One commit attempt. Each file goes as a handle opened without following links, and the digest
    huggingface_hub computes from it must be the planned (verified) one: the bytes sent are the bytes
    verified, even if a file was swapped for a link or rewritten after planning."""
    with contextlib.ExitStack() as handles:
        operations = [_operation(plan, planned, handles) for planned in plan.files if planned.action == "upload"]
        return api.create_commit(
            plan.repo_id,
            operations,
            commit_message=plan.commit_message,
            commit_description=_commit_description(plan),
            revision=options.revision,
            create_pr=options.create_pr,
            token=options.token,
        )


def _operation(plan: PushPlan, planned: PlannedFile, handles: contextlib.ExitStack) -> CommitOperationAdd:
    if planned.path == CARD_FILENAME:  # sent from memory: the folder's copy is rewritten only after a successful push
        return CommitOperationAdd(path_in_repo=planned.path, path_or_fileobj=plan.card.encode("utf-8"))
    operation = None
    try:
        fd = os.open(plan.folder / planned.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # gone, or a link now (ELOOP)
        fd = None
    if fd is not None:
        handle = handles.enter_context(os.fdopen(fd, "rb"))
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            operation = CommitOperationAdd(path_in_repo=planned.path, path_or_fileobj=handle)
    if operation is None or (operation.upload_info.size, operation.upload_info.sha256.hex()) != (planned.size, planned.sha256):
        raise LitetextError(f"refusing to publish {printable(plan.folder)}: {printable(planned.path)} changed after it was "
                            "verified and planned; nothing was sent", hint="run `litetext parity FOLDER` again")
    return operation


def _commit_description(plan: PushPlan) -> str:
    verdict = "parity verified" if plan.verified else f"UNVERIFIED ({plan.unverified_reason})"
    return f"Converted with litetext {__version__}; {verdict}. See conversion_record.json and parity/*.json."


def _write_card(folder: Path, card: str) -> None:
    # The folder keeps the card it was published with (the one atomic writer; identical bytes are not rewritten).
    from litetext_convert.folder import safe_io

    path = folder / CARD_FILENAME
    if path.is_file() and not path.is_symlink() and safe_io.read_bounded(path) == card.encode("utf-8"):
        return
    safe_io.write_inside(folder, CARD_FILENAME, card.encode("utf-8"), ours=lambda data: CARD_MARK in data, what="model card")


def _plan_message(plan: PushPlan) -> str:
    return f"would send {len(plan.to_send)} files to {plan.repo_id}@{plan.branch} (create repo: {plan.repo_creation})"


def _failed(
    folder: Path, repo_id: str | None, err: HubError, options: PushOptions, plan: PushPlan | None = None
) -> PushResult:
    return PushResult("failed", folder, repo_id, message=_redact_all(err.one_line(), options), plan=plan, error=err)


def render_plan(plan: PushPlan, width: int | None = None) -> str:
    """The plan as plain text, one fact per line, for `--dry-run` without `--json`. Within `width`
    columns a file's sha256 goes on its own line."""
    lines = [
        f"repo:        {shown(plan.repo_id)} ({'private' if plan.private else 'public'}; create: {plan.repo_creation})",
        f"branch:      {shown(plan.branch)}" + (" (pull request)" if plan.create_pr else ""),
        f"message:     {shown(plan.commit_message)}",
        f"verified:    {'yes' if plan.verified else 'NO: ' + shown(plan.unverified_reason)}",
        "files:",
    ]
    path_width = max(len(shown(f.path)) for f in plan.files)
    for f in plan.files:
        line = f"  {f.action:9} {shown(f.path):{path_width}} {f.size:>14,} B  sha256 {f.sha256}"
        if width is not None and len(line) > width:
            line = f"  {f.action:9} {shown(f.path):{path_width}} {f.size:>14,} B\n    sha256 {f.sha256}"
        lines.append(line)
    lines += [f"  remote only (left untouched): {shown(p)}" for p in plan.remote_only]
    lines += [f"  left out (not verified, never uploaded): {shown(p)}" for p in plan.left_out]
    lines += [f"note: {shown(n)}" for n in plan.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- retries and errors


def is_transient(err: BaseException) -> bool:
    """Worth retrying: the Hub or the network hiccuped, the request itself was fine (hub.py's table)."""
    return hub.is_transient(err)


def _with_retries(call: Callable[[], T], sleep: Callable[[float], None], attempts: int = MAX_ATTEMPTS) -> T:
    return hub.with_retries(call, sleep, attempts)  # bounded in time and count, quiet, one line at the end


def _status(err: BaseException) -> int | None:
    return hub.status_of(err)


def _as_hub_error(err: Exception, repo_id: str | None, options: PushOptions) -> Exception:
    """HubError for what the Hub or the network did; anything else is a bug and stays itself."""
    if isinstance(err, HubError):
        return err
    if hub.is_hub_failure(err):
        return _hub_error(err, repo_id, options)
    return err


def _hub_error(err: Exception, repo_id: str | None, options: PushOptions) -> HubError:
    """One line saying what failed and how to fix it (hub.py's table, as a push sees it); secrets redacted."""
    message, hint = hub.describe(err, repo_id or "the Hub", revision=options.revision, writing=True, attempts=MAX_ATTEMPTS)
    return HubError(_redact_all(message, options), hint=hint)
