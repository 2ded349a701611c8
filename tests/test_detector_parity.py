"""Whole-detector parity on the tiny synthetic detector: the converted folder, loaded with
Sam3LiteTextModel.from_pretrained, against Meta's sam3 detector built at the same sizes from the
original keys (litetext_convert/reference/sam3_detector.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from litetext_convert.reference.sam3_detector import original_unavailable_reason
from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
from litetext_convert.synthetic import builder as synthetic

pytestmark = pytest.mark.skipif(original_unavailable_reason() is not None, reason=original_unavailable_reason() or "")

CONTEXT = 16
HEADS = synthetic.TINY_TEXT_PRESETS["s0"].heads  # tiny head_dim is not 64: pass the count
BOX = [(0.375, 0.5, 0.25, 0.125)]  # float32-exact: Meta rounds box coordinates to float32 before roi_align
DAMAGED_KEY = "detr_decoder.layers.2.mlp.fc1.weight"


def _converted(workdir: Path, scale: str) -> tuple[object, Path]:
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    checkpoint = synthetic.tiny_checkpoint(workdir / f"tiny_s0_ctx{CONTEXT}_{scale}.pt", "s0", CONTEXT, pos_rows=77, scale=scale)
    tokenizer = write_hf_clip_tokenizer(workdir / "detector_tokenizer", CONTEXT)
    prepared = prepare(str(checkpoint), num_heads=HEADS)
    folder = workdir / f"converted_{scale}"
    convert(prepared, folder, tokenizer=str(tokenizer), force=True)
    return prepared, folder


@pytest.fixture(scope="module")
def detector_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detector_parity")


@pytest.fixture(scope="module")
def converted(detector_workdir) -> dict[str, tuple[object, Path]]:
    return {scale: _converted(detector_workdir, scale) for scale in synthetic.SCALES}


def _parity(converted, scale: str = "default", **kwargs):
    from litetext_convert.parity.detector import run_detector_parity

    prepared, folder = converted[scale]
    return run_detector_parity(prepared, folder, **kwargs)


def _failures(result) -> str:
    return "; ".join(f"{s.name}: max_abs {s.max_abs:.3e} rel {s.max_rel:.3e} {s.note}" for s in result.stages if not s.passed)


@pytest.mark.parametrize("scale", synthetic.SCALES)
def test_float32_every_stage_within_tolerance(converted, scale):
    result = _parity(converted, scale, dtype="float32")
    assert result.passed, _failures(result)
    names = [stage.name for stage in result.stages]
    assert {"geometry.prompt", "prompt.tokens", "pred_logits", "pred_masks", "detr.decoder.layer3"} <= set(names)
    assert result.workarounds and result.original_name.startswith(("Meta sam3", "LiteText fork sam3"))


def test_float64_every_stage_within_1e_9_of_its_magnitude(converted):
    result = _parity(converted, dtype="float64")
    assert result.passed, _failures(result)
    assert all(stage.max_rel <= 1e-9 for stage in result.stages)


def test_float64_with_a_box_prompt(converted):
    result = _parity(converted, dtype="float64", boxes=BOX)
    assert result.passed, _failures(result)
    assert result.facts["geometry_tokens_original"][1] == 2  # the box and the CLS token
    assert result.naive_text_only == []


def test_naive_text_only_call_differs_at_the_prompt_stage(converted):
    result = _parity(converted, dtype="float32")
    naive = {stage.name: stage for stage in result.naive_text_only}
    assert naive["vision.fpn.0"].passed and naive["text.features"].passed  # same up to the prompt
    assert not naive["geometry.prompt"].passed and not naive["prompt.tokens"].passed
    assert result.facts["prompt_tokens_transformers_naive"][1] == result.facts["prompt_tokens_original"][1] - 1
    assert naive["pred_logits"].max_abs > 100 * naive["pred_logits"].atol


def test_the_masked_dummy_box_value_never_reaches_an_output(converted):
    """parity/recipes.py keeps one dummy box for every path: the box is masked, so any value gives the
    same transformers outputs bit for bit (here the whole image and the empty box the video path used)."""
    import torch

    from litetext_convert.parity.detector import load_converted, run_transformers, seeded_image, seeded_input_ids
    from litetext_convert.parity.recipes import MASKED_BOX_LABEL

    _, folder = converted["default"]
    model = load_converted(folder, torch.float32)
    config = model.config
    pixels = seeded_image(config.vision_config.backbone_config.image_size, 0)
    ids = seeded_input_ids(CONTEXT, config.text_config.vocab_size, 0)
    labels = torch.full((1, 1), MASKED_BOX_LABEL, dtype=torch.long)
    whole = run_transformers(model, pixels, ids, torch.tensor([[(0.5, 0.5, 1.0, 1.0)]]), labels).faithful
    empty = run_transformers(model, pixels, ids, torch.tensor([[(0.0, 0.0, 0.0, 0.0)]]), labels).faithful
    moved = run_transformers(model, pixels, ids, torch.tensor([[(0.375, 0.5, 0.25, 0.125)]]), torch.ones(1, 1, dtype=torch.long)).faithful
    assert whole.keys() == empty.keys() and all(torch.equal(whole[name], empty[name]) for name in whole)
    assert not torch.equal(whole["pred_logits"], moved["pred_logits"])  # a real (unmasked) box does change them


def test_every_original_key_is_loaded_or_ignored_with_a_reason(converted):
    result = _parity(converted, dtype="float32")
    prepared, _ = converted["default"]
    account = result.facts["original_keys"]
    assert account["loaded"] + sum(account["ignored"].values()) == len(prepared.loaded.tensors)
    assert "sliced from 77 to 16" in account["text_positional_note"]


def test_a_damaged_decoder_layer_fails_at_that_stage(converted, detector_workdir):
    from safetensors.torch import load_file, save_file

    prepared, folder = converted["default"]
    damaged = detector_workdir / "damaged"
    shutil.copytree(folder, damaged, dirs_exist_ok=True)
    weights = load_file(str(damaged / "model.safetensors"))
    weights[DAMAGED_KEY] = weights[DAMAGED_KEY] * 1.01  # a 1% error in one tensor
    save_file(weights, str(damaged / "model.safetensors"), metadata={"format": "pt"})

    from litetext_convert.parity.detector import run_detector_parity

    result = run_detector_parity(prepared, damaged, dtype="float32")
    first = result.first_failure()
    assert first is not None and first.name == "detr.decoder.layer2", _failures(result)
    assert all(stage.passed for stage in result.stages if stage.name.startswith(("vision.", "text.", "detr.encoder")))
