"""The ONNX target on tiny synthetic checkpoints: export and graph interface (both families), parity
against the original text encoder, planted defects caught where they are, each rung's exactness and
budget, bad input, and the torch-free example of docs/guide/onnx.md.

One export per family per session (the decoder's export is the slow part: tens of seconds)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ONNX_FAMILIES as FAMILIES, ONNX_RUNGS as RUNGS, onnx_heads as _heads
from litetext_convert.onnx import missing_runtime

pytestmark = pytest.mark.skipif(missing_runtime() is not None, reason=missing_runtime() or "")

CONTEXT = 16
DOCS = Path(__file__).resolve().parent.parent / "docs" / "guide" / "onnx.md"


def _copy(onnx_exports, tmp_path, family="sam3_litetext") -> tuple[Path, Path]:
    checkpoint, folder = onnx_exports[family]
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    return checkpoint, copy


def _parity(checkpoint: Path, folder: Path, scope: str = "text") -> dict:
    from litetext_convert.parity.run import ParityRequest
    from litetext_convert.workflows.prove import prove_folder

    return prove_folder(str(checkpoint), folder=folder, request=ParityRequest(scope=scope), num_heads=_heads())


def _stage(record: dict, prefix: str) -> dict:
    return next(s for s in record["stages"] if s["name"].startswith(prefix))


# ---------------------------------------------------------------------------------------------
# Export and interface


@pytest.mark.parametrize("family", FAMILIES)
def test_export_writes_three_graphs_named_in_graphs_json(onnx_exports, family):
    _, folder = onnx_exports[family]
    manifest = json.loads((folder / "onnx" / "graphs.json").read_text())
    assert set(manifest["graphs"]) == {"text_encoder", "vision_encoder", "detector_decoder"}
    assert manifest["context_length"] == CONTEXT and manifest["pad_id"] == 0
    text = manifest["graphs"]["text_encoder"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in text["inputs"]] == [("input_ids", "int64", ["batch", CONTEXT])]
    assert [o["name"] for o in text["outputs"]] == ["text_features", "pooled_output"]
    decoder = manifest["graphs"]["detector_decoder"]
    assert [(i["name"], i["dtype"]) for i in decoder["inputs"]][4:6] == [("text_features", "float32"), ("text_mask", "bool")]
    assert [o["name"] for o in decoder["outputs"]][:5] == ["pred_boxes", "pred_logits", "presence_logits", "pred_masks", "semantic_seg"]
    assert all(entry["meaning"] for graph in manifest["graphs"].values() for entry in graph["inputs"] + graph["outputs"])
    for rung in RUNGS[family]:
        assert all((folder / "onnx" / graph["files"][rung]).is_file() for graph in manifest["graphs"].values())
    record = json.loads((folder / "conversion_record.json").read_text())
    assert record["target"]["name"] == "onnx" and record["family"]["id"] == family
    assert not list(folder.glob("*.safetensors")), "the weights live in the graphs"
    assert {"config.json", "tokenizer.json", "processor_config.json", "README.md"} <= {p.name for p in folder.iterdir()}


def test_batch_is_dynamic_in_every_graph(onnx_exports):
    from litetext_convert.onnx.runtime import OnnxGraphs

    graphs = OnnxGraphs(onnx_exports["sam3_litetext"][1])
    size = graphs.manifest["image_size"]
    for batch in (1, 3):
        ids = np.zeros((batch, CONTEXT), dtype=np.int64)
        ids[:, :3] = [49406, 320, 49407]
        text = graphs.text(ids)
        vision = graphs.vision(np.zeros((batch, 3, size, size), dtype=np.float32))
        outputs = graphs.decoder(vision, text["text_features"], ids != 0)
        assert text["text_features"].shape[:2] == (batch, CONTEXT)
        assert outputs["pred_boxes"].shape[0] == batch and outputs["pred_boxes"].shape[-1] == 4


# ---------------------------------------------------------------------------------------------
# Parity


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_against_the_original_text_encoder_passes(onnx_exports, tmp_path, family):
    checkpoint, folder = _copy(onnx_exports, tmp_path, family)
    record = _parity(checkpoint, folder)
    assert record["passed"], [s for s in record["stages"] if not s["passed"]]
    assert record["target"] == "onnx" and record["onnx"]["exactness"]["checked"] > 50
    features = _stage(record, "onnx.text.features")
    assert features["max_abs"] <= 1e-5 and features["cosine"] > 0.999999
    assert (folder / "parity" / f"{record['key']}.json").is_file()
    assert "onnx" in record["original"]["name"].lower() or record["original"]  # the original's description


def test_a_transposed_projection_fails_exactness_and_the_text_stage(onnx_exports, tmp_path):
    import onnx
    from onnx import numpy_helper

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    path = folder / "onnx" / "text_encoder.onnx"
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if re.search(r"layers\.1\.self_attn\.q_proj\.weight", i.name))
    weight = numpy_helper.to_array(init)
    assert weight.shape[0] == weight.shape[1]
    init.CopyFrom(numpy_helper.from_array(weight.T.copy(), init.name))
    onnx.save(model, str(path))
    record = _parity(checkpoint, folder)
    failed = [s["name"] for s in record["stages"] if not s["passed"]]
    assert not record["passed"]
    assert failed[0].startswith("onnx.weights") and "onnx.text.features (detector-facing)" in failed
    mismatch = record["onnx"]["exactness"]["graphs"][0]["mismatches"][0]
    assert "q_proj" in mismatch["initializer"]


def test_a_text_graph_padded_with_49407_fails_at_the_text_features(onnx_exports, tmp_path):
    """The weights are intact (exactness passes); the graph treats padding as transformers' pad id."""
    import onnx
    from onnx import TensorProto, helper

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    path = folder / "onnx" / "text_encoder.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.input[:] = ["ids_padded_49407" if name == "input_ids" else name for name in node.input]
    replace = [
        helper.make_node("Constant", [], ["zero_id"], value=helper.make_tensor("z", TensorProto.INT64, [], [0])),
        helper.make_node("Constant", [], ["pad_49407"], value=helper.make_tensor("p", TensorProto.INT64, [], [49407])),
        helper.make_node("Equal", ["input_ids", "zero_id"], ["is_padding"]),
        helper.make_node("Where", ["is_padding", "pad_49407", "input_ids"], ["ids_padded_49407"]),
    ]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(replace + nodes)
    onnx.save(model, str(path))
    record = _parity(checkpoint, folder)
    assert _stage(record, "onnx.weights")["passed"]
    assert not _stage(record, "onnx.text.features")["passed"]
    assert record["first_failure"] == "onnx.text.features (detector-facing)"


def test_a_context_of_32_on_a_ctx16_model_is_refused_by_name(onnx_exports, tmp_path, cli):
    import onnx

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    path = folder / "onnx" / "text_encoder.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 32
    onnx.save(model, str(path))
    manifest_path = folder / "onnx" / "graphs.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["context_length"] = 32
    manifest["graphs"]["text_encoder"]["inputs"][0]["shape"] = ["batch", 32]
    manifest_path.write_text(json.dumps(manifest))
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads())
    assert code == 2 and "takes 32 tokens but the checkpoint's context is 16" in err
    assert not (folder / "parity").exists()


# ---------------------------------------------------------------------------------------------
# Rungs: exactness and budget


def test_every_rung_is_exact_and_within_its_budget(onnx_exports, tmp_path):
    checkpoint, folder = _copy(onnx_exports, tmp_path)
    record = _parity(checkpoint, folder)
    exactness = record["onnx"]["exactness"]
    assert exactness["passed"] and exactness["rungs"] == ["fp32", "fp16", "int8"]
    checked = {g["graph"]: g["checked"] for g in exactness["graphs"]}
    assert checked["text_encoder_int8.onnx"] > 0 and checked["vision_encoder_fp16.onnx"] > 0
    budgets = [s for s in record["stages"] if ".budget" in s["name"]]
    assert {s["name"].split(".")[0] for s in budgets} == {"fp16", "int8"} and all(s["passed"] for s in budgets)
    assert record["onnx"]["costs"]["int8"]["stages"][0]["cosine"] < 1.0  # int8 costs something, and it is measured


@pytest.mark.parametrize("graph, suffix", [("vision_encoder_fp16.onnx", "::fp16"), ("text_encoder_int8.onnx", "::T10_scale"),
                                           ("text_encoder.onnx", "layer_scale")])
def test_a_rung_weight_altered_after_export_fails_exactness(onnx_exports, tmp_path, graph, suffix):
    import onnx
    from onnx import numpy_helper

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    path = folder / "onnx" / graph
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name.endswith(suffix) and np.prod(i.dims) > 1)
    values = numpy_helper.to_array(init).copy()
    values.flat[0] = values.flat[0] * 2 + 1
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(path))
    record = _parity(checkpoint, folder)
    assert record["first_failure"] == "onnx.weights (exactness, every rung)"
    graphs = {g["graph"]: g for g in record["onnx"]["exactness"]["graphs"]}
    assert graphs[graph]["mismatches"][0]["initializer"].split("::")[0] == init.name.split("::")[0]


def test_a_rung_past_its_budget_fails(onnx_exports, tmp_path, monkeypatch):
    from litetext_convert.parity import onnx as onnx_parity

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    real = onnx_parity.budgets
    monkeypatch.setattr(onnx_parity, "budgets", lambda rung: {**real(rung), "cosine_min": {"text.features": 1.0}}
                        if rung == "int8" else real(rung))
    record = _parity(checkpoint, folder)
    assert record["first_failure"] == "int8.budget text.features cosine"


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_precision_rung_is_refused_before_anything_is_written(cli, tiny_checkpoints, tmp_path):
    out = tmp_path / "never"
    code, _, err = cli("convert", "-c", tiny_checkpoints["s0"], out, "--target", "onnx", "--precision", "fp32,fp8")
    assert code == 2 and "--precision 'fp32,fp8'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code, _, err = cli("convert", "-c", tiny_checkpoints["s0"], out, "--precision", "int8")
    assert code == 2 and "--target onnx" in err and not out.exists()


def test_missing_onnxruntime_is_one_line_naming_the_extra(cli, tiny_checkpoints, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    out = tmp_path / "never"
    code, _, err = cli("convert", "-c", tiny_checkpoints["s0"], out, "--target", "onnx", "--num-heads", _heads())
    assert code == 2 and '.[onnx]' in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_folder_without_graphs_json_is_not_an_onnx_export(tmp_path):
    from litetext_convert.errors import LitetextError
    from litetext_convert.onnx.runtime import OnnxGraphs

    (tmp_path / "onnx").mkdir()
    with pytest.raises(LitetextError, match="is not an ONNX export"):
        OnnxGraphs(tmp_path)


def test_a_truncated_graph_data_file_is_one_line_and_exit_2(onnx_exports, tmp_path, cli):
    import onnx

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    path = folder / "onnx" / "vision_encoder.onnx"
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, location=path.name + ".data")
    data = Path(str(path) + ".data")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    code, _, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads())
    assert code == 2 and "vision_encoder.onnx" in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_a_graph_input_renamed_after_export_is_refused(onnx_exports, tmp_path, cli):
    import onnx

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    path = folder / "onnx" / "detector_decoder.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.input[:] = ["mask" if name == "text_mask" else name for name in node.input]
    model.graph.input[5].name = "mask"
    onnx.save(model, str(path))
    code, _, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads())
    assert code == 2 and "mask bool" in err and "text_mask bool" in err


# ---------------------------------------------------------------------------------------------
# The torch-free example of docs/guide/onnx.md


def example_source() -> str:
    text = DOCS.read_text()
    section = text[text.index("## Without torch"):]
    return section[section.index("```python\n") + len("```python\n"): section.index("\n```", section.index("```python"))]


def test_the_torch_free_example_runs_without_torch_and_equals_parity_onnx_side(onnx_exports, tmp_path):
    from PIL import Image

    from litetext_convert.onnx.runtime import OnnxGraphs
    from litetext_convert.parity.detector import load_image
    from litetext_convert.parity.onnx import onnx_side

    _, folder = onnx_exports["sam3_litetext"]
    script = tmp_path / "segment.py"
    script.write_text(example_source())
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(image)
    saved = tmp_path / "out.npz"
    done = subprocess.run([sys.executable, str(script), str(folder), str(image), "a cat", str(saved)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # the script asserts "torch" not in sys.modules at its end
    assert "instances of 'a cat'" in done.stdout
    result = np.load(saved)
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(folder))(["a cat"], padding="max_length", max_length=CONTEXT,
                                                       truncation=True, return_tensors="np")["input_ids"]
    assert np.array_equal(result["input_ids"], ids)
    size = json.loads((folder / "onnx" / "graphs.json").read_text())["image_size"]
    pixels = load_image(image, size).numpy()
    assert np.array_equal(result["pixel_values"], pixels)
    reference = onnx_side(OnnxGraphs(folder), pixels, ids)
    assert np.array_equal(result["pred_boxes"], reference["pred_boxes_cxcywh"])
    for name in ("pred_logits", "presence_logits", "pred_masks", "semantic_seg"):
        assert np.array_equal(result[name], reference[name]), name


# ---------------------------------------------------------------------------------------------
# ROI align: the custom op's ONNX form against torchvision (the original environment)


def test_the_roi_align_in_the_graphs_equals_torchvision(tmp_path):
    """The geometry encoder's pooling as exported (ONNX RoiAlign, graphs.onnx_roi_align) against
    torchvision.ops.roi_align, the op transformers and Meta's detector call, on boxes of many sizes."""
    torchvision = pytest.importorskip("torchvision", reason="torchvision imports only in the original environment")
    import onnxruntime as ort
    import torch

    from litetext_convert.onnx import graphs

    class Pool(torch.nn.Module):
        def forward(self, features, rois):
            return torch.ops.litetext.roi_align(features, rois, 7)

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 18, 18, generator=generator)
    corners = torch.rand(12, 2, 2, generator=generator) * 18
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)  # x0, y0, x1, y1
    rois = torch.cat([torch.arange(12).remainder(2).float()[:, None], boxes], dim=1)
    rois[0, 1:] = torch.tensor([0.0, 0.0, 18.0, 18.0])  # the dummy box of a text-only prompt, whole image
    path = tmp_path / "roi_align.onnx"
    program = torch.onnx.export(Pool().eval(), (features, rois), dynamo=True, input_names=["features", "rois"],
                                custom_translation_table={torch.ops.litetext.roi_align.default: graphs.onnx_roi_align})
    program.save(str(path))
    ours = ort.InferenceSession(str(path)).run(None, {"features": features.numpy(), "rois": rois.numpy()})[0]
    theirs = torchvision.ops.roi_align(features, rois, 7).numpy()
    assert np.abs(ours - theirs).max() <= 1e-5


def test_the_parity_command_reports_an_onnx_folder(onnx_exports, tmp_path, cli):
    checkpoint, folder = _copy(onnx_exports, tmp_path)
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--json")
    record = json.loads(out)
    assert code == 0 and record["passed"] and record["target"] == "onnx", err
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--debug-intermediates")
    assert code == 0 and "onnx.text.features" in out
    assert "ONNX graphs" in (folder / "README.md").read_text()
