"""The ONNX target (`convert --target onnx`, `parity` on an ONNX folder): the image detector as three
ONNX graphs that compute what the original computes, proven against the original sides.

graphs.py: the torch modules exported; export.py: the folder; exactness.py: the graphs' weights
against the source tensors; runtime.py: onnxruntime sessions (no torch); the parity scope lives
in parity/onnx.py."""

from __future__ import annotations

GRAPHS_DIR = "onnx"
MANIFEST = "onnx/graphs.json"
EXTRA_HINT = 'pip install -e ".[onnx]" (onnx, onnxscript, onnxruntime)'


def missing_runtime() -> str | None:
    """None when the ONNX extra is importable; else one line naming the extra."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed: {EXTRA_HINT}" if missing else None
