"""Write a synthetic SAM3-LiteText (or SAM3.1-LiteText) checkpoint in the exact upstream on-disk layout.

    python scripts/build_checkpoint.py --variant s0 --size full --context 16 --out /tmp/s0_ctx16.pt
    python scripts/build_checkpoint.py --family sam3p1_litetext --variant s0 --size full --out /tmp/sam3p1_s0_ctx16.pt

The positional table has --pos-rows rows (default: --context), so `--context 16 --pos-rows 77`
imitates a file saved straight from upstream's builder. Full size S0 is ~2.2 GB (float32).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from litetext_convert.dtypes import DTYPES  # noqa: E402
from litetext_convert.synthetic.builder import (  # noqa: E402
    FAMILIES,
    FULL_DETECTOR,
    SCALES,
    TEXT_PRESETS,
    TINY_DETECTOR,
    TINY_TEXT_PRESETS,
    save_checkpoint,
)

SIZES = {"full": (TEXT_PRESETS, FULL_DETECTOR), "tiny": (TINY_TEXT_PRESETS, TINY_DETECTOR)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=FAMILIES, default="sam3_litetext")
    parser.add_argument("--variant", choices=sorted(TEXT_PRESETS), default="s0")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--context", type=int, default=16, help="text context length (16, 32, 77)")
    parser.add_argument("--pos-rows", type=int, help="rows of the stored positional table (default: --context)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", choices=SCALES, default="default")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    text_presets, detector = SIZES[args.size]
    pos_rows = args.context if args.pos_rows is None else args.pos_rows
    text = dataclasses.replace(text_presets[args.variant], pos_rows=pos_rows)
    start = time.perf_counter()
    path = save_checkpoint(args.out, text, detector, seed=args.seed, scale=args.scale, dtype=DTYPES[args.dtype],
                           family=args.family)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, {args.family} {args.size} {args.variant}, {pos_rows} position rows, "
          f"seed {args.seed}, scale {args.scale}) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
