"""A checkpoint's pickle bounded in entries as well as bytes (issue 25): a small torch zip whose
archive or pickle lists tens of thousands of stored tensors (a 35 MB one with 300k took `inspect`
to 3.5 GB) is refused in one line before anything is unpickled, memory staying near the file's size."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from bad_inputs import corpus
from bad_inputs.common import HEADS, assert_nothing_left, assert_one_line_error
from litetext_convert.errors import EXIT_BAD_INPUT
from litetext_convert.source import load

COUNT = 20_000  # twice the floor; a real checkpoint stores 150 to 2,000 tensors


def _with_extra_entries(good: Path, path: Path, count: int) -> Path:
    """The good checkpoint's zip plus `count` empty `data/` records the pickle never names."""
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        prefix = source.namelist()[0].split("/")[0]
        for index in range(count):
            target.writestr(f"{prefix}/data/extra{index}", b"")
    return path


class _StoragePickler(pickle.Pickler):
    """Pickles tensors as torch.save does (a rebuild call around a persistent storage id), every
    one of them a view of storage '0': the zip holds one record, the pickle asks for it each time."""

    def persistent_id(self, obj):
        return ("storage", torch.FloatStorage, "0", "cpu", 8) if obj is _STORAGE else None

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            return torch._utils._rebuild_tensor_v2, (_STORAGE, 0, (1,), (1,), False, collections.OrderedDict())
        return NotImplemented


class _LegacyStoragePickler(_StoragePickler):
    def persistent_id(self, obj):  # the legacy id adds the view metadata
        return ("storage", torch.FloatStorage, "0", "cpu", 8, None) if obj is _STORAGE else None


_STORAGE = object()


def _many_views(path: Path, count: int) -> Path:
    buffer = io.BytesIO()
    _StoragePickler(buffer, protocol=2).dump({"model": {f"k{index}": torch.zeros(1) for index in range(count)}})
    with zipfile.ZipFile(path, "w") as target:
        target.writestr("archive/data.pkl", buffer.getvalue())
        target.writestr("archive/byteorder", "little")
        target.writestr("archive/data/0", bytes(32))
        target.writestr("archive/version", "3\n")
    return path


def _peak_rss_growth(run) -> int | None:
    """Bytes the process's peak resident size grew by during `run()` (Linux: VmHWM reset via clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        status = Path("/proc/self/status")
    except OSError:
        return None
    before = _status_kb(status, "VmRSS")
    run()
    return (_status_kb(status, "VmHWM") - before) * 1024


def _status_kb(status: Path, field: str) -> int:
    line = next(line for line in status.read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


@pytest.mark.parametrize("make, fragment", [
    (lambda ws, d: _with_extra_entries(ws.good, d / "entries_ctx16.pt", COUNT), "its archive stores"),
    (lambda ws, d: _many_views(d / "views_ctx16.pt", COUNT), f"its pickle refers to {COUNT} tensors"),
], ids=["archive entries", "persistent ids"])
@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_too_many_stored_tensors_are_refused_before_unpickling(ws, cli, tmp_path, monkeypatch, make, fragment, command):
    checkpoint = make(ws, tmp_path)
    before = corpus.sha256(checkpoint)
    parent = tmp_path / "parent"
    parent.mkdir()
    unpickled: list = []
    monkeypatch.setattr(load, "_load_torch", lambda *args: unpickled.append(args))
    extra = ["--tokenizer", ws.tokenizer, parent / "out"] if command == "convert" else ["--no-scan"]
    results = []

    growth = _peak_rss_growth(lambda: results.append(cli(command, "-c", checkpoint, *HEADS, *extra)))

    assert_one_line_error(results[0], EXIT_BAD_INPUT, fragment, "at most", "refused before unpickling")
    assert unpickled == []
    assert_nothing_left(parent)
    assert corpus.sha256(checkpoint) == before
    if growth is not None:  # loose: a few times the file, never the gigabytes a full load took
        assert growth < 64 * 2**20 + 4 * checkpoint.stat().st_size, f"peak RSS grew {growth / 2**20:.0f} MB"


def test_a_pickle_under_the_bound_still_loads(tmp_path):
    """The crafted file is what torch itself reads (the refusal above is of real checkpoints);
    under the bound it passes, and past the cheap byte count the count is made exactly."""
    path = _many_views(tmp_path / "few_ctx16.pt", 50)
    assert len(torch.load(path, weights_only=True)["model"]) == 50
    load._check_pickle_size(path)  # no refusal
    with zipfile.ZipFile(path) as archive:
        assert load._persistent_ids(archive, archive.getinfo("archive/data.pkl"), limit=10) == 50


def _legacy_views(path: Path, count: int) -> Path:
    """torch's legacy (non-zip) layout: magic number, protocol, system info, the object whose
    `count` tensors all view storage '0', the storage keys, then the storage's bytes."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    with open(path, "wb") as handle:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        _LegacyStoragePickler(handle, protocol=2).dump({"model": {f"k{index}": torch.zeros(1) for index in range(count)}})
        pickle.dump(["0"], handle, protocol=2)
        handle.write((8).to_bytes(8, "little") + bytes(32))
    return path


def test_the_legacy_format_is_bounded_alike(ws, cli, tmp_path, monkeypatch):
    checkpoint = _legacy_views(tmp_path / "legacy_views_ctx16.pt", COUNT)
    unpickled: list = []
    monkeypatch.setattr(load, "_load_torch", lambda *args: unpickled.append(args))

    result = cli("inspect", "-c", checkpoint, *HEADS, "--no-scan")

    assert_one_line_error(result, EXIT_BAD_INPUT, "its pickle refers to 10001 tensors", "refused before unpickling")
    assert unpickled == []


def test_a_small_legacy_file_is_what_torch_reads_and_passes(tmp_path):
    path = _legacy_views(tmp_path / "few_ctx16.pt", 50)
    assert len(torch.load(path, weights_only=True)["model"]) == 50
    load._check_legacy_pickle(path)  # no refusal
