"""Floating dtypes in one place: names, aliases, which are reduced, the cast rule, tolerances.

Every part of litetext that takes a dtype by name (convert --dtype, parity --dtype, the records,
scripts/) goes through here, so "bf16" means the same thing everywhere and the cast rule (only
floating tensors change dtype; integer and bool tensors are kept) is written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litetext_convert.errors import LitetextError
from litetext_convert.paths import read_config

if TYPE_CHECKING:
    import torch

# Names only at import: the CLI imports this module to parse --dtype, and `convert` starts hashing
# the source before torch is imported (~1.5 s it would otherwise wait for).
NAMES = ("float32", "bfloat16", "float16", "float64")


def __getattr__(name: str):
    if name == "DTYPES":  # {name: torch dtype}, built on first use
        import torch

        return {dtype_name: getattr(torch, dtype_name) for dtype_name in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ALIASES = {
    "fp32": "float32", "float": "float32",
    "bf16": "bfloat16",
    "fp16": "float16", "half": "float16",
    "fp64": "float64", "double": "float64",
}
REDUCED = ("bfloat16", "float16")  # fewer mantissa bits than the float32 originals were trained in
KEEP = "keep"  # convert only: every tensor keeps the source's dtype
TOLERANCES_FILE = "tolerances.toml"


def canonical(name: str, *, allow_keep: bool = False) -> str:
    """'bf16' -> 'bfloat16'; an unknown name is a one-line error listing the choices."""
    lowered = str(name).strip().lower().removeprefix("torch.")
    if allow_keep and lowered == KEEP:
        return KEEP
    lowered = ALIASES.get(lowered, lowered)
    if lowered not in NAMES:
        choices = ([KEEP] if allow_keep else []) + list(NAMES)
        raise LitetextError(f"unknown --dtype {name!r}; choose {', '.join(choices)} (aliases: {', '.join(ALIASES)})")
    return lowered


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, canonical(name))


def name_of(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def is_reduced(name: str) -> bool:
    return canonical(name) in REDUCED


def check_dtype(requested: str) -> str:
    """A --dtype for convert (keep allowed); returns its canonical name."""
    return canonical(requested, allow_keep=True)


def target_dtype(source: torch.dtype, requested: str) -> torch.dtype:
    """The cast rule: floating tensors take the requested dtype; integers and bools are kept."""
    requested = canonical(requested, allow_keep=True)
    if requested == KEEP or not source.is_floating_point:
        return source
    return torch_dtype(requested)


def cast(tensor: torch.Tensor, requested: str) -> torch.Tensor:
    """`tensor` under the cast rule, by torch's own conversion (round to nearest even)."""
    return tensor.to(target_dtype(tensor.dtype, requested))


def tolerances(dtype: str, scope: str = "text") -> tuple[float, float]:
    """(atol, rtol) for comparing two implementations both run in `dtype` (configs/tolerances.toml)."""
    name = canonical(dtype)
    table = read_config(TOLERANCES_FILE).get(scope, {})
    if name not in table:
        raise LitetextError(f"configs/{TOLERANCES_FILE} has no [{scope}.{name}] tolerance")
    entry = table[name]
    return float(entry["atol"]), float(entry["rtol"])


def atol_of_max(dtype: str, scope: str = "text") -> float:
    """The share of a stage's magnitude added to atol (reduced dtypes; 0 when the table has none)."""
    return float(read_config(TOLERANCES_FILE).get(scope, {}).get(canonical(dtype), {}).get("atol_of_max", 0.0))
