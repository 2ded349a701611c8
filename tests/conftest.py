"""Shared fixtures: tiny upstream-layout checkpoints, an offline tokenizer, converted folders.

Everything is built once per test session in a temporary folder; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
from litetext_convert.synthetic import builder as synthetic

VARIANTS = ("s0", "s1", "l")


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


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the real entry point (cli.main: the one that turns errors into one line and an exit code)."""
    import sys

    from litetext_convert import cli

    argv = sys.argv
    sys.argv = ["litetext", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err
