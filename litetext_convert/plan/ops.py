"""Named tensor operations the mapping table may use.

Each operation maps a list of tensors to a list of tensors, checks the shapes it is given, and
knows its inverse. Lossy operations (slicing) invert to the part of the source they kept, which
`kept` extracts from the source, so a round trip `inverse(forward(x)) == kept(x)` holds exactly
for every operation. Operations only view or slice: nothing is copied until the writer asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from litetext_convert.errors import MappingError


@dataclass(frozen=True)
class OpContext:
    """What shape-dependent operations need to know about the conversion."""

    context_length: int


class Op:
    name: str = ""
    fan_out: int = 1  # how many tensors come out per tensor in

    def forward(self, tensors: list[torch.Tensor], ctx: OpContext) -> list[torch.Tensor]:
        raise NotImplementedError

    def inverse(self, tensors: list[torch.Tensor], ctx: OpContext) -> list[torch.Tensor]:
        raise NotImplementedError

    def kept(self, tensors: list[torch.Tensor], ctx: OpContext) -> list[torch.Tensor]:
        """The part of the input that `forward` preserves (all of it for lossless operations)."""
        return tensors


def _fail(op: str, message: str) -> MappingError:
    return MappingError(f"operation {op}: {message}")


class SplitQKV(Op):
    """A fused [3N, ...] projection -> q, k, v, rows in that order (upstream and MultiheadAttention)."""

    name = "split_qkv"
    fan_out = 3

    def forward(self, tensors, ctx):
        (fused,) = tensors
        if fused.dim() == 0 or fused.shape[0] % 3:
            raise _fail(self.name, f"first dimension {tuple(fused.shape)} is not divisible by 3")
        return list(torch.chunk(fused, 3, dim=0))

    def inverse(self, tensors, ctx):
        q, k, v = tensors
        return [torch.cat([q, k, v], dim=0)]


class Transpose(Op):
    """A matrix used as `x @ P` upstream becomes an nn.Linear weight `W = P.T`."""

    name = "transpose"

    def forward(self, tensors, ctx):
        (matrix,) = tensors
        if matrix.dim() != 2:
            raise _fail(self.name, f"expects a matrix, got shape {tuple(matrix.shape)}")
        return [matrix.t()]

    def inverse(self, tensors, ctx):
        return [tensors[0].t()]


class SliceTextContext(Op):
    """Text positional table [1, 1, T, D] -> its first `context` rows, as upstream inference does."""

    name = "slice_text_context"

    def forward(self, tensors, ctx):
        (table,) = tensors
        if table.dim() != 4:
            raise _fail(self.name, f"expects [1, 1, T, D], got shape {tuple(table.shape)}")
        rows = table.shape[2]
        if rows < ctx.context_length:
            raise _fail(self.name, f"table has {rows} rows, shorter than the context {ctx.context_length}")
        return [table[:, :, : ctx.context_length, :]]

    def inverse(self, tensors, ctx):
        return tensors

    def kept(self, tensors, ctx):
        return [tensors[0][:, :, : ctx.context_length, :]]


class DropClsRow(Op):
    """ViT position table [1, 1 + H*W, C] -> [1, H*W, C]: transformers' ViT has no cls token."""

    name = "drop_cls_row"

    def forward(self, tensors, ctx):
        (table,) = tensors
        if table.dim() != 3:
            raise _fail(self.name, f"expects [1, 1 + H*W, C], got shape {tuple(table.shape)}")
        grid = table.shape[1] - 1
        side = int(round(grid**0.5))
        if side * side != grid:
            raise _fail(self.name, f"{table.shape[1]} rows are not 1 + a square grid")
        return [table[:, 1:, :]]

    def inverse(self, tensors, ctx):
        return tensors

    def kept(self, tensors, ctx):
        return [tensors[0][:, 1:, :]]


OPERATIONS: dict[str, Op] = {op.name: op for op in (SplitQKV(), Transpose(), SliceTextContext(), DropClsRow())}


def lookup(name: str) -> Op:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise MappingError(f"unknown operation {name!r}; known: {', '.join(sorted(OPERATIONS))}") from None


def fan_out(names: list[str]) -> int:
    total = 1
    for name in names:
        total *= lookup(name).fan_out
    return total


def apply(names: list[str], tensor: torch.Tensor, ctx: OpContext) -> list[torch.Tensor]:
    tensors = [tensor]
    for name in names:
        tensors = _each(lookup(name).forward, tensors, ctx)
    return tensors


def invert(names: list[str], tensors: list[torch.Tensor], ctx: OpContext) -> torch.Tensor:
    for name in reversed(names):
        op = lookup(name)
        groups = [tensors[i : i + op.fan_out] for i in range(0, len(tensors), op.fan_out)]
        tensors = [t for group in groups for t in op.inverse(group, ctx)]
    (source,) = tensors
    return source


def kept(names: list[str], tensor: torch.Tensor, ctx: OpContext) -> torch.Tensor:
    """The part of a source tensor that survives the operations (what `invert` gives back)."""
    for name in names:
        if lookup(name).fan_out == 1:
            (tensor,) = lookup(name).kept([tensor], ctx)
    return tensor


def _each(fn, tensors, ctx):
    return [out for tensor in tensors for out in fn([tensor], ctx)]
