"""Text parity: the converted folder (through from_pretrained) against the original side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import VARIANTS, heads, run_cli
from safetensors.torch import load_file, save_file

from litetext_convert.parity.text import PROMPT_CORPUS, ParityOptions, run_text_parity, tokenizer_equivalence
from litetext_convert.plan.prepare import prepare
from litetext_convert.synthetic import builder as synthetic
from litetext_convert.write.convert import convert


@pytest.fixture(scope="module")
def prepared(tiny_checkpoints):
    return {v: prepare(str(path), num_heads=heads(v)) for v, path in tiny_checkpoints.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_every_text_stage_agrees_to_1e_10(prepared, converted, variant):
    result = run_text_parity(prepared[variant], converted[variant], ParityOptions(dtype="float64"))
    assert result.passed
    assert result.original["kind"] == "clean-room"
    for stage in result.stages:
        assert stage.max_abs <= 1e-10, stage


@pytest.mark.parametrize("variant", VARIANTS)
def test_float32_is_exact_until_the_first_attention_layer(prepared, converted, variant):
    result = run_text_parity(prepared[variant], converted[variant], ParityOptions(dtype="float32"))
    assert result.passed
    exact_until = next(i for i, s in enumerate(result.stages) if "attention" in s.name)
    assert exact_until == (2 if variant == "s0" else 1)  # embeddings (+ the first RepMixer for S0)
    assert all(stage.max_abs == 0.0 for stage in result.stages[:exact_until])
    assert all(stage.max_abs <= 1e-5 for stage in result.stages[exact_until:])


def test_a_77_row_table_is_sliced_not_interpolated(prepared, converted):
    """The S0 fixture stores 77 rows with context 16. Sliced (ours) passes; left to transformers'
    interpolation (as its own converter does) the text features move by a large margin."""
    from transformers import Sam3LiteTextModel

    result = run_text_parity(prepared["s0"], converted["s0"], ParityOptions())
    assert result.passed and any("77 rows" in note for note in result.notes)
    model = Sam3LiteTextModel.from_pretrained(str(converted["s0"]))
    full = prepared["s0"].loaded.tensors["detector.backbone.language_backbone.encoder.positional_embedding.pos_embed.pos_embed"]
    ids = torch.tensor([[49406, *range(400, 414), 49407]])
    with torch.no_grad():
        sliced = model.get_text_features(input_ids=ids).pooler_output
        model.text_encoder.embeddings.position_embedding.position_embedding.data = full.clone()
        interpolated = model.get_text_features(input_ids=ids).pooler_output
    assert (sliced - interpolated).abs().max() > 0.1


def damaged_copy(folder: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    weights = load_file(str(copy / "model.safetensors"))
    edit(weights)
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    (copy / "parity_record.json").unlink(missing_ok=True)
    return copy


def test_an_altered_v_proj_fails_and_the_report_points_at_its_layer(converted, tiny_checkpoints, tmp_path, capsys):
    def nudge(weights):
        weights["text_encoder.layers.2.self_attn.v_proj.weight"][0, 0] += 0.05

    folder = damaged_copy(converted["s0"], tmp_path, nudge)
    args = ["parity", str(folder), "-c", str(tiny_checkpoints["s0"]), "--num-heads", "2", "--json"]
    code, out, err = run_cli(args, capsys)
    record = json.loads(out)  # --json: the record on stdout, failures included
    assert code == 1 and "first diverging stage text.layer.2" in err
    assert record["first_failure"] == "text.layer.2 (attention)"
    assert [s["passed"] for s in record["stages"][:3]] == [True, True, True]
    assert json.loads((folder / "parity" / "text-float32-default.json").read_text())["passed"] is False


def test_an_untransposed_projection_fails_only_the_pooled_output(converted, prepared, tmp_path):
    def untranspose(weights):
        weights["text_encoder.projection.weight"] = weights["text_encoder.projection.weight"].t().contiguous()

    result = run_text_parity(prepared["s1"], damaged_copy(converted["s1"], tmp_path, untranspose), ParityOptions())
    failed = [stage.name for stage in result.stages if not stage.passed]
    assert failed == ["text.pooled (CLIP-style)"]


def test_a_wrong_head_count_is_caught_on_a_released_shape(tmp_path, tokenizer_dir):
    """S0's text encoder at full width (8 heads upstream) beside a tiny detector: converting with
    --num-heads 4 gives a model that loads fine and computes something else."""
    path = synthetic.save_checkpoint(tmp_path / "s0text_ctx16.pt", synthetic.TEXT_PRESETS["s0"], synthetic.TINY_DETECTOR)
    right = prepare(str(path))
    assert right.arch.text.num_heads.value == 8
    convert(right, tmp_path / "right", tokenizer=str(tokenizer_dir))
    assert run_text_parity(right, tmp_path / "right", ParityOptions(batch=1)).passed
    wrong = prepare(str(path), num_heads=4)
    convert(wrong, tmp_path / "wrong", tokenizer=str(tokenizer_dir))
    result = run_text_parity(wrong, tmp_path / "wrong", ParityOptions(batch=1))
    assert not result.passed and result.first_failure.name == "text.layer.1 (attention)"
    assert result.original["num_heads"] == 8 and result.original["num_heads_source"] == "upstream variant builder"


def test_tokenizer_ids_are_equal_on_the_corpus(converted):
    report = tokenizer_equivalence(converted["s0"], 16, PROMPT_CORPUS)
    assert report["equal"], report["differences"]
    assert report["prompts"] == len(PROMPT_CORPUS) >= 10


def test_real_padded_prompts_show_what_the_attention_mask_does(prepared, converted):
    result = run_text_parity(prepared["s0"], converted["s0"], ParityOptions(prompts=["a cat", "the red car on the left"]))
    assert result.passed  # the faithful recipe reproduces upstream
    padded = result.padded_prompts
    assert padded["prompts_with_padding"] == 2
    assert padded["unmasked_vs_upstream_real_tokens_max_abs"] <= 1e-5
    assert padded["masked_vs_upstream_real_tokens_max_abs"] > 1e-2  # transformers' default masks the padding
