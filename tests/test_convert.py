"""`litetext convert` and `convert-all`: what users load, how it is written."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
from conftest import heads, run_cli, sha256

from litetext_convert.synthetic import builder as synthetic


def load_quietly(loader, folder, **kwargs):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = loader(str(folder), **kwargs)
    return result, [str(w.message) for w in caught]


@pytest.mark.parametrize("variant", ["s0", "s1", "l"])
def test_output_loads_with_transformers_with_nothing_missing(converted, variant, caplog):
    from transformers import AutoModel, Sam3LiteTextModel

    (model, info), messages = load_quietly(Sam3LiteTextModel.from_pretrained, converted[variant], output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert messages == [] and not [r for r in caplog.records if r.levelname == "WARNING"]
    auto, _ = load_quietly(AutoModel.from_pretrained, converted[variant])
    assert type(auto).__name__ == "Sam3LiteTextModel"
    assert model.config.text_config.max_position_embeddings == 16
    assert model.config.text_config.use_repmixer_blocks == (variant == "s0")


def test_tokenizer_is_cut_to_the_context_and_pads_like_upstream(converted):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(converted["s0"]))
    assert tokenizer.model_max_length == 16 and tokenizer.pad_token_id == 0
    ids = tokenizer("bird!", padding="max_length", max_length=16)["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 0 and 0 not in ids[1 : ids.index(49407)]  # "!" stays a text token


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="Sam3ImageProcessor needs torchvision")
def test_processor_loads_with_autoprocessor(converted):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(converted["s0"]))
    assert type(processor).__name__ == "Sam3Processor" and processor.target_size == 16


def test_conversion_record_says_where_everything_came_from(converted, tiny_checkpoints):
    record = json.loads((converted["s0"] / "conversion_record.json").read_text())
    assert record["source"]["sha256"] == sha256(tiny_checkpoints["s0"])
    assert record["source"]["filename"] == tiny_checkpoints["s0"].name and "local_path" not in record["source"]
    assert record["context_length"] == 16 and record["keys"]["missing"] == 0 and record["keys"]["unexpected"] == 0
    assert record["keys"]["mapped"] + sum(record["keys"]["dropped"].values()) == record["keys"]["source"]
    assert record["architecture"]["text"]["num_heads"] == {"value": 2, "source": "flag"}
    assert any("sliced to the first 16" in note for note in record["architecture"]["notes"])


def test_sharded_bf16_output_loads(tiny_checkpoints, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "sharded"
    args = ["convert", "-c", str(tiny_checkpoints["s1"]), str(out), "--num-heads", str(heads("s1")),
            "--tokenizer", str(tokenizer_dir), "--max-shard-size", "1MB", "--dtype", "bfloat16", "--verify-load"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((out / shard).is_file() for shard in shards)
    from transformers import Sam3LiteTextModel

    model = Sam3LiteTextModel.from_pretrained(str(out))
    assert model.text_encoder.final_layer_norm.weight.dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_existing_output_is_refused_unless_forced(tiny_checkpoints, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    base = ["convert", "-c", str(tiny_checkpoints["l"]), str(out), "--num-heads", str(heads("l")), "--tokenizer", str(tokenizer_dir)]
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "already exists" in err and (out / "keep.txt").exists()
    code, _, err = run_cli([*base, "--force"], capsys)  # --force replaces only a folder litetext wrote
    assert code == 2 and "keep.txt" in err and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    out.rmdir()
    assert run_cli(base, capsys).code == 0
    code, _, err = run_cli([*base, "--force"], capsys)
    assert code == 0, err
    assert (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it


def test_convert_all_over_a_local_folder_isolates_one_bad_file(tmp_path, tokenizer_dir, capsys):
    source = tmp_path / "hub"
    source.mkdir()
    for variant in ("s0", "s1", "l"):
        for context in (16, 32):
            synthetic.tiny_checkpoint(source / f"tiny_mobileclip_{variant}_ctx{context}.pt", variant, context, pos_rows=77)
    (source / "tiny_mobileclip_s0_ctx16_corrupt.pt").write_bytes((source / "tiny_mobileclip_s0_ctx16.pt").read_bytes()[:5000])
    out = tmp_path / "out"
    # Tiny presets are not released shapes: their head count is a flag, one for the whole batch.
    args = ["convert-all", str(out), "--source", str(source), "--tokenizer", str(tokenizer_dir), "--json"]
    code, stdout, err = run_cli([*args, "--num-heads", "2"], capsys)
    rows = {row["checkpoint"]: row for row in json.loads(stdout)["results"]}
    assert code == 2, err
    assert rows["tiny_mobileclip_s0_ctx16_corrupt.pt"]["status"] == "failed"
    assert "damaged or truncated" in rows["tiny_mobileclip_s0_ctx16_corrupt.pt"]["error"]
    for name, row in rows.items():
        if "corrupt" in name:
            continue
        assert row["status"] == "ok", row
        folder = out / name.removesuffix(".pt")
        assert (folder / "model.safetensors").is_file() and json.loads((folder / "parity" / "text-float32-default.json").read_text())["passed"]
        assert row["context"] == int(name.split("ctx")[1][:2])
    assert not (out / "tiny_mobileclip_s0_ctx16_corrupt").exists()
