"""`parity FOLDER --debug-intermediates` on an ONNX folder: debug graphs re-exported from the
checkpoint give the per-layer rows of the transformers folder's report, row for row, against the
original; a defect planted in the debug export's source is named at its layer; the folder's graphs
are never touched and the temporary folder never outlives the run.

Each test re-exports the debug text graph (tens of seconds); the detector test, which also exports the
debug decoder (minutes), needs Meta's sam3 (the original environment)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import onnx_heads as _heads
from litetext_convert.onnx import missing_runtime

pytestmark = pytest.mark.skipif(missing_runtime() is not None, reason=missing_runtime() or "")


def _copy(onnx_exports, tmp_path) -> tuple[Path, Path]:
    checkpoint, folder = onnx_exports["sam3_litetext"]
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    return checkpoint, copy


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "onnx").iterdir())}


def _scratch_left() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("litetext-onnx-debug-*"))


def _debug_parity(checkpoint: Path, folder: Path, scope: str = "text") -> dict:
    from litetext_convert.parity.run import ParityRequest
    from litetext_convert.workflows.prove import prove_folder

    request = ParityRequest(scope=scope, debug_intermediates=True)
    return prove_folder(str(checkpoint), folder=folder, request=request, num_heads=_heads())


def _transformers_record(checkpoint: Path, tmp_path: Path, tokenizer_dir: Path, scope: str = "text") -> dict:
    """The transformers folder's parity record on the same checkpoint: the rows its report shows."""
    from litetext_convert.parity.run import ParityRequest
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.workflows.prove import prove_folder
    from litetext_convert.write.convert import convert

    folder = tmp_path / "transformers"
    convert(prepare(str(checkpoint), num_heads=_heads()), folder, tokenizer=str(tokenizer_dir))
    return prove_folder(str(checkpoint), folder=folder, request=ParityRequest(scope=scope), num_heads=_heads())


def _names(stages: list[dict]) -> list[str]:
    return [stage["name"] for stage in stages]


def test_debug_rows_are_the_transformers_reports_rows_and_pass(onnx_exports, tmp_path, tokenizer_dir):
    checkpoint, folder = _copy(onnx_exports, tmp_path)
    before, left_before = _digests(folder), _scratch_left()
    record = _debug_parity(checkpoint, folder)
    debug = record["onnx"]["debug"]
    transformers = _transformers_record(checkpoint, tmp_path, tokenizer_dir)
    assert _names(debug["text"]["stages"]) == _names(transformers["stages"])
    assert any(name.startswith("text.layer.") for name in _names(debug["text"]["stages"]))
    assert debug["passed"] and record["passed"], [s for s in debug["text"]["stages"] if not s["passed"]]
    assert all(stage["passed"] and stage["max_abs"] < 1e-4 for stage in debug["text"]["stages"])
    assert debug["same_as_folder"] and all(stage["passed"] for stage in debug["same_as_folder"])
    assert "float32" in debug["precision"] and record["stages"][-1]["name"] == "onnx.debug (every per-layer stage)"
    assert _digests(folder) == before, "the folder's graphs are only read"
    assert _scratch_left() == left_before, "the debug graphs' temporary folder is removed"
    kept = json.loads(next((folder / "parity").glob("*.json")).read_text())
    assert kept["onnx"]["debug"]["text"]["stages"] == debug["text"]["stages"]


def test_a_text_layer_perturbed_in_the_debug_source_is_named_at_that_layer(onnx_exports, tmp_path, cli, monkeypatch):
    from litetext_convert.onnx import debug

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    loader = debug.load_source_model

    def planted(image_folder):
        model = loader(image_folder)
        with torch.no_grad():
            next(model.text_encoder.layers[1].parameters()).mul_(1.05)  # 5% on one weight of layer 1
        return model

    monkeypatch.setattr(debug, "load_source_model", planted)
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--debug-intermediates")
    record = json.loads(next((folder / "parity").glob("*.json")).read_text())  # kept, failing, as any record
    rows = {stage["name"]: stage for stage in record["onnx"]["debug"]["text"]["stages"]}
    layer = next(name for name in rows if name.startswith("text.layer.1 "))
    assert code == 1 and record["onnx"]["debug"]["first_failure"] == layer, err
    assert record["first_failure"] == f"onnx.debug {layer}" and f"first diverging stage onnx.debug {layer}" in err
    assert f"first diverging stage of the debug graphs: {layer}" in " ".join(out.split())
    assert rows["text.embeddings"]["passed"] and rows[next(n for n in rows if n.startswith("text.layer.0 "))]["passed"]
    assert not rows[layer]["passed"]
    # The folder's own graphs still pass: the defect is the debug export's, and the report says where.
    assert all(s["passed"] for s in record["stages"] if s["name"].startswith(("onnx.text", "onnx.weights")))


def test_a_failing_debug_export_leaves_no_temporary_folder_and_writes_nothing(onnx_exports, tmp_path, cli, monkeypatch):
    from litetext_convert.errors import LitetextError
    from litetext_convert.onnx import debug

    checkpoint, folder = _copy(onnx_exports, tmp_path)
    files, left_before = sorted(p.name for p in folder.rglob("*")), _scratch_left()

    def broken(image_folder):
        assert Path(image_folder).parent.name.startswith("litetext-onnx-debug-"), "exported inside the temporary folder"
        raise LitetextError("planted export failure")

    monkeypatch.setattr(debug, "load_source_model", broken)
    code, out, err = cli("parity", folder, "-c", checkpoint, "--num-heads", _heads(), "--debug-intermediates")
    assert code == 2 and err.strip().splitlines() == ["error: planted export failure"]
    assert _scratch_left() == left_before
    assert sorted(p.name for p in folder.rglob("*")) == files


def test_debug_detector_rows_are_the_transformers_reports_rows_and_pass(onnx_exports, tmp_path, tokenizer_dir):
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    if original_unavailable_reason():
        pytest.skip(original_unavailable_reason())
    checkpoint, folder = _copy(onnx_exports, tmp_path)
    record = _debug_parity(checkpoint, folder, scope="detector")
    debug = record["onnx"]["debug"]
    transformers = _transformers_record(checkpoint, tmp_path, tokenizer_dir, scope="detector")
    assert _names(debug["detector"]["stages"]) == _names(transformers["detector"]["stages"])
    assert [n for n in _names(debug["detector"]["stages"]) if n.startswith("detr.decoder.layer")]
    assert debug["passed"] and record["passed"], [s for s in debug["detector"]["stages"] if not s["passed"]]
