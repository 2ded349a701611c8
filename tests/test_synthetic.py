"""The synthetic checkpoint generator against the upstream manifests, and its values."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from litetext_convert.paths import configs_dir
from litetext_convert.synthetic.builder import (
    FULL_DETECTOR,
    TEXT_PRESETS,
    TINY_DETECTOR,
    TINY_TEXT_PRESETS,
    axial_rope_table,
    build_state_dict,
    key_kind,
    save_checkpoint,
    tiny_checkpoint,
    tiny_text,
    upstream_layout,
)
from litetext_convert.synthetic.parts import TEXT_PREFIX, DetectorSizes, TextSizes, layout_from_tsv, layout_to_tsv

MANIFESTS = {  # variant -> (manifest file, positional rows recorded there, text keys only?)
    "s0": ("upstream_keys_s0_full.tsv", 77, False),
    "s1": ("upstream_keys_s1_text.tsv", 16, True),
    "l": ("upstream_keys_l_text.tsv", 16, True),
}


def manifest(variant: str):
    name, _, _ = MANIFESTS[variant]
    return layout_from_tsv((configs_dir() / "manifest" / name).read_text())


def text_part(layout):
    return {k: v for k, v in layout.items() if k.startswith(TEXT_PREFIX)}


def kinds(layout) -> dict[str, tuple[int, torch.dtype]]:
    """kind -> (rank, dtype): what a tiny layout must share with the real one."""
    return {key_kind(k): (len(shape), dtype) for k, (shape, dtype) in layout.items()}


@pytest.mark.parametrize("variant", sorted(MANIFESTS))
def test_full_size_layout_reproduces_the_manifest_exactly(variant):
    _, pos_rows, text_only = MANIFESTS[variant]
    text = dataclasses.replace(TEXT_PRESETS[variant], pos_rows=pos_rows)
    layout = upstream_layout(text, FULL_DETECTOR)
    if text_only:
        layout = text_part(layout)
    assert list(layout.items()) == list(manifest(variant).items())  # keys, order, shapes, dtypes


def test_manifest_round_trips_through_the_tsv_format():
    name, _, _ = MANIFESTS["s0"]
    text = (configs_dir() / "manifest" / name).read_text()
    assert layout_to_tsv(layout_from_tsv(text)) == text


@pytest.mark.parametrize("variant", sorted(MANIFESTS))
def test_tiny_layout_has_every_kind_of_key_of_the_real_file(variant):
    tiny = upstream_layout(tiny_text(variant), TINY_DETECTOR)
    real_text = text_part(manifest(variant))
    real_rest = {k: v for k, v in manifest("s0").items() if not k.startswith(TEXT_PREFIX)}
    assert kinds(text_part(tiny)) == kinds(real_text)
    assert kinds({k: v for k, v in tiny.items() if not k.startswith(TEXT_PREFIX)}) == kinds(real_rest)


def test_tiny_layout_has_windowed_and_global_rope_and_the_cls_row():
    layout = upstream_layout(tiny_text(), TINY_DETECTOR)
    rope_rows = {shape[0] for k, (shape, _) in layout.items() if k.endswith("freqs_cis")}
    assert rope_rows == {TINY_DETECTOR.window_size**2, TINY_DETECTOR.grid**2}
    pos_embed = layout["detector.backbone.vision_backbone.trunk.pos_embed"][0]
    assert pos_embed[1] == TINY_DETECTOR.pretrain_grid**2 + 1
    assert len({key_kind(k) for k in layout if k.startswith("tracker.")}) == len(
        {key_kind(k) for k in manifest("s0") if k.startswith("tracker.")}
    )


def test_tiny_sizes_keep_distinct_the_numbers_an_inferrer_reads():
    s = TINY_DETECTOR
    layer_counts = [s.vit_depth, s.detr_enc_layers, s.detr_dec_layers, s.geo_layers]
    assert len(set(layer_counts)) == len(layer_counts)
    assert len({s.vit_head_dim // 2, s.window_size**2, s.grid**2, s.pretrain_grid**2 + 1}) == 4
    assert s.detr_heads != 8 and s.global_blocks[-1] == s.vit_depth - 1


def test_same_seed_same_values_other_seed_other_values():
    text = tiny_text()
    first, again = build_state_dict(text, TINY_DETECTOR, seed=3), build_state_dict(text, TINY_DETECTOR, seed=3)
    other = build_state_dict(text, TINY_DETECTOR, seed=4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    seeded = [k for k in first if not k.endswith("freqs_cis")]  # RoPE tables are the exact ones
    assert all(not torch.equal(first[k], other[k]) for k in seeded)


def test_values_do_not_depend_on_the_other_keys():
    """Per-key seeds: the detector part is identical whatever the text encoder."""
    s0 = build_state_dict(tiny_text("s0"), TINY_DETECTOR)
    l = build_state_dict(tiny_text("l"), TINY_DETECTOR)
    shared = [k for k in s0 if not k.startswith(TEXT_PREFIX)]
    assert all(torch.equal(s0[k], l[k]) for k in shared)


@pytest.mark.parametrize("scale", ["default", "model"])
@pytest.mark.parametrize("variant", sorted(TINY_TEXT_PRESETS))
def test_no_tensor_is_trivial(variant, scale):
    state = build_state_dict(tiny_text(variant), TINY_DETECTOR, scale=scale)
    for key, value in state.items():
        if value.numel() > 1:
            assert not torch.all(value == value.flatten()[0]), f"{key} is constant"
        assert torch.all(value != 0) or value.is_complex(), f"{key} has zeros"
        assert torch.isfinite(torch.view_as_real(value) if value.is_complex() else value.float()).all(), key


@pytest.mark.parametrize("scale", ["default", "model"])
def test_values_have_the_shape_of_their_role(scale):
    state = build_state_dict(tiny_text(), TINY_DETECTOR, scale=scale)
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            assert value.dtype == torch.int64 and value.ndim == 0 and value > 0
        elif leaf == "running_var":
            assert torch.all(value > 0)
        elif leaf == "freqs_cis":
            assert value.dtype == torch.complex64
            assert torch.allclose(value.abs(), torch.ones(value.shape))
        elif value.ndim == 1 and leaf == "weight" and "norm" in key:
            assert (value - 1).abs().max() < 0.5  # around 1, never exactly 1
    for key in [k for k in state if k.endswith(("qkv.weight", "qkv_proj.weight", "in_proj_weight"))]:
        q, k, v = state[key].chunk(3)
        assert not (torch.equal(q, k) or torch.equal(k, v) or torch.equal(q, v)), key


def test_model_scale_uses_the_models_init_magnitudes():
    default = build_state_dict(tiny_text(), TINY_DETECTOR, scale="default")
    model = build_state_dict(tiny_text(), TINY_DETECTOR, scale="model")
    fc1 = "detector.backbone.vision_backbone.trunk.blocks.0.mlp.fc1.weight"
    assert model[fc1].std() == pytest.approx(0.02, rel=0.1)
    assert default[fc1].std() == pytest.approx(TINY_DETECTOR.vit_width**-0.5, rel=0.1)
    layer_scale = TEXT_PREFIX + "encoder.transformer.0.layer_scale"
    assert model[layer_scale].max() < 1e-4 < default[layer_scale].min()
    assert len(set(model[layer_scale].flatten().tolist())) > 1


def test_rope_tables_are_the_axial_rotations_the_vit_computes():
    state = build_state_dict(tiny_text(), TINY_DETECTOR)
    s = TINY_DETECTOR
    windowed = state["detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis"]
    global_ = state[f"detector.backbone.vision_backbone.trunk.blocks.{s.global_blocks[0]}.attn.freqs_cis"]
    assert torch.equal(windowed, axial_rope_table(s.vit_head_dim, s.window_size, 1.0))
    assert torch.equal(global_, axial_rope_table(s.vit_head_dim, s.grid, s.window_size / s.grid))
    # row 1 is one step along x: x half rotates by the base frequencies, y half does not
    quarter = s.vit_head_dim // 4
    assert torch.angle(windowed[1, 0]).item() == pytest.approx(1.0)
    assert torch.allclose(windowed[1, quarter:], torch.ones(quarter, dtype=torch.complex64))


def test_half_precision_build_keeps_rope_complex_and_counters_int():
    state = build_state_dict(tiny_text(), TINY_DETECTOR, dtype=torch.bfloat16)
    dtypes = Counter(v.dtype for v in state.values())
    assert set(dtypes) == {torch.bfloat16, torch.complex64, torch.int64}


def test_tiny_checkpoint_is_small_fast_and_shaped_like_a_released_file(tmp_path):
    start = time.perf_counter()
    path = tiny_checkpoint(tmp_path / "tiny.pt", variant="s0", context=16)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert path.stat().st_size < 8_000_000
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert list(payload) == ["model"]
    keys = list(payload["model"])
    assert {k.split(".", 1)[0] for k in keys} == {"detector", "tracker"}
    assert keys == list(upstream_layout(tiny_text(), TINY_DETECTOR))
    pos = payload["model"][TEXT_PREFIX + "encoder.positional_embedding.pos_embed.pos_embed"]
    assert pos.shape[2] == 16


def test_pos_rows_can_differ_from_the_context(tmp_path):
    path = tiny_checkpoint(tmp_path / "t.pt", variant="l", context=16, pos_rows=77)
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    assert state[TEXT_PREFIX + "encoder.positional_embedding.pos_embed.pos_embed"].shape == (1, 1, 77, 12)


def load_script(name: str):
    """A script from scripts/ (not a package: loaded by path)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_checkpoint_script_writes_a_loadable_file(tmp_path):
    main = load_script("build_checkpoint").main
    out = tmp_path / "s1.pt"
    assert main(["--variant", "s1", "--size", "tiny", "--context", "32", "--seed", "5", "--out", str(out)]) == 0
    state = torch.load(out, map_location="cpu", weights_only=True)["model"]
    expected = build_state_dict(tiny_text("s1", 32), TINY_DETECTOR, seed=5)
    assert list(state) == list(expected) and all(torch.equal(state[k], expected[k]) for k in expected)


def test_save_checkpoint_accepts_any_sizes(tmp_path):
    text = dataclasses.replace(TINY_TEXT_PRESETS["s1"], transformer_layers=1)
    detector = dataclasses.replace(TINY_DETECTOR, vit_depth=2, global_blocks=(1,), num_queries=5)
    state = torch.load(save_checkpoint(tmp_path / "c.pt", text, detector), weights_only=True)["model"]
    assert state["detector.transformer.decoder.query_embed.weight"].shape == (5, TINY_DETECTOR.d_model)


@pytest.mark.parametrize(
    "change",
    [{"window_size": 3}, {"vit_heads": 5}, {"vit_heads": 8}, {"d_model": 40}, {"global_blocks": (3, 1)},
     {"global_blocks": (0, 1, 2, 3)}, {"tracker_mem_dim": 12}],
)
def test_inconsistent_detector_sizes_are_refused(change):
    with pytest.raises(ValueError, match="inconsistent DetectorSizes"):
        dataclasses.replace(TINY_DETECTOR, **change)


def test_unknown_text_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        TextSizes("causal", width=8, transformer_layers=1, heads=2, ffn=32, vocab=10, pos_rows=4, projection=8)


# ----------------------------------------------------------------------------------------------
# transformers' Sam3LiteTextModel accepts the same sizes: built on the meta device from the
# corresponding config, each component has exactly the parameters the upstream keys carry, less
# what the conversion drops.

transformers = pytest.importorskip("transformers")


def transformers_config(text: TextSizes, s: DetectorSizes):
    from transformers import Sam3LiteTextConfig
    from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig, Sam3ViTConfig

    vit = Sam3ViTConfig(
        hidden_size=s.vit_width, intermediate_size=s.vit_mlp, num_hidden_layers=s.vit_depth,
        num_attention_heads=s.vit_heads, image_size=s.image_size, patch_size=s.patch, window_size=s.window_size,
        global_attn_indexes=list(s.global_blocks), pretrain_image_size=s.pretrain_image_size,
    )
    g = s.grid
    vision = Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=s.d_model,
                              backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]])
    shared = {"hidden_size": s.d_model, "num_attention_heads": s.detr_heads}
    return Sam3LiteTextConfig(
        vision_config=vision,
        text_config={
            "vocab_size": text.vocab, "hidden_size": text.width, "intermediate_size": text.ffn,
            "projection_dim": text.projection, "num_hidden_layers": text.num_layers,
            "num_attention_heads": text.heads, "max_position_embeddings": text.pos_rows,
            "use_repmixer_blocks": text.variant == "mct", "repmixer_kernel_size": text.repmixer_kernel,
        },
        geometry_encoder_config={"num_layers": s.geo_layers, "intermediate_size": s.ffn, "roi_size": s.roi_size,
                                 **shared},
        detr_encoder_config={"num_layers": s.detr_enc_layers, "intermediate_size": s.ffn, **shared},
        detr_decoder_config={"num_layers": s.detr_dec_layers, "intermediate_size": s.ffn,
                             "num_queries": s.num_queries, **shared},
        mask_decoder_config={"num_upsampling_stages": s.pixel_decoder_stages, **shared},
    )


COMPONENTS = {  # upstream prefix -> transformers module
    "detector.backbone.vision_backbone.trunk.": "vision_encoder.backbone.",
    "detector.backbone.vision_backbone.convs.": "vision_encoder.neck.",
    TEXT_PREFIX + "encoder.": "text_encoder.",
    TEXT_PREFIX + "projector.": "text_projection.",
    "detector.geometry_encoder.": "geometry_encoder.",
    "detector.transformer.encoder.": "detr_encoder.",
    "detector.transformer.decoder.": "detr_decoder.",
    "detector.segmentation_head.": "mask_decoder.",
    "detector.dot_prod_scoring.": "dot_product_scoring.",
}


def numel_by_component(items, prefixes) -> Counter:
    counts = Counter()
    for key, numel in items:
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is not None:
            counts[prefix] += numel
    return counts


def upstream_numel_kept_by_conversion(layout) -> Counter:
    """Numbers the converted model keeps: no RoPE tables (recomputed), no cls row of the ViT
    table, no points_* projectors (transformers' geometry encoder takes boxes only); BatchNorm
    counters are left out on both sides."""

    def kept(key, shape):
        numel = math.prod(shape)
        if key.endswith(("freqs_cis", "num_batches_tracked")) or ".points_" in key:
            return 0
        return numel - shape[-1] if key.endswith("trunk.pos_embed") else numel

    return numel_by_component(((k, kept(k, shape)) for k, (shape, _) in layout.items()), list(COMPONENTS))


@pytest.mark.parametrize(
    "text, detector",
    [(tiny_text(v), TINY_DETECTOR) for v in sorted(TINY_TEXT_PRESETS)]
    + [(dataclasses.replace(TEXT_PRESETS["s0"], pos_rows=16), FULL_DETECTOR)],
    ids=["tiny-l", "tiny-s0", "tiny-s1", "full-s0"],
)
def test_transformers_model_from_the_same_sizes_has_the_same_parameters(text, detector):
    from transformers import Sam3LiteTextModel

    with torch.device("meta"):
        model = Sam3LiteTextModel(transformers_config(text, detector))
    hf_items = ((k, v.numel()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    hf = numel_by_component(hf_items, list(COMPONENTS.values()))
    upstream = upstream_numel_kept_by_conversion(upstream_layout(text, detector))
    assert {COMPONENTS[p]: n for p, n in upstream.items()} == dict(hf)
