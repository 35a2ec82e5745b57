"""Scaffold shrinkage (eq. 12–13, Appendix A) and its λ schedules."""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor


Schedule = Literal["constant", "linear", "cosine"]

__all__ = ["shrink", "scaffold_mean", "lam_schedule", "Schedule"]


def scaffold_mean(x0: Tensor, dim: int = 1, weights: Tensor | None = None) -> Tensor:
    """The scaffold x̄: the mean of the estimates along ``dim`` (kept), or the ``weights``-weighted
    mean (``weights (N,)``, non-negative, not all zero)."""
    dim = dim % x0.ndim
    if weights is None:
        return x0.mean(dim, keepdim=True)
    if weights.ndim != 1 or weights.shape[0] != x0.shape[dim]:
        raise ValueError(
            f"weights must have shape ({x0.shape[dim]},) (one per plan on dim {dim}), got {tuple(weights.shape)}"
        )
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    w = weights.to(x0).reshape([-1 if i == dim else 1 for i in range(x0.ndim)])
    return (x0 * w).sum(dim, keepdim=True) / w.sum()


def shrink(x0: Tensor, lam: float | Tensor, dim: int = 1, weights: Tensor | None = None,
           mean: Tensor | None = None) -> Tensor:
    """Closed-form minimiser of ``Σ_i ‖x̃_i − x̂_i‖² + γ Σ_i ‖x̃_i − mean_j x̃_j‖²`` (eq. 13).

    ``x̃_i = λ x̂_i + (1 − λ) x̄`` with ``λ = 1/(1 + γ)`` and ``x̄`` the mean of the estimates
    along ``dim`` (the N plans of one composition), or the ``weights``-weighted mean
    (``weights`` of shape ``(N,)``, non-negative, not all zero). ``lam`` is a float in
    [0, 1] or a tensor broadcastable against ``x0`` with ``dim`` kept (e.g. per candidate
    ``(B, 1, 1, ...)``). λ = 1 is the identity, λ = 0 collapses every plan onto the mean.
    ``mean``: the scaffold x̄ when it is computed elsewhere (across the ranks of a process
    group, `cofi.distributed`); then ``weights`` is ignored.
    """
    if not isinstance(lam, Tensor):
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be a number in [0, 1] (or a tensor of them), got {lam!r}")
        if lam == 1.0:
            return x0
    elif not ((lam >= 0) & (lam <= 1)).all():  # NaN fails both comparisons
        raise ValueError("lam must lie in [0, 1] (a tensor with values outside [0, 1] or NaN was given)")
    if mean is None:
        mean = scaffold_mean(x0, dim, weights)
    return lam * x0 + (1 - lam) * mean


def lam_schedule(lam0: float, steps: int, schedule: Schedule = "linear") -> list[float]:
    """λ_k for the K coarse steps: ``constant`` λ0; ``linear`` ramp λ0 → 1;
    ``cosine`` λ_k = 1 − (1 − λ0)(1 + cos(π k/(K−1)))/2 (the regularisation 1 − λ decays
    smoothly from 1 − λ0 to 0)."""
    if not 0.0 <= lam0 <= 1.0:
        raise ValueError(f"lam0 must be in [0, 1], got {lam0}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"schedule must be 'constant', 'linear' or 'cosine', got {schedule!r}")
    out = []
    for k in range(steps):
        u = k / (steps - 1) if steps > 1 else 0.0
        if schedule == "constant":
            out.append(lam0)
        elif schedule == "linear":
            out.append(lam0 + (1 - lam0) * u)
        else:
            out.append(1 - (1 - lam0) * (1 + math.cos(math.pi * u)) / 2)
    return out
