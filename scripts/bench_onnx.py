"""Benchmark the ONNX target: export wall time and peak RSS per rung, and onnxruntime against the
transformers model in eager float32 on the same inputs and threads (issue 24, "Performance").

    python scripts/bench_onnx.py --workdir /tmp/bench-onnx --size tiny           # a smoke run
    python scripts/bench_onnx.py --workdir /tmp/bench-onnx --size full --threads 2   # full-size S0
    python scripts/bench_onnx.py --workdir W --size tiny --export FOLDER  # speed rows of an existing export

Rows: `export fp32` (the image conversion and the three graphs), `export fp32+fp16+int8`, each a
child process (wall from spawn to exit, peak RSS from os.wait4); then, in this process, with the
same `--threads` for torch and onnxruntime: vision encoder, text encoder, decoder, end to end with
one prompt, and one image with 8 prompts (the vision encoder once), median of `--repeat` runs.
Ratios are transformers / onnxruntime (above 1: onnxruntime faster). Bytes per rung from the files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(args: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(args)} failed: {process.stderr.read().decode()[-500:]}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def checkpoint(workdir: Path, size: str) -> Path:
    from litetext_convert.synthetic import builder as synthetic

    path = workdir / f"{size}_sam3_litetext_s0_ctx16.pt"
    if not path.exists():
        if size == "tiny":
            synthetic.tiny_checkpoint(path, "s0", 16, pos_rows=77)
        else:
            import dataclasses

            text = dataclasses.replace(synthetic.TEXT_PRESETS["s0"], pos_rows=16)  # the released ctx16 layout
            synthetic.save_checkpoint(path, text, synthetic.FULL_DETECTOR, scale="model")
    return path


def export_rows(ckpt: Path, workdir: Path, tokenizer: Path, heads: int) -> list[dict]:
    rows = []
    for rungs in ("fp32", "fp32,fp16,int8"):
        folder = workdir / f"export-{rungs.replace(',', '-')}"
        args = ["-m", "litetext_convert.cli", "convert", "-c", str(ckpt), str(folder), "--target", "onnx",
                "--precision", rungs, "--tokenizer", str(tokenizer), "--num-heads", str(heads), "--force"]
        seconds, rss = child(args)
        sizes = {p.name: p.stat().st_size for p in (folder / "onnx").iterdir()}
        rows.append({"step": f"export {rungs}", "seconds": seconds, "peak_rss": rss, "checkpoint_bytes": ckpt.stat().st_size,
                     "bytes": {rung: sum(v for k, v in sizes.items() if _rung_of(k) == rung) for rung in rungs.split(",")}})
    return rows


def _rung_of(name: str) -> str:
    return "fp16" if "_fp16" in name else "int8" if "_int8" in name else "fp32" if name.endswith((".onnx", ".onnx.data")) else "-"


def timed(function, repeat: int) -> float:
    function()  # warm-up
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def speed_rows(folder: Path, image_folder: Path, threads: int, repeat: int) -> list[dict]:
    import numpy as np
    import torch

    from litetext_convert.onnx import graphs as torch_graphs
    from litetext_convert.onnx.export import example_inputs, load_eager_model
    from litetext_convert.onnx.runtime import OnnxGraphs

    torch.set_num_threads(threads)
    model = load_eager_model(image_folder)
    inputs = example_inputs(model)
    ids, pixels = inputs["input_ids"][0][:1], inputs["pixel_values"][0][:1]
    ids8 = ids.repeat(8, 1)
    hf_text, hf_vision = torch_graphs.TextGraph(model), torch_graphs.VisionGraph(model)
    hf_decoder = torch_graphs.DecoderGraph(model, with_boxes=False)
    ort = OnnxGraphs(folder, "fp32", threads=threads)
    with torch.no_grad():
        levels, (features, _) = hf_vision(pixels), hf_text(ids)
    vision_np, features_np = ort.vision(pixels.numpy()), features.numpy()

    def hf_end_to_end(prompt_ids):
        with torch.no_grad():
            vision = hf_vision(pixels)
            text, _ = hf_text(prompt_ids)
            batch = prompt_ids.shape[0]
            hf_decoder(*(v.expand(batch, *v.shape[1:]) for v in vision), text, prompt_ids != 0)

    def ort_end_to_end(prompt_ids):
        vision = ort.vision(pixels.numpy())
        text = ort.text(prompt_ids)["text_features"]
        batch = prompt_ids.shape[0]
        ort.decoder({k: np.repeat(v, batch, axis=0) for k, v in vision.items()}, text, prompt_ids != 0)

    pairs = {
        "vision encoder": (lambda: hf_vision(pixels), lambda: ort.vision(pixels.numpy())),
        "text encoder": (lambda: hf_text(ids), lambda: ort.text(ids.numpy())),
        "decoder": (lambda: hf_decoder(*levels, features, ids != 0), lambda: ort.decoder(vision_np, features_np, ids.numpy() != 0)),
        "end to end, 1 prompt": (lambda: hf_end_to_end(ids), lambda: ort_end_to_end(ids.numpy())),
        "end to end, 8 prompts": (lambda: hf_end_to_end(ids8), lambda: ort_end_to_end(ids8.numpy())),
    }
    rows = []
    with torch.no_grad():
        for step, (hf, onnx) in pairs.items():
            hf_seconds, ort_seconds = timed(hf, repeat), timed(onnx, repeat)
            rows.append({"step": step, "transformers_s": hf_seconds, "onnxruntime_s": ort_seconds, "ratio": hf_seconds / ort_seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--export", type=Path, help="an existing fp32 export of the same checkpoint: speed rows only")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
    from litetext_convert.synthetic import builder as synthetic

    ckpt = checkpoint(args.workdir, args.size)
    tokenizer = write_hf_clip_tokenizer(args.workdir / "tokenizer", 16)
    heads = synthetic.TINY_TEXT_PRESETS["s0"].heads if args.size == "tiny" else 8
    rows = [] if args.export else export_rows(ckpt, args.workdir, tokenizer, heads)
    image_folder = args.workdir / "image"
    if not image_folder.exists():
        subprocess.run([sys.executable, "-m", "litetext_convert.cli", "convert", "-c", str(ckpt), str(image_folder),
                        "--tokenizer", str(tokenizer), "--num-heads", str(heads), "--dtype", "float32"], check=True)
    rows += speed_rows(args.export or args.workdir / "export-fp32", image_folder, args.threads, args.repeat)
    print(json.dumps({"size": args.size, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
