"""The manifest cache is a cache (issue 25): through `litetext convert`, a forged, damaged, linked
or FIFO entry is ignored with a note (an entry not signed with this user's secret is forged, even
with a correct sha256; one that is signed and only disagrees with the plan is checked again
against the model built now); the conversion neither hangs, refuses a good checkpoint, nor writes
a folder transformers cannot load. A key file litetext would not have made switches the cache off
with one note."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from bad_inputs import corpus
from bad_inputs.common import HEADS
from litetext_convert.plan.manifest import KEY_FILE, entry_mac

TEXT_NORM = "text_encoder.final_layer_norm.weight"


@pytest.fixture(scope="module")
def good_entry(ws, tmp_path_factory) -> tuple[str, bytes, bytes]:
    """(file name, bytes, the secret that signed it) of the entry a conversion of the tiny
    checkpoint writes: made once."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("cache-entry")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITETEXT_CACHE_DIR", str(root / "cache"))
        patch.delenv("LITETEXT_NO_CACHE", raising=False)
        result = run_cli(["convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, root / "first"], monkeypatch=patch)
        assert result.code == 0, result.err
    (path,) = (root / "cache" / "manifests").glob("*.json")
    return path.name, path.read_bytes(), (root / "cache" / KEY_FILE).read_bytes()


@pytest.fixture
def entry(good_entry, tmp_path, monkeypatch) -> Path:
    """A private cache holding that one good entry and its key, for this test to spoil."""
    name, data, secret = good_entry
    monkeypatch.setenv("LITETEXT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cache" / "manifests" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    path.chmod(0o600)
    key_file = tmp_path / "cache" / KEY_FILE
    key_file.write_bytes(secret)
    key_file.chmod(0o600)
    return path


def _rewrite(path: Path, edit, *, keep_digest: bool = False, mac: str = "keep") -> None:
    """The entry's payload edited by `edit(tensors)`; its digest recomputed (a careful forger) or kept;
    its MAC kept, dropped, or recomputed with the user's own secret (a forger who can read it)."""
    envelope = json.loads(path.read_text())
    payload = json.loads(envelope["payload"])
    payload["tensors"] = edit(payload["tensors"])
    envelope["payload"] = json.dumps(payload)
    if not keep_digest:
        envelope["sha256"] = hashlib.sha256(envelope["payload"].encode()).hexdigest()
    if mac == "drop":
        del envelope["hmac"]
    elif mac == "sign":
        secret = (path.parent.parent / KEY_FILE).read_bytes()
        envelope["hmac"] = entry_mac(secret, envelope["key"], envelope["payload"])
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


def _forged_without_mac(path: Path) -> None:
    _rewrite(path, _renamed_norm, mac="drop")


def _forged_and_signed(path: Path) -> None:
    _rewrite(path, _renamed_norm, mac="sign")


def _forged_shape_and_signed(path: Path) -> None:
    _rewrite(path, _wrong_shape, mac="sign")


UNSIGNED = "is not signed with this user's cache key"
CASES = {  # name -> (spoil the entry, what stderr's note says)
    "forged, digest not recomputed": (_payload_edited, "does not match the sha256 recorded"),
    "forged, digest recomputed, MAC kept": (_forged_consistently, UNSIGNED),
    "forged, digest recomputed, MAC dropped": (_forged_without_mac, UNSIGNED),
    # Someone who can read the user's secret can sign; the real model still decides.
    "forged and signed with the user's key": (_forged_and_signed, "disagreed with the model transformers builds"),
    "wrong shape, signed with the user's key": (_forged_shape_and_signed, "disagreed with the model transformers builds"),
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
    _forged_and_signed(entry)
    for name, origin, notes in (("first", "built", 1), ("second", "cached", 0)):
        out = tmp_path / name
        result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, out)
        assert result.code == 0, result.stderr
        assert len([line for line in result.stderr_lines if line.startswith("note:")]) == notes, result.stderr
        assert json.loads((out / "conversion_record.json").read_text())["target"]["manifest"] == origin


def _key_symlink(key_file: Path) -> None:
    elsewhere = key_file.with_name("elsewhere.key")
    key_file.rename(elsewhere)
    key_file.symlink_to(elsewhere)


def _key_world_readable(key_file: Path) -> None:
    key_file.chmod(0o644)


def _key_fifo(key_file: Path) -> None:
    key_file.unlink()
    os.mkfifo(key_file, 0o600)


KEY_CASES = {
    "symlink": (_key_symlink, "is a symlink"),
    "world-readable": (_key_world_readable, "can be read or written by other users"),
    "FIFO": (_key_fifo, "is a FIFO"),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_a_key_file_litetext_would_not_make_switches_the_cache_off(ws, cli, entry, tmp_path, case):
    """The good entry is not read (nothing vouches for it), the key file is left as it is, and the
    conversion builds the model: one note, no hang, a folder transformers loads."""
    spoil, why = KEY_CASES[case]
    key_file = entry.parent.parent / KEY_FILE
    spoil(key_file)
    before = (os.lstat(key_file).st_ino, entry.read_bytes())
    out = tmp_path / "out"

    result = _convert_with_alarm(cli, "convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, out)

    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr and "error:" not in result.stderr
    notes = [line for line in result.stderr_lines if line.startswith("note:")]
    assert len(notes) == 1 and "not using the model manifest cache" in notes[0] and why in notes[0], result.stderr
    assert json.loads((out / "conversion_record.json").read_text())["target"]["manifest"] == "built"
    assert (os.lstat(key_file).st_ino, entry.read_bytes()) == before
    _assert_loads(out)


def test_a_good_entry_still_hits(ws, cli, entry, tmp_path):
    out = tmp_path / "out"
    result = cli("convert", "-c", ws.good, *HEADS, "--tokenizer", ws.tokenizer, out)
    assert result.code == 0, result.stderr
    assert not [line for line in result.stderr_lines if line.startswith("note:")], result.stderr
    assert json.loads((out / "conversion_record.json").read_text())["target"]["manifest"] == "cached"
