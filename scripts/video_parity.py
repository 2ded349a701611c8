"""Whole-pipeline video check on a short seeded clip: transformers' documented text-prompt flow
(Sam3VideoProcessor.init_video_session -> add_text_prompt -> Sam3VideoModel.propagate_in_video_iterator
-> postprocess_outputs) on a `--target video` folder, compared stage by stage with the original side,
reporting the first stage where the two diverge.

A smaller version than the whole of Meta's video pipeline: the original side here is
  1. the tokenizer at the model's context (what upstream's student encoder reads),
  2. Meta's detector (reference/sam3_detector.py) on each frame the pipeline processed, fed the
     pipeline's own pixel values, compared with the detector outputs captured inside the pipeline,
  3. the tracker, which `litetext parity --scope tracker` proves stage by stage.
Meta's association heuristics (Sam3VideoInference: hotstart, NMS, keep-alive, reconditioning) are
NOT run here: assembling Meta's video model around a LiteText detector is left for later; the script
says so in its output rather than implying a comparison it did not make.

Run in the `original` environment (Meta's sam3 + torchvision + Pillow):
    PYTHONPATH=. .venv-original/bin/python scripts/video_parity.py -c CKPT --converted FOLDER [--accept-all]
`--accept-all` lowers the detection thresholds to 0 so random (synthetic) weights still start tracks.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch


def run_transformers_pipeline(folder: str, video: np.ndarray, text: str, accept_all: bool) -> dict:
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    model = Sam3VideoModel.from_pretrained(folder).eval()
    if accept_all:
        model.score_threshold_detection = model.new_det_thresh = 0.0
    processor = Sam3VideoProcessor.from_pretrained(folder)
    session = processor.init_video_session(video=video, inference_device="cpu")
    session = processor.add_text_prompt(session, text)
    calls: list = []
    hook = model.detector_model.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(
            {k: out[k].detach().clone() for k in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits")}),
        with_kwargs=True,
    )
    frames = []
    with torch.no_grad():
        for output in model.propagate_in_video_iterator(inference_session=session):
            post = processor.postprocess_outputs(session, output)
            frames.append({"frame": int(output.frame_idx), "objects": int(post["object_ids"].numel())})
    hook.remove()
    ids = next(iter(session.prompt_input_ids.values()))
    pixels = [session.processed_frames[i].clone() for i in range(len(frames))]
    return {"ids": ids, "pixels": pixels, "detector": calls, "frames": frames, "tokenizer": processor.tokenizer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--converted", required=True, help="a folder converted with --target video")
    parser.add_argument("--num-heads", type=int, default=None)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=48, help="side of the seeded frames in pixels")
    parser.add_argument("--text", default="a bird")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accept-all", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from litetext_convert.parity.compare import compare
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.reference.sam3_detector import build_original_detector

    prepared = prepare(args.checkpoint, num_heads=args.num_heads, target="video")
    context = prepared.arch.context_length
    video = (np.random.default_rng(args.seed).random((args.frames, args.size, args.size, 3)) * 255).astype(np.uint8)
    hf = run_transformers_pipeline(args.converted, video, args.text, args.accept_all)
    stages = []

    # 1. tokens: the pipeline tokenizes at 32 whatever the context; upstream reads `context` tokens.
    upstream_ids = hf["tokenizer"](args.text, padding="max_length", max_length=context, return_tensors="pt").input_ids
    same = hf["ids"].shape == upstream_ids.shape and torch.equal(hf["ids"], upstream_ids)
    stages.append({"name": "tokens", "passed": same,
                   "detail": f"pipeline ids {list(hf['ids'].shape)}, upstream ids {list(upstream_ids.shape)} (context {context})",
                   "cause": None if same else "Sam3VideoProcessor.add_text_prompt pads to max_length=32; a LiteText "
                   "context shorter than 32 then has its positional table stretched by the text encoder"})

    # 2. detector, per frame, on the pipeline's own pixels; Meta's side reads `context` tokens.
    detector = build_original_detector(prepared.loaded.tensors, prepared.arch, dtype=torch.float32)
    for frame, (pixels, captured) in enumerate(zip(hf["pixels"], hf["detector"])):
        reference = detector.run(pixels[None].float(), upstream_ids)
        for name in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits"):
            ref = reference[name]
            cand = captured[name].reshape(ref.shape) if captured[name].numel() == ref.numel() else captured[name]
            diff = compare(f"frame{frame}.detector.{name}", ref, cand, atol=1e-4, rtol=1e-4)
            stages.append({"name": diff.name, "passed": diff.passed, "max_abs": diff.max_abs, "max_rel": diff.max_rel,
                           "cause": None if diff.passed else "see the tokens stage and README (text-only prompts: "
                           "the pipeline's detector call has no geometry-encoder CLS token)"})
    # 2b. the recipe: the same detector weights called as Meta calls its detector (ids at the context,
    # text features without a mask, one masked dummy box so the geometry encoder's CLS token is there).
    from transformers import Sam3VideoModel

    from litetext_convert.parity.detector import run_transformers

    hf_detector = Sam3VideoModel.from_pretrained(args.converted).detector_model.eval()
    for frame, pixels in enumerate(hf["pixels"]):
        faithful = run_transformers(hf_detector, pixels[None].float(), upstream_ids, None, None).faithful
        reference = detector.run(pixels[None].float(), upstream_ids)
        for name in ("pred_logits", "pred_masks"):
            ref = reference[name]
            diff = compare(f"frame{frame}.detector.{name} (recipe)", ref, faithful[name].reshape(ref.shape),
                           atol=1e-4, rtol=1e-4)
            stages.append({"name": diff.name, "passed": diff.passed, "max_abs": diff.max_abs, "max_rel": diff.max_rel,
                           "recipe": True})
    stages.append({"name": "tracker", "passed": None,
                   "detail": "proven separately: litetext parity --scope tracker (Meta's tracker vs Sam3TrackerVideoModel)"})
    stages.append({"name": "association", "passed": None,
                   "detail": "not compared: Meta's Sam3VideoInference heuristics are not run by this script"})
    first = next((s["name"] for s in stages if s["passed"] is False and not s.get("recipe")), None)
    record = {"frames": hf["frames"], "first_divergence": first, "stages": stages}
    for stage in stages:
        verdict = {True: "same", False: "DIFFERS", None: "n/a"}[stage["passed"]]
        numbers = f" max_abs {stage['max_abs']:.2e} rel {stage['max_rel']:.2e}" if "max_abs" in stage else ""
        print(f"{stage['name']:34s} {verdict:8s}{numbers} {stage.get('detail', '')}")
    print(f"pipeline objects per frame: {[f['objects'] for f in hf['frames']]}")
    print(f"first stage where the two diverge: {first or 'none of the compared stages'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(record, handle, indent=2, default=str)
    return 0 if first is None else 1


if __name__ == "__main__":
    sys.exit(main())
