"""`litetext demo`: the whole job, offline, on an embedded default (a small synthetic S0 checkpoint
in the exact upstream layout, and a synthetic CLIP vocabulary)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from litetext_convert.errors import Interrupted, OutputError, printable
from litetext_convert.folder.view import load_records
from litetext_convert.parity.run import ParityRequest
from litetext_convert.plan.prepare import prepare
from litetext_convert.plan.summary import summarize
from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
from litetext_convert.report import render_convert, render_inspect, render_parity
from litetext_convert.synthetic.builder import TINY_TEXT_PRESETS, tiny_checkpoint
from litetext_convert.terminal import markup_safe, shown
from litetext_convert.workflows.convert import ConvertOptions, convert_folder
from litetext_convert.workflows.prove import prove_converted

DEMO_VARIANT = "s0"
DEMO_CONTEXT = 16


def run_demo(console: Console, workdir: Path | None = None) -> dict:
    """Returns what a --json reader needs: the summary, the conversion record and the parity records
    (float32, float64, and bfloat16 with its exactness verdict and precision cost)."""
    with tempfile.TemporaryDirectory(prefix="litetext-demo-") as scratch:
        root = _fresh_workdir(console, Path(workdir)) if workdir else Path(scratch)
        try:
            return _run(console, root)
        except KeyboardInterrupt:
            if workdir is None or not any(root.iterdir()):
                raise  # the temporary folder goes with the with-block: nothing is left
            raise Interrupted(f"the demo's files so far were left in {root}") from None


def _fresh_workdir(console: Console, workdir: Path) -> Path:
    """The demo writes only into a folder that is new or empty: a workdir that holds anything gets
    a fresh `demo-*` subfolder, so nothing already there is ever replaced."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if not any(workdir.iterdir()):
            return workdir
        root = Path(tempfile.mkdtemp(prefix="demo-", dir=workdir))
    except OSError as exc:
        raise OutputError(f"cannot use {printable(workdir)} as the demo folder: {exc.strerror or exc}") from None
    console.print(shown(f"{workdir} is not empty: this demo writes into the new folder {root}"), markup=False)
    return root


def _run(console: Console, root: Path) -> dict:
    checkpoint = root / f"demo_mobileclip_{DEMO_VARIANT}_ctx{DEMO_CONTEXT}.pt"
    heads = TINY_TEXT_PRESETS[DEMO_VARIANT].heads
    console.print(Rule("1. build: a small S0 checkpoint in the exact upstream layout (seeded, every tensor non-trivial)"))
    tiny_checkpoint(checkpoint, DEMO_VARIANT, DEMO_CONTEXT, pos_rows=77)
    tokenizer = write_hf_clip_tokenizer(root / "tokenizer", DEMO_CONTEXT)
    console.print(f"{markup_safe(checkpoint)} ({checkpoint.stat().st_size / 1e6:.1f} MB), synthetic CLIP vocabulary in {markup_safe(tokenizer)}")
    console.print(f"text heads: {heads} (not observable in the weights; the builder says so, as --num-heads would)")

    console.print(Rule("2. inspect"))
    prepared = prepare(str(checkpoint), num_heads=heads)
    summary = summarize(prepared)
    render_inspect(console, summary)

    console.print(Rule("3. convert"))
    folder = root / "converted"
    options = ConvertOptions(num_heads=heads, tokenizer=str(tokenizer), force=True)
    result = convert_folder(str(checkpoint), folder, replace(options, verify_load=True), prepared=prepared)
    render_convert(console, result.record, str(folder), result.seconds, result.shards)

    records = {}
    for dtype in ("float32", "float64"):
        console.print(Rule(f"4. parity, {dtype}, against the original"))
        prompts = ["a cat", "the red car on the left", "person wearing a hat; 2 umbrellas"] if dtype == "float32" else []
        # The same checks, binding and record as `litetext parity` (the bit-exact tensor check included).
        records[dtype] = prove_converted(prepared, folder, ParityRequest(dtype=dtype, prompts=prompts))
        render_parity(console, records[dtype], debug=True)
    console.print(Rule("5. bfloat16: convert, prove the conversion exact, measure what the precision costs"))
    reduced = convert_folder(str(checkpoint), root / "converted-bfloat16", replace(options, dtype="bfloat16"), prepared=prepared)
    records["bfloat16"] = prove_converted(prepared, reduced.folder, ParityRequest(dtype="bfloat16"))
    render_parity(console, records["bfloat16"], debug=False)
    console.print("model card: README.md in the converted folder, with both parity records")
    # THE folder verdict (folder/verdict.py) over each folder's records, as push would judge them.
    verdicts = {path.name: load_records(path).verdict for path in (folder, reduced.folder)}
    passed = all(v.passed for v in verdicts.values())
    for name, found in verdicts.items():
        if not found.passed:
            console.print(f"{name}: not verified: {found.problem}", markup=False)
    console.print(Rule("PASS" if passed else "FAIL", style="green" if passed else "red"))
    return {"passed": passed, "inspect": summary, "conversion": result.record, "parity": records}
