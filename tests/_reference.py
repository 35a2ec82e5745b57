"""Chain geometry written out independently of cofi.layout, for the reference loops of the
parity tests (DESIGN §2, "Reference algorithms")."""

from __future__ import annotations

import torch


def ramp_weights(count: int, window: int, overlap: int) -> torch.Tensor:
    """``(N, W)``: 1 inside a window, a linear cross-fade (j + 1)/(o + 1) rising over its left
    overlap and falling over its right one (DESIGN §2, eq. 27/28)."""
    w = torch.ones(count, window, dtype=torch.float64)
    j = torch.arange(window, dtype=torch.float64)
    for i in range(count):
        if i > 0:
            w[i] = torch.minimum(w[i], ((j + 1) / (overlap + 1)).clamp(max=1))
        if i < count - 1:
            w[i] = torch.minimum(w[i], ((window - j) / (overlap + 1)).clamp(max=1))
    return w


def split(canvas: torch.Tensor, starts, window: int, dim: int) -> list[torch.Tensor]:
    return [canvas.narrow(dim, s, window) for s in starts]


def weighted_sum(parts, weights, starts, window: int, dim: int, length: int):
    """``Σ_i w_i part_i`` on the canvas and ``Σ_i w_i`` per canvas position (broadcastable)."""
    shape = list(parts[0].shape)
    shape[dim] = length
    num = parts[0].new_zeros(shape)
    den = torch.zeros(length, dtype=torch.float64)
    view = [1] * len(shape)
    view[dim] = window
    for p, w, s in zip(parts, weights, starts):
        num.narrow(dim, s, window).add_(p * w.to(p.dtype).reshape(view))
        den[s : s + window] += w
    view[dim] = length
    return num, den.to(parts[0].dtype).reshape(view)


def merge(parts, weights, starts, window: int, dim: int, length: int) -> torch.Tensor:
    num, den = weighted_sum(parts, weights, starts, window, dim, length)
    return num / den
