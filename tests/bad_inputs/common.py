"""Shared by every bad-input module: the workspace, the one-line assertions, and the corpus of bad
checkpoints (each entry: how to make it, extra arguments, fragments of the one line it must end in)."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from conftest import CliResult

from bad_inputs import corpus
from bad_inputs.corpus import TINY_HEADS

HEADS = ["--num-heads", str(TINY_HEADS)]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------------------------------------
# Workspace: built once for the whole package (conftest.py)


@dataclass
class Workspace:
    root: Path
    state: corpus.State
    good: Path  # tiny S0, context 16, upstream layout
    tokenizer: Path

    def inputs(self, name: str) -> Path:
        folder = self.root / "inputs" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def fresh_parent(self, name: str) -> Path:
        """An empty folder to convert into: anything left in it afterwards was left by us."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): corpus.sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# A full disk, simulated


class FullDisk:
    """A disk with `free` bytes left: writes into `.partial-` folders fail with ENOSPC past that."""

    def __init__(self, free: int, only: str = ""):
        self.free = free
        self.only = only  # fail only for files whose name contains this
        self.real_open = io.open

    def open(self, file, mode="r", *args, **kwargs):
        handle = self.real_open(file, mode, *args, **kwargs)
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if any(flag in mode for flag in "wax") and ".partial-" in str(name) and self.only in Path(str(name)).name:
            return _MeteredFile(handle, self)
        return handle


class _MeteredFile:
    def __init__(self, handle, disk: FullDisk):
        self._handle, self._disk = handle, disk

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B")) if not isinstance(data, str) else len(data.encode())
        if size > self._disk.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= size
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()
        return False

    def __getattr__(self, name):
        return getattr(self._handle, name)


def fill_disk(monkeypatch, disk: FullDisk) -> None:
    import builtins

    monkeypatch.setattr(io, "open", disk.open)  # pathlib's Path.open
    monkeypatch.setattr(builtins, "open", disk.open)  # json/transformers' save_pretrained
    real_copy = getattr(os, "copy_file_range", None)
    if real_copy is not None:  # the writer copies unchanged tensors file to file inside the kernel

        def metered_copy(source_fd, out_fd, count, *args):
            if not disk.only and count > disk.free:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            copied = real_copy(source_fd, out_fd, count, *args)
            disk.free -= 0 if disk.only else copied
            return copied

        monkeypatch.setattr(os, "copy_file_range", metered_copy)


# ---------------------------------------------------------------------------------------------
# Assertions shared by every case


def assert_one_line_error(result: CliResult, code: int, *fragments: str, plain_text: bool = True) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr_lines
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr was:\n{result.stderr}"
    assert result.code == code, f"exit {result.code}, expected {code}: {lines[0]}"
    for fragment in fragments:
        assert fragment in lines[0]
    if plain_text:
        assert "\x1b" not in lines[0], f"escape codes in the message: {lines[0]!r}"
    return lines[0]


def assert_nothing_left(parent: Path) -> None:
    assert corpus.listing(parent) == set(), f"left behind in {parent}: {sorted(corpus.listing(parent))}"


# ---------------------------------------------------------------------------------------------

# 1. Bad checkpoints, through inspect and convert


def _truncated(keep: Callable[[int], int]):
    return lambda ws, d: corpus.truncate_copy(ws.good, d / "truncated_ctx16.pt", keep(ws.good.stat().st_size))


def _saved(name: str, make_state):
    return lambda ws, d: corpus.save_wrapped(d / name, make_state(ws.state))


def _retyped(dtype: torch.dtype):
    """The final layer norm (a float weight) stored as `dtype`."""
    name = f"{str(dtype).removeprefix('torch.')}_ctx16.pt"
    return _saved(name, lambda s: corpus.with_tensor(s, corpus.FINAL_NORM_KEY, lambda t: t.to(dtype)))


def _no_tensors(ws, d):
    torch.save({"model": {"epoch": 3, "note": "no weights"}}, d / "no_tensors.pt")
    return d / "no_tensors.pt"


def _empty(ws, d):
    (d / "empty.pt").write_bytes(b"")
    return d / "empty.pt"


# name -> (make the --checkpoint value, extra args, fragments of the one-line error)
BAD_CHECKPOINTS: dict[str, tuple[Callable, list[str], tuple[str, ...]]] = {
    "missing path": (lambda ws, d: d / "absent" / "model_ctx16.pt", [], ("checkpoint file not found",)),
    "directory": (lambda ws, d: d, [], ("is a directory",)),
    "empty file": (_empty, [], ("is empty",)),
    "truncated at 10 B": (_truncated(lambda n: 10), [], ("damaged or truncated",)),
    "truncated at 5 kB": (_truncated(lambda n: 5000), [], ("damaged or truncated",)),
    "truncated at half": (_truncated(lambda n: n // 2), [], ("damaged or truncated",)),
    "truncated by 1 B": (_truncated(lambda n: n - 1), [], ("damaged or truncated",)),
    "random bytes": (lambda ws, d: corpus.random_bytes_file(d / "random.pt", 4096), [], ("is not a checkpoint",)),
    "no tensors": (_no_tensors, [], ("contains no tensors",)),
    "plain SAM3": (_saved("sam3.pt", corpus.plain_sam3), HEADS, ("plain SAM3", "tell-tale key")),
    "student vision (no ViT keys)": (
        _saved("student.pt", lambda s: corpus.student_vision(s, "body.0.weight")),
        HEADS,
        ("not SAM3's ViT", "student-vision"),
    ),
    "student vision (tell-tale)": (
        _saved("student_repvit.pt", lambda s: corpus.student_vision(s, "model.stem.0.weight")),
        HEADS,
        ("student vision trunk",),
    ),
    "SAM3.1": (_saved("sam31.pt", corpus.sam3_1), HEADS, ("plain SAM 3.1", "Multiplex", "tracker.model.")),
    "no text keys": (
        _saved("no_text.pt", lambda s: corpus.without(s, lambda k: k.startswith(corpus.TEXT))),
        HEADS,
        ("no SAM3-LiteText text encoder",),
    ),
    "one text key missing": (
        _saved("no_norm_ctx16.pt", lambda s: corpus.without(s, lambda k: k == corpus.FINAL_NORM_KEY)),
        HEADS,
        ("missing target: text_encoder.final_layer_norm.weight",),
    ),
    "unknown extra key": (
        _saved("extra_ctx16.pt", lambda s: corpus.with_extra_key(s, "detector.mystery_head.weight")),
        HEADS,
        ("unmapped source key: detector.mystery_head.weight",),
    ),
    "qkv of the wrong width": (
        _saved("qkv_ctx16.pt", corpus.with_wrong_qkv),
        HEADS,
        ("shape mismatch", "qkv_proj.weight"),
    ),
    "context 64 over a 16-row table": (
        lambda ws, d: ws.good,
        [*HEADS, "--context-length", "64"],
        ("stores 16 positions but the context is 64", "--context-length 16"),
    ),
    "ctx32 in the name, 16 rows": (
        _saved("model_ctx32.pt", dict),
        HEADS,
        ("stores 16 positions but the context is 32 (from the name)",),
    ),
    "unknown alias": (lambda ws, d: "s9_ctx99", [], ("unknown checkpoint alias 's9_ctx99'", "known aliases")),
    # Crafted files (issue 15): each once ended in an internal error, a silent conversion or a hang.
    "non-string keys": (_saved("nonstr_ctx16.pt", corpus.with_non_string_key), HEADS, ("keys that are not strings", "7")),
    "complex weight": (_retyped(torch.complex64), HEADS, ("is complex64 but the model holds float32",)),
    "uint16 weight": (_retyped(torch.uint16), HEADS, ("dtype uint16",)),
    "float8 weight": (_retyped(torch.float8_e4m3fn), HEADS, ("dtype float8_e4m3fn",)),
    "int64 where a float belongs": (_retyped(torch.int64), HEADS, ("is int64 but the model holds float32",)),
    "bool where a float belongs": (_retyped(torch.bool), HEADS, ("is bool but the model holds float32",)),
    "meta tensor": (lambda ws, d: corpus.save_meta(d / "meta_ctx16.pt", ws.state), HEADS, ("on the meta device",)),
    "sparse tensor": (
        _saved("sparse_ctx16.pt", lambda s: corpus.with_tensor(s, corpus.FINAL_NORM_KEY, lambda t: t.to_sparse())),
        HEADS,
        ("sparse_coo tensor",),
    ),
    "1-D embedding": (
        _saved("emb1d_ctx16.pt", lambda s: corpus.with_tensor(s, corpus.EMBEDDING_KEY, lambda t: t[:, 0].contiguous())),
        HEADS,
        ("embedding_layer.weight has shape", "2 dimensions expected"),
    ),
    "empty RoPE tables": (_saved("rope0_ctx16.pt", corpus.with_empty_rope_tables), HEADS, ("freqs_cis has an empty dimension",)),
    "empty patch kernel": (
        _saved("patch0_ctx16.pt", lambda s: corpus.with_tensor(s, corpus.PATCH_KEY, lambda t: t[:, :, :0, :0])),
        HEADS,
        ("patch_embed.proj.weight has an empty dimension",),
    ),
    "zero decoder heads": (_saved("heads0_ctx16.pt", lambda s: corpus.with_decoder_heads(s, 0)), HEADS, ("empty dimension",)),
    "decoder heads not dividing the width": (
        _saved("heads3_ctx16.pt", lambda s: corpus.with_decoder_heads(s, 3)),
        HEADS,
        ("num_attention_heads 3 does not divide hidden_size 32",),
    ),
    "key with escapes and a newline": (
        _saved("forged_ctx16.pt", lambda s: corpus.with_extra_key(s, corpus.FORGED_KEY)),
        HEADS,
        ("unmapped source key", "\\x1b[31mred\\nerror: forged"),
    ),
    "FIFO": (lambda ws, d: corpus.fifo(d / "pipe_ctx16.pt"), HEADS, ("is a FIFO", "nothing was read")),
    "small zip, huge pickle": (
        lambda ws, d: corpus.disproportionate_pickle(d / "bomb_ctx16.pt", ws.state),
        HEADS,
        ("its pickle is 21 MB", "refused before unpickling"),
    ),
}


def bad_checkpoint(ws: Workspace, case: str) -> tuple[str, list[str], tuple[str, ...]]:
    make, extra, fragments = BAD_CHECKPOINTS[case]
    return str(make(ws, ws.inputs(case.replace(" ", "_")))), extra, fragments


def source_digest(checkpoint: str) -> str | None:
    path = Path(checkpoint)
    return corpus.sha256(path) if path.is_file() else None  # is_file: never read a FIFO


