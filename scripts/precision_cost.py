"""Measure reduced-precision conversions: exactness verdicts, what each dtype costs, tolerance headroom.

    # tiny synthetic checkpoints (what configs/tolerances.toml's reduced-precision rows come from)
    python scripts/precision_cost.py --tiny s0 --tiny s1 --tiny l --seeds 3 --workdir /tmp/precision
    # full-size S0 (hold the lock; ~3 GB peak)
    flock /tmp/litetext-fullsize.lock python scripts/precision_cost.py \\
        --checkpoint /work/fullsize/sam3_litetext_s0_ctx16.pt --workdir /work/fullsize/precision

For each checkpoint and dtype it converts once (`convert --dtype`), runs `litetext parity --dtype`
on the folder (text scope) for each seed, and prints: the exactness verdict (tensors bit for bit,
same-dtype stages, float64 with rounded weights), the cost table against the original in float32
and float64, and per stage the smallest atol that would pass at the configured rtol ("needed atol").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from litetext_convert.parity.run import ParityRequest  # noqa: E402
from litetext_convert.workflows.prove import prove_folder  # noqa: E402
from litetext_convert import dtypes  # noqa: E402
from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer  # noqa: E402
from litetext_convert.synthetic import builder as synthetic  # noqa: E402
from litetext_convert.workflows.convert import ConvertOptions, convert_folder  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], help="a checkpoint file (repeatable)")
    parser.add_argument("--tiny", action="append", default=[], choices=sorted(synthetic.TINY_TEXT_PRESETS),
                        help="build a tiny synthetic checkpoint of this variant (repeatable)")
    parser.add_argument("--source-dtype", default="float32", help="dtype the tiny checkpoints are stored in")
    parser.add_argument("--dtype", action="append", help="repeatable; default bfloat16 and float16")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--num-heads", type=int)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="write every record here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = write_hf_clip_tokenizer(args.workdir / "tokenizer", 16)
    checkpoints = [(Path(path), args.num_heads) for path in args.checkpoint]
    for variant in args.tiny:
        path = args.workdir / f"tiny_mobileclip_{variant}_ctx16_{args.source_dtype}.pt"
        synthetic.tiny_checkpoint(path, variant, 16, pos_rows=77, dtype=dtypes.torch_dtype(args.source_dtype))
        checkpoints.append((path, synthetic.TINY_TEXT_PRESETS[variant].heads))
    records = []
    for path, heads in checkpoints:
        for dtype in [dtypes.canonical(d) for d in args.dtype or ["bfloat16", "float16"]]:
            folder = args.workdir / f"{path.stem}_{dtype}"
            started = time.perf_counter()
            convert_folder(str(path), folder, ConvertOptions(num_heads=heads, dtype=dtype, tokenizer=str(tokenizer), force=True))
            print(f"\n## {path.name} -> {dtype} (converted in {time.perf_counter() - started:.1f} s)")
            for seed in range(args.seeds):
                started = time.perf_counter()
                request = ParityRequest(dtype=dtype, batch=args.batch, seed=seed)
                record = prove_folder(str(path), folder=folder, request=request, num_heads=heads)
                print(f"\n### seed {seed}: parity {'PASS' if record['passed'] else 'FAIL'} "
                      f"({time.perf_counter() - started:.1f} s)")
                print_record(record)
                records.append({"checkpoint": str(path), "dtype": dtype, "seed": seed, "record": record})
    if args.json:
        args.json.write_text(json.dumps(records, indent=2, default=str) + "\n")
    print_headroom(records)
    return 0


def print_record(record: dict) -> None:
    precision = record["precision"]
    tensors = precision["exactness"]["tensors"]
    print(f"exactness: {'PASS' if precision['exactness']['passed'] else 'FAIL'}; tensors {tensors['checked']}/"
          f"{tensors['planned']} bit-exact: {tensors['passed']}; same-dtype stages (atol {record['atol']:g}, "
          f"rtol {record['rtol']:g}): {all(s['passed'] for s in record['stages'])}; float64 with rounded weights "
          f"max abs {max(s['max_abs'] for s in precision['exactness']['rounded_weights_float64']):.1e}")
    print("\n| stage | same dtype max abs | needed atol (+ rtol) | vs float32 max abs | mean abs | max rel | cosine | vs float64 max abs |")
    print("|---|---|---|---|---|---|---|---|")
    same = {s["name"]: s for s in record["stages"]}
    against = precision["cost"]["against"]
    for row, row64 in zip(against["float32"], against["float64"]):
        stage = same.get(row["name"], {})
        print(f"| {row['name']} | {stage.get('max_abs', float('nan')):.2e} | {stage.get('needed_atol', float('nan')):.2e} | "
              f"{row['max_abs']:.2e} | {row['mean_abs']:.2e} | {row['max_rel']:.2e} | {row['cosine']:.6f} | "
              f"{row64['max_abs']:.2e} |")


def print_headroom(records: list[dict]) -> None:
    """The largest needed atol per dtype over everything measured: what the tolerance must exceed."""
    print("\n## needed atol at the configured rtol, worst over all checkpoints, seeds and stages")
    for dtype in sorted({r["dtype"] for r in records}):
        stages = [(s, r) for r in records if r["dtype"] == dtype for s in r["record"]["stages"] if s["reference_max"]]
        stage, record = max(stages, key=lambda pair: pair[0]["needed_atol"] / pair[0]["reference_max"])
        share = stage["needed_atol"] / stage["reference_max"]
        atol, rtol = dtypes.tolerances(dtype)
        print(f"{dtype}: needed {stage['needed_atol']:.3e} = {share:.4f} x max|stage| {stage['reference_max']:.3g} at "
              f"{stage['name']} ({Path(record['checkpoint']).name}, seed {record['seed']}; rtol {rtol:g}); "
              f"configured atol {atol:g} + {dtypes.atol_of_max(dtype):g} x max|stage|")


if __name__ == "__main__":
    raise SystemExit(main())
