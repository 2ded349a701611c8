"""The int8 rung's float32 exceptions, the budgets per model size, and parity's one-rung-at-a-time
memory rule: small, fast tests without an export (tests/test_onnx.py runs the whole thing)."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


def _two_matmuls(path):
    """x [1, 8] -> MatMul(text_projection.weight) -> MatMul(layers.0.fc.weight) -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), name)
               for name in ("text_projection.weight::T10", "layers.0.fc.weight::T10")]
    nodes = [helper.make_node("MatMul", ["x", weights[0].name], ["h"], name="first"),
             helper.make_node("MatMul", ["h", weights[1].name], ["y"], name="second")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_int8_keeps_the_named_weights_float32_and_quantizes_the_rest(tmp_path):
    import onnx

    from litetext_convert.onnx.precision import write_int8

    source = _two_matmuls(tmp_path / "g.onnx")
    kept = write_int8(source, tmp_path / "g_int8.onnx", ["text_projection.*"])
    names = {init.name: init.data_type for init in onnx.load(str(tmp_path / "g_int8.onnx")).graph.initializer}
    assert kept == ["first"]
    assert names["text_projection.weight::T10"] == onnx.TensorProto.FLOAT
    assert "layers.0.fc.weight::T10_quantized" in names and "layers.0.fc.weight::T10" not in names
    assert write_int8(source, tmp_path / "all_int8.onnx", []) == []  # nothing kept: every MatMul quantized
    assert not any(i.data_type == onnx.TensorProto.FLOAT and i.name.endswith("::T10")
                   for i in onnx.load(str(tmp_path / "all_int8.onnx")).graph.initializer)


def test_the_configured_keep_float_patterns_name_real_weights():
    from litetext_convert.onnx.precision import int8_keep_float

    patterns = int8_keep_float()
    assert patterns and all(isinstance(p, str) and p for p in patterns)


def test_a_small_model_gets_its_own_int8_budget_and_a_full_size_one_has_no_top_k():
    from litetext_convert.parity.onnx import budgets

    full, small = budgets("int8"), budgets("int8", small=True)
    assert "small" not in full and "top_k_kept_min" not in full  # near-ties on synthetic weights: see the config
    assert full["mask_iou_min"] > small["mask_iou_min"] and "score_correlation_min" in full
    assert budgets("fp16", small=True) == budgets("fp16")  # no small table: the same budget


def test_parity_holds_one_rungs_sessions_at_a_time(monkeypatch, tmp_path):
    from litetext_convert.onnx import runtime
    from litetext_convert.parity.onnx import OneRungAtATime

    alive, built = weakref.WeakSet(), []

    class Sessions:
        def __init__(self, folder, rung, threads=None, arena=True):
            self.rung, self.arena = rung, arena
            gc.collect()
            built.append((rung, len(alive)))  # how many other rungs were alive when this one was built
            alive.add(self)

    monkeypatch.setattr(runtime, "OnnxGraphs", Sessions)
    graphs = OneRungAtATime(tmp_path, ["fp32", "fp16", "int8"])
    assert [rung for rung, _ in built] == ["fp32", "fp16", "int8"]  # every rung checked before anything runs
    gc.collect()
    assert len(alive) == 0
    assert [(rung, graphs[rung].arena) for rung in graphs] == [("fp32", False), ("fp16", False), ("int8", False)]
    assert all(others == 0 for _, others in built)
    graphs.release()
    gc.collect()
    assert len(alive) == 0
