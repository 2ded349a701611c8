"""scripts/bench_convert.py in tiny mode: it runs every step and prints the table (no timing
assertions: tiny timings are start-up costs, not conversion)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_convert.py"
STEPS = ("copy", "import torch", "import torch + transformers' model class", "baseline", "convert",
         "convert, first run (empty cache)", "convert --verify-load", "parity text", "parity text float64")


def test_bench_tiny_runs_every_step_and_prints_the_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--workdir", str(tmp_path), "--size", "tiny", "--markdown", str(tmp_path / "bench.md")],
        capture_output=True, text=True, timeout=120,
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = done.stdout[done.stdout.index("litetext convert benchmark"):]
    for step in STEPS:
        assert f"│ {step} " in table
    assert "floor = copy + import torch" in table and "page cache warmed" in table
    assert table.count("MET") + table.count("MISS") == 6  # the detector targets need --original-python
    logs = tmp_path / "tiny" / "scratch" / "logs"
    assert "meta-device Sam3LiteTextModel: built now" in (logs / "convert,_first_run_(empty_cache).log").read_text()
    assert "Sam3LiteTextModel: cached manifest" in (logs / "convert.log").read_text()  # the bench's own cache, never the user's
    assert list((tmp_path / "tiny" / "scratch" / "litetext-cache" / "manifests").glob("*.json"))
    assert (tmp_path / "tiny" / "scratch" / "parity-folder" / "config.json").is_file()  # what the parity steps read
    assert not (tmp_path / "tiny" / "scratch" / "ours").exists()  # each timed conversion is removed after its run
    markdown = (tmp_path / "bench.md").read_text()  # what the README's table is regenerated from
    assert markdown.startswith("| step |") and all(f"| {step} |" in markdown for step in STEPS)
