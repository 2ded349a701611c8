"""`parity -c` without a folder converts into a temporary folder; a killed run (SIGKILL: no cleanup
runs) leaves it, and the next run removes it: only real folders made that way, whose process is gone
(issue 25, item 10)."""

from __future__ import annotations

import os
import subprocess
import sys

from litetext_convert import scratch


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # reaped: no process has this pid now (reuse within the test is vanishingly rare)


def _leftover(parent, pid: int, suffix: str = "abc123"):
    folder = parent / f"litetext-parity-{pid}-{suffix}"
    (folder / "converted").mkdir(parents=True)
    (folder / "converted" / "model.safetensors").write_bytes(b"x" * 100)
    (folder / scratch.MARK).write_text(f"{pid}\n")
    return folder


def test_a_dead_runs_folder_is_removed_with_a_note(tmp_path, capsys):
    folder = _leftover(tmp_path, _dead_pid())
    assert scratch.remove_dead("parity", tmp_path) == [folder]
    assert not folder.exists()
    assert "the temporary folder of a litetext parity run that was killed" in capsys.readouterr().err


def test_a_live_runs_folder_is_kept(tmp_path):
    folder = _leftover(tmp_path, os.getppid())  # our parent: running
    assert scratch.remove_dead("parity", tmp_path) == []
    assert (folder / "converted" / "model.safetensors").is_file()


def test_a_symlink_named_like_a_leftover_is_neither_followed_nor_removed(tmp_path):
    users = tmp_path / "users-folder"
    users.mkdir()
    (users / "thesis.txt").write_text("mine")
    (users / scratch.MARK).write_text("1\n")  # even with a mark inside
    link = tmp_path / f"litetext-parity-{_dead_pid()}-abc123"
    link.symlink_to(users, target_is_directory=True)
    assert scratch.remove_dead("parity", tmp_path) == []
    assert link.is_symlink() and (users / "thesis.txt").read_text() == "mine"


def test_a_folder_without_the_mark_is_not_ours(tmp_path):
    folder = tmp_path / f"litetext-parity-{_dead_pid()}-abc123"
    folder.mkdir()
    (folder / "notes.txt").write_text("someone else's")
    assert scratch.remove_dead("parity", tmp_path) == []
    assert (folder / "notes.txt").is_file()


def test_a_killed_parity_run_is_cleaned_by_the_next(ws, tmp_path):
    """The real thing: SIGKILL while converting into the temporary folder, then a second run."""
    import signal
    import time

    from conftest import CLI_COMMAND, cli_env, run_cli_process

    from bad_inputs.common import HEADS

    env = cli_env(TMPDIR=str(tmp_path))
    args = ["parity", "-c", str(ws.good), *HEADS, "--tokenizer", str(ws.tokenizer)]
    process = subprocess.Popen([*CLI_COMMAND, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(f"litetext-parity-{process.pid}-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = list(tmp_path.glob(f"litetext-parity-{process.pid}-*"))
    assert left, "the run was killed before it made its folder"

    second = run_cli_process(args, env=env)
    assert second.code == 0, second.stderr
    assert "the temporary folder of a litetext parity run that was killed" in second.stderr
    left = sorted(p.name for p in tmp_path.glob("litetext-*"))  # (torch keeps its own caches there)
    assert left == [], f"left: {left}"
