"""The mapping table: total, injective, complete against the transformers model, and each known
mistake caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from litetext_convert.errors import MappingError
from litetext_convert.plan import ops
from litetext_convert.plan.hf_config import build_config, meta_model_tensors
from litetext_convert.plan.infer import infer_architecture
from litetext_convert.plan.mapping import build_plan, default_table_path, family_table_paths, load_table
from litetext_convert.synthetic import builder as synthetic

TABLE = default_table_path().read_text()  # the shared SAM3-detector table; mutations below edit it
FAMILY_TABLES = family_table_paths("sam3_litetext")[1:]  # what SAM3-LiteText adds after it


def meta_layout(variant: str, detector=synthetic.FULL_DETECTOR, text=None) -> dict[str, torch.Tensor]:
    text = text or synthetic.TEXT_PRESETS[variant]
    layout = synthetic.upstream_layout(text, detector)
    return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}


def plan_for(tensors: dict[str, torch.Tensor], table_text: str = TABLE, tmp_path: Path | None = None, num_heads=None):
    arch = infer_architecture(tensors, "x_ctx16.pt", num_heads=num_heads)
    expected = meta_model_tensors(build_config(arch))
    table_paths = None
    if table_text is not TABLE:
        table_path = tmp_path / "mapping.toml"
        table_path.write_text(table_text)
        table_paths = [table_path, *FAMILY_TABLES]
    return build_plan(load_table(table_paths), tensors, expected, ops.OpContext(arch.context_length)), expected


@pytest.mark.parametrize("variant", ["s0", "s1", "l"])
def test_full_upstream_layout_is_covered_totally_and_injectively(variant):
    tensors = meta_layout(variant)
    plan, expected = plan_for(tensors)
    mapped = {step.source for step in plan.steps}
    assert mapped.isdisjoint(plan.dropped) and mapped | set(plan.dropped) == set(tensors)
    targets = [target for step in plan.steps for target in step.targets]
    assert len(targets) == len(set(targets))  # injective
    assert set(targets) == set(expected)  # complete: Missing 0, Unexpected 0
    assert all(plan.target_shapes[t] == tuple(expected[t].shape) for t in targets)


def test_drops_are_exactly_the_parts_an_image_model_does_not_use():
    plan, _ = plan_for(meta_layout("s0"))
    counts = {reason.split(";")[0][:24]: n for reason, n in plan.drops_by_reason().items()}
    assert sorted(plan.drops_by_reason().values()) == [6, 22, 32, 309]  # points_*, sam2_convs, RoPE, tracker
    assert sum(counts.values()) == len(plan.dropped) == 369


def mutate(tmp_path, old: str, new: str) -> str:
    assert old in TABLE, old
    return TABLE.replace(old, new)


def test_points_projectors_renamed_onto_boxes_is_a_collision(tmp_path):
    start = TABLE.index("[[drop]]\nsource = 'detector\\.geometry_encoder\\.points_")
    end = TABLE.index("[[drop]]", start + 1)
    renamed = (
        "[[rule]]\nsource = 'detector\\.geometry_encoder\\.points_(?P<kind>direct_project|pool_project|pos_enc_project)"
        "\\.(?P<p>weight|bias)'\ntarget = \"geometry_encoder.boxes_{kind}.{p}\"\nnote = \"the known mistake\"\n\n"
    )
    table = TABLE[:start] + renamed + TABLE[end:]
    with pytest.raises(MappingError) as caught:
        plan_for(meta_layout("s0"), table, tmp_path)
    problems = "\n".join(caught.value.problems)
    assert "target collision: geometry_encoder.boxes_direct_project.weight" in problems


def test_positional_table_not_cut_to_the_context_is_caught(tmp_path):
    table = mutate(tmp_path, 'ops = ["slice_text_context"]\n', "")
    with pytest.raises(MappingError, match="does not cover") as caught:
        plan_for(meta_layout("s0"), table, tmp_path)  # the S0 layout stores 77 rows
    assert any("position_embedding" in p and "[1, 1, 77, 512]" in p for p in caught.value.problems)


def test_vit_cls_row_kept_is_caught(tmp_path):
    table = mutate(tmp_path, 'ops = ["drop_cls_row"]\n', "")
    with pytest.raises(MappingError) as caught:
        plan_for(meta_layout("s0"), table, tmp_path)
    assert any("position_embeddings" in p and "577" in p for p in caught.value.problems)


def test_an_unchanged_key_is_never_silently_dropped(tmp_path):
    rule = (
        "[[rule]]\nsource = 'detector\\.backbone\\.language_backbone\\.encoder\\.final_layer_norm\\.(?P<p>weight|bias)'\n"
        'target = "text_encoder.final_layer_norm.{p}"\nnote = "final LayerNorm"\n'
    )
    with pytest.raises(MappingError) as caught:
        plan_for(meta_layout("s0"), mutate(tmp_path, rule, ""), tmp_path)
    problems = caught.value.problems
    assert "unmapped source key: detector.backbone.language_backbone.encoder.final_layer_norm.weight" in problems
    assert "missing target: text_encoder.final_layer_norm.weight is produced by no source key" in problems


def test_unknown_and_ambiguous_keys_are_errors():
    tensors = meta_layout("s0")
    tensors["detector.backbone.mystery.weight"] = torch.empty(3, device="meta")
    with pytest.raises(MappingError) as caught:
        plan_for(tensors)
    assert caught.value.problems == ["unmapped source key: detector.backbone.mystery.weight"]


def test_the_table_is_validated_when_loaded(tmp_path):
    bad = tmp_path / "mapping.toml"
    bad.write_text(
        "[[rule]]\nsource = 'a\\.(?P<i>\\d+)'\ntarget = 'b.{j}'\nnote = 'x'\n"
        "[[rule]]\nsource = 'c'\ntarget = ['d']\nops = ['split_qkv']\nnote = 'x'\n"
        "[[drop]]\nsource = 'e'\n"
    )
    with pytest.raises(MappingError) as caught:
        load_table(bad)
    problems = "\n".join(caught.value.problems)
    assert "uses {j}, not captured" in problems
    assert "produce 3 tensors but 1 targets" in problems
    assert "every drop needs a reason" in problems


def test_every_converted_tensor_inverts_exactly_to_its_source(converted, tiny_checkpoints):
    """Reload the written folder with from_pretrained and undo each operation: bit-exact."""
    from transformers import Sam3LiteTextModel

    from litetext_convert.plan.prepare import prepare

    prepared = prepare(str(tiny_checkpoints["s0"]), num_heads=2)
    model = Sam3LiteTextModel.from_pretrained(str(converted["s0"]))
    state = model.state_dict()
    for step in prepared.plan.steps:
        source = prepared.loaded.tensors[step.source]
        restored = ops.invert(list(step.ops), [state[t] for t in step.targets], prepared.ctx)
        assert torch.equal(restored, ops.kept(list(step.ops), source, prepared.ctx)), step.source


def test_qkv_rows_land_in_q_k_v_order_and_projection_is_transposed(converted, tiny_checkpoints):
    """Spot checks written from upstream semantics, independent of the table."""
    from safetensors.torch import load_file

    source = torch.load(tiny_checkpoints["s1"], weights_only=True)["model"]
    target = load_file(str(converted["s1"] / "model.safetensors"))
    text = "detector.backbone.language_backbone.encoder."
    fused = source[text + "transformer.1.pre_norm_mha.1.qkv_proj.weight"]
    width = fused.shape[1]
    for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(target[f"text_encoder.layers.1.self_attn.{name}.weight"], fused[index * width : (index + 1) * width])
    assert torch.equal(target["text_encoder.projection.weight"], source[text + "projection_layer"].t())
    vit = source["detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight"]
    third = vit.shape[0] // 3
    assert torch.equal(target["vision_encoder.backbone.layers.0.attention.v_proj.weight"], vit[2 * third :])
    assert torch.equal(
        target["vision_encoder.backbone.embeddings.position_embeddings"], source["detector.backbone.vision_backbone.trunk.pos_embed"][:, 1:]
    )
    assert target["text_encoder.embeddings.position_embedding.position_embedding"].shape[2] == 16
