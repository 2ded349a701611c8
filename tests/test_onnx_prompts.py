"""Box prompts in the ONNX decoder graph, and `parity FOLDER --prompt/--box/--plot` on an ONNX folder.

Core environment: the box inputs as graphs.json names them, a dynamic box count, padding boxes that
change nothing, the text-only default, --prompt through both tokenizers. Original environment
(torchvision, Meta's sam3, matplotlib): onnxruntime with real boxes against transformers' model and
against Meta's detector, and the --plot pictures. The export is conftest's (one per session)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import onnx_heads as _heads
from litetext_convert.onnx import missing_runtime

pytestmark = pytest.mark.skipif(missing_runtime() is not None, reason=missing_runtime() or "")

CONTEXT = 16
BOXES = [[0.40, 0.45, 0.30, 0.50], [0.70, 0.30, 0.20, 0.25]]  # cx, cy, w, h normalised


def _copy(onnx_exports, tmp_path) -> tuple[Path, Path]:
    checkpoint, folder = onnx_exports["sam3_litetext"]
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    return checkpoint, copy


def _graphs(onnx_exports):
    from litetext_convert.onnx.runtime import OnnxGraphs

    return OnnxGraphs(onnx_exports["sam3_litetext"][1])


def _inputs(graphs, batch: int, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Vision outputs, text features and ids of `batch` seeded images and a short prompt."""
    size = graphs.manifest["image_size"]
    pixels = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    ids = np.zeros((batch, CONTEXT), dtype=np.int64)
    ids[:, :4] = [49406, 320, 1929, 49407]
    return graphs.vision(pixels), graphs.text(ids)["text_features"], ids


def _max_difference(first: dict, second: dict) -> float:
    return max(float(np.abs(first[name] - second[name]).max()) for name in first)


# ---------------------------------------------------------------------------------------------
# The graph's box inputs (core environment)


def test_graphs_json_describes_the_box_inputs_and_the_text_only_boxes(onnx_exports):
    from litetext_convert.parity.recipes import DUMMY_BOX, MASKED_BOX_LABEL

    manifest = json.loads((onnx_exports["sam3_litetext"][1] / "onnx" / "graphs.json").read_text())
    inputs = {i["name"]: i for i in manifest["graphs"]["detector_decoder"]["inputs"]}
    assert (inputs["input_boxes"]["dtype"], inputs["input_boxes"]["shape"]) == ("float32", ["batch", "boxes", 4])
    assert (inputs["input_boxes_labels"]["dtype"], inputs["input_boxes_labels"]["shape"]) == ("int64", ["batch", "boxes"])
    assert "cx, cy, w, h" in inputs["input_boxes"]["meaning"]
    assert all(word in inputs["input_boxes_labels"]["meaning"] for word in ("1 positive", "0 negative", "-10 padding"))
    text_only = manifest["text_only_boxes"]
    assert text_only["input_boxes"] == [[list(DUMMY_BOX)]] and text_only["input_boxes_labels"] == [[MASKED_BOX_LABEL]]


def test_without_boxes_the_decoder_gets_the_masked_dummy_box_of_graphs_json(onnx_exports):
    graphs = _graphs(onnx_exports)
    vision, features, ids = _inputs(graphs, 2)
    text_only = graphs.manifest["text_only_boxes"]
    explicit = graphs.decoder(vision, features, ids != 0, np.repeat(np.asarray(text_only["input_boxes"]), 2, axis=0),
                              np.repeat(np.asarray(text_only["input_boxes_labels"]), 2, axis=0))
    assert _max_difference(graphs.decoder(vision, features, ids != 0), explicit) == 0.0


@pytest.mark.parametrize("batch", [1, 2])
def test_the_box_count_is_dynamic_and_padding_boxes_change_nothing(onnx_exports, batch):
    """1, 2 and 4 boxes per image (the graph was traced with 3); a padding box (-10) appended to real
    ones leaves every output as it was; real boxes do change the detections (they reach the graph)."""
    graphs = _graphs(onnx_exports)
    vision, features, ids = _inputs(graphs, batch)
    text_only = graphs.decoder(vision, features, ids != 0)
    generator = np.random.default_rng(1)
    for count in (1, 2, 4):
        boxes = np.concatenate([generator.uniform(0.3, 0.6, (batch, count, 2)), generator.uniform(0.1, 0.4, (batch, count, 2))], axis=2)
        labels = generator.integers(0, 2, (batch, count))
        prompted = graphs.decoder(vision, features, ids != 0, boxes, labels)
        assert prompted["pred_boxes"].shape == text_only["pred_boxes"].shape
        padded = graphs.decoder(vision, features, ids != 0, np.concatenate([boxes, np.full((batch, 1, 4), 0.5)], axis=1),
                                np.concatenate([labels, np.full((batch, 1), -10)], axis=1))
        assert _max_difference(prompted, padded) <= 1e-6, count
        assert float(np.abs(prompted["pred_logits"] - text_only["pred_logits"]).max()) > 1e-3, count


def test_each_image_gets_its_own_boxes(onnx_exports):
    """Rows of a batch with different boxes (and a row padded to the common count) equal each row alone."""
    graphs = _graphs(onnx_exports)
    vision, features, ids = _inputs(graphs, 2)
    boxes = np.array([[BOXES[0], BOXES[1]], [BOXES[1], [0.5, 0.5, 1.0, 1.0]]], dtype=np.float32)
    labels = np.array([[1, 0], [1, -10]])
    both = graphs.decoder(vision, features, ids != 0, boxes, labels)
    for row, count in ((0, 2), (1, 1)):
        alone = graphs.decoder({name: value[row:row + 1] for name, value in vision.items()}, features[row:row + 1],
                               ids[row:row + 1] != 0, boxes[row:row + 1, :count], labels[row:row + 1, :count])
        assert _max_difference(alone, {name: value[row:row + 1] for name, value in both.items()}) <= 1e-5, row


def test_the_cards_usage_snippet_runs_on_an_export(onnx_exports, tmp_path):
    """The card's example (text only: it passes graphs.json's dummy box) runs as published, the Hub
    download replaced by the local export (a stub huggingface_hub first on the path)."""
    import subprocess
    import sys

    from PIL import Image

    from litetext_convert.targets import target

    _, folder = onnx_exports["sam3_litetext"]
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "huggingface_hub.py").write_text(f"def snapshot_download(*args, **kwargs):\n    return {str(folder)!r}\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(tmp_path / "image.jpg")
    (tmp_path / "usage.py").write_text(target("onnx").usage_snippet("alice/tiny-onnx"))
    done = subprocess.run([sys.executable, "usage.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path / "stub"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "instances" in done.stdout, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# The CLI on an ONNX folder (core environment)


def test_parity_with_prompts_compares_both_tokenizers_and_text_encoders(onnx_exports, tmp_path, cli):
    from transformers import AutoTokenizer

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    prompts = ["a cat", "two dogs on a very long sofa in the afternoon sun"]
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--json",
                         "--prompt", prompts[0], "--prompt", prompts[1])
    record = json.loads(out)
    assert code == 0 and record["passed"], err
    assert record["tokenizer"]["equal"] and record["tokenizer"]["prompts"] == 2
    ids = AutoTokenizer.from_pretrained(str(folder))(prompts, padding="max_length", max_length=CONTEXT, truncation=True)
    assert record["inputs"]["prompts"] == prompts and record["inputs"]["prompt_ids"] == ids["input_ids"]
    rows = {s["name"]: s for s in record["stages"] if s["name"].startswith("onnx.prompts.text.")}
    assert len(rows) == 2 and all(row["passed"] and 0 < row["max_abs"] <= 1e-5 for row in rows.values())
    assert record["prompt_set"].startswith("prompts-")


def test_a_box_without_the_detector_scope_is_one_line(onnx_exports, tmp_path, cli):
    checkpoint, folder = _copy(onnx_exports, tmp_path)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    code, _, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--box", "0.5,0.5,0.2,0.2")
    assert code == 2 and "--scope detector" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_plot_without_matplotlib_is_one_line_naming_the_extra(onnx_exports, tmp_path, cli, monkeypatch):
    import importlib.util

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, _, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--plot", tmp_path / "out.png")
    assert code == 2 and "matplotlib" in err and "[plot]" in err and not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------------------------------------
# Against transformers and Meta's detector, and the pictures (original environment)


def test_a_box_prompt_in_onnxruntime_equals_the_transformers_model(onnx_exports, tokenizer_dir, tmp_path):
    """transformers' Sam3LiteTextModel (torchvision's roi_align) with the same boxes and labels
    (positive, negative, padding), converted from the same checkpoint, at the detector's float32 tolerances."""
    pytest.importorskip("torchvision", reason="transformers' geometry encoder needs torchvision (the original environment)")
    import torch

    from litetext_convert.onnx.export import load_eager_model
    from litetext_convert.parity.detector import compare_stages
    from litetext_convert.parity.onnx import cxcywh_to_xyxy
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    checkpoint, _ = onnx_exports["sam3_litetext"]
    image = convert(prepare(str(checkpoint), num_heads=_heads()), tmp_path / "image", tokenizer=str(tokenizer_dir), dtype="float32")
    model = load_eager_model(image.folder)
    graphs = _graphs(onnx_exports)
    size = graphs.manifest["image_size"]
    pixels = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    ids = np.zeros((2, CONTEXT), dtype=np.int64)
    ids[:, :4] = [49406, 320, 1929, 49407]
    boxes = np.array([[BOXES[0], BOXES[1], [0.5, 0.5, 1.0, 1.0]], [BOXES[1], BOXES[0], BOXES[0]]], dtype=np.float32)
    labels = np.array([[1, 0, -10], [1, 1, 0]])
    ours = graphs.decoder(graphs.vision(pixels), graphs.text(ids)["text_features"], ids != 0, boxes, labels)
    with torch.no_grad():
        text = model.get_text_features(input_ids=torch.from_numpy(ids), return_dict=True)
        theirs = model(pixel_values=torch.from_numpy(pixels), text_embeds=text, attention_mask=torch.from_numpy(ids != 0),
                       input_boxes=torch.from_numpy(boxes), input_boxes_labels=torch.from_numpy(labels))
    names = ("pred_logits", "presence_logits", "pred_masks", "semantic_seg")
    reference = {"pred_boxes": theirs.pred_boxes, **{name: getattr(theirs, name) for name in names}}
    candidate = {"pred_boxes": torch.from_numpy(cxcywh_to_xyxy(ours["pred_boxes"])), **{n: torch.from_numpy(ours[n]) for n in names}}
    rows = compare_stages(reference, candidate, "float32")
    assert all(row.passed for row in rows), [(row.name, row.max_abs) for row in rows]


def _needs_meta() -> None:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        pytest.skip(reason)


def test_box_parity_against_metas_detector_passes_and_a_dropped_box_fails(onnx_exports, tmp_path, cli, monkeypatch):
    """`parity FOLDER --scope detector --box ...`: Meta's detector and the graphs on the same boxes;
    the ONNX side given no boxes (the text-only prompt) while Meta's gets them fails the detector."""
    _needs_meta()
    from litetext_convert.parity import onnx as onnx_parity

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    boxes = [",".join(map(str, box)) for box in BOXES]
    args = ["parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--scope", "detector", "--json",
            "--box", boxes[0], "--box", boxes[1]]
    code, out, err = cli(*args)
    record = json.loads(out)
    assert code == 0 and record["passed"] and record["detector"]["passed"], err
    assert record["detector"]["facts"]["boxes"] == BOXES
    masks = next(s for s in record["detector"]["stages"] if s["name"] == "pred_masks")
    assert masks["passed"] and masks["max_abs"] > 0

    side = onnx_parity.onnx_side
    monkeypatch.setattr(onnx_parity, "onnx_side", lambda graphs, pixels, ids, boxes=None, labels=None: side(graphs, pixels, ids))
    code, out, _ = cli(*args)
    assert code == 1 and not json.loads(out)["detector"]["passed"]


@pytest.mark.parametrize("scope", ["text", "detector"])
def test_plot_on_an_onnx_folder_draws_the_stages_and_the_detector(onnx_exports, tmp_path, cli, scope):
    pytest.importorskip("matplotlib", reason="the plot extra")
    if scope == "detector":
        _needs_meta()
    from PIL import Image

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    plot = tmp_path / "parity.png"
    extra = ["--scope", "detector", "--box", "0.4,0.45,0.3,0.5"] if scope == "detector" else []
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--json", "--plot", plot, *extra)
    record = json.loads(out)
    assert code == 0 and record["plot"] == str(plot), err
    width, height = Image.open(plot).size
    assert width > 500 and height > (1000 if scope == "detector" else 300)  # the detector adds two rows
    assert "_detector_outputs" not in json.loads((folder / "parity" / f"{record['key']}.json").read_text())
