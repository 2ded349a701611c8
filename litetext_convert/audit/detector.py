"""Detector scope (optional, original environment): whole-detector parity of the folder as stored and
of a copy with the recipe applied (parity/detector.py: Meta's sam3 detector with the original keys
on one side, the folder through from_pretrained on the other)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from litetext_convert.audit.tensors import FolderTensors
from litetext_convert.errors import LitetextError

TEXT_PREFIX = "text_encoder."


def audit_detector(prepared, folder: Path, fixes: dict, overrides: dict, dtype: str) -> dict:
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    reason = original_unavailable_reason()
    if reason:
        raise LitetextError(f"the detector scope needs the original detector: {reason}")
    from litetext_convert.parity.detector import run_detector_parity

    as_stored = run_detector_parity(prepared, folder, dtype=dtype)
    with tempfile.TemporaryDirectory(prefix="litetext-audit-recipe-") as scratch:
        fixed = write_recipe_folder(folder, Path(scratch) / "recipe", fixes, overrides, prepared.arch.context_length)
        recipe = run_detector_parity(prepared, fixed, dtype=dtype)
    return {"as_stored": as_stored.to_json(), "with_recipe": recipe.to_json(), "passed": as_stored.passed}


def write_recipe_folder(folder: Path, out: Path, fixes: dict, overrides: dict, context: int) -> Path:
    """A copy of the folder with every usage fix applied to its files (tables sliced, matrices
    transposed, config values set), so that from_pretrained loads the recipe."""
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    for path in folder.iterdir():
        if path.is_file() and not path.name.endswith(".safetensors") and path.name != "model.safetensors.index.json":
            shutil.copy2(path, out / path.name)
    stored = FolderTensors(folder)
    tensors = {key: stored.get(key) for key in stored.keys()}
    for target, _ in fixes.get("transpose_projection", []):
        tensors[target] = tensors[target].t().contiguous()
    for target, _ in fixes.get("slice_table", []):
        tensors[target] = tensors[target][:, :, :context].contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    config = json.loads((out / "config.json").read_text())
    if fixes.get("slice_table"):
        config["text_config"]["max_position_embeddings"] = context
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def summary_rows(detector: dict) -> list[tuple[str, float, bool, float, bool]]:
    """(stage, as stored max abs, passed, with the recipe max abs, passed) per detector stage."""
    recipe = {stage["name"]: stage for stage in detector["with_recipe"]["stages"]}
    rows = []
    for stage in detector["as_stored"]["stages"]:
        other = recipe.get(stage["name"], {"max_abs": float("nan"), "passed": False})
        rows.append((stage["name"], stage["max_abs"], stage["passed"], other["max_abs"], other["passed"]))
    return rows


