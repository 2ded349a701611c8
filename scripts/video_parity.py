"""Whole-pipeline video parity on a short seeded clip: a text prompt through detector, tracker and
association heuristics, Meta's video pipeline (sam3's Sam3VideoInference around the original LiteText
detector and Meta's tracker, original keys) against transformers' documented text-prompt flow on a
`--target video` folder, frame by frame and stage by stage (litetext_convert/parity/video.py):
settings, tokens, pixels, detector, detections, tracker, decisions, output.

Three comparisons: as shipped (float32); with the recipes that make transformers compute what Meta
computes where it differs by design, in float64 (the proof) and in float32. Each prints its first
diverging stage and the cause.

Run in the `original` environment (Meta's sam3 + torchvision + Pillow):
    PYTHONPATH=. .venv-original/bin/python scripts/video_parity.py -c CKPT --converted FOLDER \\
        [--bpe bpe_simple_vocab_16e6.txt.gz] [--accept-all] [--set det_nms_thresh=0.99 ...] [--json OUT]
`--accept-all` sets the detection thresholds to 0 so random (synthetic) weights still start objects;
`--set NAME=VALUE` overrides one heuristics setting on both sides. Exit status 0 when the float64
comparison with the recipes agrees on every stage.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys


def _tokenizer(bpe: str | None):
    from litetext_convert.reference.synthetic_vocab import synthetic_merges
    from litetext_convert.reference.tokenizer import CleanRoomTokenizer

    if bpe is None:
        print("tokenizer: the synthetic vocabulary of litetext's tiny checkpoints (pass --bpe for a real one)")
        return CleanRoomTokenizer(list(synthetic_merges()))
    return CleanRoomTokenizer.from_bpe_file(bpe) if bpe.endswith(".gz") else CleanRoomTokenizer.from_merges_txt(bpe)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--converted", required=True, help="a folder converted with --target video")
    parser.add_argument("--num-heads", type=int, default=None)
    parser.add_argument("--bpe", default=None, help="upstream's BPE file (.txt.gz) or a merges.txt")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--height", type=int, default=24)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--text", default="a bird")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accept-all", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from litetext_convert.parity.video import (
        KNOWN,
        PRECISION,
        RUNS,
        cause_of,
        first_divergence,
        run_video_parity,
        seeded_frames,
    )
    from litetext_convert.plan.prepare import prepare

    settings = {"score_threshold_detection": 0.0, "new_det_thresh": 0.0} if args.accept_all else {}
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = ast.literal_eval(value)
    prepared = prepare(args.checkpoint, num_heads=args.num_heads, target="video")
    frames = seeded_frames(args.frames, args.height, args.width, args.seed)
    result = run_video_parity(prepared, args.converted, _tokenizer(args.bpe), frames=frames, text=args.text,
                              settings=settings or None)
    for title, stages in result.runs.items():
        print(f"\n== {title} ({RUNS[title][1]})")
        for stage in stages:
            print(f"{stage.label:22s} {'same' if stage.passed else 'DIFFERS':8s} {stage.detail[:160]}")
        first = first_divergence(stages)
        print(f"first stage where the two diverge: {first.label if first else 'none'}")
        if first is not None:
            print(f"cause: {cause_of(first)}")
    print("\nrecipes (transformers side unless said):")
    for name in result.recipes:
        print(f"- {name}: {KNOWN[name]}")
    print(f"precision: {PRECISION}")
    for note in result.notes:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result.to_json(), handle, indent=2, default=str)
    return 0 if first_divergence(result.runs["with_recipes"]) is None else 1


if __name__ == "__main__":
    sys.exit(main())
