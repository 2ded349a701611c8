"""The upstream efficientsam3 fork (branch sam3_litetext) as the original side, when importable.

Built the way upstream builds it: `TextStudentEncoder` at the stored table length, the original
keys loaded strictly, then `set_context_length` (which slices the table). Nothing is vendored: the
fork must be installed (see README, "Using the upstream code").
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from litetext_convert.reference.text_encoder import TextTrace

BPE_ASSET = Path("assets") / "bpe_simple_vocab_16e6.txt.gz"


class KeepFloat64(TorchFunctionMode):
    """Upstream's LayerNormFP32 and softmax cast their input to float32; on a float64 model that
    raises "mixed dtype" (and would round). For float64 parity only, those casts become no-ops."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.float, torch.Tensor.to) and _casts_float64_down(func, args, kwargs):
            return args[0]
        return func(*args, **kwargs)


def _casts_float64_down(func, args, kwargs) -> bool:
    if not (args and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float64):
        return False
    return func is torch.Tensor.float or torch.float32 in (*args[1:], kwargs.get("dtype"))


def _bpe_path() -> Path:
    import sam3

    packages = [Path(path).resolve() for path in sam3.__path__]
    for package in packages:
        for candidate in (package / BPE_ASSET, package.parent / BPE_ASSET):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"the fork's CLIP vocabulary {BPE_ASSET} was not found beside {packages}")


class UpstreamTextEncoder:
    """Calls the fork's own modules and returns the same stages as our reference."""

    def __init__(self, encoder, dtype: torch.dtype):
        self.encoder = encoder
        self.dtype = dtype

    def __call__(self, input_ids: torch.Tensor) -> TextTrace:
        guard = KeepFloat64() if self.dtype == torch.float64 else contextlib.nullcontext()
        layers: list[torch.Tensor] = []
        transformer = self.encoder.encoder.transformer
        hooks = [layer.register_forward_hook(lambda _m, _i, out: layers.append(out)) for layer in transformer]
        try:
            with torch.no_grad(), guard:
                embeddings = self.encoder.encoder.forward_embedding(input_ids)
                final_norm = self.encoder.encoder(embeddings, return_all_tokens=True, input_is_embeddings=True)
                pooled = self.encoder.encoder(input_ids)
                features = self.encoder.projector(final_norm)
        finally:
            for hook in hooks:
                hook.remove()
        return TextTrace(
            embeddings=embeddings,
            layers=layers[: len(transformer)],
            final_norm=final_norm,
            text_features=features,
            pooled=pooled,
            padding_mask=input_ids == 0,
        )


def load_upstream_text_encoder(state_dict: dict[str, torch.Tensor], arch, dtype: torch.dtype, num_heads: int):
    from sam3.model.text_encoder_student import TextStudentEncoder

    text = arch.text
    family = text.family.value
    attention_layers = text.num_layers.value - (2 if family == "mct" else 0)
    cfg = {
        "context_length": text.positional_rows.value,
        "vocab_size": text.vocab_size.value,
        "dim": text.hidden_size.value,
        "ffn_multiplier_per_layer": text.intermediate_size.value / text.hidden_size.value,
        "n_heads_per_layer": num_heads,
        "n_transformer_layers": attention_layers,
        "norm_layer": "layer_norm_fp32",
        "causal_masking": False,
        "model_name": family,
        "embed_dropout": 0.0,
        "no_scale_embedding": False,
        "no_pos_embedding": False,
    }
    encoder = TextStudentEncoder(
        cfg=cfg, context_length=text.positional_rows.value, output_dim=text.detector_width.value, bpe_path=str(_bpe_path())
    )
    encoder.load_state_dict(state_dict, strict=True)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the resize
        encoder.set_context_length(arch.context_length)
    encoder = encoder.to(dtype).eval()
    return UpstreamTextEncoder(encoder, dtype), {
        "name": "efficientsam3 upstream fork (sam3.model.text_encoder_student.TextStudentEncoder)",
        "kind": "upstream",
        "version": _fork_version(),
    }


def _fork_version() -> str:
    try:
        from importlib.metadata import version

        return version("sam3")
    except Exception:
        return "unknown"


def load_fork_tokenizer():
    from sam3.model.tokenizer_ve import SimpleTokenizer

    tokenizer = SimpleTokenizer(bpe_path=str(_bpe_path()))

    def tokenize(texts, context_length: int) -> torch.Tensor:
        return tokenizer(texts if isinstance(texts, list) else [texts], context_length=context_length)

    return tokenize, "efficientsam3 upstream fork SimpleTokenizer (real CLIP vocabulary)"
