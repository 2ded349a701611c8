"""Shared fixtures: tiny upstream-layout checkpoints, an offline tokenizer, converted folders.

Everything is built once per test session in a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
from litetext_convert.synthetic import builder as synthetic

VARIANTS = ("s0", "s1", "l")

# The suite never reads or writes the user's cache (plan/manifest.py): one empty cache folder per
# session, inherited by the CLI subprocesses some tests start.
os.environ.pop("LITETEXT_NO_CACHE", None)
os.environ["LITETEXT_CACHE_DIR"] = tempfile.mkdtemp(prefix="litetext-test-cache-")
atexit.register(shutil.rmtree, os.environ["LITETEXT_CACHE_DIR"], ignore_errors=True)


def heads(variant: str) -> int:
    """Tiny presets are narrower than head_dim 64, so their head count is passed as --num-heads."""
    return synthetic.TINY_TEXT_PRESETS[variant].heads


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("litetext")


@pytest.fixture(scope="session")
def tokenizer_dir(workdir) -> Path:
    return write_hf_clip_tokenizer(workdir / "tokenizer", 16)


@pytest.fixture(scope="session")
def tiny_checkpoints(workdir) -> dict[str, Path]:
    """S0, S1 and L at ctx16, the S0 one with the 77-row table upstream's builder creates."""
    folder = workdir / "checkpoints"
    folder.mkdir()
    paths = {}
    for variant in VARIANTS:
        rows = 77 if variant == "s0" else None
        paths[variant] = synthetic.tiny_checkpoint(folder / f"tiny_mobileclip_{variant}_ctx16.pt", variant, 16, pos_rows=rows)
    return paths


@pytest.fixture(scope="session")
def converted(workdir, tiny_checkpoints, tokenizer_dir) -> dict[str, Path]:
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    folders = {}
    for variant, path in tiny_checkpoints.items():
        folder = workdir / "converted" / variant
        convert(prepare(str(path), num_heads=heads(variant)), folder, tokenizer=str(tokenizer_dir))
        folders[variant] = folder
    return folders


# ---------------------------------------------------------------------------------------------
# The one CLI runner of the suite (in process), and the one for a real process


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def __iter__(self):  # `code, out, err = run_cli(...)`
        return iter((self.code, self.stdout, self.stderr))


def run_cli(args: list, capsys=None, monkeypatch: pytest.MonkeyPatch | None = None) -> CliResult:
    """`cli.main()` itself (the function that turns errors into one line and an exit code), with
    argv patched: no start-up cost. What a real process would also print on stderr is kept:
    library log handlers point at the captured stderr, and Python warnings are appended as the
    default hook would print them. Without `capsys` (a session fixture has none) the output is
    captured here."""
    if monkeypatch is None:
        with pytest.MonkeyPatch.context() as patch:
            return run_cli(args, capsys, patch)
    from litetext_convert import cli

    if capsys is not None:
        capsys.readouterr()  # drop anything printed before
    own_out, own_err = io.StringIO(), io.StringIO()
    if capsys is None:
        monkeypatch.setattr(sys, "stdout", own_out)
        monkeypatch.setattr(sys, "stderr", own_err)
    monkeypatch.delenv("LITETEXT_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["litetext", *map(str, args)])
    for handler in _library_log_handlers():
        monkeypatch.setattr(handler, "stream", sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            cli.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = (own_out.getvalue(), own_err.getvalue()) if capsys is None else capsys.readouterr()
    printed = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return CliResult(code, out, err + printed)


def _library_log_handlers() -> list[logging.StreamHandler]:
    """Stream handlers bound, at import, to whatever sys.stderr was then."""
    loggers = [logging.getLogger(), logging.getLogger("transformers"), logging.getLogger("huggingface_hub")]
    return [h for logger in loggers for h in logger.handlers if type(h) is logging.StreamHandler]


REPO = Path(__file__).resolve().parents[1]
CLI_COMMAND = [sys.executable, "-m", "litetext_convert.cli"]


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment of a litetext process: this checkout's code, no LITETEXT_DEBUG (it would turn
    errors into tracebacks), and `overrides`."""
    env = {key: value for key, value in os.environ.items() if key != "LITETEXT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(overrides)
    return env


def run_cli_process(args: list, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """`litetext ARGS` in a process of its own: for what is read from the environment at import
    (offline switches, the Hub's home) and for signals."""
    done = subprocess.run([*CLI_COMMAND, *map(str, args)], capture_output=True, text=True, env=env or cli_env(),
                          timeout=timeout, check=False)
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(capsys, monkeypatch) -> Callable[..., CliResult]:
    """`cli("convert", "-c", path, ...)` -> CliResult."""
    return lambda *args: run_cli(list(args), capsys, monkeypatch)


# ---------------------------------------------------------------------------------------------
# The one fake Hub of the suite: the HfApi methods publish.py calls, no network

HUB_REPO = "alice/sam3-litetext-s0-ctx16"


def http_error(status: int, cls=None, server_message: str | None = None):
    """A real huggingface_hub error around a hand-made HTTP response."""
    from huggingface_hub.errors import HfHubHTTPError

    from litetext_convert.publish import push as publish

    request = publish._http.Request("POST", f"https://huggingface.co/api/models/{HUB_REPO}/commit/main")
    response = publish._http.Response(status, request=request)
    return (cls or HfHubHTTPError)(f"{status} Client Error: {server_message or ''}", response=response, server_message=server_message)


class FakeHub:
    """An in-memory {repo: {branch: {path: bytes}}}. `failures[method]`: raised one per call, in
    order, then calls succeed; `broken[method]`: raised on every call; `down`: every call raises it."""

    def __init__(self, user: str = "alice", down: BaseException | None = None):
        self.user = user
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}
        self.calls: list[str] = []
        self.failures: dict[str, list[BaseException]] = {}
        self.broken: dict[str, BaseException] = {}
        self.down = down

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if self.down is not None:
            raise self.down
        if method in self.broken:
            raise self.broken[method]
        if self.failures.get(method):
            raise self.failures[method].pop(0)

    def whoami(self, token=None, **_):
        self._enter("whoami")
        return {"name": self.user}

    def list_repo_tree(self, repo_id, *, recursive=False, revision=None, token=None, **_):
        from huggingface_hub.errors import (
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        self._enter("list_repo_tree")
        if repo_id not in self.repos:
            raise http_error(404, RepositoryNotFoundError)
        branches = self.repos[repo_id]
        if (revision or "main") not in branches:
            raise http_error(404, RevisionNotFoundError)
        return [_repo_file(path, data) for path, data in branches[revision or "main"].items()]

    def create_repo(self, repo_id, *, private=None, exist_ok=False, token=None, **_):
        self._enter("create_repo")
        self.repos.setdefault(repo_id, {"main": {".gitattributes": b"*.safetensors filter=lfs\n"}})
        self.private = bool(private)

    def repo_info(self, repo_id, *, token=None, **_):
        self._enter("repo_info")
        return SimpleNamespace(private=self.private)

    def create_branch(self, repo_id, *, branch, exist_ok=False, token=None, **_):
        self._enter("create_branch")
        self.repos[repo_id].setdefault(branch, dict(self.repos[repo_id]["main"]))

    def create_commit(self, repo_id, operations, *, commit_message, revision=None, create_pr=None, token=None, **_):
        from huggingface_hub import CommitOperationAdd

        self._enter("create_commit")
        target = "refs/pr/1" if create_pr else (revision or "main")
        files = self.repos[repo_id].setdefault(target, dict(self.repos[repo_id][revision or "main"]))
        for op in operations:
            assert isinstance(op, CommitOperationAdd)
            content = op.path_or_fileobj
            files[op.path_in_repo] = content if isinstance(content, bytes) else (
                content.read() if hasattr(content, "read") else Path(content).read_bytes())
        self.last_commit = SimpleNamespace(message=commit_message, paths=[op.path_in_repo for op in operations])
        return SimpleNamespace(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
            pr_url=f"https://huggingface.co/{repo_id}/discussions/1" if create_pr else None,
        )


def _repo_file(path: str, data: bytes):
    from huggingface_hub.hf_api import RepoFile

    git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if path.endswith(".safetensors"):  # stored in LFS: the blob id is the pointer's, the sha256 the content's
        lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return RepoFile(path=path, size=len(data), oid="f" * 40, lfs=lfs)
    return RepoFile(path=path, size=len(data), oid=git_sha1)


class NoNetwork:
    """An HfApi whose every use fails the test: what a dry run is given."""

    def __getattr__(self, name):
        raise AssertionError(f"dry run called HfApi.{name}")


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    """A FakeHub that `litetext push` gets instead of HfApi, retrying without waiting."""
    from litetext_convert.publish import push as publish

    hub = FakeHub()
    monkeypatch.setattr(publish, "HfApi", lambda *a, **k: hub)
    monkeypatch.setattr(publish.time, "sleep", lambda seconds: None)
    return hub


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """No token anywhere: not in the environment, not in the login cache."""
    from litetext_convert.publish import push as publish

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(publish.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


# ---------------------------------------------------------------- ONNX exports (one per family per session)

ONNX_CONTEXT = 16
ONNX_FAMILIES = ("sam3_litetext", "sam3p1_litetext")
ONNX_RUNGS = {"sam3_litetext": ["fp32", "fp16", "int8"], "sam3p1_litetext": ["fp32"]}


@pytest.fixture(scope="session")
def onnx_exports(workdir, tokenizer_dir) -> dict[str, tuple[Path, Path]]:
    """family -> (checkpoint, ONNX folder), exported through the CLI's own function."""
    from litetext_convert.onnx.export import export_folder
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.publish.model_card import write_folder_card
    from litetext_convert.synthetic import builder as synthetic

    exports = {}
    for family in ONNX_FAMILIES:
        checkpoint = synthetic.tiny_checkpoint(workdir / "onnx" / f"tiny_{family}_s0_ctx{ONNX_CONTEXT}.pt", "s0", ONNX_CONTEXT,
                                               pos_rows=77, family=family)
        folder = workdir / "onnx" / f"export_{family}"
        export_folder(prepare(str(checkpoint), num_heads=onnx_heads()), folder, tokenizer=str(tokenizer_dir), rungs=ONNX_RUNGS[family])
        write_folder_card(folder)  # as `convert` does after the export
        exports[family] = (checkpoint, folder)
    return exports


def onnx_heads() -> int:
    from litetext_convert.synthetic import builder as synthetic

    return synthetic.TINY_TEXT_PRESETS["s0"].heads
