"""Tracker parity on a tiny checkpoint: Meta's tracker (original keys) vs the converted
Sam3TrackerVideoModel, float64. Runs where Meta's sam3 is importable (the `original` environment)."""

from __future__ import annotations

import pytest

from litetext_convert.reference.sam3_detector import original_unavailable_reason
from tests.test_video import tiny_video_checkpoint

pytestmark = pytest.mark.skipif(original_unavailable_reason() is not None, reason="Meta's sam3 is not importable here")


def _tiny_video_folder(workdir, tokenizer_dir):
    """A tiny video checkpoint of its own and its --target video folder."""
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.write.convert import convert

    prepared = prepare(str(tiny_video_checkpoint(workdir / "tiny_video_s0_ctx16.pt")), num_heads=2, target="video")
    folder = workdir / "video_s0"
    convert(prepared, folder, tokenizer=str(tokenizer_dir))
    return prepared, folder


@pytest.fixture(scope="module")
def tracker_record(tmp_path_factory, tokenizer_dir):
    # Its own checkpoint and folder: importing test_video's session fixtures would define them a
    # second time when both modules run, and the second conversion would meet the first's folder.
    from litetext_convert.parity.tracker import run_tracker_parity

    prepared, folder = _tiny_video_folder(tmp_path_factory.mktemp("tracker_parity"), tokenizer_dir)
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


# ----------------------------------------------------------------------------------------------
# Whole pipeline: Meta's Sam3VideoInference (detector + tracker + association heuristics) against
# transformers' text-prompt video flow (parity/video.py). Random tiny weights: the thresholds are 0 so
# that detections start objects, NMS keeps most of them, and a short hotstart removes duplicates, so
# that the heuristics take decisions to compare.
PIPELINE_SETTINGS = {"score_threshold_detection": 0.0, "new_det_thresh": 0.0, "det_nms_thresh": 0.99,
                     "hotstart_delay": 2, "hotstart_unmatch_thresh": 1, "hotstart_dup_thresh": 1}


@pytest.fixture(scope="module")
def pipeline_result(tmp_path_factory, tokenizer_dir):
    import torch

    from litetext_convert.parity.video import run_video_parity, seeded_frames
    from litetext_convert.reference.synthetic_vocab import synthetic_merges
    from litetext_convert.reference.tokenizer import CleanRoomTokenizer

    prepared, folder = _tiny_video_folder(tmp_path_factory.mktemp("video_pipeline"), tokenizer_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend on a shared machine
    try:
        result = run_video_parity(prepared, folder, CleanRoomTokenizer(list(synthetic_merges())),
                                  frames=seeded_frames(3, 24, 32, 0), text="a bird", settings=PIPELINE_SETTINGS)
    finally:
        torch.set_num_threads(threads)
    return result.to_json()


def _stages(run: dict) -> dict[str, dict]:
    return {stage["stage"]: stage for stage in run["stages"]}


def test_pipeline_with_the_recipes_agrees_on_every_stage_of_every_frame(pipeline_result):
    run = pipeline_result["with_recipes"]
    assert run["dtype"] == "float64" and run["passed"], run["first_divergence"]
    stages = _stages(run)
    for frame in range(3):
        for name in ("pixels", "detector", "detections", "tracker", "decisions", "output"):
            assert f"frame{frame}.{name}" in stages
    # the heuristics took decisions: several objects started on frame 0, duplicates removed by hotstart
    decisions = [stages[f"frame{f}.decisions"]["detail"] for f in range(3)]
    assert "'new': {0: 0, 1: 1" in decisions[0]
    assert any("'removed': [1," in d for d in decisions), decisions
    assert stages["frame0.pixels"]["diffs"][0]["max_abs"] == 0.0  # the same frames, bit for bit
    for name in ("detector", "tracker", "output"):  # float64: the same computation, to rounding
        worst = max(d["max_abs"] for f in range(3) for d in stages[f"frame{f}.{name}"]["diffs"])
        assert worst < 1e-12, (name, worst)
    # float32 with the recipes: the same decisions and outputs on this clip
    float32 = _stages(pipeline_result["with_recipes_float32"])
    assert all(float32[f"frame{f}.{n}"]["passed"] for f in range(3) for n in ("decisions", "output"))


def test_pipeline_as_shipped_first_diverges_at_the_tokens_and_then_at_every_named_cause(pipeline_result):
    run = pipeline_result["as_shipped"]
    assert run["first_divergence"] == "tokens"
    assert "max_length=32" in run["cause"]
    stages = _stages(run)
    assert stages["settings"]["passed"]  # the folder holds Meta's video builder's heuristics settings
    assert not stages["frame0.pixels"]["passed"]  # each side's own preprocessing
    # without the cv-utils kernel transformers runs no NMS: it keeps every query, Meta fewer
    assert "transformers 12" in stages["frame0.detections"]["detail"]
    assert not stages["frame1.decisions"]["passed"]
    assert set(pipeline_result["recipes"]) >= {"tokens", "geometry_cls", "pixels", "cv_utils", "memory_selection",
                                               "prompted_frame_first", "new_object_mask", "input_mask_as_output"}
