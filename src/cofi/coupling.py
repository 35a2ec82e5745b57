"""Local coupling of plan estimates: fusion, overlap guidance, pins (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .layout import Chain

__all__ = ["Pins", "fuse", "overlap_reward", "apply_pins", "pin_mask"]


@dataclass(frozen=True)
class Pins:
    """Known canvas positions along the chain axis (inpainting), e.g. a plan's start and goal.

    Args:
        positions: canvas indices along the chain axis (negative counts from the end).
        values: ``(P, *rest)`` shared by all candidates, or ``(B, P, *rest)``, where
            ``rest`` is the canvas shape without the chain axis (for a ``(L, 2)``
            trajectory canvas: ``(P, 2)``).
        hard: also overwrite the *state* x_t at the pinned entries with the clean values
            after every step (Janner et al. 2022's inpainting). The default writes them into
            x̂ only, so the state carries them at the matching noise level.
    """

    positions: Sequence[int]
    values: Tensor
    hard: bool = False

    def resolve(self, layout: Chain) -> list[int]:
        out = []
        for p in self.positions:
            q = int(p) + layout.length if int(p) < 0 else int(p)
            if not 0 <= q < layout.length:
                raise ValueError(
                    f"pin position {p} outside the canvas [0, {layout.length - 1}] (or negative from its end)"
                )
            out.append(q)
        return out


def fuse(x0: Tensor, layout: Chain) -> Tensor:
    """Bethe averaging (eq. 10/26): ``split(merge(x̂))`` with the layout's blend."""
    return layout.fuse(x0)


def overlap_reward(x0: Tensor, layout: Chain) -> Tensor:
    """``R = −Σ_i mean‖R(x̂_i) − L(x̂_{i+1})‖²`` (eq. 9/22) per candidate, ``(B,)``."""
    if layout.count < 2 or layout.overlap == 0:
        return x0.new_zeros(x0.shape[0])
    d = layout.right(x0)[:, :-1] - layout.left(x0)[:, 1:]
    return -d.pow(2).flatten(2).mean(2).sum(1)


def _canvas_pin_values(pins: Pins, layout: Chain, canvas_shape: Sequence[int], like: Tensor) -> Tensor:
    """Pin values laid out as ``(B, P, *rest)`` in the canvas dtype."""
    B = canvas_shape[0]
    rest = list(canvas_shape[1:])
    del rest[layout.axis]
    v = pins.values.to(like)
    P = len(pins.positions)
    if v.shape == (P, *rest):
        v = v.unsqueeze(0).expand(B, *v.shape)
    if tuple(v.shape) != (B, P, *rest):
        raise ValueError(
            f"pins.values must have shape ({P}, {', '.join(map(str, rest))}) or "
            f"({B}, {P}, {', '.join(map(str, rest))}), got {tuple(pins.values.shape)}"
        )
    return v


def apply_pins(x0: Tensor, pins: Pins | None, layout: Chain) -> Tensor:
    """Write the pinned canvas values into every plan covering them, ``(B, N, *S)``."""
    if pins is None:
        return x0
    B = x0.shape[0]
    ax = 1 + layout.axis  # chain axis inside one plan slice (B, *S)
    canvas_shape = [B, *x0.shape[2:]]
    canvas_shape[ax] = layout.length
    vals = _canvas_pin_values(pins, layout, canvas_shape, x0)
    out = x0.clone()
    for k, p in enumerate(pins.resolve(layout)):
        for i, s in enumerate(layout.starts):
            if s <= p < s + layout.window:
                out[:, i].select(ax, p - s).copy_(vals[:, k])
    return out


def pin_mask(pins: Pins | None, layout: Chain, plan_shape: Sequence[int], device=None) -> Tensor | None:
    """Boolean mask ``(1, N, *S)`` of plan entries that are pinned (None without pins)."""
    if pins is None:
        return None
    m = torch.zeros(1, *plan_shape[1:], dtype=torch.bool, device=device)
    for p in pins.resolve(layout):
        for i, s in enumerate(layout.starts):
            if s <= p < s + layout.window:
                m[:, i].select(1 + layout.axis, p - s).fill_(True)
    return m
