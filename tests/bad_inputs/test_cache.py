"""The manifest cache is a cache (issue 25): through `litetext convert`, a forged, damaged, linked
or FIFO entry is ignored with a note (or, when it only disagrees with the plan, checked again
against the model built now); the conversion neither hangs, refuses a good checkpoint, nor writes
a folder transformers cannot load."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import HEADS

TEXT_NORM = "text_encoder.final_layer_norm.weight"


@pytest.fixture(scope="module")
def good_entry(ws, tmp_path_factory) -> tuple[str, bytes]:
    """(file name, bytes) of the entry a conversion of the tiny checkpoint writes: made once."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("cache-entry")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITETEXT_CACHE_DIR", str(root / "cache"))
        patch.delenv("LITETEXT_NO_CACHE", raising=False)
        result = run_cli(["convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, root / "first"], monkeypatch=patch)
        assert result.code == 0, result.err
    (path,) = (root / "cache" / "manifests").glob("*.json")
    return path.name, path.read_bytes()


@pytest.fixture
def entry(good_entry, tmp_path, monkeypatch) -> Path:
    """A private cache holding that one good entry, for this test to spoil."""
    name, data = good_entry
    monkeypatch.setenv("LITETEXT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cache" / "manifests" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _rewrite(path: Path, edit, *, keep_digest: bool = False) -> None:
    """The entry's payload edited by `edit(tensors)`; its digest recomputed (a careful forger) or kept."""
    envelope = json.loads(path.read_text())
    payload = json.loads(envelope["payload"])
    payload["tensors"] = edit(payload["tensors"])
    envelope["payload"] = json.dumps(payload)
    if not keep_digest:
        envelope["sha256"] = hashlib.sha256(envelope["payload"].encode()).hexdigest()
    path.write_text(json.dumps(envelope))


def _renamed_norm(tensors):  # the forge: the real name gone, a name the model lacks in its place
    return [[name.replace("final_layer_norm", "final_norm"), shape, dtype] for name, shape, dtype in tensors]


def _wrong_shape(tensors):
    return [[name, [shape[0] + 1, *shape[1:]] if name == TEXT_NORM else shape, dtype] for name, shape, dtype in tensors]


def _convert_with_alarm(cli, *args, seconds: int = 120):
    """A hang fails the test instead of the suite."""

    def hung(*_):
        raise TimeoutError(f"convert still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return cli(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _assert_loads(folder: Path) -> None:
    """transformers itself, strict: the folder holds exactly the model's parameters."""
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _payload_edited(path: Path) -> None:
    _rewrite(path, _renamed_norm, keep_digest=True)


def _forged_consistently(path: Path) -> None:
    _rewrite(path, _renamed_norm)


def _forged_shape(path: Path) -> None:
    _rewrite(path, _wrong_shape)


CASES = {  # name -> (spoil the entry, what stderr's note says)
    "forged, digest not recomputed": (_payload_edited, "does not match the sha256 recorded"),
    "forged, digest recomputed": (_forged_consistently, "disagreed with the model transformers builds"),
    "wrong shape, digest recomputed": (_forged_shape, "disagreed with the model transformers builds"),
    "truncated": (_truncated, "is not a manifest litetext wrote"),
    "FIFO": (_fifo, "is a FIFO"),
    "symlink to /dev/zero": (_dev_zero, "is a symlink"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_spoilt_entry_never_decides_a_conversion(ws, cli, entry, tmp_path, case):
    spoil, note = CASES[case]
    spoil(entry)
    before = corpus.sha256(ws.good)
    out = tmp_path / "out"

    result = _convert_with_alarm(cli, "convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, out)

    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    notes = [line for line in result.stderr_lines if line.startswith("note:")]
    assert len(notes) == 1 and note in notes[0], result.stderr
    assert json.loads((out / "conversion_record.json").read_text())["target"]["manifest"] == "built"
    assert corpus.sha256(ws.good) == before
    assert entry.is_file() and not entry.is_symlink()  # replaced by a good entry, nothing followed
    _assert_loads(out)


def test_a_disagreeing_entry_is_replaced_once_then_trusted_again(ws, cli, entry, tmp_path):
    """Rebuilt once: the next run reads the replaced entry without a note and without a build."""
    _forged_consistently(entry)
    for name, origin, notes in (("first", "built", 1), ("second", "cached", 0)):
        out = tmp_path / name
        result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, out)
        assert result.code == 0, result.stderr
        assert len([line for line in result.stderr_lines if line.startswith("note:")]) == notes, result.stderr
        assert json.loads((out / "conversion_record.json").read_text())["target"]["manifest"] == origin
