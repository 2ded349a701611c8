"""Tampering with a verified folder (issue 25): a record vouches only for the bytes it verified.

For every file of a verified, sharded tiny folder, one changed byte after parity makes
`push --dry-run` refuse, naming that file. Hand-written and transplanted records never count.
Files litetext did not write are never deleted, replaced or written through a link, and every user
file stays byte-identical (sha256 before and after).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

from bad_inputs.common import HEADS, Workspace, assert_one_line_error, folder_digest
from litetext_convert.errors import EXIT_BAD_INPUT

REPO = ["--repo-id", "alice/sam3-litetext-s0-ctx16"]


@pytest.fixture(scope="module")
def proven(ws, sharded_folder) -> Path:
    """The sharded tiny folder with a passing, bound parity record."""
    folder = ws.root / "tamper" / "proven"
    shutil.copytree(sharded_folder, folder)
    result = run_cli(["parity", "-c", ws.good, *HEADS, folder])
    assert result.code == 0, result.stderr
    assert (folder / "parity" / "text-float32-default.json").is_file()
    return folder


def _copy(folder: Path, ws: Workspace, name: str) -> Path:
    copied = ws.fresh_parent(name) / folder.name
    shutil.copytree(folder, copied, symlinks=True)
    return copied


def _tampered_files(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "README.md")
    return names + sorted(f"parity/{p.name}" for p in (folder / "parity").iterdir())


def _flip_one_byte(path: Path) -> None:
    """One byte changed, JSON kept valid where the file is JSON: a digit (else a letter) becomes another one."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        order = [*range(len(data) // 2, len(data)), *range(len(data) // 2)]
        at = next((i for i in order if chr(data[i]).isdigit()), None)
        at = at if at is not None else next(i for i in order if chr(data[i]).isalpha())
    else:
        at = len(data) // 2
    data[at] = data[at] + 1 if chr(data[at]) not in "9zZ" else data[at] - 1
    path.write_bytes(bytes(data))


def test_the_matrix_covers_every_kind_of_file(proven):
    names = _tampered_files(proven)
    assert sum(n.endswith(".safetensors") for n in names) >= 2 and "model.safetensors.index.json" in names
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
            "conversion_record.json", "parity/text-float32-default.json"} <= set(names)


def test_the_card_says_what_was_verified_by_digest(proven):
    import hashlib

    card = (proven / "README.md").read_text()
    section = card.split("## Verified files")[1]
    for name in ("config.json", "tokenizer.json", "model.safetensors.index.json"):
        assert f"`{name}`" in section and hashlib.sha256((proven / name).read_bytes()).hexdigest() in section
    conversion = hashlib.sha256((proven / "conversion_record.json").read_bytes()).hexdigest()
    assert conversion in section


@pytest.mark.parametrize("index", range(11))
def test_one_changed_byte_in_any_verified_file_refuses_push(proven, ws, cli, index):
    names = _tampered_files(proven)
    if index >= len(names):
        pytest.skip(f"the folder has {len(names)} files")
    name = names[index]
    folder = _copy(proven, ws, "tamper")
    assert cli("push", folder, "--dry-run", *REPO).code == 0  # verified as it is
    _flip_one_byte(folder / name)
    before = folder_digest(folder)

    result = cli("push", folder, "--dry-run", *REPO)

    assert_one_line_error(result, EXIT_BAD_INPUT, "refusing to publish", name)
    assert folder_digest(folder) == before


@pytest.mark.parametrize("content", ["{}", '{"passed": true, "stages": []}'])
def test_a_hand_written_record_never_counts(sharded_folder, ws, cli, content):
    folder = _copy(sharded_folder, ws, "handwritten")
    (folder / "parity").mkdir()
    (folder / "parity" / "text-float32-default.json").write_text(content)

    result = cli("push", folder, "--dry-run", *REPO)

    assert_one_line_error(result, EXIT_BAD_INPUT, "refusing to publish", "parity/text-float32-default.json", "never counts")


def test_a_record_copied_from_another_folder_never_counts(proven, sharded_folder, ws, cli):
    """Same checkpoint, same options, same weights: still another conversion (its own record)."""
    other = ws.fresh_parent("transplant") / "other"
    result = run_cli(["convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, other, "--max-shard-size", "1MB"])
    assert result.code == 0, result.stderr
    shutil.copytree(proven / "parity", other / "parity")

    result = cli("push", other, "--dry-run", *REPO)

    assert_one_line_error(result, EXIT_BAD_INPUT, "refusing to publish", "made for another conversion")


def test_force_keeps_a_file_added_to_the_conversion_records_list(ws, cli):
    parent = ws.fresh_parent("force-list")
    folder = parent / "out"
    assert cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, folder).code == 0
    (folder / "thesis.txt").write_text("four years of work")
    record = json.loads((folder / "conversion_record.json").read_text())
    record["files"].append("thesis.txt")
    (folder / "conversion_record.json").write_text(json.dumps(record))

    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, folder, "--force")

    assert_one_line_error(result, EXIT_BAD_INPUT, "thesis.txt", "litetext did not write")
    assert (folder / "thesis.txt").read_text() == "four years of work"


def test_a_link_named_like_a_stale_leftover_is_never_followed(ws, cli):
    parent = ws.fresh_parent("leftover-link")
    users = parent / "users-folder"
    users.mkdir()
    (users / "model.safetensors").write_text("the user's own file, named like ours")
    dead_pid = 4_000_000  # above the kernel's pid limit: never alive
    (parent / f".out.partial-{dead_pid}-abc").symlink_to(users)
    before = folder_digest(users)

    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, parent / "out")

    assert result.code == 0, result.stderr
    assert folder_digest(users) == before and (parent / f".out.partial-{dead_pid}-abc").is_symlink()


def _outside(ws: Workspace) -> tuple[Path, dict]:
    outside = ws.fresh_parent("outside")
    (outside / "notes.md").write_text("# the user's notes\n")
    (outside / "record.json").write_text('{"mine": true}\n')
    return outside, folder_digest(outside)


@pytest.mark.parametrize("what", ["parity folder", "record", "card", "card without mark"])
def test_parity_writes_nothing_through_a_link_or_over_a_users_file(proven, ws, cli, what):
    folder = _copy(proven, ws, "links")
    outside, outside_before = _outside(ws)
    if what == "parity folder":
        shutil.rmtree(folder / "parity")
        (folder / "parity").symlink_to(outside)
    elif what == "record":
        (folder / "parity" / "text-float32-default.json").unlink()
        (folder / "parity" / "text-float32-default.json").symlink_to(outside / "record.json")
    elif what == "card":
        (folder / "README.md").unlink()
        (folder / "README.md").symlink_to(outside / "notes.md")
    else:
        (folder / "README.md").write_text("# my README, not litetext's\n")
    before = folder_digest(folder)

    result = cli("parity", "-c", ws.good, *HEADS, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, "nothing was written")
    assert folder_digest(folder) == before and folder_digest(outside) == outside_before


def test_a_full_disk_keeps_the_previous_record_whole(proven, ws, cli, monkeypatch):
    from litetext_convert.folder import safe_io

    folder = _copy(proven, ws, "full-disk")
    record = folder / "parity" / "text-float32-default.json"
    previous = record.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safe_io.os, "fsync", no_space)
    result = cli("parity", "-c", ws.good, *HEADS, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, "no space left", "previous file was kept whole")
    assert record.read_bytes() == previous
    assert sorted(p.name for p in (folder / "parity").iterdir()) == ["text-float32-default.json"]  # no temporary left
    monkeypatch.undo()
    assert cli("push", folder, "--dry-run", *REPO).code == 0


def test_parity_with_another_checkpoint_writes_nothing(proven, ws, cli):
    folder = _copy(proven, ws, "wrong-c")
    other = ws.inputs("other-checkpoint") / "tiny_s0_ctx16.pt"
    data = bytearray(ws.good.read_bytes())
    other.write_bytes(bytes(data))
    with open(other, "ab") as handle:
        handle.write(b"\0")  # another file: one byte longer (a zip tolerates trailing bytes)
    before = folder_digest(folder)

    result = cli("parity", "-c", other, *HEADS, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, "was converted from", "nothing was written")
    assert folder_digest(folder) == before
    assert cli("push", folder, "--dry-run", *REPO).code == 0  # the passing record still stands


def test_parity_with_a_same_size_checkpoint_is_refused_by_sha256(proven, ws, cli):
    """Same size, other content (one text weight changed): the size check passes, the sha256 (hashed
    while parity measures) refuses it before anything is written."""
    import torch

    folder = _copy(proven, ws, "wrong-c-same-size")
    other = ws.inputs("other-same-size") / "tiny_s0_ctx16.pt"
    state = torch.load(ws.good, map_location="cpu", weights_only=True)
    weights = state["model"] if "model" in state else state
    name = next(key for key, value in weights.items() if "text" in key and value.is_floating_point() and value.ndim == 2)
    weights[name] = weights[name] + 1.0
    torch.save(state, other)
    assert other.stat().st_size == ws.good.stat().st_size
    before = folder_digest(folder)

    result = cli("parity", "-c", other, *HEADS, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, "was converted from", "nothing was written")
    assert folder_digest(folder) == before
    assert cli("push", folder, "--dry-run", *REPO).code == 0


def test_parity_on_a_folder_litetext_did_not_write_points_to_audit(proven, ws, cli):
    folder = _copy(proven, ws, "foreign")
    shutil.rmtree(folder / "parity")
    (folder / "conversion_record.json").unlink()
    (folder / "README.md").unlink()
    before = folder_digest(folder)

    result = cli("parity", "-c", ws.good, *HEADS, folder)

    assert_one_line_error(result, EXIT_BAD_INPUT, "did not write", "litetext audit")
    assert folder_digest(folder) == before and not (folder / "parity").exists()


# ---------------------------------------------------------------------------------------------
# Hostile records: every field litetext reads back is checked, one line naming the file


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE_CONVERSION_RECORDS = {
    "a list": ("[]", "holds a JSON list"),
    "not JSON": ("{ nope", "is not valid JSON"),
    "not UTF-8": (b"\xff\xfe{}", "is not UTF-8"),
    "nested deeply": (_deep(100_000), "nested too deeply"),
    "context as text": (None, "'context_length' is a str"),
    "source as a list": (None, "'source' is a list"),
    "architecture entry a number": (None, "architecture.text holds an entry"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CONVERSION_RECORDS))
def test_a_hostile_conversion_record_is_one_line(verified, ws, cli, case):
    folder = _copy(verified, ws, "hostile-record")
    path = folder / "conversion_record.json"
    content, fragment = HOSTILE_CONVERSION_RECORDS[case]
    if content is None:
        record = json.loads(path.read_text())
        if case == "context as text":
            record["context_length"] = "16"
        elif case == "source as a list":
            record["source"] = ["x"]
        else:
            record["architecture"]["text"]["hidden_size"] = 8
        content = json.dumps(record)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = folder_digest(folder)

    for command in (["push", folder, "--dry-run", *REPO], ["parity", folder]):
        assert_one_line_error(cli(*command), EXIT_BAD_INPUT, "conversion_record.json", fragment)
    assert folder_digest(folder) == before


@pytest.mark.parametrize("what", ["conversion_record.json", "parity/text-float32-default.json", ".litetext/source.json"])
def test_a_fifo_in_place_of_a_record_is_refused_without_reading_it(verified, ws, cli, what):
    folder = _copy(verified, ws, "fifo-record")
    (folder / what).unlink()
    os.mkfifo(folder / what)

    command = ["parity", folder] if what.startswith(".litetext") else ["push", folder, "--dry-run", *REPO]
    result = cli(*command)  # a read of the FIFO would hang here

    assert_one_line_error(result, EXIT_BAD_INPUT, what, "FIFO")


@pytest.mark.parametrize("memo", ['["a list"]', '{"checkpoint": 7}', '{"checkpoint": "x.pt", "num_heads": "2"}'])
def test_a_damaged_source_memo_is_one_line(verified, ws, cli, memo):
    folder = _copy(verified, ws, "memo")
    (folder / ".litetext" / "source.json").write_text(memo)
    before = folder_digest(folder)

    assert_one_line_error(cli("parity", folder), EXIT_BAD_INPUT, "source.json")
    assert folder_digest(folder) == before
