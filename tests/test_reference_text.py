"""The clean-room reference text encoder: strict loading, context slicing, dtypes, and parity with
upstream's own ``TextStudentEncoder`` whenever the EfficientSAM3 fork is importable."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from litetext_convert.reference.text_encoder import CleanRoomTextEncoder, TextTrace
from litetext_convert.reference.upstream import KeepFloat64

DIM, HEADS, VOCAB, TABLE_ROWS, CONTEXT, KERNEL = 64, 2, 49408, 77, 16, 11
START, END = 49406, 49407
S1_KEY_TABLE = Path(__file__).resolve().parent.parent / "configs" / "manifest" / "upstream_keys_s1_text.tsv"


def _transformer_shapes(dim: int, ffn: int) -> dict[str, tuple[int, ...]]:
    return {
        "pre_norm_mha.0.weight": (dim,),
        "pre_norm_mha.0.bias": (dim,),
        "pre_norm_mha.1.qkv_proj.weight": (3 * dim, dim),
        "pre_norm_mha.1.qkv_proj.bias": (3 * dim,),
        "pre_norm_mha.1.out_proj.weight": (dim, dim),
        "pre_norm_mha.1.out_proj.bias": (dim,),
        "pre_norm_ffn.0.weight": (dim,),
        "pre_norm_ffn.0.bias": (dim,),
        "pre_norm_ffn.1.weight": (ffn, dim),
        "pre_norm_ffn.1.bias": (ffn,),
        "pre_norm_ffn.4.weight": (dim, ffn),
        "pre_norm_ffn.4.bias": (dim,),
    }


def _batchnorm_shapes(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return {f"{prefix}.{name}": (() if name == "num_batches_tracked" else (dim,)) for name in names}


def _repmixer_shapes(dim: int, ffn: int) -> dict[str, tuple[int, ...]]:
    return {
        "layer_scale": (dim, 1, 1),
        "token_mixer.layer_scale": (dim, 1, 1),
        **_batchnorm_shapes("token_mixer.norm.rbr_skip", dim),
        **_batchnorm_shapes("token_mixer.mixer.rbr_skip", dim),
        "token_mixer.mixer.rbr_conv.0.conv.weight": (dim, 1, 1, KERNEL),
        **_batchnorm_shapes("token_mixer.mixer.rbr_conv.0.bn", dim),
        "convffn.conv.conv.weight": (dim, 1, 1, KERNEL),
        **_batchnorm_shapes("convffn.conv.bn", dim),
        "convffn.fc1.weight": (ffn, dim, 1, 1),
        "convffn.fc1.bias": (ffn,),
        "convffn.fc2.weight": (dim, ffn, 1, 1),
        "convffn.fc2.bias": (dim,),
    }


def original_text_shapes(variant: str, transformer_layers: int, dim: int = DIM, rows: int = TABLE_ROWS):
    """The original key layout (relative to detector.backbone.language_backbone.), written out by hand."""
    kinds = ["transformer"] * transformer_layers
    if variant == "mct":
        kinds = ["repmixer", *kinds, "repmixer"]
    shapes = {
        "encoder.embedding_layer.weight": (VOCAB, dim),
        "encoder.positional_embedding.pos_embed.pos_embed": (1, 1, rows, dim),
    }
    for index, kind in enumerate(kinds):
        layer = _repmixer_shapes(dim, 4 * dim) if kind == "repmixer" else _transformer_shapes(dim, 4 * dim)
        shapes.update({f"encoder.transformer.{index}.{name}": shape for name, shape in layer.items()})
    shapes.update(
        {
            "encoder.final_layer_norm.weight": (dim,),
            "encoder.final_layer_norm.bias": (dim,),
            "encoder.projection_layer": (dim, dim),
            "projector.weight": (256, dim),
            "projector.bias": (256,),
        }
    )
    return shapes


def _random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Non-trivial everywhere; scales keep activations O(1) through the layers."""
    if key.endswith("num_batches_tracked"):
        return torch.randint(1, 1000, shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if "layer_scale" in key:
        return 0.5 * noise  # far from the 1e-5 init, so the RepMixer branches matter
    if len(shape) == 1 and key.endswith(".weight"):  # LayerNorm and BatchNorm gains
        return 1.0 + 0.2 * noise
    if len(shape) >= 2 and not key.startswith("encoder.embedding") and "pos_embed" not in key:
        fan_in = shape[1] * (shape[-1] if len(shape) == 4 else 1)
        return noise * fan_in**-0.5
    return 0.5 * noise


def random_original_state_dict(variant: str, transformer_layers: int, *, seed: int = 0, rows: int = TABLE_ROWS):
    generator = torch.Generator().manual_seed(seed)
    shapes = original_text_shapes(variant, transformer_layers, rows=rows)
    return {key: _random_tensor(key, shape, generator) for key, shape in shapes.items()}


def prompt_ids(lengths: list[int], context: int = CONTEXT, seed: int = 1) -> torch.Tensor:
    """Rows of start + random ids + end, zero-padded (upstream's padding)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), context, dtype=torch.long)
    for row, length in enumerate(lengths):
        body = torch.randint(1, START, (length,), generator=generator)
        ids[row, : length + 2] = torch.cat([torch.tensor([START]), body, torch.tensor([END])])
    return ids


def build(variant: str = "mct", transformer_layers: int = 1, dtype: torch.dtype = torch.float32, **kwargs):
    state_dict = random_original_state_dict(variant, transformer_layers, **kwargs)
    return CleanRoomTextEncoder.from_original_state_dict(
        state_dict, variant=variant, num_heads=HEADS, context_length=CONTEXT, dtype=dtype
    )


@pytest.mark.parametrize(("variant", "transformer_layers"), [("mct", 1), ("mct", 2), ("base", 2)])
def test_trace_has_every_stage(variant: str, transformer_layers: int):
    trace = build(variant, transformer_layers)(prompt_ids([3, 14, 0]))
    layer_count = transformer_layers + (2 if variant == "mct" else 0)
    assert isinstance(trace, TextTrace)
    assert len(trace.layers) == layer_count
    for tensor in (trace.embeddings, *trace.layers, trace.final_norm):
        assert tensor.shape == (3, CONTEXT, DIM) and tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()
    assert trace.text_features.shape == (3, CONTEXT, 256)
    assert trace.pooled.shape == (3, DIM)


def test_pooled_is_end_token_through_projection():
    model = build()
    ids = prompt_ids([2, 9])
    trace = model(ids)
    end_positions = (ids == END).int().argmax(dim=1)
    expected = trace.final_norm[torch.arange(2), end_positions] @ model.encoder.projection_layer
    torch.testing.assert_close(trace.pooled, expected, rtol=0, atol=0)


def test_padding_mask_marks_zero_ids():
    ids = prompt_ids([3, 14])
    assert torch.equal(build()(ids).padding_mask, ids == 0)


def test_padded_positions_are_attended_like_upstream():
    """No key-padding mask: what sits in a padded slot changes the real tokens' features."""
    model = build("base", 2)
    ids = prompt_ids([3])
    other = ids.clone()
    other[0, -1] = 500
    real = slice(0, 5)
    assert not torch.allclose(model(ids).text_features[:, real], model(other).text_features[:, real])


def test_longer_positional_table_is_sliced_to_context():
    state_dict = random_original_state_dict("mct", 1)
    model = CleanRoomTextEncoder.from_original_state_dict(
        state_dict, variant="mct", num_heads=HEADS, context_length=CONTEXT
    )
    table = model.encoder.positional_embedding["pos_embed"].pos_embed
    assert table.shape == (1, 1, CONTEXT, DIM)
    torch.testing.assert_close(table, state_dict["encoder.positional_embedding.pos_embed.pos_embed"][:, :, :CONTEXT])
    ids = prompt_ids([4])
    expected = state_dict["encoder.embedding_layer.weight"][ids] + table[0]
    torch.testing.assert_close(model(ids).embeddings, expected, rtol=0, atol=0)


def test_shorter_positional_table_is_an_error():
    state_dict = random_original_state_dict("mct", 1, rows=CONTEXT)
    with pytest.raises(ValueError, match=r"16 rows but context_length is 32"):
        CleanRoomTextEncoder.from_original_state_dict(state_dict, variant="mct", num_heads=HEADS, context_length=32)


def _load(state_dict, variant="mct"):
    return CleanRoomTextEncoder.from_original_state_dict(
        state_dict, variant=variant, num_heads=HEADS, context_length=CONTEXT
    )


def test_missing_and_unexpected_keys_are_all_listed():
    state_dict = random_original_state_dict("mct", 1)
    del state_dict["encoder.transformer.0.token_mixer.norm.rbr_skip.num_batches_tracked"]
    del state_dict["projector.bias"]
    state_dict["encoder.extra"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        _load(state_dict)
    message = str(error.value)
    assert "missing: encoder.transformer.0.token_mixer.norm.rbr_skip.num_batches_tracked" in message
    assert "missing: projector.bias" in message
    assert "unexpected: encoder.extra" in message


def test_wrong_shape_is_an_error():
    state_dict = random_original_state_dict("base", 2)
    state_dict["encoder.transformer.1.pre_norm_mha.1.out_proj.bias"] = torch.zeros(DIM + 1)
    with pytest.raises(ValueError, match="shape: encoder.transformer.1.pre_norm_mha.1.out_proj.bias"):
        _load(state_dict, "base")


def test_wrong_variant_is_an_error():
    with pytest.raises(ValueError, match="encoder.transformer.0 holds a RepMixer block where variant 'base'"):
        _load(random_original_state_dict("mct", 1), "base")
    with pytest.raises(ValueError, match="encoder.transformer.0 holds a transformer layer where variant 'mct'"):
        _load(random_original_state_dict("base", 2), "mct")
    with pytest.raises(ValueError, match="unknown text variant"):
        _load(random_original_state_dict("base", 2), "s0")


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="does not divide"):
        CleanRoomTextEncoder.from_original_state_dict(
            random_original_state_dict("base", 2), variant="base", num_heads=5, context_length=CONTEXT
        )


def test_float64_runs_in_float64_throughout():
    ids = prompt_ids([3, 14])
    trace64 = build("mct", 2, dtype=torch.float64)(ids)
    trace32 = build("mct", 2)(ids)
    for name in ("embeddings", "final_norm", "text_features", "pooled"):
        assert getattr(trace64, name).dtype == torch.float64
    assert all(layer.dtype == torch.float64 for layer in trace64.layers)
    torch.testing.assert_close(trace64.text_features.float(), trace32.text_features, rtol=1e-4, atol=1e-4)
    # LayerNorm must not round through float32 in float64 (upstream's LayerNormFP32 would).
    norm = build("base", 2, dtype=torch.float64).encoder.final_layer_norm
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    exact = torch.nn.functional.layer_norm(x, (DIM,), norm.weight, norm.bias, 1e-5)
    torch.testing.assert_close(norm(x), exact, rtol=0, atol=0)


def test_hand_written_layout_matches_released_s1_keys():
    prefix = "detector.backbone.language_backbone."
    lines = S1_KEY_TABLE.read_text().splitlines()[1:]
    released = {line.split("\t")[0].removeprefix(prefix): line.split("\t")[1] for line in lines if line}
    ours = original_text_shapes("base", 12, dim=512, rows=16)
    assert set(released) == set(ours)
    assert all(released[key] == str(list(shape)) for key, shape in ours.items())


# ---------------------------------------------------------------------------------------------------
# Parity with the real upstream code (EfficientSAM3 fork, branch sam3_litetext), when importable.


def _upstream_modules():
    mobile_clip = pytest.importorskip(
        "sam3.backbones.mobile_clip",
        reason="EfficientSAM3 fork (branch sam3_litetext) not importable: no upstream text-encoder parity",
    )
    student = pytest.importorskip(
        "sam3.model.text_encoder_student",
        reason="fork's text_encoder_student not importable (needs ftfy, iopath): no upstream parity",
    )
    return mobile_clip, student


def _upstream_encoder(student_module, state_dict, variant: str, transformer_layers: int, bpe_path: Path):
    """Upstream's construction path: build at 77 tokens, load strictly, then set_context_length."""
    cfg = {
        "context_length": TABLE_ROWS,
        "vocab_size": VOCAB,
        "dim": DIM,
        "ffn_multiplier_per_layer": 4.0,
        "n_heads_per_layer": HEADS,
        "n_transformer_layers": transformer_layers,
        "norm_layer": "layer_norm_fp32",
        "causal_masking": False,
        "model_name": variant,
        "embed_dropout": 0.0,
        "no_scale_embedding": False,
        "no_pos_embedding": False,
    }
    encoder = student_module.TextStudentEncoder(
        cfg=cfg, context_length=TABLE_ROWS, output_dim=256, bpe_path=str(bpe_path)
    )
    encoder.load_state_dict(state_dict, strict=True)
    with contextlib.redirect_stdout(None):  # it prints the resize
        encoder.set_context_length(CONTEXT)
    return encoder.eval()


def _upstream_trace(upstream, ids: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Upstream's own inference path (TextStudentEncoder.forward minus tokenisation), plus its pooling."""
    layers: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _module, _inputs, out: layers.append(out))
        for layer in upstream.encoder.transformer
    ]
    embeddings = upstream.encoder.forward_embedding(ids)
    final_norm = upstream.encoder(embeddings, return_all_tokens=True, input_is_embeddings=True)
    for hook in hooks:
        hook.remove()
    return {
        "embeddings": embeddings,
        "layers": layers,
        "final_norm": final_norm,
        "text_features": upstream.projector(final_norm),
        "pooled": upstream.encoder(ids),
    }


def max_differences(ours: TextTrace, theirs: dict) -> dict[str, float]:
    diffs = {
        name: (getattr(ours, name) - theirs[name]).abs().max().item()
        for name in ("embeddings", "final_norm", "text_features", "pooled")
    }
    for index, (mine, upstream) in enumerate(zip(ours.layers, theirs["layers"], strict=True)):
        diffs[f"layers.{index}"] = (mine - upstream).abs().max().item()
    return diffs


@pytest.mark.parametrize(("variant", "transformer_layers"), [("mct", 2), ("base", 2)])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_matches_real_upstream(tmp_path, variant: str, transformer_layers: int, dtype: torch.dtype, tolerance: float):
    _, student = _upstream_modules()
    from litetext_convert.reference.synthetic_vocab import write_upstream_bpe_file

    bpe_path = write_upstream_bpe_file(tmp_path / "bpe.txt.gz")
    state_dict = random_original_state_dict(variant, transformer_layers, seed=7)
    upstream = _upstream_encoder(student, state_dict, variant, transformer_layers, bpe_path).to(dtype)
    ours = CleanRoomTextEncoder.from_original_state_dict(
        state_dict, variant=variant, num_heads=HEADS, context_length=CONTEXT, dtype=dtype
    )
    ids = prompt_ids([3, 14, 0, 6])
    cast_guard = KeepFloat64() if dtype == torch.float64 else contextlib.nullcontext()
    with torch.no_grad(), cast_guard:
        theirs = _upstream_trace(upstream, ids)
    diffs = max_differences(ours(ids), theirs)
    assert theirs["final_norm"].dtype == dtype
    assert max(diffs.values()) <= tolerance, diffs


def test_matches_real_upstream_from_prompt_text(tmp_path):
    """End to end from strings: upstream's tokenizer + encoder against ours, same synthetic BPE file."""
    _, student = _upstream_modules()
    from litetext_convert.reference.synthetic_vocab import write_upstream_bpe_file
    from litetext_convert.reference.tokenizer import CleanRoomTokenizer

    bpe_path = write_upstream_bpe_file(tmp_path / "bpe.txt.gz")
    state_dict = random_original_state_dict("mct", 1, seed=3)
    upstream = _upstream_encoder(student, state_dict, "mct", 1, bpe_path)
    ours = CleanRoomTextEncoder.from_original_state_dict(
        state_dict, variant="mct", num_heads=HEADS, context_length=CONTEXT
    )
    prompts = ["a red car", "", "The QUICK brown fox, jumping over 3 lazy dogs again and again and again!"]
    with torch.no_grad():
        mask, memory, _ = upstream(prompts)
    trace = ours(CleanRoomTokenizer.from_bpe_file(bpe_path)(prompts, CONTEXT))
    assert torch.equal(mask, trace.padding_mask)
    torch.testing.assert_close(memory.transpose(0, 1), trace.text_features, rtol=0, atol=1e-5)
