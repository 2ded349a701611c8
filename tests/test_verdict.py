"""THE verdict (issue 23): a record that fails in one place only shows the same verdict and the same
first failure in the record, the human report, `parity --json`, the card, convert-all's summary and
`push --dry-run`'s refusal.

Each case starts from a real measurement of a tiny folder (float32, and bfloat16 for the precision
case) and breaks exactly one check in it; the measurement step is then replaced by that record, so
everything after it (binding, record, card, report, push, convert-all) is the code users run.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import heads, run_cli
from rich.console import Console

from litetext_convert.errors import EXIT_PARITY_FAILED
from litetext_convert.folder.verdict import TENSORS_FAILURE, record_verdict
from litetext_convert.report import render_parity


@pytest.fixture(scope="module")
def measured(tmp_path_factory, tiny_checkpoints, tokenizer_dir) -> dict[str, tuple[Path, dict]]:
    """A float32 and a bfloat16 folder of the tiny S0, each with its real, passing measurement."""
    from litetext_convert.folder.records import remember_source
    from litetext_convert.parity.run import ParityRequest
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.workflows.prove import prove_folder
    from litetext_convert.write.convert import convert

    root = tmp_path_factory.mktemp("verdict")
    found = {}
    for dtype in ("float32", "bfloat16"):
        folder = root / dtype
        prepared = prepare(str(tiny_checkpoints["s0"]), num_heads=heads("s0"))
        convert(prepared, folder, dtype=dtype, tokenizer=str(tokenizer_dir))
        remember_source(folder, str(tiny_checkpoints["s0"]), prepared, num_heads=heads("s0"), context_length=None)
        record = prove_folder(str(tiny_checkpoints["s0"]), folder=folder, request=ParityRequest(dtype=dtype), num_heads=heads("s0"))
        assert record["passed"], record["first_failure"]
        found[dtype] = (folder, record)
    return found


def _fail_text_stage(record: dict) -> str:
    stage = record["stages"][3]
    stage["passed"] = False
    return stage["name"]


def _fail_tensor_check(record: dict) -> str:
    tensors = record["precision"]["exactness"]["tensors"]
    tensors.update(passed=False, mismatched=1, mismatches=[{"tensor": "text_encoder.x", "why": "1 of 8 values differ"}])
    record["precision"]["exactness"]["passed"] = False
    return TENSORS_FAILURE


def _fail_rounded_stage(record: dict) -> str:
    exactness = record["precision"]["exactness"]
    stage = exactness["rounded_weights_float64"][2]
    stage["passed"] = False
    exactness["passed"] = False
    return stage["name"]


def _fail_detector_stage(record: dict) -> str:
    stages = [{**copy.deepcopy(record["stages"][0]), "name": f"detector.{name}", "passed": name != "pred_masks"}
              for name in ("vision.fpn.0", "pred_masks", "pred_boxes")]
    record.update(scope="detector", detector={"passed": False, "original": "Meta's sam3 (stand-in)", "stages": stages})
    return "detector.pred_masks"


CASES = {
    "a text stage": ("float32", _fail_text_stage),
    "the bit-exact tensor check": ("float32", _fail_tensor_check),
    "a reduced-precision stage": ("bfloat16", _fail_rounded_stage),
    "a detector stage": ("float32", _fail_detector_stage),
}


def _broken(measured, case) -> tuple[Path, dict, str]:
    dtype, breaking = CASES[case]
    folder, record = measured[dtype]
    record = {key: value for key, value in copy.deepcopy(record).items() if key != "verified"}
    expected = breaking(record)
    record.update(record_verdict(record).to_json())  # as parity/run.parity_record assembles it
    return folder, record, expected


def _copy(folder: Path, tmp_path: Path) -> Path:
    copied = tmp_path / folder.name
    shutil.copytree(folder, copied)
    shutil.rmtree(copied / "parity")
    return copied


@pytest.mark.parametrize("case", list(CASES))
def test_one_failure_reads_the_same_everywhere(measured, case, tmp_path, capsys, monkeypatch):
    import litetext_convert.workflows.prove as prove

    source, record, expected = _broken(measured, case)
    folder = _copy(source, tmp_path)
    monkeypatch.setattr(prove, "measure", lambda *args, **kwargs: copy.deepcopy(record))

    # the record, as kept, and --json
    code, out, err = run_cli(["parity", folder, "--json"], capsys, monkeypatch)
    printed = json.loads(out)
    assert code == EXIT_PARITY_FAILED and f"first diverging stage {expected}" in err
    assert printed["passed"] is False and printed["first_failure"] == expected
    kept = json.loads(next((folder / "parity").glob("*.json")).read_text())
    assert (kept["passed"], kept["first_failure"]) == (False, expected)
    assert record_verdict(kept).first_failure == expected

    # the human report
    console = Console(file=io.StringIO(), width=200)
    render_parity(console, kept, debug=False)
    report = console.file.getvalue()
    assert "parity: FAIL" in report and f"first diverging stage: {expected}" in report

    # the card
    card = (folder / "README.md").read_text()
    assert f"FAILED at `{expected}`" in card and "Not verified yet" in card

    # push --dry-run's refusal
    code, _, err = run_cli(["push", folder, "--dry-run", "--repo-id", "alice/s0"], capsys, monkeypatch)
    assert code == EXIT_PARITY_FAILED and len(err.strip().splitlines()) == 1
    assert f"failed at {expected}" in err


@pytest.mark.parametrize("case", list(CASES))
def test_convert_all_summary_names_the_same_first_failure(measured, case, tiny_checkpoints, tokenizer_dir, tmp_path,
                                                         monkeypatch):
    import litetext_convert.workflows.prove as prove
    from litetext_convert.convert_all import convert_all, list_checkpoints

    _, record, expected = _broken(measured, case)
    monkeypatch.setattr(prove, "measure", lambda *args, **kwargs: copy.deepcopy(record))
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(tiny_checkpoints["s0"], source / tiny_checkpoints["s0"].name)
    (row,) = convert_all(tmp_path / "out", checkpoints=list_checkpoints(str(source), None, None),
                         revision=None, tokenizer=str(tokenizer_dir), num_heads=heads("s0"), dtype=CASES[case][0],
                         force=False, verify=True, push=False, namespace=None, private=False, token=None)
    assert row["status"] == "parity failed" and row["error"] == expected, row
