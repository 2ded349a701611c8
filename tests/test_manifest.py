"""The target model's manifest cache (plan/manifest.py): a cached manifest is exactly what building
the meta model gives; the key changes with everything the build depends on; a bad, unwritable or
switched-off cache only costs the build."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import pytest
import torch
from conftest import heads

from litetext_convert.errors import MappingError
from litetext_convert.plan import manifest as manifest_module
from litetext_convert.plan import prepare as prepare_module
from litetext_convert.plan.hf_config import build_config, meta_model_tensors
from litetext_convert.plan.infer import infer_architecture
from litetext_convert.plan.mapping import family_table_paths
from litetext_convert.plan.manifest import BUILT, CACHED, manifest_key, package_fingerprint, target_manifest
from litetext_convert.plan.prepare import prepare
from litetext_convert.synthetic import builder as synthetic


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LITETEXT_CACHE_DIR", str(folder))
    monkeypatch.delenv("LITETEXT_NO_CACHE", raising=False)
    return folder


@pytest.fixture(scope="module")
def tiny_config():
    layout = synthetic.upstream_layout(synthetic.TINY_TEXT_PRESETS["s0"], synthetic.TINY_DETECTOR)
    tensors = {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}
    return build_config(infer_architecture(tensors, "sam3_litetext_s0_ctx16.pt", num_heads=heads("s0")))


def _signature(tensors: dict[str, torch.Tensor]) -> list[tuple]:
    return [(name, tuple(t.shape), t.dtype, t.device.type) for name, t in tensors.items()]


def _counting_build(calls: list):
    def build(config):
        calls.append(config)
        return meta_model_tensors(config)
    return build


def test_a_cached_manifest_is_exactly_the_built_one(cache, tiny_config):
    calls: list = []
    first = target_manifest(tiny_config, _counting_build(calls))
    second = target_manifest(tiny_config, _counting_build(calls))

    assert (first.origin, second.origin, len(calls)) == (BUILT, CACHED, 1)
    assert _signature(second.tensors) == _signature(first.tensors)  # names in order, shapes, dtypes, on meta
    assert any(t.dtype != torch.float32 for t in first.tensors.values())  # integer buffers keep their dtype
    assert len(list((cache / "manifests").glob("*.json"))) == 1


def test_the_key_changes_with_the_config_torch_and_transformers_files(cache, tiny_config, monkeypatch):
    key = manifest_key(tiny_config)
    assert manifest_key(tiny_config) == key  # stable

    changed = type(tiny_config).from_dict(tiny_config.to_dict())
    changed.text_config.num_hidden_layers += 1
    assert manifest_key(changed) != key

    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    assert manifest_key(tiny_config) != key
    monkeypatch.undo()

    monkeypatch.setattr(manifest_module, "package_fingerprint", lambda package: "edited")
    assert manifest_key(tiny_config) != key


def test_the_package_fingerprint_follows_every_source_file(tmp_path, monkeypatch):
    package = tmp_path / "site" / "probe_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "modeling.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("probe_pkg", None)

    base = package_fingerprint("probe_pkg")
    assert "probe_pkg" not in sys.modules  # found, never imported
    assert package_fingerprint("probe_pkg") == base

    stat = (package / "models" / "modeling.py").stat()
    os.utime(package / "models" / "modeling.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    touched = package_fingerprint("probe_pkg")
    assert touched != base
    (package / "models" / "other.py").write_text("")
    assert package_fingerprint("probe_pkg") not in (base, touched)
    assert package_fingerprint("no_such_package_here") == "absent"


def _envelope(key: str, tensors, *, sha256: str | None = None, format_: int = manifest_module.CACHE_FORMAT,
              secret: bytes | None = None) -> str:
    """An entry as `_write` lays it out, with whatever payload (and, to forge, whatever digest), signed
    with the cache's own secret (the payload checks must hold even for an entry that passes the MAC)."""
    payload = json.dumps({"model_class": "Sam3LiteTextModel", "tensors": tensors})
    digest = sha256 if sha256 is not None else hashlib.sha256(payload.encode()).hexdigest()
    secret = secret if secret is not None else manifest_module.signing_key(manifest_module.cache_dir())
    mac = manifest_module.entry_mac(secret, key, payload)
    return json.dumps({"format": format_, "key": key, "sha256": digest, "hmac": mac, "payload": payload})


def _entry_path(cache, config):
    path = cache / "manifests" / f"{manifest_key(config)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


UNREADABLE = {
    "not json": lambda key: "not json",
    "the format-1 layout": lambda key: json.dumps({"format": 1, "tensors": [["a.weight", [2], "float32"]]}),
    "a list": lambda key: "[]",
    "deeply nested": lambda key: "[" * 100_000 + "]" * 100_000,
    "unknown dtype": lambda key: _envelope(key, [["a.weight", [2, 2], "no_such_dtype"]]),
    "negative size": lambda key: _envelope(key, [["a.weight", [-1], "float32"]]),
    "float size": lambda key: _envelope(key, [["a.weight", [2.0], "float32"]]),
    "huge size": lambda key: _envelope(key, [["a.weight", [10**30], "float32"]]),
    "duplicate name": lambda key: _envelope(key, [["a.weight", [2], "float32"], ["a.weight", [2], "float32"]]),
    "not a dtype": lambda key: _envelope(key, [["a.weight", [2], "__class__"]]),
    "no tensors": lambda key: _envelope(key, []),
    "another key": lambda key: _envelope("0" * 64, [["a.weight", [2], "float32"]]),
    "edited payload": lambda key: _envelope(key, [["a.weight", [2], "float32"]], sha256="0" * 64),
    "another format": lambda key: _envelope(key, [["a.weight", [2], "float32"]], format_=99),
    "an earlier format": lambda key: _envelope(key, [["a.weight", [2], "float32"]], format_=2),
    "no MAC": lambda key: json.dumps({**json.loads(_envelope(key, [["a.weight", [2], "float32"]])), "hmac": None}),
    "another secret's MAC": lambda key: _envelope(key, [["a.weight", [2], "float32"]], secret=b"k" * 32),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_entry_is_noted_rebuilt_and_replaced(cache, tiny_config, case, capsys):
    path = _entry_path(cache, tiny_config)
    path.write_text(UNREADABLE[case](manifest_key(tiny_config)))
    capsys.readouterr()

    manifest = target_manifest(tiny_config, meta_model_tensors)
    notes = capsys.readouterr().err.splitlines()
    assert manifest.origin == BUILT
    assert len(notes) == 1 and notes[0].startswith("note: ignored the model manifest cache entry"), notes
    assert target_manifest(tiny_config, meta_model_tensors).origin == CACHED  # rewritten whole
    assert capsys.readouterr().err == ""


def _fifo(path):
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path):
    path.unlink()
    path.symlink_to("/dev/zero")


def _symlink_to_a_good_entry(path):
    good = path.with_name("elsewhere.json")
    good.write_text(path.read_text())
    path.unlink()
    path.symlink_to(good)


def _huge(path):
    with open(path, "wb") as handle:
        handle.truncate(manifest_module.MAX_ENTRY_BYTES + 1)  # sparse: no disk used


def _writable_by_others(path):
    path.chmod(0o666)


@pytest.mark.parametrize("make, why", [
    (_fifo, "is a FIFO"),
    (_dev_zero, "is a symlink"),
    (_symlink_to_a_good_entry, "is a symlink"),
    (_huge, "bytes, more than an entry can be"),
    (_writable_by_others, "is writable by other users"),
])
def test_an_entry_that_is_not_a_small_private_file_is_never_read(cache, tiny_config, make, why, capsys):
    """No hang on a FIFO, no endless read of /dev/zero, no link followed: lstat decides first."""
    path = _entry_path(cache, tiny_config)
    target_manifest(tiny_config, meta_model_tensors)  # a good entry, then replaced by `make`
    make(path)
    capsys.readouterr()

    started = time.monotonic()
    manifest = target_manifest(tiny_config, meta_model_tensors)
    assert time.monotonic() - started < 30
    assert manifest.origin == BUILT
    assert why in capsys.readouterr().err
    assert path.is_file() and not path.is_symlink()  # the link or FIFO itself replaced, nothing followed
    assert target_manifest(tiny_config, meta_model_tensors).origin == CACHED


def test_entries_are_private_to_the_user(cache, tiny_config):
    target_manifest(tiny_config, meta_model_tensors)
    path = _entry_path(cache, tiny_config)
    assert path.stat().st_mode & 0o077 == 0
    envelope = json.loads(path.read_text())
    assert envelope["key"] == manifest_key(tiny_config)
    assert envelope["sha256"] == hashlib.sha256(envelope["payload"].encode()).hexdigest()
    key_file = cache / manifest_module.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.stat().st_size == manifest_module.KEY_BYTES
    secret = key_file.read_bytes()
    assert envelope["hmac"] == manifest_module.entry_mac(secret, envelope["key"], envelope["payload"])
    target_manifest(tiny_config, meta_model_tensors)
    assert key_file.read_bytes() == secret  # made once, then read


def test_switched_off_or_unwritable_cache_builds_every_time(cache, tiny_config, monkeypatch):
    monkeypatch.setenv("LITETEXT_NO_CACHE", "1")
    calls: list = []
    assert [target_manifest(tiny_config, _counting_build(calls)).origin for _ in range(2)] == [BUILT, BUILT]
    assert not cache.exists()

    monkeypatch.delenv("LITETEXT_NO_CACHE")
    cache.write_text("a file where the cache folder should be")
    assert [target_manifest(tiny_config, _counting_build(calls)).origin for _ in range(2)] == [BUILT, BUILT]
    assert len(calls) == 4


def test_a_failing_plan_fails_alike_from_a_cached_manifest(cache, tiny_checkpoints, tmp_path, monkeypatch):
    """The check against the model, not the cache, decides: a table that leaves a parameter
    unproduced is refused with the same problems whether the manifest was built or read back."""
    table = tmp_path / "mapping.toml"
    text = prepare_module.load_table().path.read_text()
    misspelled = 'target = "text_encoder.embeddings.token_embedding.weight"'
    assert misspelled in text
    table.write_text(text.replace(misspelled, misspelled.replace("token_embedding", "token_embeding")))
    family_tables = family_table_paths("sam3_litetext")[1:]
    builds: list = []
    monkeypatch.setattr(prepare_module, "meta_model_tensors", _counting_build(builds))
    problems = []
    for _ in range(2):
        with pytest.raises(MappingError) as caught:
            prepare(str(tiny_checkpoints["s0"]), num_heads=heads("s0"), table_path=[table, *family_tables])
        problems.append(caught.value.problems)
    # The first run built the model and stored its manifest; the second read it, and since the plan
    # failed against a cached manifest, built the model again to confirm: the cache never refuses.
    assert len(builds) == 2
    assert problems[0] == problems[1]
    assert any("token_embeding" in problem for problem in problems[0])  # the model knows no such parameter
    assert any("token_embedding" in problem for problem in problems[0])  # and misses the real one


def test_the_record_says_how_the_manifest_was_obtained(cache, cli, tiny_checkpoints, tokenizer_dir, tmp_path):
    records = []
    for name in ("first", "second"):
        code, _, err = cli("convert", "-c", tiny_checkpoints["s0"], "--num-heads", heads("s0"), "--tokenizer",
                           tokenizer_dir, tmp_path / name)
        assert code == 0, err
        records.append(json.loads((tmp_path / name / "conversion_record.json").read_text()))
    assert [r["target"]["manifest"] for r in records] == [BUILT, CACHED]
    assert (tmp_path / "first" / "model.safetensors").read_bytes() == (tmp_path / "second" / "model.safetensors").read_bytes()


# ---------------------------------------------------------------- the key file that signs entries


def _key_link_to_a_good_key(path):
    good = path.with_name("elsewhere.key")
    good.write_bytes(path.read_bytes())
    good.chmod(0o600)
    path.unlink()
    path.symlink_to(good)


def _key_readable_by_others(path):
    path.chmod(0o644)


def _key_fifo(path):
    path.unlink()
    os.mkfifo(path, 0o600)


def _key_folder(path):
    path.unlink()
    path.mkdir(mode=0o700)


def _key_short(path):
    path.write_bytes(b"short")


@pytest.mark.parametrize("make, why", [
    (_key_link_to_a_good_key, "is a symlink"),
    (_key_readable_by_others, "can be read or written by other users"),
    (_key_fifo, "is a FIFO"),
    (_key_folder, "is not a regular file"),
    (_key_short, "is 5 bytes, not 32"),
])
def test_a_key_file_litetext_would_not_have_made_switches_the_cache_off(cache, tiny_config, make, why, capsys):
    """Never read through a link, never waited on, never replaced (litetext did not write it): the
    run builds, writes no entry, and one note says which file and what to do."""
    key_file = cache / manifest_module.KEY_FILE
    target_manifest(tiny_config, meta_model_tensors)  # a good key and entry, then the key spoilt
    entry = _entry_path(cache, tiny_config)
    entry.unlink()
    make(key_file)
    before = os.lstat(key_file)
    capsys.readouterr()

    started = time.monotonic()
    origins = [target_manifest(tiny_config, meta_model_tensors).origin for _ in range(2)]
    assert time.monotonic() - started < 30
    notes = capsys.readouterr().err.splitlines()
    assert origins == [BUILT, BUILT] and not entry.exists()
    assert len(notes) == 1 and notes[0].startswith("note: not using the model manifest cache: its key file"), notes
    assert why in notes[0] and "LITETEXT_NO_CACHE" in notes[0]
    after = os.lstat(key_file)
    assert (after.st_ino, after.st_mode, after.st_size) == (before.st_ino, before.st_mode, before.st_size)


def test_a_new_secret_unsigns_every_entry(cache, tiny_config, capsys):
    """Entries written under one key are not trusted under another (copied from another account)."""
    target_manifest(tiny_config, meta_model_tensors)
    (cache / manifest_module.KEY_FILE).unlink()
    capsys.readouterr()
    assert target_manifest(tiny_config, meta_model_tensors).origin == BUILT  # a new key is made
    assert "is not signed with this user's cache key" in capsys.readouterr().err
    assert target_manifest(tiny_config, meta_model_tensors).origin == CACHED


def test_the_key_is_made_once_even_without_hard_links(cache, monkeypatch):
    """Linked into place normally (never replacing anything); where the filesystem has no hard
    links, created in place with O_EXCL. Either way no temporary file stays behind."""
    import errno

    def no_links(*_):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(manifest_module.os, "link", no_links)
    secret = manifest_module.signing_key(cache)
    key_file = cache / manifest_module.KEY_FILE
    assert len(secret) == manifest_module.KEY_BYTES and key_file.stat().st_mode & 0o777 == 0o600
    assert manifest_module.signing_key(cache) == secret
    assert [path.name for path in cache.iterdir()] == [manifest_module.KEY_FILE]
