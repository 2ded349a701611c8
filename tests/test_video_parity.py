"""Tracker parity on a tiny checkpoint: Meta's tracker (original keys) vs the converted
Sam3TrackerVideoModel, float64. Runs where Meta's sam3 is importable (the `original` environment)."""

from __future__ import annotations

import pytest

from litetext_convert.reference.sam3_detector import original_unavailable_reason
from tests.test_video import tiny_video_checkpoint

pytestmark = pytest.mark.skipif(original_unavailable_reason() is not None, reason="Meta's sam3 is not importable here")


@pytest.fixture(scope="module")
def tracker_record(tmp_path_factory, tokenizer_dir):
    # Its own checkpoint and folder: importing test_video's session fixtures would define them a
    # second time when both modules run, and the second conversion would meet the first's folder.
    from litetext_convert.parity.tracker import run_tracker_parity
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    workdir = tmp_path_factory.mktemp("tracker_parity")
    prepared = prepare(str(tiny_video_checkpoint(workdir / "tiny_video_s0_ctx16.pt")), num_heads=2, target="video")
    folder = workdir / "video_s0"
    convert(prepared, folder, tokenizer=str(tokenizer_dir))
    return run_tracker_parity(prepared, folder, dtype="float64").to_json()


def test_with_the_recipes_every_stage_agrees_to_float64_rounding(tracker_record):
    assert tracker_record["passed"], tracker_record["first_failure"]
    for run in tracker_record["prompts"]:
        names = [s["name"] for s in run["with_recipe"]["stages"]]
        for stage in ("neck.level0", "frame0.prompt_dense", "frame0.masks", "frame0.object_score", "frame0.object_pointer",
                      "frame0.memory_encoder", "frame0.memory", "frame1.memory_attention", "frame1.masks", "frame2.masks"):
            assert stage in names, stage
        worst = max(s["max_rel"] for s in run["with_recipe"]["stages"] if not s["name"].endswith(".memory"))
        assert worst < 1e-12, (run["prompt"], worst)


def test_transformers_as_it_is_shows_its_known_differences_with_their_causes(tracker_record):
    by_prompt = {run["prompt"]: run for run in tracker_record["prompts"]}
    points, mask = by_prompt["points"], by_prompt["mask"]
    # The prompted frame's decoder agrees; the memory encoding order is the first difference.
    assert points["plain"]["first_failure"] == "frame0.memory_encoder"
    assert set(points["known_differences"]) == {"memory_mask_order"}
    # A mask prompt differs from its first stage on (mask size, pointer token, consolidation, memory order).
    assert not mask["plain"]["passed"]
    assert set(mask["known_differences"]) == {"memory_mask_order", "mask_size", "pointer_token", "mask_consolidation"}
    plain = {s["name"]: s for s in mask["plain"]["stages"]}
    assert plain["frame0.object_pointer"]["max_abs"] > 1e-3  # best-of-3 multimask token vs Meta's token 0
