"""Architecture inference and `litetext inspect`."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import heads, run_cli

from litetext_convert.errors import CheckpointError
from litetext_convert.plan.infer import infer_architecture, to_plain
from litetext_convert.synthetic import builder as synthetic


def manifest_tensors(variant: str, pos_rows: int | None = None) -> dict[str, torch.Tensor]:
    """The full-size upstream layout as meta tensors: shapes without bytes."""
    text = synthetic.TEXT_PRESETS[variant]
    if pos_rows is not None:
        text = dataclasses.replace(text, pos_rows=pos_rows)
    layout = synthetic.upstream_layout(text, synthetic.FULL_DETECTOR)
    return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}


@pytest.mark.parametrize(
    ("variant", "hidden", "layers", "family", "heads"),
    [("s0", 512, 6, "mct", 8), ("s1", 512, 12, "base", 8), ("l", 768, 12, "base", 12)],
)
def test_full_size_text_architecture_is_read_from_the_weights(variant, hidden, layers, family, heads):
    arch = infer_architecture(manifest_tensors(variant), f"efficient_sam3_image_encoder_mobileclip_{variant}_ctx16.pt")
    text = to_plain(arch)["text"]
    assert (text["variant"], text["hidden_size"], text["num_layers"], text["family"]) == (variant, hidden, layers, family)
    assert text["num_heads"] == heads
    assert arch.text.num_heads.source.startswith("variant table")
    assert text["context_length"] == 16 and arch.text.context_length.source == "name"
    assert text["intermediate_size"] == 4 * hidden and text["projection_dim"] == hidden and text["vocab_size"] == 49408


def test_full_size_detector_is_read_from_the_weights():
    detector = to_plain(infer_architecture(manifest_tensors("s0"), "x_ctx16.pt"))["detector"]
    assert detector["vit_width"] == 1024 and detector["vit_depth"] == 32 and detector["vit_heads"] == 16
    assert detector["window_size"] == 24 and detector["global_attn_indexes"] == [7, 15, 23, 31]
    assert detector["image_size"] == 1008 and detector["pretrain_image_size"] == 336 and detector["patch_size"] == 14
    assert detector["d_model"] == 256 and detector["num_queries"] == 200 and detector["attention_heads"] == 8
    assert (detector["detr_encoder_layers"], detector["detr_decoder_layers"], detector["geometry_layers"]) == (6, 6, 3)


def test_context_comes_from_flag_then_name_then_table():
    tensors = manifest_tensors("s0")  # 77-row table, as upstream's builder creates it
    assert infer_architecture(tensors, "x.pt").text.context_length.value == 77
    arch = infer_architecture(tensors, "x_ctx32.pt")
    assert (arch.context_length, arch.text.context_length.source) == (32, "name")
    assert any("sliced to the first 32" in note for note in arch.notes)
    arch = infer_architecture(tensors, "x_ctx32.pt", context_length=16)
    assert (arch.context_length, arch.text.context_length.source) == (16, "flag")


def test_a_table_shorter_than_the_context_names_both_numbers_and_the_flag():
    tensors = manifest_tensors("s1", pos_rows=16)  # as the released ctx16 files appear to store it
    with pytest.raises(CheckpointError, match=r"stores 16 positions but the context is 32.*--context-length 16"):
        infer_architecture(tensors, "efficient_sam3_image_encoder_mobileclip_s1_ctx32.pt")


def test_inspect_reports_the_tiny_checkpoint(tiny_checkpoints, capsys):
    code, out, err = run_cli(["inspect", "-c", str(tiny_checkpoints["s0"]), "--num-heads", "2", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    text = summary["architecture"]["text"]
    assert text["family"]["value"] == "mct" and text["num_layers"]["value"] == 4
    assert text["num_heads"] == {"value": 2, "source": "flag"}
    assert text["positional_rows"]["value"] == 77 and text["context_length"]["value"] == 16
    assert summary["non_finite"] == {}
    components = summary["components"]
    assert components["video tracker"]["extra"] and components["text encoder"]["keys"] > 0
    assert summary["mapping"]["missing"] == 0 and sum(summary["mapping"]["dropped"].values()) > 0


def test_inspect_human_output_names_sources(tiny_checkpoints, capsys):
    code, out, _ = run_cli(["inspect", "-c", str(tiny_checkpoints["l"]), "--num-heads", str(heads("l"))], capsys)
    assert code == 0
    assert "Inferred text architecture" in out and "variant table" not in out  # tiny L is a custom shape
    assert "all values finite" in out


def test_without_rope_tables_a_sam3_sized_vit_takes_sam3_geometry_and_says_so():
    tensors = {k: v for k, v in manifest_tensors("s0").items() if not k.endswith("attn.freqs_cis")}
    arch = infer_architecture(tensors, "x_ctx16.pt")
    detector = to_plain(arch)["detector"]
    assert (detector["window_size"], detector["global_attn_indexes"], detector["image_size"]) == (24, [7, 15, 23, 31], 1008)
    assert arch.detector.window_size.source.startswith("SAM3 ViT") and any("no ViT RoPE tables" in n for n in arch.notes)


def test_without_rope_tables_another_vit_is_refused(tiny_checkpoints):
    from litetext_convert.source.load import load_checkpoint

    tensors = {k: v for k, v in load_checkpoint(tiny_checkpoints["s0"]).tensors.items() if not k.endswith("attn.freqs_cis")}
    with pytest.raises(CheckpointError, match="no RoPE tables"):
        infer_architecture(tensors, "x_ctx16.pt", num_heads=2)
