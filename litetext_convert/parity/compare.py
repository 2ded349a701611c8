"""Stage-by-stage comparison of two implementations' tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class StageDiff:
    name: str
    max_abs: float
    mean_abs: float
    max_rel: float  # max |a - b| / max |a|: the error relative to the stage's magnitude
    cosine: float
    reference_max: float
    shape: list[int]
    passed: bool
    atol: float
    rtol: float
    note: str = ""
    # The smallest atol that passes at this rtol: how much headroom a tolerance leaves (measurement).
    needed_atol: float = 0.0
    # Reduced precision: atol grows by this fraction of the stage's magnitude (0 for float32/float64).
    atol_of_max: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def compare(
    name: str, reference: torch.Tensor, candidate: torch.Tensor, *, atol: float, rtol: float, note: str = "",
    atol_of_max: float = 0.0,
) -> StageDiff:
    """Pass when every element satisfies |ref - cand| <= atol + rtol * |ref| (numpy's allclose rule),
    with `atol_of_max * max |ref|` added to atol: rounding in a reduced dtype scales with the stage."""
    if reference.shape != candidate.shape:
        return StageDiff(name, float("inf"), float("inf"), float("inf"), 0.0, 0.0, list(reference.shape), False, atol, rtol,
                         f"shape {list(reference.shape)} vs {list(candidate.shape)}")
    ref = reference.detach().to(torch.float64)
    cand = candidate.detach().to(torch.float64)
    diff = (ref - cand).abs()
    reference_max = float(ref.abs().max()) if ref.numel() else 0.0
    max_abs = float(diff.max()) if diff.numel() else 0.0
    finite = bool(torch.isfinite(ref).all() and torch.isfinite(cand).all())
    if atol_of_max:
        atol = atol + atol_of_max * reference_max
    passed = finite and bool((diff <= atol + rtol * ref.abs()).all())
    excess = diff - rtol * ref.abs() if rtol != float("inf") else torch.zeros_like(diff)
    flat_ref, flat_cand = ref.reshape(1, -1), cand.reshape(1, -1)
    cosine = float(torch.nn.functional.cosine_similarity(flat_ref, flat_cand).item()) if ref.numel() else 1.0
    return StageDiff(
        name=name,
        max_abs=max_abs,
        mean_abs=float(diff.mean()) if diff.numel() else 0.0,
        max_rel=max_abs / reference_max if reference_max > 0 else max_abs,
        cosine=cosine,
        reference_max=reference_max,
        shape=list(ref.shape),
        passed=passed,
        atol=atol,
        rtol=rtol,
        note=note if finite else (note + " non-finite values").strip(),
        needed_atol=max(float(excess.max()), 0.0) if excess.numel() else 0.0,
        atol_of_max=atol_of_max,
    )


def first_failure(diffs: list[StageDiff]) -> StageDiff | None:
    return next((diff for diff in diffs if not diff.passed), None)
