"""Every dtype vocabulary in one place (the ground floor: imports neither torch nor transformers
at import): names, aliases, which are reduced, the cast rule, the safetensors codes, tolerances.

Every part of litetext that takes a dtype by name (convert --dtype, parity --dtype, the records,
scripts/) goes through here, so "bf16" means the same thing everywhere and the cast rule (only
floating tensors change dtype; integer and bool tensors are kept) is written once. The safetensors
writer and the bit-exact reader share one code table (`safetensors_code`, `from_safetensors_code`).
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
# The dtypes whole-model parity (detector, tracker, video) computes in; a reduced folder is proven
# by its text stages and the exactness check, which run in float64 with the rounded weights.
COMPUTE = ("float32", "float64")
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


# safetensors' dtype codes (its header's "dtype"), by torch dtype name: one table, read both ways.
SAFETENSORS_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def safetensors_code(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'BF16'; a dtype safetensors cannot hold raises KeyError (the plan refuses it first)."""
    return SAFETENSORS_CODES[name_of(dtype)]


def from_safetensors_code(code: str) -> torch.dtype | None:
    """'BF16' -> torch.bfloat16; None for a code litetext never writes."""
    import torch

    name = next((name for name, known in SAFETENSORS_CODES.items() if known == code), None)
    return getattr(torch, name) if name else None


def tolerances(dtype: str, scope: str = "text") -> tuple[float, float]:
    """(atol, rtol) for comparing two implementations both run in `dtype` (configs/tolerances.toml)."""
    name = canonical(dtype)
    table = read_config(TOLERANCES_FILE).get(scope, {})
    if name not in table:
        raise LitetextError(f"configs/{TOLERANCES_FILE} has no [{scope}.{name}] tolerance")
    entry = table[name]
    return float(entry["atol"]), float(entry["rtol"])


def stage_tolerances(dtype: str, scope: str = "detector") -> tuple[tuple[str, str, float], ...]:
    """(pattern, kind, value) per stage, first match wins: configs/tolerances.toml [scope.dtype] `stages`."""
    name = canonical(dtype)
    entry = read_config(TOLERANCES_FILE).get(scope, {}).get(name)
    if not entry or "stages" not in entry:
        raise LitetextError(f"configs/{TOLERANCES_FILE} has no [{scope}.{name}] stage tolerances")
    return tuple((stage["pattern"], stage["kind"], float(stage["value"])) for stage in entry["stages"])


def tolerance_value(scope: str, entry: str, key: str) -> float:
    """One named number of configs/tolerances.toml (e.g. [tracker.memory] rtol)."""
    try:
        return float(read_config(TOLERANCES_FILE)[scope][entry][key])
    except KeyError:
        raise LitetextError(f"configs/{TOLERANCES_FILE} has no [{scope}.{entry}] {key}") from None


def atol_of_max(dtype: str, scope: str = "text") -> float:
    """The share of a stage's magnitude added to atol (reduced dtypes; 0 when the table has none)."""
    return float(read_config(TOLERANCES_FILE).get(scope, {}).get(canonical(dtype), {}).get("atol_of_max", 0.0))
