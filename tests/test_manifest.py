"""The target model's manifest cache (plan/manifest.py): a cached manifest is exactly what building
the meta model gives; the key changes with everything the build depends on; a bad, unwritable or
switched-off cache only costs the build."""

from __future__ import annotations

import json
import os
import sys

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


@pytest.mark.parametrize("content", [
    "not json",
    json.dumps({"format": 1}),
    json.dumps({"tensors": [["a.weight", [2, 2], "no_such_dtype"]]}),
    json.dumps({"tensors": [["a.weight", [-1], "float32"]]}),
    json.dumps({"tensors": [["a.weight", [2], "float32"], ["a.weight", [2], "float32"]]}),
    json.dumps({"tensors": [["a.weight", [2], "__class__"]]}),
    json.dumps({"tensors": []}),
])
def test_an_unreadable_entry_is_rebuilt_and_replaced(cache, tiny_config, content):
    path = cache / "manifests" / f"{manifest_key(tiny_config)}.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)

    manifest = target_manifest(tiny_config, meta_model_tensors)
    assert manifest.origin == BUILT
    assert target_manifest(tiny_config, meta_model_tensors).origin == CACHED  # rewritten whole


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
    assert len(builds) == 1  # the first run built the model and stored its manifest, the second read it
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
