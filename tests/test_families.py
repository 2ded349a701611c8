"""Checkpoint families: recognition, refusals by name, coverage per family, the SAM3.1-LiteText fill of
the absent 0.5x neck level (and the proof that no output depends on it), aliases and their
rename survival, convert-all per family, records and card wording.

Key listings of real upstream files are data: configs/manifest/ (SAM3-LiteText S0, SAM3.1-LiteText
S0) and tests/data/ (EfficientSAM3 files, copied from the upstream builders' listings)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from litetext_convert.errors import CheckpointError
from litetext_convert.families import all_aliases, family_by_id, recognise
from litetext_convert.paths import configs_dir
from litetext_convert.plan import ops
from litetext_convert.plan.hf_config import build_config, meta_model_tensors
from litetext_convert.plan.infer import infer_architecture
from litetext_convert.plan.mapping import build_plan, load_table
from litetext_convert.synthetic import builder as synthetic
from litetext_convert.synthetic.parts import layout_from_tsv
from litetext_convert.synthetic import sam31

DATA = Path(__file__).parent / "data"
TEXT = "detector.backbone.language_backbone."
HEADS = synthetic.TINY_TEXT_PRESETS["s0"].heads
FPN_05X = [f"vision_encoder.neck.fpn_layers.3.{conv}.{p}" for conv in ("proj1", "proj2") for p in ("weight", "bias")]


def as_meta(layout) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, dtype=dtype, device="meta") for key, (shape, dtype) in layout.items()}


def manifest(name: str, folder: Path | None = None) -> dict[str, torch.Tensor]:
    return as_meta(layout_from_tsv(((folder or configs_dir() / "manifest") / name).read_text()))


def sam31_full(variant: str = "s0", rows: int = 16) -> dict[str, torch.Tensor]:
    text = dataclasses.replace(synthetic.TEXT_PRESETS[variant], pos_rows=rows)
    return as_meta(sam31.upstream_layout(text, synthetic.FULL_DETECTOR))


def sam3_clip_text() -> dict[str, torch.Tensor]:
    """SAM3's own CLIP text tower, as the EfficientSAM3 Stage-1 image-encoder-only file carries it."""
    keys = manifest("upstream_keys_efficientsam3_repvit_m_image_only.tsv", DATA)
    return {k: v for k, v in keys.items() if k.startswith(TEXT)}


def with_clip_text(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**{k: v for k, v in tensors.items() if not k.startswith(TEXT)}, **sam3_clip_text()}


# ----------------------------------------------------------------------------------------------
# Recognition and refusals


def test_the_real_layouts_are_recognised_as_their_family():
    assert recognise(list(manifest("upstream_keys_s0_full.tsv")), "x.pt").id == "sam3_litetext"
    assert recognise(list(manifest("upstream_keys_sam31_s0_full.tsv")), "x.pt").id == "sam3p1_litetext"
    tiny31 = sam31.upstream_layout(synthetic.tiny_text("s1", 32), synthetic.TINY_DETECTOR)
    assert recognise(list(tiny31), "x.pt").id == "sam3p1_litetext"


def test_the_builder_writes_the_real_sam31_layout_exactly():
    """Keys, order, shapes, dtypes. (The tracker part is read from that listing; the detector and
    text parts are generated, so this checks them.)"""
    text = dataclasses.replace(synthetic.TEXT_PRESETS["s0"], pos_rows=16)
    built = sam31.upstream_layout(text, synthetic.FULL_DETECTOR)
    real = layout_from_tsv((configs_dir() / "manifest" / "upstream_keys_sam31_s0_full.tsv").read_text())
    assert list(built.items()) == list(real.items())


def test_sam31_detector_keys_are_sam3s():
    sam3 = manifest("upstream_keys_s0_full.tsv")
    sam31_keys = manifest("upstream_keys_sam31_s0_full.tsv")
    shared = [k for k in sam3 if k in sam31_keys and sam3[k].shape == sam31_keys[k].shape]
    assert len(shared) == 945  # the count: everything but the text table's rows (77 vs 16)
    assert {k for k in sam3 if k.startswith("detector.") and k not in sam31_keys} == {
        *(f"detector.backbone.vision_backbone.convs.3.{c}.{p}" for c in ("conv_1x1", "conv_3x3") for p in ("weight", "bias")),
        *(k for k in sam3 if ".sam2_convs." in k),
    }


def refusal(tensors: dict[str, torch.Tensor]) -> str:
    with pytest.raises(CheckpointError) as caught:
        recognise(list(tensors), "file.pt")
    return caught.value.one_line()


def test_plain_sam31_is_refused_as_sam31_with_what_to_do():
    message = refusal(with_clip_text(manifest("upstream_keys_sam31_s0_full.tsv")))
    assert "plain SAM 3.1 checkpoint" in message and "plain SAM3 checkpoint" not in message
    assert "sam3p1_s0_ctx16" in message and "Meta's sam3" in message


def test_stage1_image_encoder_only_file_is_not_called_plain_sam3():
    message = refusal(manifest("upstream_keys_efficientsam3_repvit_m_image_only.tsv", DATA))
    assert "EfficientSAM3 Stage-1 image-encoder-only" in message
    assert "Sam3Model converter" not in message


def test_efficientsam3_student_vision_and_plain_sam3_keep_their_names():
    assert "student vision trunk" in refusal(manifest("upstream_keys_efficientsam3_repvit_m_s0_ctx16.tsv", DATA))
    assert "plain SAM3 checkpoint" in refusal(with_clip_text(manifest("upstream_keys_s0_full.tsv")))


# ----------------------------------------------------------------------------------------------
# Coverage per family


def full_plan(tensors: dict[str, torch.Tensor]):
    arch = infer_architecture(tensors, "efficient_sam3p1_litetext_mobileclip_s0_ctx16.pt")
    expected = meta_model_tensors(build_config(arch))
    table = load_table(arch.family.table_paths("image"))
    return build_plan(table, tensors, expected, ops.OpContext(arch.context_length)), expected, arch


@pytest.mark.parametrize("variant", ["s0", "s1", "l"])
@pytest.mark.parametrize("size", ["tiny", "full"])
def test_sam31_coverage_is_total_and_injective(variant, size):
    if size == "full":
        tensors = sam31_full(variant)
    else:
        tensors = as_meta(sam31.upstream_layout(synthetic.tiny_text(variant, 16), synthetic.TINY_DETECTOR))
    plan, expected, arch = full_plan(tensors) if size == "full" else _tiny_plan(tensors)
    assert arch.family.name == "SAM3.1-LiteText"
    mapped = {step.source for step in plan.steps}
    assert mapped.isdisjoint(plan.dropped) and mapped | set(plan.dropped) == set(tensors)  # total
    targets = [t for step in plan.steps for t in step.targets]
    assert len(targets) == len(set(targets))  # injective
    assert sorted(plan.filled) == sorted(FPN_05X)  # the only targets without a source
    assert set(targets) | set(plan.filled) == set(expected) and set(targets).isdisjoint(plan.filled)
    assert all(fill.fill == "zeros" and "0.5x" in fill.reason for fill in plan.filled.values())


def _tiny_plan(tensors):
    arch = infer_architecture(tensors, "tiny_ctx16.pt", num_heads=HEADS)
    expected = meta_model_tensors(build_config(arch))
    table = load_table(arch.family.table_paths("image"))
    return build_plan(table, tensors, expected, ops.OpContext(arch.context_length)), expected, arch


def test_sam31_drops_are_the_tracker_and_its_necks():
    plan, _, _ = full_plan(manifest("upstream_keys_sam31_s0_full.tsv"))
    counts = sorted(plan.drops_by_reason().values())
    assert counts == [6, 18, 18, 32, 457]  # points_*, interactive_convs, propagation_convs, RoPE, tracker.model
    assert plan.mapped_sources == 1439 - sum(counts)


def test_sam31_video_target_is_declared_unsupported_with_a_reason():
    family = family_by_id("sam3p1_litetext")
    with pytest.raises(CheckpointError, match="Object Multiplex"):
        family.table_paths("video")


# ----------------------------------------------------------------------------------------------
# Conversion, text parity, fill independence


@pytest.fixture(scope="module")
def sam31_converted(tmp_path_factory, tokenizer_dir):
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    folder = tmp_path_factory.mktemp("sam31")
    checkpoint = synthetic.tiny_checkpoint(folder / "tiny_sam3p1_mobileclip_s0_ctx16.pt", "s0", 16,
                                           family="sam3p1_litetext")
    prepared = prepare(str(checkpoint), num_heads=HEADS)
    converted = folder / "converted"
    result = convert(prepared, converted, tokenizer=str(tokenizer_dir), verify_load=True)
    # Both fills are written the same way: re-saving alone moves float32 pred_logits by ~6e-7
    # (the tensors' alignment in the file changes a float32 kernel's rounding; float64 is exact).
    zeros = refilled(converted, folder / "fill_zeros", random=False)
    random_fill = refilled(converted, folder / "fill_random", random=True)
    return prepared, converted, zeros, random_fill, result


def refilled(folder: Path, copy: Path, *, random: bool) -> Path:
    """A copy of the conversion with the 0.5x level filled with zeros or seeded random values."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, copy)
    weights = load_file(str(copy / "model.safetensors"))
    generator = torch.Generator().manual_seed(7)
    for name in FPN_05X:
        shape = weights[name].shape
        weights[name] = torch.randn(shape, generator=generator) if random else torch.zeros(shape)
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})
    return copy


def test_sam31_converts_and_reloads_with_no_missing_keys(sam31_converted):
    _, folder, _, _, result = sam31_converted
    record = result.record
    assert record["family"] == {"id": "sam3p1_litetext", "name": "SAM3.1-LiteText", "hf_model_class": "Sam3LiteTextModel"}
    assert sum(record["keys"]["filled"].values()) == 4 and record["keys"]["missing"] == 0
    assert [t["file"] for t in record["mapping_tables"]] == ["mapping.toml", "families/sam3p1_litetext/mapping_image.toml"]
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    assert all(torch.count_nonzero(weights[name]) == 0 for name in FPN_05X)


def test_sam31_text_parity(sam31_converted):
    from litetext_convert.parity.text import ParityOptions, run_text_parity

    prepared, folder, _, _, _ = sam31_converted
    for dtype in ("float32", "float64"):
        result = run_text_parity(prepared, folder, ParityOptions(dtype=dtype))
        assert result.passed, dtype


def test_the_05x_fill_reaches_no_output(sam31_converted):
    """Two different fills of the level SAM3.1 lacks: every output of the detector is bit-identical.
    (A text-only call: the core environment has no torchvision for the box path; the faithful call
    with a box runs in test_whole_detector_parity_is_identical_for_two_fills.)"""
    from litetext_convert.parity.detector import (
        load_converted,
        seeded_image,
        seeded_input_ids,
    )

    _, _, zeros, random_fill, _ = sam31_converted
    pixels = seeded_image(synthetic.TINY_DETECTOR.image_size, 0)
    ids = seeded_input_ids(16, synthetic.CLIP_VOCAB, 0)
    outputs = []
    for folder in (zeros, random_fill):
        model = load_converted(folder, torch.float32)
        with torch.no_grad():
            result = model(pixel_values=pixels, input_ids=ids, attention_mask=(ids != 0).long())
        outputs.append({k: v for k, v in result.items() if isinstance(v, torch.Tensor)})
    assert outputs[0].keys() == outputs[1].keys() and {"pred_masks", "pred_boxes", "pred_logits"} <= outputs[0].keys()
    for name, value in outputs[0].items():
        assert torch.equal(value, outputs[1][name]), name


def original_missing() -> str | None:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    return original_unavailable_reason()


@pytest.mark.skipif(original_missing() is not None, reason=original_missing() or "")
def test_whole_detector_parity_is_identical_for_two_fills(sam31_converted):
    """Against Meta's SAM3 image model built as upstream builds it for these files (4-level neck, the
    0.5x level at its init): float64 parity passes for both fills with identical differences."""
    from litetext_convert.parity.detector import run_detector_parity

    prepared, _, zeros, random_fill, _ = sam31_converted
    results = [run_detector_parity(prepared, folder, dtype="float64") for folder in (zeros, random_fill)]
    for result in results:
        assert result.passed, [s.name for s in result.stages if not s.passed]
        account = result.facts["original_keys"]
        assert sum(account["left_at_init"].values()) == 4
        assert account["loaded"] + sum(account["ignored"].values()) == len(prepared.loaded.tensors)
    assert [(s.name, s.max_abs) for s in results[0].stages] == [(s.name, s.max_abs) for s in results[1].stages]


# ----------------------------------------------------------------------------------------------
# Aliases, rename survival, convert-all per family


def test_aliases_name_the_published_files():
    aliases = {alias: path for alias, (_, path) in all_aliases().items()}
    assert aliases["s0_ctx32"] == "sam3_litetext/sam3_litetext_mobileclip_s0_ctx32.pt"
    assert aliases["l_ctx16"] == "sam3_litetext/sam3_litetext_mobileclip2_l_ctx16.pt"
    assert aliases["sam3p1_l_ctx32"] == "sam3p1_litetext/efficient_sam3p1_litetext_mobileclip_l_ctx32.pt"
    assert len(aliases) == 12 and sum(a.startswith("sam3p1_") for a in aliases) == 6
    for alias, (family, path) in all_aliases().items():
        variant, context = family.file_identity(Path(path).name)
        assert alias.endswith(f"{variant}_ctx{context}")


def test_a_family_never_claims_another_familys_file():
    sam3, sam31_family = family_by_id("sam3_litetext"), family_by_id("sam3p1_litetext")
    assert sam3.file_identity("efficient_sam3p1_litetext_mobileclip_s0_ctx16.pt") is None
    assert sam3.file_identity("efficient_sam3_image_encoder_mobileclip2_l_ctx16.pt") == ("l", 16)
    assert sam31_family.file_identity("efficient_sam3p1_repvit_m_mobileclip_s0_ctx16.pt") is None


def fake_hub(monkeypatch, files: list[str], served: Path, requested: list[str]):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    def download(repo_id, filename, revision=None, **kwargs):
        requested.append(filename)
        if filename not in files:
            raise EntryNotFoundError(f"{filename} not found")
        return str(served)

    from litetext_convert import hub

    monkeypatch.setattr(hub, "cache_only_if_unreachable", lambda: True)  # the fake answers; no probe of the network
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, revision=None, **kw: list(files))


def test_an_alias_survives_a_rename_and_says_so(monkeypatch, tmp_path):
    from litetext_convert.source.resolve import resolve

    served = tmp_path / "file.pt"
    served.write_bytes(b"x")
    renamed = "sam3_litetext/efficient_sam3_image_encoder_mobileclip_s1_ctx16.pt"
    files = [renamed, "sam3_litetext/efficient_sam3_image_encoder_mobileclip_s0_ctx16.pt",
             "sam3p1_litetext/efficient_sam3p1_litetext_mobileclip_s1_ctx16.pt"]
    requested: list[str] = []
    fake_hub(monkeypatch, files, served, requested)
    resolved = resolve("s1_ctx16")
    assert resolved.filename == renamed and requested == ["sam3_litetext/sam3_litetext_mobileclip_s1_ctx16.pt", renamed]
    assert "using " + renamed in resolved.notice and resolved.to_json()["notice"] == resolved.notice


def test_an_alias_with_no_file_of_its_variant_is_one_clear_error(monkeypatch, tmp_path):
    from litetext_convert.source.resolve import resolve

    fake_hub(monkeypatch, ["sam3p1_litetext/efficient_sam3p1_litetext_mobileclip_s0_ctx16.pt"], tmp_path, [])
    with pytest.raises(CheckpointError, match="no SAM3.1-LiteText file for l ctx32"):
        resolve("sam3p1_l_ctx32")


def test_offline_an_alias_uses_the_table_and_says_why_it_cannot(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("offline")

    def never(*args, **kwargs):
        raise AssertionError("no listing offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", never)
    from litetext_convert.source.resolve import resolve

    with pytest.raises(CheckpointError) as caught:
        resolve("sam3p1_s0_ctx16")
    line = caught.value.one_line()
    assert "sam3p1_litetext/efficient_sam3p1_litetext_mobileclip_s0_ctx16.pt@main is not in the Hugging Face cache" in line


def test_convert_all_lists_every_family_or_the_one_asked(monkeypatch, tmp_path):
    from litetext_convert.convert_all import list_checkpoints

    files = ["sam3_litetext/sam3_litetext_mobileclip_s0_ctx16.pt", "sam3p1_litetext/efficient_sam3p1_litetext_mobileclip_l_ctx16.pt",
             "stage1_sam3p1/efficient_sam3p1_repvit_m_mobileclip_s0_ctx16.pt", "README.md"]
    fake_hub(monkeypatch, files, tmp_path, [])
    assert [name for name, _ in list_checkpoints(None, None, None)] == [
        "sam3_litetext_mobileclip_s0_ctx16.pt", "efficient_sam3p1_litetext_mobileclip_l_ctx16.pt"]
    assert [name for name, _ in list_checkpoints(None, None, None, "sam3p1_litetext")] == [
        "efficient_sam3p1_litetext_mobileclip_l_ctx16.pt"]
    with pytest.raises(CheckpointError, match="unknown family"):
        list_checkpoints(None, None, None, "sam4")


# ----------------------------------------------------------------------------------------------
# What the user sees: inspect, the card


def test_inspect_names_the_family(sam31_converted, capsys):
    prepared = sam31_converted[0]
    code, out, _ = run_cli(["inspect", "-c", str(prepared.resolved.path), "--num-heads", str(HEADS)], capsys)
    assert code == 0 and "family: SAM3.1-LiteText" in out and "filled" in out and "Missing: 0" in out


def test_card_and_default_repo_name_the_family(sam31_converted):
    from litetext_convert.publish.model_card import load_records, render_model_card
    from litetext_convert.publish.push import default_repo_id

    folder = sam31_converted[1]
    records = load_records(folder)
    assert default_repo_id("me", records) == "me/sam3p1-litetext-custom-ctx16"  # tiny shapes are no released variant
    card = render_model_card(folder, repo_id="me/x", allow_unverified=True)
    assert "# SAM3.1-LiteText CUSTOM (text context 16)" in card and "sam3.1" in card
