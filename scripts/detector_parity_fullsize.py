"""Whole-detector parity at full size: synthetic S0 (model-like weights) vs Meta's sam3 detector.

    . /work/venv-orig/bin/activate
    python scripts/detector_parity_fullsize.py --work /tmp/dpfull --json /tmp/dpfull/parity.json

Builds the ~2.2 GB checkpoint (FULL_DETECTOR + TEXT_PRESETS['s0'], scale "model", 77-row text
table, ctx16 in the name) unless --checkpoint is given, converts it unless --converted is given,
then runs detector parity in each --dtype (float64 first), one side at a time so that peak memory
is one model. Prints a table per dtype and writes every number and wall time as JSON.

--vit-layer-norm-eps rewrites the converted config's vision backbone `layer_norm_eps` (measures a
proposed config fix without touching the converter).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from litetext_convert.parity.detector import DetectorParityResult, run_detector_parity  # noqa: E402

CHECKPOINT_NAME = "efficient_sam3_image_encoder_mobileclip_s0_ctx16.pt"
CONTEXT = 16
# The goal for fp32 with model-like weights (absolute for the outputs a user reads, relative for masks).
FP32_GOALS = {"pred_boxes": ("abs", 1e-4), "pred_logits": ("abs", 1e-4), "presence_logits": ("abs", 1e-4),
              "pred_masks": ("rel", 1e-4)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/detector_parity_fullsize"))
    parser.add_argument("--checkpoint", type=Path, help="existing full-size checkpoint (default: build one)")
    parser.add_argument("--converted", type=Path, help="existing converted folder (default: convert)")
    parser.add_argument("--dtype", action="append", choices=["float64", "float32"], help="repeatable; default both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image", type=Path, help="image file instead of the seeded random image")
    parser.add_argument("--vit-layer-norm-eps", type=float, help="rewrite the converted ViT layer_norm_eps")
    parser.add_argument("--json", type=Path, help="where to write the numbers (default: WORK/parity.json)")
    return parser.parse_args(argv)


def timed(label: str, seconds: dict[str, float], work):
    started = time.perf_counter()
    result = work()
    seconds[label] = time.perf_counter() - started
    print(f"{label}: {seconds[label]:.1f} s", flush=True)
    return result


def build_checkpoint(path: Path) -> Path:
    from litetext_convert.synthetic.builder import FULL_DETECTOR, TEXT_PRESETS, save_checkpoint

    text = dataclasses.replace(TEXT_PRESETS["s0"], pos_rows=77)  # as upstream's builder saves it
    return save_checkpoint(path, text, FULL_DETECTOR, seed=0, scale="model")


def convert_checkpoint(checkpoint: Path, folder: Path) -> Path:
    from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
    from litetext_convert.workflows.convert import ConvertOptions, convert_folder

    tokenizer = write_hf_clip_tokenizer(folder.parent / "tokenizer", CONTEXT)
    convert_folder(str(checkpoint), folder, ConvertOptions(tokenizer=str(tokenizer), force=True))
    return folder


def set_vit_layer_norm_eps(folder: Path, eps: float) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["vision_config"]["backbone_config"]["layer_norm_eps"] = eps
    path.write_text(json.dumps(config, indent=2))


def goal_check(result: DetectorParityResult) -> dict[str, dict]:
    by_name = {stage.name: stage for stage in result.stages}
    checks = {}
    for name, (kind, limit) in FP32_GOALS.items():
        value = by_name[name].max_abs if kind == "abs" else by_name[name].max_rel
        checks[name] = {"measure": "max_abs" if kind == "abs" else "max_rel", "value": value, "goal": limit,
                        "met": value <= limit}
    return checks


def print_table(result: DetectorParityResult) -> None:
    print(f"\n== {result.dtype}: {'PASS' if result.passed else 'FAIL'} ({result.original_name})")
    print(f"{'stage':24s} {'max_abs':>10s} {'max_rel':>10s} {'ref max':>9s} {'allowed':>10s}  ok")
    for stage in result.stages:
        print(f"{stage.name:24s} {stage.max_abs:10.3e} {stage.max_rel:10.3e} {stage.reference_max:9.3g} "
              f"{stage.atol:10.3e}  {'yes' if stage.passed else 'NO'} {stage.note}")
    if result.naive_text_only:
        print("-- naive text-only transformers call (no dummy box; API semantics, not a conversion failure)")
        for stage in result.naive_text_only[4:]:
            print(f"{stage.name:24s} {stage.max_abs:10.3e} {stage.max_rel:10.3e} {stage.note}")
    print("seconds:", {k: round(v, 1) for k, v in result.seconds.items()}, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    checkpoint = args.checkpoint or args.work / CHECKPOINT_NAME
    if not checkpoint.exists():
        timed("build_checkpoint", seconds, lambda: build_checkpoint(checkpoint))
    converted = args.converted or args.work / "converted"
    if not (converted / "config.json").exists():
        timed("convert", seconds, lambda: convert_checkpoint(checkpoint, converted))
    if args.vit_layer_norm_eps is not None:
        set_vit_layer_norm_eps(converted, args.vit_layer_norm_eps)

    report: dict = {"checkpoint": str(checkpoint), "converted": str(converted), "seconds": seconds,
                    "vit_layer_norm_eps_override": args.vit_layer_norm_eps, "runs": {}}
    for dtype in args.dtype or ["float64", "float32"]:
        result = run_detector_parity(str(checkpoint), converted, dtype=dtype, seed=args.seed, image=args.image)
        print_table(result)
        report["runs"][dtype] = result.to_json()
        if dtype == "float32":
            report["runs"][dtype]["fp32_goals"] = goal_check(result)
            print("fp32 goals:", json.dumps(report["runs"][dtype]["fp32_goals"]))
    out = args.json or args.work / "parity.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    return 0 if all(run["passed"] for run in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
