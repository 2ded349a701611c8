"""`litetext demo`: the README's main command, offline, end to end."""

from __future__ import annotations

import json

from conftest import run_cli


def test_demo_runs_offline_and_passes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(["demo", "--workdir", str(tmp_path), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"]
    assert result["conversion"]["keys"]["missing"] == 0 and result["conversion"]["keys"]["unexpected"] == 0
    assert all(stage["max_abs"] <= 1e-10 for stage in result["parity"]["float64"]["stages"])
    assert result["parity"]["float32"]["padded_prompts"]["unmasked_vs_upstream_real_tokens_max_abs"] <= 1e-5
    assert result["parity"]["bfloat16"]["precision"]["exactness"]["passed"]  # the bfloat16 row: proven exact
    for record in result["parity"].values():  # the same checks as `litetext parity`: bit-exact tensors, bound to the files
        assert record["precision"]["exactness"]["tensors"]["passed"] and "config.json" in record["verified"]["files"]
    assert "parity: PASS" not in err and "parity: PASS" not in out  # under --json the human report goes nowhere, as in every command
    assert (tmp_path / "converted" / "model.safetensors").is_file()
