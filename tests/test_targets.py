"""Targets as data (configs/targets/, configs/scopes.toml): the registry, how a folder's target is
recognised, which scopes each target runs, and that a new target is a file of data."""

from __future__ import annotations

import json
import shutil

import pytest

from litetext_convert import paths
from litetext_convert.errors import LitetextError
from litetext_convert.families.registry import family_by_id
from litetext_convert.targets import registry
from litetext_convert.targets import folder_target, scope, scope_names, scope_target, target, target_names


def _folder(tmp_path, name: str, model_type: str | None):
    folder = tmp_path / name
    folder.mkdir()
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_the_registry_lists_its_targets_and_refuses_an_unknown_one_in_one_line():
    assert target_names()[:2] == ("image", "video")
    with pytest.raises(LitetextError, match=r"^unknown --target 'movie'; choose image, video") as caught:
        target("movie")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("model_type", "expected"), [("sam3_lite_text", "image"), ("sam3_video", "video"),
                                                      ("something_else", "image"), (None, "image")])
def test_a_folder_is_recognised_by_its_config_model_type(tmp_path, model_type, expected):
    assert folder_target(_folder(tmp_path, "f", model_type)).id == expected


def test_the_video_target_finds_the_detector_inside_its_model():
    class VideoModel:
        detector_model = "the detector"

    assert target("video").detector_of(VideoModel()) == "the detector"
    plain = object()
    assert target("image").detector_of(plain) is plain


def test_each_scope_runs_what_its_target_has(tmp_path):
    image, video = target("image"), target("video")
    assert image.runs("all", "detector") and not image.runs("all", "tracker")
    assert video.runs("all", "tracker") and video.runs("tracker", "tracker") and not video.runs("tracker", "detector")
    assert not image.supports("tracker")
    # No folder: tracker parity converts a video folder whatever --target says; other scopes keep it.
    assert scope_target("tracker", None, "image").id == "video"
    assert scope_target("detector", None, "video").id == "video"
    folder = _folder(tmp_path, "img", "sam3_lite_text")
    with pytest.raises(LitetextError) as caught:
        scope_target("tracker", folder, "image")
    assert str(caught.value) == f"{folder} is an image folder: tracker parity needs a folder converted with --target video"


def test_the_scope_table_says_what_each_scope_needs():
    assert scope_names() == ("text", "detector", "tracker", "all")
    assert scope("text").needs_original is None
    assert scope("tracker").needs_original == "Meta's tracker"
    with pytest.raises(LitetextError, match=r"^--scope 'every': choose text, detector, tracker or all$"):
        scope("every")


def test_every_target_names_a_family_table_set_its_classes_and_a_usage_that_compiles():
    import transformers

    family = family_by_id("sam3_litetext")
    for name in target_names():
        found = target(name)
        if found.module is None:
            continue  # a target without transformers classes (e.g. a graph export) has its own checks
        assert found.table_paths(family) and all(path.is_file() for path in found.table_paths(family))
        assert hasattr(transformers, found.config_class) and hasattr(transformers, found.classes(family)["model"])
        compile(found.usage_snippet("someone/model"), f"<{name} card>", "exec")


def test_a_new_target_is_a_file_of_data(tmp_path, monkeypatch):
    """A copy of configs/ with one more target file: recognised by its marker, its scopes known,
    nothing in the code changed."""
    configs = tmp_path / "configs"
    shutil.copytree(paths.configs_dir(), configs)
    registry_file = configs / "targets" / "registry.toml"
    registry_file.write_text(registry_file.read_text().replace('targets = ["image", "video"', 'targets = ["image", "video", "probe"'))
    (configs / "targets" / "probe.toml").write_text(
        'id = "probe"\nlabel = "exported"\ntables = "image"\n[folder]\nmarker = "probe/graphs.json"\n'
        '[scopes]\ntext = ["text"]\n'
    )
    monkeypatch.setenv("LITETEXT_CONFIGS", str(configs))
    for cached in (paths.read_config, registry._targets, registry._scopes):
        cached.cache_clear()
    try:
        folder = _folder(tmp_path, "exported", "sam3_lite_text")
        (folder / "probe").mkdir()
        (folder / "probe" / "graphs.json").write_text("{}")
        assert folder_target(folder).id == "probe"
        with pytest.raises(LitetextError, match="is an exported folder: detector parity needs a folder converted with --target image"):
            scope_target("detector", folder, "image")
        with pytest.raises(LitetextError, match="has no code module"):
            target("probe").build_config(None, {})
    finally:
        monkeypatch.delenv("LITETEXT_CONFIGS")
        for cached in (paths.read_config, registry._targets, registry._scopes):
            cached.cache_clear()


def test_the_registry_is_data_only_it_imports_neither_torch_nor_transformers():
    """Every layer may ask which target or scope it holds: the registry costs no heavy import."""
    import subprocess
    import sys

    code = ("import sys; from litetext_convert.targets import folder_target, scope, target; target('video'); scope('all'); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
