"""Benchmark `litetext convert` against the floor (copying the bytes) and against a baseline that
converts the way transformers' own converter scripts do, on one synthetic S0 checkpoint.

    python scripts/bench_convert.py --workdir /tmp/bench            # full size, ~2.2 GB fp32
    python scripts/bench_convert.py --workdir /tmp/bench --size tiny # a smoke run in seconds
    python scripts/bench_convert.py --workdir /tmp/bench --repeat 3 \
        --original-python /work/main/.venv-original/bin/python --detector-repeat 1 [--detector-float64]

Steps: the floor (copy the file; bare `import torch`), importing transformers' model class (what a
first conversion cannot skip), the baseline (transformers' converter approach), `convert` (the
target model's manifest found in litetext's cache, as on every run after the first), `convert` as a
first run (cache emptied before each run), `convert --verify-load`, text parity in float32 and
float64, and with
--original-python (an environment with Meta's sam3) one forward of the converted model and
whole-detector parity in float32 (float64 with --detector-float64). Every target is a ratio of
two figures measured in the same run (or a peak in bytes); min and median of the repeats are shown.

Every measurement is its own child process: wall time from spawn to exit, and that child's peak
RSS from os.wait4 (the kernel's per-child accounting; RUSAGE_CHILDREN would mix all children).
The checkpoint is built once and cached in --workdir; the page cache is warmed by reading it
once before any measurement, so every step reads from memory, not disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout

CONTEXT = 16
CHECKPOINT_NAME = f"efficient_sam3_image_encoder_mobileclip_s0_ctx{CONTEXT}.pt"
TARGETS = {  # what the issues ask for, checked after the runs
    "wall": "convert wall <= 2x floor (copy + import torch)",
    "wall_first": "convert, first run (empty manifest cache), wall <= 2x floor",
    "speedup": "convert >= 5x faster than the baseline",
    "memory": "convert peak RSS above bare `import torch` <= 1.0x checkpoint bytes",
    "parity": "parity (text scope, both sides loaded) <= 10 s",
    "text64": "parity --dtype float64 (text) peak RSS <= 1.5x float32's",
    "detector32": "parity --scope detector (float32) peak RSS <= 5 GB (full size)",
    "detector64": "parity --scope detector --dtype float64 peak RSS <= 8 GB (full size)",
    "detector_wall": "parity --scope detector (float32) wall <= 2.5x one forward of the converted model",
}
FIRST_RUN = "convert, first run (empty cache)"
IMPORT_MODEL = "import torch + transformers' model class"
DETECTOR_STEPS = ("forward (converted, float32)", "parity detector float32", "parity detector float64")


@dataclass(frozen=True)
class Inputs:
    checkpoint: Path
    tokenizer: Path
    num_heads: int | None  # None: inferred from the weights


@dataclass
class Step:
    name: str
    command: list[str]
    cleanup: list[Path] = field(default_factory=list)  # removed after each run, untimed
    before: list[Path] = field(default_factory=list)  # removed before each run, untimed
    repeat: int | None = None  # None: --repeat
    env: dict[str, str] = field(default_factory=dict)  # on top of _child_env() (--against: another checkout's code)
    cwd: Path = REPO
    walls: list[float] = field(default_factory=list)
    peaks_kib: list[int] = field(default_factory=list)

    @property
    def wall_min(self) -> float:
        return min(self.walls)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_bytes(self) -> int:
        return max(self.peaks_kib) * 1024  # the worst run: memory limits are about the worst case


# ----------------------------------------------------------------------------------------------
# Inputs


def ensure_inputs(workdir: Path, size: str, checkpoint: Path | None = None) -> Inputs:
    """The checkpoint (built once, cached) and an offline CLIP tokenizer folder, made in a child:
    this process must stay small, because a child's peak RSS starts from its parent's at fork.
    `checkpoint`: an existing full-size S0 file to use instead (only the tokenizer is made)."""
    folder = workdir / size
    if checkpoint is not None:
        tokenizer = folder / "tokenizer"
        if not (tokenizer / "vocab.json").is_file():
            code = ("import sys; from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer as w; "
                    f"w(sys.argv[1], {CONTEXT})")
            subprocess.run([sys.executable, "-c", code, str(tokenizer)], check=True, cwd=REPO)
        return Inputs(checkpoint.resolve(), tokenizer, None)
    record = folder / "inputs.json"
    if not record.is_file():
        print(f"building the {size} S0 checkpoint in {folder} (once; cached in --workdir) ...", flush=True)
        subprocess.run([sys.executable, __file__, "--build-child", size, str(folder)], check=True, cwd=REPO)
    return Inputs(folder / CHECKPOINT_NAME, folder / "tokenizer", json.loads(record.read_text())["num_heads"])


def build_child(size: str, folder: Path) -> None:
    from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer
    from litetext_convert.synthetic import builder as synthetic

    folder.mkdir(parents=True, exist_ok=True)
    if size == "full":
        synthetic.save_checkpoint(folder / CHECKPOINT_NAME, synthetic.TEXT_PRESETS["s0"], synthetic.FULL_DETECTOR)
        num_heads = None  # head dim 64: inferred from the weights
    else:
        synthetic.tiny_checkpoint(folder / CHECKPOINT_NAME, "s0", CONTEXT)
        num_heads = synthetic.TINY_TEXT_PRESETS["s0"].heads  # head dim is not 64: must be given
    write_hf_clip_tokenizer(folder / "tokenizer", CONTEXT)
    # Written last: an interrupted build is never taken for a cached one.
    (folder / "inputs.json").write_text(json.dumps({"num_heads": num_heads}))


def warm_page_cache(path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as handle:
        while handle.read(64 << 20):
            pass
    return time.perf_counter() - started


# ----------------------------------------------------------------------------------------------
# Steps


def build_steps(inputs: Inputs, scratch: Path, original_python: str | None = None, detector_repeat: int = 1,
                detector_float64: bool = False) -> dict[str, Step]:
    python = sys.executable
    cli = [python, "-m", "litetext_convert.cli"]
    checkpoint, tokenizer, num_heads = inputs.checkpoint, inputs.tokenizer, inputs.num_heads
    heads = ["--num-heads", str(num_heads)] if num_heads else []
    ours = scratch / "ours"
    ours_verified = scratch / "ours-verify-load"
    copy = scratch / "copy.pt"
    convert = [*cli, "convert", "-c", str(checkpoint), "--tokenizer", str(tokenizer), *heads]
    checked = parity_folder(scratch)  # converted once before the runs: what the parity steps read
    steps = {
        "copy": Step("copy", [python, "-c", f"import shutil; shutil.copyfile({str(checkpoint)!r}, {str(copy)!r})"], [copy]),
        "import torch": Step("import torch", [python, "-c", "import torch"]),
        # What a first run cannot skip: the modeling code the meta model is built from (for scale only).
        # It leaves as the litetext script does, without the interpreter's teardown (0.5-0.8 s here).
        IMPORT_MODEL: Step(IMPORT_MODEL, [python, "-c", "import os, torch, transformers; transformers.Sam3LiteTextModel; os._exit(0)"]),
        "baseline": Step(
            "baseline",
            [python, __file__, "--baseline-child", str(checkpoint), str(scratch / "baseline"), str(num_heads or 0)],
            [scratch / "baseline"],
        ),
        # Each run writes a new folder, removed afterwards, as the copy writes a new file.
        # "convert" finds this model's manifest in litetext's cache (put there by the untimed
        # conversion of the parity folder, and again by every first run below), as every run after a
        # user's first does; "first run" empties the cache before each run: the modeling import
        # and the meta-model build are paid again.
        "convert": Step("convert", [*convert, str(ours)], [ours]),
        FIRST_RUN: Step(FIRST_RUN, [*convert, str(ours)], [ours], before=[cache_dir(scratch)]),
        "convert --verify-load": Step("convert --verify-load", [*convert, str(ours_verified), "--verify-load"], [ours_verified]),
        "parity text": Step("parity text", [*cli, "parity", "-c", str(checkpoint), *heads, str(checked)]),
        "parity text float64": Step(
            "parity text float64", [*cli, "parity", "-c", str(checkpoint), *heads, str(checked), "--dtype", "float64"]
        ),
    }
    if original_python:
        original_cli = [original_python, "-m", "litetext_convert.cli"]
        detector = [*original_cli, "parity", "-c", str(checkpoint), *heads, str(checked), "--scope", "detector"]
        steps[DETECTOR_STEPS[0]] = Step(
            DETECTOR_STEPS[0], [original_python, __file__, "--forward-child", str(checked)], repeat=detector_repeat
        )
        steps[DETECTOR_STEPS[1]] = Step(DETECTOR_STEPS[1], detector, repeat=detector_repeat)
        if detector_float64:
            steps[DETECTOR_STEPS[2]] = Step(DETECTOR_STEPS[2], [*detector, "--dtype", "float64"], repeat=detector_repeat)
    return steps


AGAINST_STEPS = ("convert", FIRST_RUN, "parity text")


def add_against_steps(steps: dict[str, Step], against: Path, scratch: Path) -> dict[str, Step]:
    """The same commands run with another checkout's code (`--against`, e.g. the commit the README's
    table came from), each right after its counterpart so both see the same machine: a regression
    is told from a drifting machine by the ratio of two figures from one run. The other code gets
    its own cache and its own parity folder (its formats may differ)."""
    env = {"PYTHONPATH": str(against), "LITETEXT_CACHE_DIR": str(scratch / "litetext-cache-against")}
    folder, mine = scratch / "parity-folder-against", parity_folder(scratch)
    result = {}
    for name, step in steps.items():
        result[name] = step
        if name in AGAINST_STEPS:
            command = [str(folder) if part == str(mine) else part for part in step.command]
            before = [Path(env["LITETEXT_CACHE_DIR"])] if step.before else []
            result[f"{name} @{against.name}"] = Step(f"{name} @{against.name}", command, step.cleanup, before,
                                                      env=env, cwd=against)
    return result


def prepare_against_folder(inputs: Inputs, scratch: Path, against: Path) -> None:
    heads = ["--num-heads", str(inputs.num_heads)] if inputs.num_heads else []
    env = {**_child_env(), "PYTHONPATH": str(against), "LITETEXT_CACHE_DIR": str(scratch / "litetext-cache-against")}
    subprocess.run([sys.executable, "-m", "litetext_convert.cli", "convert", "-c", str(inputs.checkpoint), "--tokenizer",
                    str(inputs.tokenizer), *heads, str(scratch / "parity-folder-against"), "--force"], check=True,
                   cwd=against, env=env, stdout=subprocess.DEVNULL)


def against_lines(steps: dict[str, Step], against: Path) -> list[str]:
    """This code's min and median over the other checkout's, step by step (1.00x: the same)."""
    lines = []
    for name in AGAINST_STEPS:
        mine, theirs = steps[name], steps.get(f"{name} @{against.name}")
        if theirs is None or not theirs.walls:
            continue
        lines.append(f"- {name}: this code / {against.name}'s: min {mine.wall_min / theirs.wall_min:.2f}x "
                     f"({mine.wall_min:.2f} / {theirs.wall_min:.2f} s), median {mine.wall_median / theirs.wall_median:.2f}x "
                     f"({mine.wall_median:.2f} / {theirs.wall_median:.2f} s)")
    return lines


def parity_folder(scratch: Path) -> Path:
    return scratch / "parity-folder"


def cache_dir(scratch: Path) -> Path:
    """litetext's cache for every child of the bench (never the user's own)."""
    return scratch / "litetext-cache"


def prepare_parity_folder(inputs: Inputs, scratch: Path) -> None:
    """The folder every parity step reads, converted once, untimed."""
    folder = parity_folder(scratch)
    heads = ["--num-heads", str(inputs.num_heads)] if inputs.num_heads else []
    subprocess.run([sys.executable, "-m", "litetext_convert.cli", "convert", "-c", str(inputs.checkpoint), "--tokenizer",
                    str(inputs.tokenizer), *heads, str(folder), "--force"], check=True, cwd=REPO,
                   env=_child_env(), stdout=subprocess.DEVNULL)


def run_child(step: Step, logs: Path) -> None:
    """One run: wall time and the child's own peak RSS (os.wait4 reports it per child).

    Untimed before each run: the kernel writes back what earlier runs left dirty in the page
    cache, so no run pays for another's writes (a 2.2 GB output still dirty when the next step
    writes 2.2 GB more pushes the kernel into throttled writeback, adding seconds at random)."""
    for path in step.before:
        remove(path)
    os.sync()
    log = logs / f"{step.name.replace(' ', '_').replace('/', '_')}.log"
    with log.open("w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(step.command, stdout=output, stderr=subprocess.STDOUT, cwd=step.cwd,
                                   env={**_child_env(), **step.env})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
    if process.returncode != 0:
        raise SystemExit(f"{step.name} failed (exit {process.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    step.walls.append(wall)
    step.peaks_kib.append(usage.ru_maxrss)  # KiB on Linux


def _child_env() -> dict[str, str]:
    # Offline: nothing here may depend on the network; no debug tracebacks.
    env = {k: v for k, v in os.environ.items() if k != "LITETEXT_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def measure(steps: dict[str, Step], repeat: int, logs: Path) -> None:
    # Interleaved rounds, so a drifting machine affects every step alike.
    for round_number in range(1, max(repeat, *(step.repeat or 0 for step in steps.values())) + 1):
        for step in steps.values():
            if round_number > (step.repeat or repeat):
                continue
            print(f"round {round_number}/{step.repeat or repeat}: {step.name} ...", flush=True)
            run_child(step, logs)
            for path in step.cleanup:
                remove(path)


# ----------------------------------------------------------------------------------------------
# The baseline, as transformers' converter scripts do it (runs in its own child)


def baseline_child(checkpoint: Path, output: Path, num_heads: int | None) -> None:
    """torch.load everything (no mmap), build a randomly initialised model from the config,
    load_state_dict the renamed tensors, save_pretrained, then from_pretrained to verify.

    Renaming reuses our plan (so the names are right), but nothing is streamed: the whole
    checkpoint and the whole model are in memory at once, as in those scripts."""
    import torch
    from transformers import Sam3LiteTextModel

    from litetext_convert.plan import ops
    from litetext_convert.plan.prepare import prepare

    prepared = prepare(str(checkpoint), num_heads=num_heads)
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=False)
    state = raw.get("model", raw)
    renamed: dict[str, torch.Tensor] = {}
    for step in prepared.plan.steps:
        renamed.update(zip(step.targets, ops.apply(list(step.ops), state[step.source], prepared.ctx)))
    model = Sam3LiteTextModel(prepared.config)
    result = model.load_state_dict(renamed, strict=False)
    if result.unexpected_keys:
        raise SystemExit(f"baseline: unexpected keys {result.unexpected_keys[:5]}")
    del raw, state, renamed
    model.save_pretrained(str(output))
    reloaded, info = Sam3LiteTextModel.from_pretrained(str(output), output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"baseline: the saved folder reloads with problems: {info}")


def forward_child(folder: Path) -> None:
    """One forward of the converted model as a user runs it (float32, the faithful prompt of the
    detector parity: text ids + one masked dummy box), on the parity's seeded image: the unit the
    whole-detector parity's wall time is measured in."""
    import torch
    from transformers import Sam3LiteTextModel

    from litetext_convert.parity import detector as parity
    from litetext_convert.parity.recipes import masked_dummy_box

    model = Sam3LiteTextModel.from_pretrained(str(folder)).eval()
    config = model.config
    pixels = parity.seeded_image(config.vision_config.backbone_config.image_size, 0)
    ids = parity.seeded_input_ids(config.text_config.max_position_embeddings, config.text_config.vocab_size, 0)
    boxes, labels = masked_dummy_box(1, pixels.dtype)
    with torch.no_grad():
        model(pixel_values=pixels, input_ids=ids, attention_mask=(ids != 0).long(), input_boxes=boxes,
              input_boxes_labels=labels)


# ----------------------------------------------------------------------------------------------
# Report


def _mb(count: float) -> str:
    return f"{count / 1e6:,.0f} MB"


def render(steps: dict[str, Step], checkpoint_bytes: int, repeat: int, warm_seconds: float, size: str,
           markdown: Path | None = None, against: list[str] = ()) -> bool:
    from rich.console import Console
    from rich.table import Table

    floor = steps["copy"].wall_min + steps["import torch"].wall_min
    torch_rss = steps["import torch"].peak_bytes
    ours = steps["convert"]
    table = Table(title=f"litetext convert benchmark: {size} S0, {checkpoint_bytes / 1e9:.2f} GB checkpoint, "
                        f"{repeat} run(s) each (detector steps: {max((len(s.walls) for n, s in steps.items() if n in DETECTOR_STEPS), default=0)})")
    for column in ("step", "wall min", "wall median", "peak RSS", "RSS above import torch", "/ checkpoint bytes",
                   "wall / floor", "baseline / this"):
        table.add_column(column, justify="left" if column == "step" else "right")
    rows = []
    for step in steps.values():
        if not step.walls:
            continue
        above = step.peak_bytes - torch_rss
        rows.append((
            step.name,
            f"{step.wall_min:.2f} s",
            f"{step.wall_median:.2f} s",
            _mb(step.peak_bytes),
            _mb(above),
            f"{above / checkpoint_bytes:.2f}x",
            f"{step.wall_min / floor:.2f}x",
            f"{steps['baseline'].wall_min / step.wall_min:.2f}x",
        ))
        table.add_row(*rows[-1])
    console = Console(width=160)
    console.print(table)
    console.print(f"floor = copy + import torch = {floor:.2f} s; page cache warmed first by reading the whole "
                  f"checkpoint once ({warm_seconds:.2f} s); wall = spawn to exit of each child")
    text32, text64 = steps["parity text"], steps["parity text float64"]
    ratios = {  # name -> (measured, limit, how it reads)
        "wall": (ours.wall_min / floor, 2.0, f"min {ours.wall_min / floor:.2f}x, median "
                 f"{ours.wall_median / (steps['copy'].wall_median + steps['import torch'].wall_median):.2f}x"),
        "wall_first": (steps[FIRST_RUN].wall_min / floor, 2.0, f"min {steps[FIRST_RUN].wall_min / floor:.2f}x, median "
                       f"{steps[FIRST_RUN].wall_median / (steps['copy'].wall_median + steps['import torch'].wall_median):.2f}x"),
        "speedup": (steps["baseline"].wall_min / ours.wall_min, 5.0, f"min {steps['baseline'].wall_min / ours.wall_min:.2f}x, "
                    f"median {steps['baseline'].wall_median / ours.wall_median:.2f}x"),
        "memory": ((ours.peak_bytes - torch_rss) / checkpoint_bytes, 1.0, f"{(ours.peak_bytes - torch_rss) / checkpoint_bytes:.2f}x"),
        "parity": (text32.wall_min, 10.0, f"min {text32.wall_min:.2f} s, median {text32.wall_median:.2f} s"),
        "text64": (text64.peak_bytes / text32.peak_bytes, 1.5, f"{text64.peak_bytes / text32.peak_bytes:.2f}x "
                   f"({_mb(text64.peak_bytes)} / {_mb(text32.peak_bytes)})"),
    }
    forward, det32, det64 = (steps.get(name) for name in DETECTOR_STEPS)
    if det32 is not None and det32.walls:
        ratios["detector32"] = (det32.peak_bytes / 1e9, 5.0, f"{det32.peak_bytes / 1e9:.2f} GB")
        ratios["detector_wall"] = (det32.wall_min / forward.wall_min, 2.5, f"min {det32.wall_min / forward.wall_min:.2f}x, "
                                   f"median {det32.wall_median / forward.wall_median:.2f}x")
    if det64 is not None and det64.walls:
        ratios["detector64"] = (det64.peak_bytes / 1e9, 8.0, f"{det64.peak_bytes / 1e9:.2f} GB")
    for line in against:
        console.print(f"  {line[2:]}")
    verdicts = {}
    target_lines = []
    for name, (measured, limit, reading) in ratios.items():
        full_size_only = name.startswith("detector") and name != "detector_wall"
        verdicts[name] = measured <= limit if name != "speedup" else measured >= limit
        met = verdicts[name] or (full_size_only and size == "tiny")
        console.print(f"  {'MET ' if met else 'MISS'}  {TARGETS[name]}: {reading}")
        target_lines.append(f"- {'met' if met else '**missed**'}: {TARGETS[name]}: {reading}")
    if markdown is not None:  # the README's table, regenerated from this run
        header = [column.header for column in table.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += ["", f"floor = copy + import torch = {floor:.2f} s (min of each).", "", *target_lines]
        lines += ["", "Against another checkout, same run:", "", *against] if against else []
        markdown.write_text("\n".join(lines) + "\n")
    return all(verdicts.values())


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="Caches the checkpoint; scratch outputs go here too.")
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--checkpoint", type=Path, help="An existing full-size S0 ctx16 checkpoint to use instead of building one.")
    parser.add_argument("--markdown", type=Path, help="Also write the table and targets as Markdown (the README's).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per step (min and median are shown).")
    parser.add_argument("--original-python", help="Python of an environment with Meta's sam3: adds the forward and "
                        "whole-detector parity steps.")
    parser.add_argument("--detector-repeat", type=int, default=1, help="Runs of each detector step (minutes each at full size).")
    parser.add_argument("--detector-float64", action="store_true", help="Also whole-detector parity in float64.")
    parser.add_argument("--against", type=Path, help="Another litetext checkout (e.g. `git worktree add /tmp/old COMMIT`): "
                        "convert, first run and text parity also run with its code, interleaved, and the ratios are printed.")
    parser.add_argument("--baseline-child", nargs=3, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--forward-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build-child", nargs=2, metavar="ARG", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_baseline_child(args: list[str]) -> None:
    checkpoint, output, num_heads = args
    baseline_child(Path(checkpoint), Path(output), int(num_heads) or None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_child:
        run_baseline_child(args.baseline_child)
        return 0
    if args.forward_child:
        forward_child(args.forward_child)
        return 0
    if args.build_child:
        build_child(args.build_child[0], Path(args.build_child[1]))
        return 0
    if args.workdir is None or args.repeat < 1:
        raise SystemExit("--workdir is required and --repeat must be at least 1")
    inputs = ensure_inputs(args.workdir, args.size, args.checkpoint)
    scratch = args.workdir / args.size / "scratch"
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ["LITETEXT_CACHE_DIR"] = str(cache_dir(scratch))  # inherited by every child
    os.environ.pop("LITETEXT_NO_CACHE", None)
    warm_seconds = warm_page_cache(inputs.checkpoint)
    prepare_parity_folder(inputs, scratch)
    steps = build_steps(inputs, scratch, args.original_python, args.detector_repeat, args.detector_float64)
    if args.against:
        prepare_against_folder(inputs, scratch, args.against.resolve())
        steps = add_against_steps(steps, args.against.resolve(), scratch)
    measure(steps, args.repeat, logs)
    met = render(steps, inputs.checkpoint.stat().st_size, args.repeat, warm_seconds, args.size, args.markdown,
                 against_lines(steps, args.against.resolve()) if args.against else [])
    return 0 if met or args.size == "tiny" else 1


if __name__ == "__main__":
    sys.exit(main())
