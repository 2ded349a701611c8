"""The video target: detector + tracker into one Sam3VideoModel folder (SAM3-LiteText's video table,
configs/families/sam3_litetext/mapping_video.toml), the new
tensor operations and their exact inverses, many-to-one steps, and loading with transformers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from litetext_convert.errors import CheckpointError, MappingError
from litetext_convert.paths import configs_dir
from litetext_convert.plan import ops
from litetext_convert.plan.hf_config import meta_model_tensors
from litetext_convert.targets.video import build_config as build_video_config
from litetext_convert.plan.infer import infer_architecture
from litetext_convert.plan.mapping import build_plan, family_table_paths, load_table
from litetext_convert.synthetic import builder as synthetic
from litetext_convert.synthetic.parts import layout_from_tsv
from conftest import run_cli

VIDEO_TABLE = family_table_paths("sam3_litetext", "video")  # declared in its family.toml
CTX = ops.OpContext(16)
# transformers' Sam3TrackerVideo memory attention fixes the memory width at 64, and Meta's memory
# encoder has a projection only when that width differs from d_model: the tiny video checkpoint
# needs d_model = 128 (64 divides it) where the image tests' tiny detector has 32.
VIDEO_DETECTOR = dataclasses.replace(synthetic.TINY_DETECTOR, d_model=128, tracker_mem_dim=64)


def tiny_video_checkpoint(path: Path) -> Path:
    return synthetic.save_checkpoint(path, synthetic.tiny_text("s0", 16, None), VIDEO_DETECTOR)


@pytest.fixture(scope="session")
def video_checkpoint(workdir) -> Path:
    return tiny_video_checkpoint(workdir / "tiny_video_s0_ctx16.pt")


@pytest.fixture(scope="session")
def video_folder(workdir, video_checkpoint, tokenizer_dir) -> Path:
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    folder = workdir / "converted" / "video_s0"
    convert(prepare(str(video_checkpoint), num_heads=2, target="video"), folder, tokenizer=str(tokenizer_dir))
    return folder


def manifest_tensors() -> dict[str, torch.Tensor]:
    layout = layout_from_tsv((configs_dir() / "manifest" / "upstream_keys_s0_full.tsv").read_text())
    return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}


# ----------------------------------------------------------------------------------------------
# Coverage


def test_full_manifest_is_covered_totally_and_injectively_by_the_video_table():
    tensors = manifest_tensors()
    arch = infer_architecture(tensors, "sam3_litetext_s0_ctx16.pt")
    expected = meta_model_tensors(build_video_config(arch, tensors))
    plan = build_plan(load_table(VIDEO_TABLE), tensors, expected, ops.OpContext(arch.context_length))
    mapped = {source for step in plan.steps for source in step.sources}
    assert mapped.isdisjoint(plan.dropped) and mapped | set(plan.dropped) == set(tensors)
    assert {k for k in tensors if k.startswith("tracker.") or ".sam2_convs." in k} <= mapped  # 309 + 22, all used
    targets = [t for step in plan.steps for t in step.targets]
    assert len(targets) == len(set(targets)) and set(targets) == set(expected)
    assert sum(t.startswith("detector_model.") for t in targets) == 1204  # exactly the image conversion's keys
    assert len(targets) - 1204 == 329  # tracker_model.* + tracker_neck.*
    assert sorted(plan.drops_by_reason().values()) == [6, 32]  # points_* projectors, RoPE tables


def test_video_table_reuses_the_image_rules_under_the_detector_prefix():
    image, video = load_table(family_table_paths("sam3_litetext", "image")), load_table(VIDEO_TABLE)
    assert video.base == image.paths and video.paths == (*image.paths, *VIDEO_TABLE)
    for base_rule, rule in zip(image.rules, video.rules):
        assert rule.source.pattern == base_rule.source.pattern
        assert rule.targets == tuple("detector_model." + t for t in base_rule.targets)
    superseded = {d.source.pattern for d in image.drops} - {d.source.pattern for d in video.drops}
    assert superseded == {r"detector\.backbone\.vision_backbone\.sam2_convs\..+", r"tracker\..+"}


def test_tiny_video_plan_matches_the_meta_model(video_checkpoint):
    from litetext_convert.plan.prepare import prepare

    prepared = prepare(str(video_checkpoint), num_heads=2, target="video")
    targets = {t for step in prepared.plan.steps for t in step.targets}
    assert targets == set(prepared.expected)
    gathered = [step for step in prepared.plan.steps if step.gathered]
    assert len(gathered) == 1 and gathered[0].targets == ("tracker_model.prompt_encoder.point_embed.weight",)
    assert gathered[0].sources == tuple(f"tracker.sam_prompt_encoder.point_embeddings.{i}.weight" for i in range(4))


def test_a_tracker_whose_memory_width_is_not_64_is_refused_in_one_line(tiny_checkpoints, capsys):
    from litetext_convert.plan.prepare import prepare

    with pytest.raises(CheckpointError, match="fixes their key/value width at 64"):
        prepare(str(tiny_checkpoints["s0"]), num_heads=2, target="video")  # the image tests' tracker stores 16


# ----------------------------------------------------------------------------------------------
# Operations


def test_stack_rows_and_its_inverse_are_exact():
    rows = [torch.randn(1, 8, dtype=torch.float64) for _ in range(4)]
    (table,) = ops.apply_gathered(["stack_rows"], rows, CTX)
    assert table.shape == (4, 8) and all(torch.equal(table[i : i + 1], rows[i]) for i in range(4))
    restored = ops.invert_gathered(["stack_rows"], [table], CTX)
    assert len(restored) == 4 and all(torch.equal(a, b) for a, b in zip(restored, rows))


@pytest.mark.parametrize("shapes", [[(1, 8), (1, 9)], [(2, 8), (2, 8)], [(8,)]])
def test_stack_rows_checks_shapes(shapes):
    with pytest.raises(MappingError, match="stack_rows"):
        ops.apply_gathered(["stack_rows"], [torch.zeros(s) for s in shapes], CTX)


def test_duplicate_and_its_inverse_are_exact_and_refuse_drifted_copies():
    matrix = torch.randn(2, 64, dtype=torch.float64)
    first, second = ops.apply(["duplicate"], matrix, CTX)
    assert torch.equal(first, matrix) and torch.equal(second, matrix)
    assert torch.equal(ops.invert(["duplicate"], [first, second], CTX), matrix)
    with pytest.raises(MappingError, match="copies differ"):
        ops.invert(["duplicate"], [matrix, matrix + 1e-12], CTX)


def test_a_gathering_operation_must_come_first():
    with pytest.raises(MappingError, match="must come first"):
        ops.apply_gathered(["transpose", "stack_rows"], [torch.zeros(1, 4)], CTX)


def _table_with(tmp_path: Path, rule: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(rule)
    return path


def test_gather_rules_are_validated(tmp_path):
    bad = {
        "gathers over 'm', not captured": "gather = \"m\"\nops = [\"stack_rows\"]",
        "names the gathered group": "gather = \"n\"\nops = [\"stack_rows\"]\ntarget = \"x.{n}\"",
        "must start with a gathering operation": "gather = \"n\"\nops = [\"transpose\"]",
        "needs 'gather'": "ops = [\"stack_rows\"]",
    }
    for message, fields in bad.items():
        target = "" if "target" in fields else 'target = "x"\n'
        text = f"[[rule]]\nsource = 'p\\.(?P<n>\\d+)'\n{target}{fields}\nnote = \"n\"\n"
        with pytest.raises(MappingError) as info:
            load_table(_table_with(tmp_path, text))
        assert any(message in p for p in info.value.problems), (message, info.value.problems)


def test_a_gap_in_gathered_numbers_is_an_error(tmp_path):
    table = load_table(_table_with(tmp_path, "[[rule]]\nsource = 'p\\.(?P<n>\\d+)'\ntarget = \"x\"\n"
                                             "ops = [\"stack_rows\"]\ngather = \"n\"\nnote = \"rows\"\n"))
    tensors = {f"p.{i}": torch.empty(1, 4, device="meta") for i in (0, 1, 3)}
    with pytest.raises(MappingError) as info:
        build_plan(table, tensors, {"x": torch.empty(3, 4, device="meta")}, CTX)
    assert any("expected 0..2" in p for p in info.value.problems)


def test_compose_refuses_to_supersede_a_drop_the_base_does_not_have(tmp_path):
    # `base` names files under configs/: here the shared detector table, which has no drop for `b\..+`.
    path = _table_with(tmp_path, "[compose]\nbase = \"mapping.toml\"\nsupersedes = ['b\\..+']\n")
    with pytest.raises(MappingError) as info:
        load_table(path)
    assert any("does not have" in p for p in info.value.problems)


# ----------------------------------------------------------------------------------------------
# The written folder


def test_video_folder_loads_with_nothing_missing_unexpected_or_mismatched(video_folder):
    from transformers import Sam3VideoModel

    model, info = Sam3VideoModel.from_pretrained(str(video_folder), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert type(model.detector_model).__name__ == "Sam3LiteTextModel"
    record = json.loads((video_folder / "conversion_record.json").read_text())
    assert {k: record["target"][k] for k in ("name", "model_class")} == {"name": "video", "model_class": "Sam3VideoModel"}
    assert record["target"]["manifest"] in ("built", "cached")
    assert record["family"]["id"] == "sam3_litetext"
    assert [entry["file"] for entry in record["mapping_tables"]] == [
        "mapping.toml", "families/sam3_litetext/mapping_image.toml", "families/sam3_litetext/mapping_video.toml"
    ]
    assert record["keys"]["missing"] == 0 and record["keys"]["target"] == len(model.state_dict())


def test_video_folder_carries_a_sam3_video_processor(video_folder):
    config = json.loads((video_folder / "processor_config.json").read_text())
    assert config["processor_class"] == "Sam3VideoProcessor"
    assert config["video_processor"]["video_processor_type"] == "Sam2VideoVideoProcessor"
    assert config["video_processor"]["size"] == {"height": 16, "width": 16} == config["image_processor"]["size"]
    assert config["video_processor"]["image_mean"] == [0.5, 0.5, 0.5]


def test_every_video_tensor_inverts_exactly_to_its_sources(video_folder, video_checkpoint):
    from safetensors.torch import load_file

    from litetext_convert.plan.prepare import prepare

    prepared = prepare(str(video_checkpoint), num_heads=2, target="video")
    state = load_file(str(video_folder / "model.safetensors"))
    for step in prepared.plan.steps:
        restored = ops.invert_gathered(list(step.ops), [state[t] for t in step.targets], prepared.ctx)
        for key, tensor in zip(step.sources, restored):
            assert torch.equal(tensor, ops.kept(list(step.ops), prepared.loaded.tensors[key], prepared.ctx)), key


def test_both_gaussian_copies_and_the_stacked_points_hold_the_source(video_folder, video_checkpoint):
    """Spot checks from the facts, independent of the table."""
    from safetensors.torch import load_file

    from litetext_convert.source.load import load_checkpoint

    source = load_checkpoint(video_checkpoint).tensors
    state = load_file(str(video_folder / "model.safetensors"))
    gaussian = source["tracker.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert torch.equal(state["tracker_model.prompt_encoder.shared_embedding.positional_embedding"], gaussian)
    assert torch.equal(state["tracker_model.shared_image_embedding.positional_embedding"], gaussian)
    points = state["tracker_model.prompt_encoder.point_embed.weight"]
    for i in range(4):
        assert torch.equal(points[i], source[f"tracker.sam_prompt_encoder.point_embeddings.{i}.weight"][0])


def test_cli_convert_and_inspect_take_the_target(workdir, video_checkpoint, tokenizer_dir, capsys):
    out = workdir / "cli_video"
    code, _, err = run_cli(["convert", "-c", str(video_checkpoint), str(out), "--num-heads", "2",
                            "--tokenizer", str(tokenizer_dir), "--target", "video", "--json"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["model_type"] == "sam3_video"
    code, stdout, err = run_cli(["inspect", "-c", str(video_checkpoint), "--num-heads", "2", "--target", "video",
                                 "--no-scan", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["mapping"]["target"] == "video" and summary["components"]["video tracker"]["extra"] is False
    code, _, err = run_cli(["convert", "-c", str(video_checkpoint), str(workdir / "x"), "--target", "movie"], capsys)
    assert code != 0 and err.startswith("error: --target 'movie'") and not (workdir / "x").exists()


def test_the_card_of_a_video_folder_says_video_and_shows_the_video_flow(video_folder):
    from litetext_convert.publish.model_card import render_model_card
    from litetext_convert.targets import target

    card = render_model_card(video_folder, repo_id="someone/sam3-litetext-s0-video", allow_unverified=True)
    assert "`Sam3VideoModel`" in card and "(target: video)" in card and "propagate_in_video_iterator" in card
    compile(target("video").usage_snippet("someone/x"), "<card>", "exec")


def test_tracker_parity_on_an_image_folder_is_refused_in_one_line(converted, tiny_checkpoints, capsys):
    code, _, err = run_cli(["parity", "-c", str(tiny_checkpoints["s0"]), "--num-heads", "2",
                            str(converted["s0"]), "--scope", "tracker"], capsys)
    assert code != 0 and err.startswith("error:") and "--target video" in err and "Traceback" not in err


def test_convert_all_takes_the_target(workdir, video_checkpoint, tokenizer_dir, capsys):
    import shutil

    source = workdir / "video_sources"
    source.mkdir()
    shutil.copy(video_checkpoint, source / "tiny_mobileclip_s0_ctx16.pt")
    code, stdout, err = run_cli(["convert-all", str(workdir / "video_all"), "--source", str(source),
                                 "--num-heads", "2", "--tokenizer", str(tokenizer_dir), "--target", "video", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(stdout)["results"]
    assert row["status"] == "ok" and row["target"] == "video"
    assert json.loads((Path(row["folder"]) / "config.json").read_text())["model_type"] == "sam3_video"


def test_video_target_of_a_sam31_file_is_refused_in_one_line_with_the_reason(workdir, tokenizer_dir, capsys):
    """SAM3.1 declares video unsupported (its family.toml): the reason, before anything is written."""
    checkpoint = synthetic.tiny_checkpoint(workdir / "tiny_sam3p1_mobileclip_s0_ctx16.pt", "s0", 16, family="sam3p1_litetext")
    out = workdir / "sam31_video"
    code, _, err = run_cli(["convert", "-c", str(checkpoint), str(out), "--num-heads", "2",
                            "--tokenizer", str(tokenizer_dir), "--target", "video"], capsys)
    assert code != 0 and err.startswith("error:") and "no video target" in err and "Object Multiplex" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# ----------------------------------------------------------------------------------------------
# Tracker records say the dtype that ran (the tracker always runs in float64)


def test_a_tracker_record_is_keyed_and_labelled_by_the_dtype_the_tracker_ran_in(tmp_path):
    from types import SimpleNamespace

    from litetext_convert.folder import dtype_label, record_key, write_parity_record
    from litetext_convert.parity.run import parity_record

    text = SimpleNamespace(to_json=lambda: {"dtype": "float32", "stages": [], "notes": []})
    tracker = {"scope": "tracker", "dtype": "float64", "passed": True, "first_failure": None}
    record = parity_record(text, None, "tracker", [], tracker=tracker)
    assert record["tracker_dtype"] == "float64"
    assert record["key"] == record_key(record) == "tracker-float64-default"
    assert dtype_label(record) == "float32 (tracker float64)"
    both = parity_record(text, {"passed": True, "stages": []}, "all", [], tracker=tracker)
    assert both["key"] == "all-float32-tracker-float64-default"
    assert record_key(parity_record(text, None, "detector", [])) == "detector-float32-default"  # no tracker: as before

    parity = tmp_path / "parity"
    parity.mkdir()
    # an older litetext keyed this same tracker check by the text dtype; a rerun replaces it ...
    legacy = {key: value for key, value in record.items() if key not in ("tracker_dtype", "key")}
    (parity / "tracker-float32-default.json").write_text(json.dumps(legacy))
    assert record_key(legacy) == "tracker-float64-default" and dtype_label(legacy) == "float32 (tracker float64)"
    # ... while a record of another check under an old-style key is left alone
    (parity / "all-float32-default.json").write_text(json.dumps({"scope": "all", "dtype": "float32"}))  # image folder
    write_parity_record(tmp_path, record)
    write_parity_record(tmp_path, both)
    files = sorted(path.name for path in parity.iterdir())
    assert files == ["all-float32-default.json", "all-float32-tracker-float64-default.json", "tracker-float64-default.json"]


# ----------------------------------------------------------------------------------------------
# The video target's transformers classes are family data (family.toml [target_classes.video])


def test_the_video_config_is_built_from_the_classes_the_family_declares(monkeypatch):
    import transformers

    from litetext_convert.families.registry import family_by_id

    family = family_by_id("sam3_litetext")
    assert family.classes("video") == {"model": "Sam3VideoModel", "config": "Sam3VideoConfig",
                                       "tracker_config": "Sam3TrackerVideoConfig"}
    assert family.classes("image") == {"model": "Sam3LiteTextModel", "config": "Sam3LiteTextConfig"}
    tensors = manifest_tensors()
    arch = infer_architecture(tensors, "sam3_litetext_s0_ctx16.pt")
    config = build_video_config(arch, tensors)
    assert type(config).__name__ == "Sam3VideoConfig" and config.architectures == ["Sam3VideoModel"]
    assert type(config.tracker_config).__name__ == "Sam3TrackerVideoConfig"

    # other declared names are what gets built: the data, not the code, chooses
    class ProbeVideoConfig(transformers.Sam3VideoConfig):
        pass

    class ProbeTrackerConfig(transformers.Sam3TrackerVideoConfig):
        pass

    monkeypatch.setattr(transformers, "ProbeVideoConfig", ProbeVideoConfig, raising=False)
    monkeypatch.setattr(transformers, "ProbeTrackerConfig", ProbeTrackerConfig, raising=False)
    probe = dataclasses.replace(family, target_classes={"video": {
        "model": "ProbeVideoModel", "config": "ProbeVideoConfig", "tracker_config": "ProbeTrackerConfig"}})
    config = build_video_config(dataclasses.replace(arch, family=probe), tensors)
    assert type(config) is ProbeVideoConfig and config.architectures == ["ProbeVideoModel"]
    assert isinstance(config.tracker_config, ProbeTrackerConfig)
    with pytest.raises(CheckpointError, match="declares no transformers classes"):
        dataclasses.replace(family, target_classes={}).classes("video")


# ----------------------------------------------------------------------------------------------
# push of a converted video folder, through the suite's fake Hub


def test_push_of_a_video_folder_uploads_the_video_card_and_its_parity_records_and_no_hidden_memo(
    tmp_path, video_checkpoint, tokenizer_dir, capsys, no_credentials
):
    from litetext_convert.publish.push import PushOptions, push_folder
    from conftest import FakeHub

    folder = tmp_path / "sam3-litetext-s0-video"
    code, _, err = run_cli(["convert", "-c", str(video_checkpoint), str(folder), "--target", "video", "--num-heads", "2",
                            "--tokenizer", str(tokenizer_dir)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["parity", str(folder)], capsys)  # text scope: runs here; the record lands in parity/
    assert code == 0, err
    records = sorted(p.name for p in (folder / "parity").glob("*.json"))
    assert records and (folder / ".litetext" / "source.json").is_file()

    hub, repo = FakeHub(), "alice/sam3-litetext-s0-video"
    result = push_folder(folder, PushOptions(repo_id=repo, token="hf_" + "x" * 34), api=hub, sleep=lambda _: None)
    assert result.status == "pushed"
    uploaded = hub.repos[repo]["main"]
    assert {f"parity/{name}" for name in records} <= set(uploaded)
    assert not any(path.startswith(".litetext") for path in uploaded)  # the local checkpoint path stays here
    assert {"config.json", "model.safetensors", "processor_config.json", "conversion_record.json"} <= set(uploaded)
    assert json.loads(uploaded["config.json"])["architectures"] == ["Sam3VideoModel"]
    card = uploaded["README.md"].decode()
    assert "(target: video)" in card and "`Sam3VideoModel`" in card and "propagate_in_video_iterator" in card
    parity = card[card.index("## Parity"):]
    assert "passed" in parity.split("\n## ")[0] and "Not checked" not in parity  # the card certifies the record
