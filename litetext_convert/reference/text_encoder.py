"""Clean-room reference of upstream's LiteText student text encoder (``TextStudentEncoder``).

Upstream (EfficientSAM3, branch ``sam3_litetext``) wraps a MobileCLIP text transformer and a
``projector`` Linear(D -> 256). This module recomputes it from the original checkpoint keys, loaded
unchanged (keys relative to ``detector.backbone.language_backbone.``), so that parity has a ground
truth that owes nothing to transformers. Module attribute names deliberately equal the upstream
names: a key can only land in the slot upstream loads it into.

Semantics (checked against upstream ``sam3/backbones/mobile_clip.py`` and
``sam3/model/text_encoder_student.py``):

- embedding: ``token_embedding[ids] + positional_table`` (no embedding scale, dropout 0). The table is
  bilinearly resized only when the input length differs from its length; upstream inference slices
  the stored table to the context first, so that never happens on the inference path.
- RepMixer block on ``[B, D, 1, T]``: ``x += ls_tm * (BN(dwconv(x)) + BN_skip(x) - BN_norm(x))``, then
  ``x += ls * fc2(gelu(fc1(BN(dwconv(x)))))``; depthwise kernel ``(1, k)`` (k = 11) with padding
  ``(0, k // 2)``, BatchNorm eps 1e-5 with running statistics, layer scales ``[D, 1, 1]``.
- transformer layer (pre-norm): ``x += out_proj(attention(LN(x)))``, ``x += fc2(gelu(fc1(LN(x))))``;
  q/k/v are the rows of ``qkv_proj`` in that order, q is scaled by ``head_dim ** -0.5`` before the
  product, no causal mask and no key-padding mask (padded positions are attended to), exact erf GELU.
- LayerNorm (eps 1e-5) and softmax are computed in at least float32.

float64: upstream's ``LayerNormFP32`` casts its input to float32 while its weights stay in the module
dtype, so an upstream model cast to float64 fails ("mixed dtype") and its softmax silently rounds to
float32 (the same "mixed dtype" error stops an upstream model cast to float16/bfloat16 on the CPU).
This reference computes both in ``promote_types(dtype, float32)``, weights included: bit-identical
to upstream in float32, float32 arithmetic for half-precision models (upstream's intent), and fully
float64 for float64, which is what makes float64 parity meaningful. An upstream run in float64 needs
its float64 -> float32 casts patched out; with that, it is bit-identical to this reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TextTrace", "CleanRoomTextEncoder"]

VARIANTS = ("mct", "base")
_POSITIONAL_KEY = "encoder.positional_embedding.pos_embed.pos_embed"
_LAYER_INDEX = re.compile(r"^encoder\.transformer\.(\d+)\.")


@dataclass
class TextTrace:
    """Every intermediate parity compares, batch-first."""

    embeddings: Tensor  # [B, T, D] token + positional embedding
    layers: list[Tensor]  # [B, T, D] after every encoder layer, RepMixer blocks included
    final_norm: Tensor  # [B, T, D]
    text_features: Tensor  # [B, T, 256] projector(final_norm): what the detector consumes
    pooled: Tensor  # [B, P] final_norm at argmax(ids) @ projection_layer
    padding_mask: Tensor  # [B, T] bool, True where ids == 0 (upstream convention)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half precision and float32, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


class LayerNormFP32(nn.LayerNorm):
    """LayerNorm evaluated in at least float32, returned in the input dtype."""

    def __init__(self, dim: int):
        super().__init__(dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        compute = _compute_dtype(x.dtype)
        normed = F.layer_norm(
            x.to(compute), self.normalized_shape, self.weight.to(compute), self.bias.to(compute), self.eps
        )
        return normed.to(x.dtype)


class SelfAttention(nn.Module):
    """Unmasked multi-head self-attention over a fused q/k/v projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        # [B, T, 3, H, hd] -> [3, B, H, T, hd]: fused rows are q | k | v, each split head-major.
        fused = self.qkv_proj(x).reshape(batch, length, 3, self.num_heads, head_dim)
        query, key, value = fused.permute(2, 0, 3, 1, 4)
        scores = (query * head_dim**-0.5) @ key.transpose(-1, -2)
        weights = torch.softmax(scores.to(_compute_dtype(scores.dtype)), dim=-1).to(scores.dtype)
        mixed = (weights @ value).transpose(1, 2).reshape(batch, length, dim)
        return self.out_proj(mixed)


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer.

    The numeric child names are upstream's ``nn.Sequential`` slots, kept so the original keys load
    unchanged. The parameter-free slots are omitted: ``pre_norm_mha.2`` (dropout), ``pre_norm_ffn.2``
    (GELU), ``pre_norm_ffn.3`` and ``.5`` (dropouts).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int):
        super().__init__()
        self.pre_norm_mha = nn.ModuleDict({"0": LayerNormFP32(dim), "1": SelfAttention(dim, num_heads)})
        self.pre_norm_ffn = nn.ModuleDict(
            {"0": LayerNormFP32(dim), "1": nn.Linear(dim, ffn_dim), "4": nn.Linear(ffn_dim, dim)}
        )

    def forward(self, x: Tensor) -> Tensor:
        attention_norm, attention = self.pre_norm_mha["0"], self.pre_norm_mha["1"]
        x = x + attention(attention_norm(x))
        ffn_norm, fc1, fc2 = self.pre_norm_ffn["0"], self.pre_norm_ffn["1"], self.pre_norm_ffn["4"]
        return x + fc2(F.gelu(fc1(ffn_norm(x))))


class DepthwiseConvBN(nn.Module):
    """BN(depthwise conv (1, k), 'same' padding along the sequence, no bias)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(
            dim, dim, kernel_size=(1, kernel_size), padding=(0, kernel_size // 2), groups=dim, bias=False
        )
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class BatchNormBranches(nn.Module):
    """Upstream's MobileOne block as RepMixer configures it: BN_skip(x) + sum of conv-BN branches.

    No activation, no squeeze-excite and no 1x1 scale branch (upstream disables them for RepMixer).
    """

    def __init__(self, dim: int, kernel_size: int, num_conv_branches: int):
        super().__init__()
        self.rbr_skip = nn.BatchNorm2d(dim)
        self.rbr_conv = nn.ModuleList(DepthwiseConvBN(dim, kernel_size) for _ in range(num_conv_branches))

    def forward(self, x: Tensor) -> Tensor:
        out = self.rbr_skip(x)
        for branch in self.rbr_conv:
            out = out + branch(x)
        return out


class RepMixer(nn.Module):
    """Token mixing by depthwise convolution: x + ls * (mixer(x) - norm(x))."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.norm = BatchNormBranches(dim, kernel_size, num_conv_branches=0)
        self.mixer = BatchNormBranches(dim, kernel_size, num_conv_branches=1)
        self.layer_scale = nn.Parameter(torch.empty(dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))


class ConvFFN(nn.Module):
    """fc2(gelu(fc1(BN(dwconv(x))))) with 1x1 convolutions as the fully connected layers."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int):
        super().__init__()
        self.conv = DepthwiseConvBN(dim, kernel_size)
        self.fc1 = nn.Conv2d(dim, hidden_dim, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden_dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    """Convolutional layer of the 'mct' variant; works on [B, D, 1, T], returns [B, T, D]."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int):
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel_size)
        self.convffn = ConvFFN(dim, hidden_dim, kernel_size)
        self.layer_scale = nn.Parameter(torch.empty(dim, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2).unsqueeze(2)
        x = self.token_mixer(x)
        x = x + self.layer_scale * self.convffn(x)
        return x.squeeze(2).transpose(1, 2)


class PositionalTable(nn.Module):
    """Learned [1, 1, T, D] table; bilinearly resized when asked for another length (as upstream)."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, 1, length, dim))

    def forward(self, length: int) -> Tensor:
        table = self.pos_embed
        if length != table.shape[2]:
            table = F.interpolate(table, size=(length, table.shape[3]), mode="bilinear")
        return table.reshape(1, length, table.shape[3])


class MobileCLIPText(nn.Module):
    """The ``encoder`` half: embeddings, layers, final norm and the CLIP projection matrix."""

    def __init__(
        self, vocab_size: int, context_length: int, dim: int, projection_dim: int, layers: list[nn.Module]
    ):
        super().__init__()
        self.embedding_layer = nn.Embedding(vocab_size, dim)
        # Upstream nests the table two modules deep: positional_embedding.pos_embed.pos_embed.
        self.positional_embedding = nn.ModuleDict({"pos_embed": PositionalTable(context_length, dim)})
        self.transformer = nn.ModuleList(layers)
        self.final_layer_norm = LayerNormFP32(dim)
        self.projection_layer = nn.Parameter(torch.empty(dim, projection_dim))

    def embed(self, input_ids: Tensor) -> Tensor:
        tokens = self.embedding_layer(input_ids)
        return tokens + self.positional_embedding["pos_embed"](input_ids.shape[1])


class CleanRoomTextEncoder(nn.Module):
    """Upstream ``TextStudentEncoder`` (minus its tokenizer), in eval mode, returning every stage."""

    def __init__(self, encoder: MobileCLIPText, projector: nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    @classmethod
    def from_original_state_dict(
        cls,
        state_dict: Mapping[str, Tensor],
        *,
        variant: str,
        num_heads: int,
        context_length: int,
        dtype: torch.dtype = torch.float32,
    ) -> CleanRoomTextEncoder:
        """Build from keys relative to ``detector.backbone.language_backbone.``, strictly.

        A positional table longer than ``context_length`` is sliced to its first rows (upstream's
        ``set_context_length`` at inference); a shorter one is a ValueError. Every key must be used
        exactly once: missing or unexpected keys and wrong shapes raise a ValueError listing them.
        """
        state_dict = dict(state_dict)
        state_dict[_POSITIONAL_KEY] = _sliced_positional_table(state_dict, context_length)
        model = cls(_build_encoder(state_dict, variant, num_heads, context_length), _build_projector(state_dict))
        _check_keys_and_shapes(model, state_dict)
        model.to(dtype)
        model.load_state_dict(state_dict, strict=True)
        return model.eval().requires_grad_(False)

    def forward(self, input_ids: Tensor) -> TextTrace:
        embeddings = self.encoder.embed(input_ids)
        layers, hidden = [], embeddings
        for layer in self.encoder.transformer:
            hidden = layer(hidden)
            layers.append(hidden)
        final_norm = self.encoder.final_layer_norm(hidden)
        # CLIP pooling: the end-of-text token has the largest id, so argmax finds it.
        end_tokens = final_norm[torch.arange(input_ids.shape[0]), input_ids.argmax(dim=-1)]
        pooled = end_tokens @ self.encoder.projection_layer
        return TextTrace(
            embeddings=embeddings,
            layers=layers,
            final_norm=final_norm,
            text_features=self.projector(final_norm),
            pooled=pooled,
            padding_mask=input_ids == 0,
        )


def _require(state_dict: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in state_dict:
        raise ValueError(f"original text state dict lacks {key!r}, needed to size the model")
    return state_dict[key]


def _sliced_positional_table(state_dict: Mapping[str, Tensor], context_length: int) -> Tensor:
    if context_length < 1:
        raise ValueError(f"context_length must be positive, got {context_length}")
    table = _require(state_dict, _POSITIONAL_KEY)
    if table.dim() != 4 or table.shape[:2] != (1, 1):
        raise ValueError(f"{_POSITIONAL_KEY} has shape {list(table.shape)}, expected [1, 1, T, D]")
    stored = table.shape[2]
    if stored < context_length:
        raise ValueError(
            f"positional table has {stored} rows but context_length is {context_length}: "
            f"use a context length of at most {stored}"
        )
    return table[:, :, :context_length]


def _layer_count(state_dict: Mapping[str, Tensor]) -> int:
    indices = {int(match.group(1)) for key in state_dict if (match := _LAYER_INDEX.match(key))}
    if not indices:
        raise ValueError("original text state dict has no encoder.transformer.{i} layers")
    return max(indices) + 1


def _is_repmixer_slot(variant: str, index: int, count: int) -> bool:
    return variant == "mct" and index in (0, count - 1)


def _check_layer_kind(state_dict: Mapping[str, Tensor], prefix: str, repmixer: bool, variant: str) -> None:
    """A wrong variant shows as a layer of the other kind: say so instead of listing its keys."""
    found_repmixer = any(key.startswith(f"{prefix}token_mixer.") for key in state_dict)
    if found_repmixer != repmixer:
        kinds = ("a transformer layer", "a RepMixer block")
        found, wanted = kinds[found_repmixer], kinds[repmixer]
        layer = prefix.rstrip(".")
        raise ValueError(f"{layer} holds {found} where variant {variant!r} has {wanted}: wrong variant?")


def _build_layer(
    state_dict: Mapping[str, Tensor], prefix: str, repmixer: bool, dim: int, num_heads: int
) -> nn.Module:
    if repmixer:
        hidden_dim = _require(state_dict, f"{prefix}convffn.fc1.weight").shape[0]
        kernel_size = _require(state_dict, f"{prefix}convffn.conv.conv.weight").shape[-1]
        return RepMixerBlock(dim, hidden_dim, kernel_size)
    ffn_dim = _require(state_dict, f"{prefix}pre_norm_ffn.1.weight").shape[0]
    return TransformerLayer(dim, num_heads, ffn_dim)


def _build_encoder(
    state_dict: Mapping[str, Tensor], variant: str, num_heads: int, context_length: int
) -> MobileCLIPText:
    if variant not in VARIANTS:
        raise ValueError(f"unknown text variant {variant!r}, expected one of {VARIANTS}")
    vocab_size, dim = _require(state_dict, "encoder.embedding_layer.weight").shape
    if num_heads <= 0 or dim % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide the text width {dim}")
    count = _layer_count(state_dict)
    if variant == "mct" and count < 2:
        raise ValueError(f"variant 'mct' needs RepMixer blocks at both ends, found {count} layer(s)")
    layers = []
    for index in range(count):
        prefix, repmixer = f"encoder.transformer.{index}.", _is_repmixer_slot(variant, index, count)
        _check_layer_kind(state_dict, prefix, repmixer, variant)
        layers.append(_build_layer(state_dict, prefix, repmixer, dim, num_heads))
    projection_dim = _require(state_dict, "encoder.projection_layer").shape[1]
    return MobileCLIPText(vocab_size, context_length, dim, projection_dim, layers)


def _build_projector(state_dict: Mapping[str, Tensor]) -> nn.Linear:
    out_dim, in_dim = _require(state_dict, "projector.weight").shape
    return nn.Linear(in_dim, out_dim)


def _check_keys_and_shapes(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """One ValueError listing every missing, unexpected and mis-shaped key, before anything loads."""
    expected = model.state_dict()
    problems = [f"missing: {key}" for key in sorted(expected.keys() - state_dict.keys())]
    problems += [f"unexpected: {key}" for key in sorted(state_dict.keys() - expected.keys())]
    problems += [
        f"shape: {key} is {list(state_dict[key].shape)}, expected {list(expected[key].shape)}"
        for key in sorted(expected.keys() & state_dict.keys())
        if state_dict[key].shape != expected[key].shape
    ]
    if problems:
        listing = "\n  ".join(problems)
        header = f"original text state dict does not match the layout ({len(problems)} problems)"
        raise ValueError(f"{header}:\n  {listing}")
