"""Regenerate configs/manifest/*.tsv from the real upstream modules.

Needs the efficientsam3 fork (branch `sam3_litetext`) importable as `sam3`, with the dependencies of
Meta's `sam3` 0.1.4 installed (timm, torchvision, iopath, ...). The fork's package *is* Meta's
detector code plus the student text encoder, so one import gives both:

    PYTHONPATH=<efficientsam3 checkout>/sam3:. python scripts/regenerate_manifest.py [--check]

It builds Meta's image detector with `enable_inst_interactivity=True` (SAM2-style neck + tracker),
replaces its language backbone by the fork's `TextStudentEncoder`, and writes every key as the
released files store it: `detector.<key>`, with the tracker's `inst_interactive_predictor.model.<key>`
saved as `tracker.<key>`. Nothing upstream is vendored here: without the fork this script stops.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO_ROOT))  # after PYTHONPATH entries, so the fork's `sam3` wins

from litetext_convert.synthetic.parts import TEXT_PREFIX, layout_to_tsv  # noqa: E402

TRACKER_MODULE = "inst_interactive_predictor.model."
# The released file names' text encoders, and the positional-table rows each manifest records:
# S0 as the builder creates it (77 rows), S1/L sliced to a released context (16), as upstream
# does after loading a ctx16 file.
MANIFESTS = {
    "upstream_keys_s0_full.tsv": ("MobileCLIP-S0", 77, "full"),
    "upstream_keys_s1_text.tsv": ("MobileCLIP-S1", 16, "text"),
    "upstream_keys_l_text.tsv": ("MobileCLIP2-L", 16, "text"),
}


def import_upstream():
    """The fork's builder module, or exit with what to install."""
    try:
        with _video_backend_placeholder():
            from sam3 import model_builder
    except ImportError as error:
        sys.exit(f"cannot import sam3 ({error}). Install Meta's sam3 0.1.4 dependencies and put the "
                 "efficientsam3 fork (branch sam3_litetext) first on PYTHONPATH: <checkout>/sam3")
    if not hasattr(model_builder, "_create_student_text_encoder"):
        sys.exit(f"{model_builder.__file__} is Meta's sam3 without the LiteText student text encoder: "
                 "put the efficientsam3 fork (branch sam3_litetext) first on PYTHONPATH: <checkout>/sam3")
    return model_builder


@contextmanager
def _video_backend_placeholder():
    """The fork's training dataset module refuses to import without a video decoder (decord,
    torchcodec or cv2), though building a model never decodes video: stand in an empty `cv2`
    for the import only, when none is installed."""
    if any(importlib.util.find_spec(name) for name in ("decord", "torchcodec", "cv2")):
        yield
        return
    sys.modules["cv2"] = types.ModuleType("cv2")
    try:
        yield
    finally:
        del sys.modules["cv2"]


class _CudaToCpu(TorchFunctionMode):
    """Meta's constructors hard-code device="cuda" for a few caches; build them on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def student_text_encoder(builder, encoder_type: str, pos_rows: int, bpe_path: str | None):
    text = builder._create_student_text_encoder(bpe_path, encoder_type, context_length=77)
    if pos_rows < 77:
        text.set_context_length(pos_rows)
    return text


def full_file_state(builder, encoder_type: str, pos_rows: int, bpe_path: str | None) -> dict[str, torch.Tensor]:
    with _CudaToCpu():
        model = builder.build_sam3_image_model(
            bpe_path=bpe_path, device="cpu", eval_mode=True, checkpoint_path=None, load_from_HF=False,
            enable_inst_interactivity=True,
        )
        model.backbone.language_backbone = student_text_encoder(builder, encoder_type, pos_rows, bpe_path)
    state = model.state_dict()
    detector = {f"detector.{k}": v for k, v in state.items() if not k.startswith(TRACKER_MODULE)}
    tracker = {f"tracker.{k.removeprefix(TRACKER_MODULE)}": v for k, v in state.items() if k.startswith(TRACKER_MODULE)}
    return {**detector, **tracker}  # released files: every detector key, then the tracker's


def text_state(builder, encoder_type: str, pos_rows: int, bpe_path: str | None) -> dict[str, torch.Tensor]:
    text = student_text_encoder(builder, encoder_type, pos_rows, bpe_path)
    return {f"{TEXT_PREFIX}{k}": v for k, v in text.state_dict().items()}


def layout_of(state: dict[str, torch.Tensor]):
    return {key: (tuple(t.shape), t.dtype) for key, t in state.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "configs" / "manifest")
    parser.add_argument("--bpe", help="CLIP BPE vocabulary (default: the one the fork's builder finds)")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out, write nothing")
    args = parser.parse_args()

    builder = import_upstream()
    print(f"upstream: {builder.__file__}")
    differing = []
    for name, (encoder_type, pos_rows, scope) in MANIFESTS.items():
        make = full_file_state if scope == "full" else text_state
        tsv = layout_to_tsv(layout_of(make(builder, encoder_type, pos_rows, args.bpe)))
        target = args.out / name
        if args.check:
            same = target.is_file() and target.read_text() == tsv  # order matters too
            print(f"{name}: {'same' if same else 'DIFFERS'} ({len(tsv.splitlines()) - 1} keys)")
            differing += [] if same else [name]
        else:
            target.write_text(tsv)
            print(f"wrote {target} ({len(tsv.splitlines()) - 1} keys)")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
