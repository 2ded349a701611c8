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
    gathers: bool = False  # many-to-one: takes every source of a gathered step at once (first op only)

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


class StackRows(Op):
    """N gathered [1, D] embeddings (SAM's `point_embeddings.0..N-1`) -> one [N, D] table, in index order."""

    name = "stack_rows"
    gathers = True

    def forward(self, tensors, ctx):
        if not tensors:
            raise _fail(self.name, "no tensors to stack")
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] != 1:
            raise _fail(self.name, f"expects N tensors of shape [1, D], got {sorted(shapes)}")
        return [torch.cat(tensors, dim=0)]

    def inverse(self, tensors, ctx):
        (table,) = tensors
        return list(torch.split(table, 1, dim=0))


class Duplicate(Op):
    """One source feeding two targets (SAM's gaussian matrix: prompt encoder and shared image embedding).
    The inverse insists both copies are still equal, so a folder whose copies drifted apart fails loudly."""

    name = "duplicate"
    fan_out = 2

    def forward(self, tensors, ctx):
        (tensor,) = tensors
        return [tensor, tensor]

    def inverse(self, tensors, ctx):
        first, second = tensors
        if first.shape != second.shape or (first.device.type != "meta" and not torch.equal(first, second)):
            raise _fail(self.name, "the two copies differ, so they cannot come from one source tensor")
        return [first]


OPERATIONS: dict[str, Op] = {
    op.name: op for op in (SplitQKV(), Transpose(), SliceTextContext(), DropClsRow(), StackRows(), Duplicate())
}


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
    return apply_gathered(names, [tensor], ctx)


def apply_gathered(names: list[str], tensors: list[torch.Tensor], ctx: OpContext) -> list[torch.Tensor]:
    """Several sources (a gathered step) go in only through a gathering first operation."""
    for position, name in enumerate(names):
        op = lookup(name)
        if op.gathers:
            if position:
                raise MappingError(f"operation {name} gathers sources, so it must come first")
            tensors = op.forward(tensors, ctx)
        else:
            tensors = _each(op.forward, tensors, ctx)
    if len(tensors) != fan_out(names):
        raise MappingError(f"operations {names} produced {len(tensors)} tensors, expected {fan_out(names)}")
    return tensors


def invert(names: list[str], tensors: list[torch.Tensor], ctx: OpContext) -> torch.Tensor:
    (source,) = invert_gathered(names, tensors, ctx)
    return source


def invert_gathered(names: list[str], tensors: list[torch.Tensor], ctx: OpContext) -> list[torch.Tensor]:
    """Targets back to their source(s): one tensor, or every gathered source in order."""
    for name in reversed(names):
        op = lookup(name)
        if op.gathers:
            tensors = op.inverse(tensors, ctx)
            continue
        groups = [tensors[i : i + op.fan_out] for i in range(0, len(tensors), op.fan_out)]
        tensors = [t for group in groups for t in op.inverse(group, ctx)]
    return tensors


def kept(names: list[str], tensor: torch.Tensor, ctx: OpContext) -> torch.Tensor:
    """The part of a source tensor that survives the operations (what `invert` gives back)."""
    for name in names:
        if lookup(name).fan_out == 1:
            (tensor,) = lookup(name).kept([tensor], ctx)
    return tensor


def _each(fn, tensors, ctx):
    return [out for tensor in tensors for out in fn([tensor], ctx)]
