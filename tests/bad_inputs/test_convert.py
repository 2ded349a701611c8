"""Bad inputs through `litetext convert`: bad checkpoints, handled inputs, the output folder, the environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CliResult, cli_env, run_cli_process

from bad_inputs import corpus
from bad_inputs.common import (
    BAD_CHECKPOINTS,
    HEADS,
    IS_ROOT,
    FullDisk,
    assert_nothing_left,
    assert_one_line_error,
    bad_checkpoint,
    fill_disk,
    folder_digest,
    source_digest,
)
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
)


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_convert_bad_checkpoint_writes_nothing(ws, cli, case):
    checkpoint, extra, fragments = bad_checkpoint(ws, case)
    before = source_digest(checkpoint)
    parent = ws.fresh_parent("convert")

    result = cli("convert", "-c", checkpoint, *extra, "--tokenizer", ws.tokenizer, parent / "out")

    assert_one_line_error(result, EXIT_BAD_INPUT, *fragments)
    assert_nothing_left(parent)
    assert source_digest(checkpoint) == before


# ---------------------------------------------------------------------------------------------
# 2. Inputs that are handled: the command succeeds


def test_safetensors_named_pt_is_sniffed(ws, cli):
    checkpoint = corpus.save_safetensors(ws.inputs("safetensors") / "weights_ctx16.pt", ws.state)
    result = cli("inspect", "-c", checkpoint, *HEADS, "--json", "--no-scan")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "safetensors"


def test_ddp_prefix_is_stripped_and_converts(ws, cli):
    checkpoint = corpus.save_wrapped(ws.inputs("ddp") / "ddp_ctx16.pt", corpus.ddp_prefixed(ws.state))
    inspected = cli("inspect", "-c", checkpoint, *HEADS, "--json", "--no-scan")
    assert inspected.code == 0 and json.loads(inspected.stdout)["stripped_prefix"] == "module."
    converted = cli("convert", "-c", checkpoint, *HEADS, "--tokenizer", ws.tokenizer, ws.fresh_parent("ddp") / "out")
    assert converted.code == 0, converted.stderr


@pytest.mark.parametrize("dtype, stored", [(torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_half_precision_checkpoint_keeps_its_dtype(ws, cli, dtype, stored):
    checkpoint = corpus.save_wrapped(ws.inputs(f"half_{stored}") / "half_ctx16.pt", corpus.tiny_state(dtype=dtype))
    out = ws.fresh_parent("half") / "out"

    result = cli("convert", "-c", checkpoint, *HEADS, "--tokenizer", ws.tokenizer, out, "--verify-load")

    assert result.code == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    header_length = int.from_bytes((out / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((out / "model.safetensors").read_bytes()[8 : 8 + header_length])
    assert header["text_encoder.embeddings.token_embedding.weight"]["dtype"] == stored


def test_non_finite_weights_are_reported_by_inspect(ws, cli):
    checkpoint = corpus.save_wrapped(ws.inputs("nan") / "nan_ctx16.pt", corpus.with_non_finite(ws.state))
    result = cli("inspect", "-c", checkpoint, *HEADS, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["non_finite"] == {corpus.FINAL_NORM_KEY: 2}


# ---------------------------------------------------------------------------------------------
# 4. convert: the output folder and the environment


def _convert_args(ws, out, *extra):
    return ["convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, out, *extra]


def test_existing_output_needs_force_and_force_replaces_only_ours(ws, cli):
    parent = ws.fresh_parent("exists")
    out = parent / "out"
    out.mkdir()
    (out / "old.txt").write_text("a user's file")

    assert_one_line_error(cli(*_convert_args(ws, out)), EXIT_BAD_INPUT, "already exists", "--force")
    assert_one_line_error(cli(*_convert_args(ws, out, "--force")), EXIT_BAD_INPUT, "'old.txt'", "litetext did not write it")
    assert (out / "old.txt").read_text() == "a user's file" and corpus.listing(parent) == {"out"}

    (out / "old.txt").unlink()
    out.rmdir()
    assert cli(*_convert_args(ws, out)).code == 0
    assert cli(*_convert_args(ws, out, "--force")).code == 0  # a folder litetext wrote is replaced
    assert "config.json" in corpus.listing(out)
    assert corpus.listing(parent) == {"out"}, "the replaced folder or a partial one was left behind"


def test_force_replaces_a_verified_folder_with_its_card_records_and_memo(ws, cli):
    """What later commands add (README.md, parity/*.json, .litetext/source.json) is litetext's too."""
    parent = ws.fresh_parent("verified_again")
    out = parent / "out"
    assert cli(*_convert_args(ws, out)).code == 0
    assert cli("parity", out, "-c", ws.good, *HEADS).code == 0
    assert (out / "parity").is_dir()
    result = cli(*_convert_args(ws, out, "--force"))
    assert result.code == 0, result.stderr
    assert corpus.listing(parent) == {"out"} and not (out / "parity").exists()


@pytest.mark.parametrize("name", ["my_notes.md", "README.md"], ids=["a file of its own", "its own README in place of the card"])
def test_force_refuses_a_converted_folder_holding_a_users_file(ws, cli, name):
    parent = ws.fresh_parent("owned_plus_user")
    out = parent / "out"
    assert cli(*_convert_args(ws, out)).code == 0
    (out / name).write_text("mine")
    before = folder_digest(out)

    assert_one_line_error(cli(*_convert_args(ws, out, "--force")), EXIT_BAD_INPUT, f"'{name}'", "did not write")
    assert folder_digest(out) == before and corpus.listing(parent) == {"out"}


@pytest.mark.parametrize("where", [".", ".."], ids=["-o . (the working directory)", "-o .. (above it)"])
def test_force_never_replaces_the_working_directory(ws, cli, monkeypatch, where):
    parent = ws.fresh_parent("cwd")
    work = parent / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    before = folder_digest(parent)

    result = cli(*_convert_args(ws, where, "--force"))

    assert_one_line_error(result, EXIT_BAD_INPUT, "refusing to write over", "working directory")
    assert folder_digest(parent) == before and corpus.listing(parent) == {"work"}


def test_force_never_replaces_the_folder_holding_the_source(ws, cli):
    parent = ws.fresh_parent("source_inside")
    folder = parent / "models"
    folder.mkdir()
    source = folder / "tiny_s0_ctx16.pt"
    shutil.copy(ws.good, source)
    before = corpus.sha256(source)

    result = cli("convert", "-c", source, *HEADS, "--tokenizer", ws.tokenizer, folder, "--force")

    assert_one_line_error(result, EXIT_BAD_INPUT, "refusing to write over", "which is read in this run")
    assert corpus.sha256(source) == before and corpus.listing(folder) == {"tiny_s0_ctx16.pt"}


def test_force_never_replaces_the_file_system_root(ws, cli):
    assert_one_line_error(cli(*_convert_args(ws, "/", "--force")), EXIT_BAD_INPUT, "refusing to write over", "root")


@pytest.mark.skipif(not os.path.ismount("/proc"), reason="needs a mount point")
def test_force_never_replaces_a_mount_point(ws, cli):
    assert_one_line_error(cli(*_convert_args(ws, "/proc", "--force")), EXIT_BAD_INPUT, "is a mount point")


def _while_writing(monkeypatch, action) -> None:
    """Run `action` once the weights are written, before the folder is swapped into place."""
    from litetext_convert.write import convert as convert_module

    real = convert_module.verify_written

    def verify_then_act(*args, **kwargs):
        real(*args, **kwargs)
        action()

    monkeypatch.setattr(convert_module, "verify_written", verify_then_act)


def test_a_folder_that_appears_during_the_run_is_never_replaced(ws, cli, monkeypatch):
    """What a second `convert` into the same target, or a user, does while this one runs."""
    parent = ws.fresh_parent("appears")
    out = parent / "out"

    def another_run():
        out.mkdir()
        (out / "theirs.txt").write_text("written meanwhile")

    _while_writing(monkeypatch, another_run)
    result = cli(*_convert_args(ws, out))

    assert_one_line_error(result, EXIT_BAD_INPUT, "appeared or changed while converting")
    assert corpus.listing(out) == {"theirs.txt"} and corpus.listing(parent) == {"out"}


def test_an_empty_folder_that_appears_during_the_run_is_not_replaced_either(ws, cli, monkeypatch):
    """rename(2) silently replaces an empty folder; the swap uses RENAME_NOREPLACE."""
    parent = ws.fresh_parent("appears_empty")
    out = parent / "out"
    _while_writing(monkeypatch, out.mkdir)
    assert_one_line_error(cli(*_convert_args(ws, out)), EXIT_BAD_INPUT, "appeared or changed")
    assert corpus.listing(out) == set() and corpus.listing(parent) == {"out"}


def test_a_file_added_to_the_replaced_folder_during_the_run_survives(ws, cli, monkeypatch):
    parent = ws.fresh_parent("grows")
    out = parent / "out"
    assert cli(*_convert_args(ws, out)).code == 0
    _while_writing(monkeypatch, lambda: (out / "added.txt").write_text("meanwhile"))

    result = cli(*_convert_args(ws, out, "--force"))

    assert_one_line_error(result, EXIT_BAD_INPUT, "appeared or changed")
    assert (out / "added.txt").read_text() == "meanwhile" and corpus.listing(parent) == {"out"}


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_a_killed_runs_leftover_is_named_and_removed(ws, cli):
    parent = ws.fresh_parent("leftover")
    stale = parent / f".out.partial-{_dead_pid()}-abc123"
    stale.mkdir()
    (stale / "model-00001-of-00003.safetensors").write_bytes(b"\0" * 1000)

    result = cli(*_convert_args(ws, parent / "out"))

    assert result.code == 0, result.stderr
    assert f"note: removed {stale}" in result.stderr and "killed" in result.stderr
    assert corpus.listing(parent) == {"out"}


def test_a_killed_onnx_exports_leftover_is_removed_with_its_graphs_folder(ws, cli):
    parent = ws.fresh_parent("leftover_onnx")
    stale = parent / f".out.partial-{_dead_pid()}-abc123"
    (stale / "onnx").mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    (stale / "onnx" / "text_encoder.onnx").write_bytes(b"\0" * 100)
    (stale / "onnx" / "vision_encoder.onnx.data").write_bytes(b"\0" * 1000)

    result = cli(*_convert_args(ws, parent / "out"))

    assert result.code == 0, result.stderr
    assert f"note: removed {stale}" in result.stderr
    assert corpus.listing(parent) == {"out"}


@pytest.mark.parametrize("planted", ["foreign file", "link"])
def test_an_onnx_leftover_holding_what_litetext_did_not_write_is_kept(ws, cli, planted):
    parent = ws.fresh_parent(f"leftover_onnx_{planted.replace(' ', '_')}")
    stale = parent / f".out.partial-{_dead_pid()}-abc123"
    (stale / "onnx").mkdir(parents=True)
    (stale / "onnx" / "text_encoder.onnx").write_bytes(b"\0" * 100)
    victim = ws.inputs(f"victim-{planted.replace(' ', '_')}") / "notes.txt"
    victim.write_text("mine")
    if planted == "link":
        (stale / "onnx" / "vision_encoder.onnx").symlink_to(victim)
    else:
        (stale / "onnx" / "notes.txt").write_text("mine")

    result = cli(*_convert_args(ws, parent / "out"))

    assert result.code == 0, result.stderr
    assert f"note: {stale} looks like an earlier run's leftover" in result.stderr
    assert (stale / "onnx" / "text_encoder.onnx").exists() and victim.read_text() == "mine"


def test_a_leftover_holding_a_foreign_file_is_named_and_kept(ws, cli):
    parent = ws.fresh_parent("leftover_foreign")
    stale = parent / f".out.old-{_dead_pid()}"
    stale.mkdir()
    (stale / "diary.odt").write_text("not ours")

    result = cli(*_convert_args(ws, parent / "out"))

    assert result.code == 0, result.stderr
    assert f"note: {stale} looks like an earlier run's leftover" in result.stderr
    assert (stale / "diary.odt").read_text() == "not ours"


def test_a_failed_run_removes_the_parent_folders_it_created(ws, cli, monkeypatch):
    parent = ws.fresh_parent("parents")
    fill_disk(monkeypatch, FullDisk(free=0, only="config.json"))
    result = cli(*_convert_args(ws, parent / "a" / "b" / "out"))
    monkeypatch.undo()
    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left")
    assert_nothing_left(parent)


def test_output_name_that_is_not_utf8(ws, cli):
    parent = ws.fresh_parent("nonutf8")
    out = parent / os.fsdecode(b"out-\xff")
    line = assert_one_line_error(cli(*_convert_args(ws, out)), EXIT_BAD_INPUT, "is not valid UTF-8")
    assert "\\udcff" in line
    assert_nothing_left(parent)


def test_checkpoint_name_that_is_not_utf8(ws, cli):
    folder = ws.inputs("nonutf8_source")
    source = folder / os.fsdecode(b"tiny-\xff_ctx16.pt")
    shutil.copy(ws.good, source)
    parent = ws.fresh_parent("nonutf8_src")
    result = cli("convert", "-c", source, *HEADS, "--tokenizer", ws.tokenizer, parent / "out")
    assert_one_line_error(result, EXIT_BAD_INPUT, "checkpoint name", "\\udcff", "is not valid UTF-8")
    assert_nothing_left(parent)


def test_source_changed_during_the_run_is_refused(ws, cli, monkeypatch):
    """Rewritten in place (here: its mtime moves) between two tensors: the weights would mix two files."""
    source = ws.inputs("changes") / "tiny_s0_ctx16.pt"
    shutil.copy(ws.good, source)
    parent = ws.fresh_parent("changes")
    from litetext_convert.write import convert as convert_module

    real = convert_module.write_shard
    calls = []

    def touch_then_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_module, "write_shard", touch_then_write)
    result = cli("convert", "-c", source, *HEADS, "--tokenizer", ws.tokenizer, parent / "out", "--max-shard-size", "100KB")

    assert_one_line_error(result, EXIT_BAD_INPUT, "was changed by another program while it was being converted")
    assert_nothing_left(parent)


# The source truncated by another process mid-conversion. The weights are memory-mapped: without
# the lease (see load.SourceGuard) the next page read is SIGBUS, which no Python code can catch.
_TRUNCATE_MID_RUN_BOOTSTRAP = """
import subprocess, sys, time
import litetext_convert.write.convert as convert
real = convert.write_shard
started = []
def write_then_truncate(path, shard, *args, **kwargs):
    if not started:
        code = "import sys; f = open(sys.argv[1], 'r+b'); f.truncate(4096); f.close()"
        started.append(subprocess.Popen([sys.executable, "-c", code, SOURCE]))
        time.sleep(0.5)  # the writer is now blocked by the lease, and we were told (SIGIO)
    return real(path, shard, *args, **kwargs)
convert.write_shard = write_then_truncate
sys.argv = ["litetext", *sys.argv[1:]]
from litetext_convert.cli import main
try:
    main()
finally:
    if started:
        started[0].wait(timeout=60)
"""


def test_source_truncated_during_a_float16_run_is_one_line_not_sigbus(ws):
    source = ws.inputs("truncated_mid_run") / "tiny_s0_ctx16.pt"
    shutil.copy(ws.good, source)
    parent = ws.fresh_parent("truncated_mid_run")
    args = ["convert", "-c", str(source), *HEADS, "--tokenizer", str(ws.tokenizer), str(parent / "out"),
            "--dtype", "float16", "--max-shard-size", "100KB"]
    bootstrap = f"SOURCE = {str(source)!r}\n" + _TRUNCATE_MID_RUN_BOOTSTRAP
    done = subprocess.run([sys.executable, "-c", bootstrap, *args], capture_output=True, text=True, env=cli_env(), timeout=120, check=False)

    assert done.returncode != -signal.SIGBUS, "died of SIGBUS"
    assert_one_line_error(CliResult(done.returncode, done.stdout, done.stderr), EXIT_BAD_INPUT, "was changed by another program")
    assert_nothing_left(parent)
    assert source.stat().st_size == 4096  # the writer went on once the run had stopped


def test_output_path_that_is_a_file(ws, cli):
    parent = ws.fresh_parent("isfile")
    (parent / "out").write_text("a file")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out", "--force")
    assert_one_line_error(result, EXIT_BAD_INPUT, "is not a folder")
    assert (parent / "out").read_text() == "a file" and corpus.listing(parent) == {"out"}


def test_output_under_a_regular_file_is_not_writable(ws, cli):
    """Works as root too: no permission bit can make a file's child creatable."""
    parent = ws.fresh_parent("underfile")
    (parent / "blocker").write_text("a file")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "blocker" / "out")
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot create the output folder")
    assert corpus.listing(parent) == {"blocker"}


@pytest.mark.skipif(IS_ROOT, reason="root ignores permission bits; the regular-file case above covers root")
def test_output_in_a_read_only_folder(ws, cli):
    parent = ws.fresh_parent("readonly")
    parent.chmod(0o555)
    try:
        result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out")
    finally:
        parent.chmod(0o755)
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot create the output folder")
    assert_nothing_left(parent)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dtype", "float8"], "unknown --dtype 'float8'"),
        (["--max-shard-size", "banana"], "cannot read shard size 'banana'"),
    ],
    ids=["bad dtype", "bad shard size"],
)
def test_bad_convert_option(ws, cli, args, fragment):
    parent = ws.fresh_parent("option")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out", *args)
    assert_one_line_error(result, EXIT_BAD_INPUT, fragment)
    assert_nothing_left(parent)


def test_missing_tokenizer_folder(ws, cli):
    parent = ws.fresh_parent("tokenizer")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.root / "no-such-tokenizer", parent / "out")
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot load the tokenizer", "--tokenizer")
    assert_nothing_left(parent)


@pytest.mark.parametrize("damage", ["not a CLIP vocabulary", "unreadable merges"])
def test_a_tokenizer_folder_with_its_files_but_damaged_is_refused_before_anything_is_published(ws, cli, tmp_path, damage):
    """convert only checks that the tokenizer's files are there before reading the weights (loading
    it took ~1 s of imports); the load after the shards are written still refuses it in one line."""
    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(ws.tokenizer, tokenizer)
    if damage == "not a CLIP vocabulary":  # "!" is no longer id 0
        vocab = json.loads((tokenizer / "vocab.json").read_text())
        vocab["!"], vocab["a"] = vocab["a"], vocab["!"]
        (tokenizer / "vocab.json").write_text(json.dumps(vocab))
    else:
        (tokenizer / "merges.txt").write_bytes(b"\xff\xfe not utf-8 \x00\x01\n")
    parent = ws.fresh_parent("damaged-tokenizer")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", tokenizer, parent / "out")
    assert_one_line_error(result, EXIT_BAD_INPUT, "tokenizer")
    assert_nothing_left(parent)


def test_disk_full_while_writing_shards(ws, cli, monkeypatch):
    parent = ws.fresh_parent("diskfull")
    fill_disk(monkeypatch, FullDisk(free=200_000))
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out", "--max-shard-size", "500KB")
    monkeypatch.undo()
    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left on the device", ".safetensors")
    assert_nothing_left(parent)


def test_disk_full_while_writing_the_config(ws, cli, monkeypatch):
    parent = ws.fresh_parent("diskfull_config")
    fill_disk(monkeypatch, FullDisk(free=0, only="config.json"))
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out")
    monkeypatch.undo()
    assert_nothing_left(parent)
    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left")


def test_interrupt_while_writing_shards_in_process(ws, cli, monkeypatch):
    """Ctrl-C as the third shard starts: exit 130, one line, the partial folder removed."""
    from litetext_convert.write import convert as convert_module

    real_write_shard = convert_module.write_shard
    calls = []

    def interrupted_write_shard(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write_shard(path, *args, **kwargs)

    monkeypatch.setattr(convert_module, "write_shard", interrupted_write_shard)
    parent = ws.fresh_parent("interrupt")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out", "--max-shard-size", "100KB")

    assert_interrupted(result)
    assert len(calls) == 3 and ".partial-" in calls[0].parent.name
    assert_nothing_left(parent)


def assert_interrupted(result: CliResult) -> None:
    assert result.code == EXIT_INTERRUPTED and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr_lines) <= 1


def test_interrupt_says_so_in_one_line(ws, cli, monkeypatch):
    from litetext_convert.write import convert as convert_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "write_shard", interrupted)
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, ws.fresh_parent("ctrl_c") / "out")
    assert_one_line_error(result, EXIT_INTERRUPTED, "interrupted")


# A slow disk for the real SIGINT: each shard takes 20 ms, so the signal lands mid-shards.
_SLOW_DISK_BOOTSTRAP = """
import sys, time
import litetext_convert.write.convert as convert
real = convert.write_shard
def slow(*args, **kwargs):
    time.sleep(0.02)
    return real(*args, **kwargs)
convert.write_shard = slow
sys.argv = ["litetext", *sys.argv[1:]]
from litetext_convert.cli import main
main()
"""


def test_sigint_while_writing_shards_leaves_nothing(ws):
    parent = ws.fresh_parent("sigint")
    before = corpus.sha256(ws.good)
    args = ["convert", "-c", str(ws.good), *HEADS, "--tokenizer", str(ws.tokenizer), str(parent / "out"),
            "--max-shard-size", "20KB"]
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_DISK_BOOTSTRAP, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    shards_seen = _wait_for_partial_shards(parent, process, timeout=60)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)

    assert shards_seen, "the conversion ended before any shard was written"
    assert_interrupted(CliResult(process.returncode, stdout, stderr))
    assert_nothing_left(parent)
    assert corpus.sha256(ws.good) == before


def _wait_for_partial_shards(parent: Path, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        partial = [p for p in parent.glob(".out.partial-*")]
        if partial and any(partial[0].glob("model-*.safetensors")):
            return True
        time.sleep(0.005)
    return False


# ---------------------------------------------------------------------------------------------
# 5. Offline with nothing cached (subprocess: huggingface_hub and transformers read the
#    environment at import)


def _offline_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "empty-hf-home"
    home.mkdir()
    return cli_env(HF_HUB_OFFLINE="1", HF_HOME=str(home), TRANSFORMERS_OFFLINE="1")


def test_offline_alias_names_the_missing_file(tmp_path):
    result = run_cli_process(["inspect", "-c", "s0_ctx16"], _offline_env(tmp_path))
    assert_one_line_error(
        result, EXIT_BAD_INPUT, "sam3_litetext/sam3_litetext_mobileclip_s0_ctx16.pt", "not in the Hugging Face cache"
    )


def test_offline_default_tokenizer_is_one_actionable_line(ws, tmp_path):
    parent = ws.fresh_parent("offline_tokenizer")
    result = run_cli_process(["convert", "-c", ws.good, *HEADS, parent / "out"], _offline_env(tmp_path))
    assert_nothing_left(parent)
    assert_one_line_error(result, EXIT_BAD_INPUT, "openai/clip-vit-base-patch32", "cache", "--tokenizer")


# ---------------------------------------------------------------------------------------------
# The tokenizer folder


def test_corrupt_tokenizer_folder(ws, cli):
    folder = ws.inputs("corrupt_tokenizer") / "tokenizer"
    shutil.copytree(ws.tokenizer, folder, dirs_exist_ok=True)
    (folder / "vocab.json").write_text("garbage{")
    parent = ws.fresh_parent("corrupt_tokenizer")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", folder, parent / "out")
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot load the tokenizer", "damaged")
    assert_nothing_left(parent)


def test_disk_full_while_the_tokenizer_library_writes_tokenizer_json(ws, cli, monkeypatch):
    """`tokenizers` writes from Rust: its ENOSPC is a bare Exception('... (os error 28)')."""
    from litetext_convert.targets import image as image_target

    def full_disk(folder, *args):
        (folder / "tokenizer.json").write_text("{")
        raise Exception("No space left on device (os error 28)")  # noqa: TRY002 - what tokenizers raises

    monkeypatch.setattr(image_target, "save_processor", full_disk)  # the image target's processor saver
    parent = ws.fresh_parent("diskfull_tokenizer")
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out")
    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left on the device")
    assert_nothing_left(parent)
