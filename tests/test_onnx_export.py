"""`convert --target onnx` as a user's process sees it (issue 24): SIGTERM while the graphs are being
exported stops the export and leaves nothing behind; the exporter's own warnings, log lines and
progress bars never reach the terminal; the graphs are exported from modules in eval mode.

Each test runs a real process (signals, and the exporter's once-per-process chatter, need one) on a
tiny checkpoint or a two-layer module; none of them uses the session's ONNX exports."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bad_inputs.common import assert_one_line_error
from conftest import CLI_COMMAND, CliResult, cli_env, onnx_heads
from litetext_convert.errors import EXIT_INTERRUPTED
from litetext_convert.onnx import missing_runtime

pytestmark = pytest.mark.skipif(missing_runtime() is not None, reason=missing_runtime() or "")


def _sha256(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _wait_for(pattern: str, parent: Path, process: subprocess.Popen, timeout: float) -> Path | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = next(parent.glob(pattern), None)
        if found:
            return found
        time.sleep(0.05)
    return None


def test_sigterm_while_exporting_stops_the_export_and_leaves_nothing(tmp_path, tokenizer_dir):
    """SIGTERM once the text graph is written (the vision graph is being exported): exit 130, the one
    `interrupted` line and nothing else on stderr (no exporter chatter before it either), no
    `.partial-` folder, the checkpoint and the tokenizer byte-identical."""
    from litetext_convert.synthetic import builder as synthetic

    sources = tmp_path / "sources"
    checkpoint = synthetic.tiny_checkpoint(sources / "tiny_s0_ctx16.pt", "s0", 16, pos_rows=77)
    before = {**_sha256(sources), **{f"tokenizer/{k}": v for k, v in _sha256(tokenizer_dir).items()}}
    parent = tmp_path / "exports"
    parent.mkdir()
    process = subprocess.Popen(
        [*CLI_COMMAND, "convert", "-c", str(checkpoint), str(parent / "out"), "--num-heads", str(onnx_heads()),
         "--tokenizer", str(tokenizer_dir), "--target", "onnx"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        written = _wait_for(".out.partial-*/onnx/text_encoder.onnx", parent, process, timeout=900)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert written, f"the export ended (exit {process.returncode}) before the text graph was written"
    assert_one_line_error(CliResult(process.returncode, stdout, stderr), EXIT_INTERRUPTED, "interrupted; nothing was left behind")
    assert stdout == ""
    assert sorted(p.name for p in parent.iterdir()) == []
    assert {**_sha256(sources), **{f"tokenizer/{k}": v for k, v in _sha256(tokenizer_dir).items()}} == before


# A module freshly built is in training mode, as the graph wrappers of onnx/graphs.py are; export it
# and derive both reduced rungs through the functions `convert --target onnx` calls.
_EXPORT_AND_RUNGS = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from litetext_convert.onnx import export

    class TwoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    folder = Path(sys.argv[1])
    module = TwoLayers()
    export.export_graph(module, (torch.randn(2, 8),), folder / "two.onnx", ["x"], ["y"], 1 << 40)
    settings = {"graphs": {"two": {"file": "two.onnx"}}, "rungs": {"fp16": {"suffix": "_fp16"}, "int8": {"suffix": "_int8"}}}
    status = lambda message: __import__("contextlib").nullcontext()
    export.write_rungs(folder, settings, ["fp32", "fp16", "int8"], status)
    print("training" if module.training else "eval", file=sys.stderr)
""")


def test_the_exporter_prints_nothing_and_exports_in_eval_mode(tmp_path):
    """Without litetext's quieting, this process prints torch.onnx's training-mode warning, its
    `torchvision is not installed` log lines and onnxruntime.quantization's `WARNING:root` advice;
    with it, stderr holds only the script's own last line."""
    done = subprocess.run([sys.executable, "-c", _EXPORT_AND_RUNGS, str(tmp_path)], capture_output=True, text=True,
                          env=cli_env(), timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.onnx", "two_fp16.onnx", "two_int8.onnx"]
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["eval"], done.stderr


def test_quieting_restores_what_it_changed_and_lets_errors_through(monkeypatch):
    import logging
    import warnings

    from litetext_convert.onnx import export

    before = {name: logging.getLogger(name).level for name in export.QUIET_LOGGERS}
    handlers = list(logging.root.handlers)
    with pytest.raises(ValueError, match="a real error"), export.exporter_quiet():
        warnings.warn("dropped", UserWarning)
        logging.warning("dropped too")
        raise ValueError("a real error")
    assert {name: logging.getLogger(name).level for name in export.QUIET_LOGGERS} == before
    assert logging.root.handlers == handlers
    with pytest.warns(UserWarning, match="shown again"):
        warnings.warn("shown again", UserWarning)
    monkeypatch.setenv("LITETEXT_DEBUG", "1")  # a developer sees everything
    with pytest.warns(UserWarning, match="kept"), export.exporter_quiet():
        warnings.warn("kept", UserWarning)


def test_the_decoders_example_inputs_are_shaped_as_the_vision_graphs_outputs(tmp_path, tokenizer_dir):
    """They come from the meta device (no activation memory); the exporter reads only shapes and dtypes."""
    import torch

    from conftest import ONNX_CONTEXT
    from litetext_convert.onnx import export, graphs
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.synthetic import builder as synthetic
    from litetext_convert.write.convert import convert

    checkpoint = synthetic.tiny_checkpoint(tmp_path / "tiny.pt", "s0", ONNX_CONTEXT, pos_rows=77)
    image = convert(prepare(str(checkpoint), num_heads=onnx_heads()), tmp_path / "image", tokenizer=str(tokenizer_dir))
    model = export.load_eager_model(image.folder)
    pixels = export.example_inputs(model)["pixel_values"][0]
    with torch.no_grad():
        real = graphs.VisionGraph(model)(pixels)
    like = export.vision_outputs_like(model, pixels)
    assert [(t.shape, t.dtype, t.device.type) for t in like] == [(t.shape, t.dtype, "cpu") for t in real]
    assert all(torch.isfinite(t).all() and t.std() > 0 for t in like)


@pytest.mark.parametrize("external", [False, True])
def test_folding_on_the_exporters_ir_writes_what_folding_the_proto_wrote(tmp_path, external):
    """export.py folds weight transposes on the exporter's IR (no ModelProto copy of the weights) and
    streams the file; the graph must be the one precision.fold_weight_transposes + save_model write:
    same nodes, same initializers (names `<parameter>::T10`, values bit for bit)."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    from litetext_convert.onnx import export, graphs, precision

    class Shared(torch.nn.Module):  # 3-d input: MatMul of a transposed weight; `first` read twice, folded once
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3, bias=False)

        def forward(self, x):
            return self.second(self.first(self.first(x)))

    module = Shared().eval()
    with export.exporter_quiet():
        program = torch.onnx.export(module, (torch.randn(2, 5, 8),), dynamo=True, input_names=["x"], output_names=["y"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
                                    verbose=False, report=False, optimize=False)
    proto = program.model_proto
    graphs.name_dynamic_axes(proto)
    export.name_dynamic_axes_ir(program.model)
    assert precision.fold_weight_transposes(proto) == export.fold_weight_transposes_ir(program.model) == 3
    precision.save_model(proto, tmp_path / "proto.onnx", external)
    export.save_ir_model(program.model, tmp_path / "ir.onnx", external)
    assert (tmp_path / "ir.onnx.data").exists() == external
    old, new = onnx.load(str(tmp_path / "proto.onnx")), onnx.load(str(tmp_path / "ir.onnx"))
    assert [(n.op_type, n.input, n.output) for n in new.graph.node] == [(n.op_type, n.input, n.output) for n in old.graph.node]
    assert (new.graph.input, new.graph.output) == (old.graph.input, old.graph.output)
    assert new.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    weights = {i.name: numpy_helper.to_array(i) for i in old.graph.initializer}
    folded = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    assert sorted(folded) == sorted(weights) and {"first.weight::T10", "second.weight::T10"} <= set(folded)
    assert all(folded[name].dtype == weights[name].dtype and np.array_equal(folded[name], weights[name]) for name in weights)


# ---------------------------------------------------------------------------------------------
# push: an ONNX folder publishes its graphs by digest, and an altered graph is refused by name


def test_push_plans_the_verified_graphs_and_refuses_an_altered_one(onnx_exports, tmp_path, cli):
    import shutil

    checkpoint, exported = onnx_exports["sam3_litetext"]
    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    repo = ["--repo-id", "alice/sam3-litetext-s0-ctx16-onnx"]
    assert cli("parity", folder, "-c", checkpoint, "--num-heads", onnx_heads()).code == 0

    planned = cli("push", folder, "--dry-run", *repo)
    assert planned.code == 0, planned.stderr
    graphs = sorted(p.relative_to(folder).as_posix() for p in (folder / "onnx").iterdir())
    assert graphs and all(name in planned.stdout for name in graphs), planned.stdout

    graph = folder / "onnx" / "detector_decoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    refused = cli("push", folder, "--dry-run", *repo)
    assert_one_line_error(refused, 2, "refusing to publish", "onnx/detector_decoder.onnx")
