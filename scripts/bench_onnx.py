"""Benchmark the ONNX target: export wall time and peak RSS per rung, and onnxruntime against the
transformers model in eager float32 on the same inputs and threads (issue 24, "Performance").

    python scripts/bench_onnx.py --workdir /tmp/bench-onnx                       # a smoke run: a tiny synthetic S0
    python scripts/bench_onnx.py --workdir W --checkpoint S0.pt --tokenizer TOK --repeat 1 --markdown out.md
    python scripts/bench_onnx.py --workdir W --checkpoint S0.pt --tokenizer TOK --export FOLDER  # speed rows only

Export rows, each a child process (wall from spawn to exit, peak RSS from os.wait4): `export fp32`
(convert --target onnx: the image conversion and the three graphs), then `rung fp16` and `rung int8`,
each derived from those fp32 graphs by onnx/precision.py's write_rung, as convert does after fp32.
`convert --precision fp32,fp16,int8` runs the same three steps in one process: its wall is their sum.
Speed rows, in this process, the same `--threads` for torch and onnxruntime, the same seeded inputs:
vision encoder, text encoder, decoder, end to end with one prompt, and one image with 8 prompts
(the vision encoder once); fp32 graphs, then int8 (fp16 computes in float32: its speed is fp32's).
Each side warms up once per component, then the median of `--repeat` runs; the end-to-end rows
reuse that warm state. Ratios are transformers / onnxruntime (above 1: onnxruntime faster).
Bytes per rung from the files (`.onnx` and `.onnx.data`). Targets: issue 24's, met or missed.
Run it with the original environment's python: transformers' geometry encoder (the decoder's text-only
prompt) calls torchvision.ops.roi_align, which the core environment cannot import.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GRAPH_FILES = ("text_encoder.onnx", "vision_encoder.onnx", "detector_decoder.onnx")


def child(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(args)[:200]} failed: {process.stderr.read().decode()[-800:]}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def tiny_checkpoint(workdir: Path) -> tuple[Path, Path, int]:
    from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
    from litetext_convert.synthetic import builder as synthetic

    path = workdir / "tiny_sam3_litetext_s0_ctx16.pt"
    if not path.exists():
        synthetic.tiny_checkpoint(path, "s0", 16, pos_rows=77)
    return path, write_hf_clip_tokenizer(workdir / "tokenizer", 16), synthetic.TINY_TEXT_PRESETS["s0"].heads


DERIVE = "import sys; from pathlib import Path; from litetext_convert.onnx.precision import write_rung; " \
         "[write_rung(Path(sys.argv[1]) / f, Path(sys.argv[2]) / f.replace('.onnx', sys.argv[4]), sys.argv[3]) for f in sys.argv[5:]]"


def export_rows(ckpt: Path, workdir: Path, tokenizer: Path, heads: int) -> tuple[list[dict], Path]:
    folder = workdir / "export"
    seconds, rss = child(["-m", "litetext_convert.cli", "convert", "-c", str(ckpt), str(folder), "--target", "onnx",
                          "--precision", "fp32", "--tokenizer", str(tokenizer), "--num-heads", str(heads), "--force"])
    rows = [{"step": "export fp32", "seconds": seconds, "peak_rss": rss}]
    rungs = workdir / "rungs"
    shutil.rmtree(rungs, ignore_errors=True)
    rungs.mkdir()
    for rung, suffix in (("fp16", "_fp16.onnx"), ("int8", "_int8.onnx")):
        seconds, rss = child(["-c", DERIVE, str(folder / "onnx"), str(rungs), rung, suffix, *GRAPH_FILES])
        rows.append({"step": f"rung {rung}", "seconds": seconds, "peak_rss": rss})
    return rows, rungs


def rung_bytes(folders: list[Path]) -> dict[str, int]:
    sizes = {"fp32": 0, "fp16": 0, "int8": 0}
    for folder in folders:
        for path in folder.iterdir():
            if path.name.endswith((".onnx", ".onnx.data")):
                rung = "fp16" if "_fp16." in path.name else "int8" if "_int8." in path.name else "fp32"
                sizes[rung] += path.stat().st_size
    return sizes


def timed(function, repeat: int, warm_up: bool = True) -> float:
    if warm_up:
        function()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def transformers_side(image_folder: Path, threads: int):
    """The converted model in eager float32 and the seeded inputs (one prompt, one image)."""
    import torch

    from litetext_convert.onnx import graphs as torch_graphs
    from litetext_convert.onnx.export import example_inputs, load_eager_model

    torch.set_num_threads(threads)
    model = load_eager_model(image_folder)
    inputs = example_inputs(model)
    ids, pixels = inputs["input_ids"][0][:1], inputs["pixel_values"][0][:1]
    graphs = (torch_graphs.TextGraph(model), torch_graphs.VisionGraph(model), torch_graphs.DecoderGraph(model, with_boxes=False))
    return graphs, ids, pixels


def hf_timings(graphs, ids, pixels, repeat: int) -> dict[str, float]:
    import torch

    text, vision, decoder = graphs
    with torch.no_grad():
        levels, (features, _) = vision(pixels), text(ids)

        def end_to_end(prompt_ids):
            shared = vision(pixels)  # once per image, whatever the number of prompts
            prompts, _ = text(prompt_ids)
            batch = prompt_ids.shape[0]
            decoder(*(v.expand(batch, *v.shape[1:]) for v in shared), prompts, prompt_ids != 0)

        return {"vision encoder": timed(lambda: vision(pixels), repeat), "text encoder": timed(lambda: text(ids), repeat),
                "decoder": timed(lambda: decoder(*levels, features, ids != 0), repeat),
                "end to end, 1 prompt": timed(lambda: end_to_end(ids), repeat, warm_up=False),
                "end to end, 8 prompts": timed(lambda: end_to_end(ids.repeat(8, 1)), repeat, warm_up=False)}


def ort_timings(folder: Path, rung: str, ids, pixels, threads: int, repeat: int) -> dict[str, float]:
    import numpy as np

    from litetext_convert.onnx.runtime import OnnxGraphs

    ort = OnnxGraphs(folder, rung, threads=threads)
    ids, pixels = ids.numpy(), pixels.numpy()
    vision, features = ort.vision(pixels), ort.text(ids)["text_features"]

    def end_to_end(prompt_ids):
        shared = ort.vision(pixels)
        prompts = ort.text(prompt_ids)["text_features"]
        batch = prompt_ids.shape[0]
        ort.decoder({k: np.repeat(v, batch, axis=0) for k, v in shared.items()}, prompts, prompt_ids != 0)

    return {"vision encoder": timed(lambda: ort.vision(pixels), repeat), "text encoder": timed(lambda: ort.text(ids), repeat),
            "decoder": timed(lambda: ort.decoder(vision, features, ids != 0), repeat),
            "end to end, 1 prompt": timed(lambda: end_to_end(ids), repeat, warm_up=False),
            "end to end, 8 prompts": timed(lambda: end_to_end(np.repeat(ids, 8, axis=0)), repeat, warm_up=False)}


def speed_rows(folder: Path, image_folder: Path, threads: int, repeat: int) -> list[dict]:
    graphs, ids, pixels = transformers_side(image_folder, threads)
    hf = hf_timings(graphs, ids, pixels, repeat)
    del graphs
    gc.collect()
    rows = []
    for rung in ("fp32", "int8"):
        ort = ort_timings(folder, rung, ids, pixels, threads, repeat)
        gc.collect()
        rows += [{"step": step, "rung": rung, "transformers_s": hf[step], "onnxruntime_s": ort[step],
                  "ratio": hf[step] / ort[step]} for step in hf]
    return rows


def budget_verdict(folder: Path) -> dict | None:
    """The int8 budget rows of the folder's newest parity record, when parity ran on it."""
    records = sorted((folder / "parity").glob("*.json"), key=lambda p: p.stat().st_mtime) if (folder / "parity").is_dir() else []
    for path in reversed(records):
        stages = json.loads(path.read_text()).get("stages", [])
        rows = [s for s in stages if s["name"].startswith("int8.budget")]
        if rows:
            return {"record": path.name, "passed": all(s["passed"] for s in rows),
                    "rows": {s["name"]: s.get("note", "") for s in rows}}
    return None


def targets(result: dict) -> list[tuple[str, bool | None, str]]:
    """(target, met, measured): issue 24's performance targets."""
    export = {row["step"]: row for row in result["export"]}
    speed = {(row["step"], row["rung"]): row for row in result["speed"]}
    out = []
    if export:
        wall = sum(row["seconds"] for row in export.values())
        peak = max(row["peak_rss"] for row in export.values()) / result["checkpoint_bytes"]
        out += [("export of all three rungs <= 10 min", wall <= 600, f"{wall / 60:.1f} min"),
                ("export peak RSS <= 3x the checkpoint's bytes", peak <= 3, f"{peak:.2f}x")]
    for prompts in ("1 prompt", "8 prompts"):
        row = speed.get((f"end to end, {prompts}", "fp32"))
        if row:
            out.append((f"onnxruntime fp32 end to end ({prompts}) >= 1.5x transformers eager", row["ratio"] >= 1.5, f"{row['ratio']:.2f}x"))
        row = speed.get((f"end to end, {prompts}", "int8"))
        if row:
            out.append((f"onnxruntime int8 end to end ({prompts}) >= 2x transformers eager", row["ratio"] >= 2, f"{row['ratio']:.2f}x"))
    share = result["bytes"]["int8"] / result["bytes"]["fp32"]
    out.append(("int8 bytes <= 35% of fp32's", share <= 0.35, f"{100 * share:.1f}%"))
    budget = result.get("int8_budget")
    out.append(("int8 within its cost budget (parity record)", budget["passed"] if budget else None,
                f"{budget['record']}" if budget else "no parity record in the folder"))
    return out


def markdown(result: dict) -> str:
    mb = lambda n: f"{n / 1e6:,.0f} MB"
    lines = [f"Checkpoint {mb(result['checkpoint_bytes'])}; {result['threads']} threads for torch and onnxruntime; "
             f"median of {result['repeat']} run(s).", ""]
    if result["export"]:
        lines += ["| export step | wall | peak RSS |", "|---|---|---|"]
        lines += [f"| {r['step']} | {r['seconds']:.0f} s | {r['peak_rss'] / 1e9:.2f} GB |" for r in result["export"]]
        lines.append("")
    lines += ["| rung | bytes (all graphs) | of fp32 |", "|---|---|---|"]
    lines += [f"| {rung} | {mb(n)} | {100 * n / result['bytes']['fp32']:.1f}% |" for rung, n in result["bytes"].items() if n]
    lines += ["", "| step | rung | transformers eager | onnxruntime | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['rung']} | {r['transformers_s']:.3f} s | {r['onnxruntime_s']:.3f} s | {r['ratio']:.2f}x |"
              for r in result["speed"]]
    lines += ["", "| target | | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'met' if met else 'not measured' if met is None else '**missed**'} | {value} |"
              for name, met, value in targets(result)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint (upstream layout); default: a tiny synthetic S0 in workdir")
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--export", type=Path, help="an existing export of the same checkpoint (fp32 and int8): speed rows only")
    parser.add_argument("--markdown", type=Path, help="also write the tables and targets as Markdown")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.checkpoint:
        ckpt, tokenizer, heads = args.checkpoint, args.tokenizer, args.num_heads
    else:
        ckpt, tokenizer, heads = tiny_checkpoint(args.workdir)
    if args.export:
        export, folder = [], args.export
        sizes = rung_bytes([folder / "onnx"])
    else:
        export, rungs = export_rows(ckpt, args.workdir, tokenizer, heads)
        folder = args.workdir / "export"
        sizes = rung_bytes([folder / "onnx", rungs])
        for path in rungs.glob("*_int8.onnx*"):  # next to fp32, where OnnxGraphs finds them
            os.replace(path, folder / "onnx" / path.name)
        add_rung_to_manifest(folder, "int8")
    image_folder = args.workdir / "image"
    if not image_folder.exists():
        subprocess.run([sys.executable, "-m", "litetext_convert.cli", "convert", "-c", str(ckpt), str(image_folder),
                        "--tokenizer", str(tokenizer), "--num-heads", str(heads), "--dtype", "float32"], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    result = {"checkpoint": str(ckpt), "checkpoint_bytes": ckpt.stat().st_size, "threads": args.threads, "repeat": args.repeat,
              "export": export, "bytes": sizes, "int8_budget": budget_verdict(folder)}
    result["speed"] = speed_rows(folder, image_folder, args.threads, args.repeat)
    result["targets"] = [{"target": t, "met": met, "measured": value} for t, met, value in targets(result)]
    print(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(result))


def add_rung_to_manifest(folder: Path, rung: str) -> None:
    """The bench's own copy of the export: graphs.json names the rung the bench derived."""
    path = folder / "onnx" / "graphs.json"
    manifest = json.loads(path.read_text())
    for spec in manifest["graphs"].values():
        spec["files"][rung] = spec["files"]["fp32"].replace(".onnx", f"_{rung}.onnx")
    manifest["rungs"] = sorted(set(manifest["rungs"]) | {rung}, key=["fp32", "fp16", "int8"].index)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
