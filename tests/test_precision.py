"""Reduced precision: dtype names in one place, exactness of a bfloat16/float16 conversion (bit for
bit, same-dtype stages, float64 with rounded weights), the precision cost, and push's verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import NoNetwork, heads, run_cli
from safetensors.torch import load_file, save_file

from litetext_convert.errors import EXIT_PARITY_FAILED, LitetextError
from litetext_convert.folder import CONVERSION_RECORD, PARITY_DIR
from litetext_convert.folder.records import record_digest
from litetext_convert.parity import precision
from litetext_convert.parity.run import ParityRequest
from litetext_convert import dtypes
from litetext_convert.plan.prepare import prepare
from litetext_convert.publish.model_card import render_model_card
from litetext_convert.publish.push import PushOptions, push_folder
from litetext_convert.synthetic import builder as synthetic
from litetext_convert.write import convert as writer

REPO = "alice/sam3-litetext-s0-ctx16-bf16"


def parity(checkpoint: Path, folder: Path | None, dtype: str, tokenizer: Path | None = None, seed: int = 0,
           scope: str = "text") -> dict:
    from litetext_convert.workflows.prove import prove_folder

    return prove_folder(str(checkpoint), folder=folder, request=ParityRequest(scope=scope, dtype=dtype, seed=seed),
                        tokenizer=str(tokenizer) if tokenizer else None, num_heads=heads("s0"))


def convert_to(checkpoint: Path, folder: Path, dtype: str, tokenizer: Path) -> Path:
    writer.convert(prepare(str(checkpoint), num_heads=heads("s0")), folder, dtype=dtype, tokenizer=str(tokenizer), force=True)
    return folder


@pytest.fixture(scope="session")
def reduced(workdir, tiny_checkpoints, tokenizer_dir) -> dict[str, Path]:
    """The tiny S0 converted to bfloat16 (asked for by its alias) and to float16, both proven."""
    folders = {}
    for alias, name in (("bf16", "bfloat16"), ("fp16", "float16")):
        folder = convert_to(tiny_checkpoints["s0"], workdir / "reduced" / name, alias, tokenizer_dir)
        parity(tiny_checkpoints["s0"], folder, name)  # writes the folder's parity record
        folders[name] = folder
    return folders


def record_path(folder: Path) -> Path:
    """The folder's one parity record (these folders get one text run on the default inputs)."""
    (path,) = sorted((folder / PARITY_DIR).glob("*.json"))
    return path


def record_of(folder: Path) -> dict:
    return json.loads(record_path(folder).read_text())


def copy_folder(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


# ---------------------------------------------------------------- one place for dtype names


def test_aliases_cast_rule_and_tolerances_come_from_one_place():
    assert [dtypes.canonical(a) for a in ("bf16", "fp16", "half", "fp32", "fp64", "torch.bfloat16")] == [
        "bfloat16", "float16", "float16", "float32", "float64", "bfloat16"]
    assert dtypes.check_dtype("keep") == "keep" and dtypes.is_reduced("bf16") and not dtypes.is_reduced("float32")
    assert dtypes.target_dtype(torch.float32, "bf16") == torch.bfloat16
    assert dtypes.target_dtype(torch.int64, "float16") == torch.int64  # integers and bools are kept
    assert dtypes.target_dtype(torch.bool, "bfloat16") == torch.bool
    assert dtypes.target_dtype(torch.bfloat16, "keep") == torch.bfloat16
    with pytest.raises(LitetextError, match="unknown --dtype 'int8'"):
        dtypes.canonical("int8")
    # float32/float64 tolerances are what they were before the table moved to configs/
    assert dtypes.tolerances("float32") == (1e-5, 1e-5) and dtypes.tolerances("float64") == (1e-10, 0.0)
    assert dtypes.atol_of_max("float32") == dtypes.atol_of_max("float64") == 0.0
    # coarser dtype, looser bound
    assert dtypes.atol_of_max("bf16") > dtypes.atol_of_max("fp16") > 0
    assert dtypes.tolerances("bf16")[1] > dtypes.tolerances("fp16")[1] > dtypes.tolerances("fp32")[1]


# ---------------------------------------------------------------- a proven reduced-precision folder


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_folder_is_exact_and_its_cost_is_reported(reduced, dtype):
    record = record_of(reduced[dtype])
    assert record["passed"] and record["dtype"] == dtype
    assert json.loads((reduced[dtype] / CONVERSION_RECORD).read_text())["dtype"] == dtype  # "bf16" recorded canonically
    exactness = record["precision"]["exactness"]
    assert exactness["passed"]
    assert exactness["tensors"]["checked"] == exactness["tensors"]["planned"] > 500
    assert all(stage["max_abs"] <= 1e-10 for stage in exactness["rounded_weights_float64"])
    assert (record["atol"], record["rtol"]) == dtypes.tolerances(dtype)
    for baseline in ("float32", "float64"):
        rows = record["precision"]["cost"]["against"][baseline]
        assert {"max_abs", "mean_abs", "max_rel", "cosine"} <= set(rows[0])
        assert all(0 < row["max_abs"] < 1 and 0.99 < row["cosine"] < 1 for row in rows)


def test_cost_is_measured_not_assumed(reduced, tiny_checkpoints):
    """bfloat16 (8 mantissa bits) costs more than float16 (11), and the numbers move with the inputs."""
    bf16 = precision.cost_headline(record_of(reduced["bfloat16"])["precision"])
    fp16 = precision.cost_headline(record_of(reduced["float16"])["precision"])
    assert bf16["name"] == fp16["name"] == "text.features (detector-facing)"
    assert bf16["max_abs"] > 4 * fp16["max_abs"]
    saved = record_path(reduced["bfloat16"]).read_text()
    other_seed = parity(tiny_checkpoints["s0"], reduced["bfloat16"], "bfloat16", seed=1)
    record_path(reduced["bfloat16"]).write_text(saved)  # other tests read the seed-0 record
    moved = precision.cost_headline(other_seed["precision"])
    assert moved["max_abs"] != bf16["max_abs"] and moved["mean_abs"] != bf16["mean_abs"]


def test_default_parity_of_a_bfloat16_folder_proves_it_in_bfloat16(reduced, tiny_checkpoints):
    record = parity(tiny_checkpoints["s0"], reduced["bfloat16"], "float32")
    assert record["passed"] and record["dtype"] == "bfloat16"
    assert any("holds bfloat16" in note for note in record["notes"])


def test_reduced_dtype_asked_of_a_float32_folder_is_a_one_line_error(converted, tiny_checkpoints):
    with pytest.raises(LitetextError, match="proves a bfloat16 folder, but this folder holds float32"):
        parity(tiny_checkpoints["s0"], converted["s0"], "bf16")


def test_cli_parity_in_bfloat16_converts_proves_and_reports(tiny_checkpoints, tokenizer_dir, capsys):
    code, out, err = run_cli(["parity", "-c", str(tiny_checkpoints["s0"]), "--num-heads", str(heads("s0")),
                              "--tokenizer", str(tokenizer_dir), "--dtype", "bf16"], capsys)
    assert code == 0, err
    assert "precision: exactness: PASS" in out and "cost of bfloat16 vs the original in float32" in out


# ---------------------------------------------------------------- exactness catches what is wrong


def test_float16_written_where_bfloat16_was_asked_is_caught(reduced, workdir, tiny_checkpoints):
    folder = copy_folder(reduced["float16"], workdir / "fp16-claiming-bf16")
    record = json.loads((folder / CONVERSION_RECORD).read_text())
    (folder / CONVERSION_RECORD).write_text(json.dumps({**record, "dtype": "bfloat16"}))
    checks = precision.check_tensors(prepare(str(tiny_checkpoints["s0"]), num_heads=heads("s0")), folder, "bfloat16")
    assert not checks["passed"] and checks["mismatched"] == checks["planned"] - _integer_tensors(folder)
    assert "dtype float16, expected bfloat16" in checks["mismatches"][0]["why"]


def test_a_round_trip_through_float16_is_caught(workdir, tiny_checkpoints, tokenizer_dir, monkeypatch):
    """float32 -> float16 -> bfloat16 rounds twice: most values land on the same bfloat16, some do not."""
    produce = writer._TargetProducer.__call__

    def via_float16(self, name):
        return produce(self, name).to(torch.float16).to(dtypes.target_dtype(torch.float16, "bfloat16")) \
            if self.prepared.plan.target_dtypes[name].is_floating_point else produce(self, name)

    monkeypatch.setattr(writer._TargetProducer, "__call__", via_float16)
    folder = convert_to(tiny_checkpoints["s0"], workdir / "double-rounded", "bfloat16", tokenizer_dir)
    monkeypatch.undo()
    record = parity(tiny_checkpoints["s0"], folder, "bfloat16")
    assert not record["passed"] and not record["precision"]["exactness"]["passed"]
    tensors = record["precision"]["exactness"]["tensors"]
    assert tensors["mismatched"] > 0 and "values differ from the cast source" in tensors["mismatches"][0]["why"]
    assert record["first_failure"] is not None


def test_a_wrong_operation_on_a_bfloat16_folder_is_caught(reduced, workdir, tiny_checkpoints):
    """Query and key of one attention layer swapped: both the tensor check and float64 catch it."""
    folder = copy_folder(reduced["bfloat16"], workdir / "swapped-qk")
    weights = load_file(str(folder / "model.safetensors"))
    query = next(k for k in weights if k.startswith("text_encoder.") and k.endswith("q_proj.weight"))
    key = query.replace("q_proj", "k_proj")
    weights[query], weights[key] = weights[key].clone(), weights[query].clone()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    record = parity(tiny_checkpoints["s0"], folder, "bfloat16")
    exactness = record["precision"]["exactness"]
    assert not record["passed"] and not exactness["passed"]
    assert {m["tensor"] for m in exactness["tensors"]["mismatches"]} == {query, key}
    assert not all(stage["passed"] for stage in exactness["rounded_weights_float64"])


def _integer_tensors(folder: Path) -> int:
    return sum(not t.is_floating_point() for t in load_file(str(folder / "model.safetensors")).values())


def test_convert_all_in_bfloat16_proves_each_folder(tiny_checkpoints, tokenizer_dir, tmp_path):
    from litetext_convert.convert_all import convert_all, list_checkpoints

    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(tiny_checkpoints["s0"], source / tiny_checkpoints["s0"].name)
    checkpoints = list_checkpoints(str(source), None, None)
    (row,) = convert_all(tmp_path / "out", checkpoints=checkpoints, revision=None, tokenizer=str(tokenizer_dir),
                         num_heads=heads("s0"), dtype="bf16", force=False, verify=True, push=False, namespace=None,
                         private=False, token=None)
    assert row["status"] == "ok" and row["dtype"] == "bfloat16", row
    assert record_of(Path(row["folder"]))["precision"]["exactness"]["passed"]


# ---------------------------------------------------------------- a source stored in bfloat16


def test_a_bfloat16_checkpoint_converts_and_is_proven_the_same_way(workdir, tokenizer_dir):
    checkpoint = synthetic.tiny_checkpoint(workdir / "bf16_source" / "tiny_mobileclip_s0_ctx16.pt", "s0", 16,
                                           dtype=torch.bfloat16)
    folder = convert_to(checkpoint, workdir / "bf16_source" / "converted", "keep", tokenizer_dir)
    assert json.loads((folder / CONVERSION_RECORD).read_text())["dtype"] == "bfloat16"
    record = parity(checkpoint, folder, "float32")
    assert record["passed"] and record["dtype"] == "bfloat16" and record["precision"]["exactness"]["passed"]


# ---------------------------------------------------------------- push and the card


def test_push_accepts_a_proven_bfloat16_folder_and_the_card_states_the_cost(reduced, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = push_folder(reduced["bfloat16"], PushOptions(repo_id=REPO, dry_run=True), api=NoNetwork())
    assert result.status == "planned" and result.plan.verified
    card = render_model_card(reduced["bfloat16"], repo_id=REPO)
    section = card.split("## Precision")[1]
    assert "Weights in **bfloat16**. Conversion: **exact**" in section
    headline = precision.cost_headline(record_of(reduced["bfloat16"])["precision"])
    assert f"{headline['max_abs']:.2e}" in section  # the measured number, not a canned one


def test_push_refuses_a_bfloat16_folder_whose_exactness_fails(reduced, workdir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    folder = copy_folder(reduced["bfloat16"], workdir / "push-inexact")
    record = record_of(folder)
    record["precision"]["exactness"]["passed"] = False
    record["precision"]["exactness"]["tensors"].update(passed=False, mismatched=1, mismatches=[{"tensor": "x", "why": "y"}])
    record_path(folder).write_text(json.dumps({**record, "digest": record_digest(record)}))  # as litetext would write it
    result = push_folder(folder, PushOptions(repo_id=REPO, dry_run=True), api=NoNetwork())
    assert result.status == "refused" and result.exit_code == EXIT_PARITY_FAILED
    assert "check failed at tensors (not the cast source, bit for bit)" in result.message


def test_push_refuses_a_bfloat16_folder_proven_only_in_float32(reduced, workdir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    folder = copy_folder(reduced["bfloat16"], workdir / "push-fp32-record")
    record = record_of(folder)
    record.update(dtype="float32")
    record["precision"].update(dtype="float32", reduced=False)
    record_path(folder).write_text(json.dumps({**record, "digest": record_digest(record)}))
    result = push_folder(folder, PushOptions(repo_id=REPO, dry_run=True), api=NoNetwork())
    assert result.status == "refused" and "does not prove bfloat16 exactness" in result.message


# ---------------------------------------------------------------- whole detector (Meta's sam3 only)


def test_detector_scope_in_bfloat16_is_exact_in_float64_and_reports_detections(reduced, tiny_checkpoints):
    from litetext_convert.reference.sam3_detector import original_unavailable_reason

    if original_unavailable_reason():
        pytest.skip(original_unavailable_reason())
    kept = set((reduced["bfloat16"] / PARITY_DIR).glob("*.json"))
    record = parity(tiny_checkpoints["s0"], reduced["bfloat16"], "bfloat16", scope="detector")
    for added in set((reduced["bfloat16"] / PARITY_DIR).glob("*.json")) - kept:
        added.unlink()  # other tests read the folder's one text record
    assert record["passed"] and record["detector"]["dtype"] == "float64"
    assert all(stage["max_abs"] <= 1e-9 * max(stage["reference_max"], 1.0) for stage in record["detector"]["stages"])
    cost = record["precision"]["detector_cost"]
    assert cost["against"] == "float32" and 0 < cost["detections"]["kept"] <= cost["detections"]["k"]
    assert 0.5 < cost["detections"]["mask_iou_mean"] <= 1.0 and 0 < cost["detections"]["box_max_abs"] < 0.1


@pytest.mark.parametrize("offset", [0, 1])  # 1: a float32 view at a 4-byte offset, compared byte by byte
def test_one_flipped_bit_is_a_difference_aligned_or_not(offset):
    storage = torch.arange(1, 34, dtype=torch.float32)
    expected = storage[offset : offset + 32]
    actual = expected.clone()
    assert precision._difference(expected, actual) is None
    actual.view(torch.int32)[17] ^= 1  # the last mantissa bit of one value
    assert precision._difference(expected, actual) == "1 of 32 values differ from the cast source"
