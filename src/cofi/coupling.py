"""Local coupling of plan estimates: fusion, overlap guidance, pins (DESIGN §2)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import reduce
from torch import Tensor

from .layout import Layout

__all__ = ["Pins", "overlap_reward", "apply_pins", "pin_mask"]


@dataclass(frozen=True)
class Pins:
    """Known canvas positions (inpainting), e.g. a plan's start and goal.

    Args:
        positions: canvas indices along the tiled axis of a `Chain` (negative counts from
            the end), or, for a `Grid`, tuples with one index per tiled axis.
        values: ``(P, *rest)`` shared by all candidates, or ``(B, P, *rest)``, where
            ``rest`` is the canvas shape without the tiled axes (for a ``(L, 2)``
            trajectory canvas: ``(P, 2)``).
        hard: also overwrite the *state* x_t at the pinned entries with the clean values
            after every step (Janner et al. 2022's inpainting). The default writes them into
            x̂ only, so the state carries them at the matching noise level.
        mask: ``(P, *rest)`` booleans, which entries of each pinned position are known (e.g. a
            manipulation goal that fixes the objects but not the arm); None: all of them.
    """

    positions: Sequence[int | tuple[int, ...]]
    values: Tensor
    hard: bool = False
    mask: Tensor | None = None

    def __post_init__(self) -> None:
        if isinstance(self.positions, (str, bytes)) or not isinstance(self.positions, Sequence) or not self.positions:
            raise ValueError(f"positions must be a non-empty sequence of canvas indices, got {self.positions!r}")
        for p in self.positions:
            for i in (tuple(p) if isinstance(p, (tuple, list)) else (p,)):
                if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                    raise ValueError(f"pin positions must be integer canvas indices, got {p!r} in positions")
        values = self.values
        if not isinstance(values, Tensor):
            try:
                values = torch.as_tensor(values, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"values must be a tensor (or array-like) of pinned values, got "
                                f"{type(self.values).__name__}") from e
            object.__setattr__(self, "values", values)
        if not values.is_floating_point():
            object.__setattr__(self, "values", values.float())
        if not torch.isfinite(self.values).all():
            raise ValueError("values (the pinned canvas values) contain NaN or inf")
        if not isinstance(self.hard, bool):
            raise TypeError(f"hard must be a bool, got {self.hard!r}")
        if self.mask is not None:
            mask = torch.as_tensor(self.mask)
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must hold booleans (which entries are pinned), got {mask.dtype}")
            rest = tuple(self.values.shape[-(mask.ndim - 1):]) if mask.ndim > 1 else ()
            if mask.ndim < 1 or mask.shape[0] != len(self.positions) or tuple(mask.shape[1:]) != rest:
                raise ValueError(f"mask must have shape ({len(self.positions)}, *rest) like one candidate's "
                                 f"values {tuple(self.values.shape[-(mask.ndim):])}, got {tuple(mask.shape)}")
            object.__setattr__(self, "mask", mask)

    def resolve(self, layout: Layout) -> list[tuple[int, ...]]:
        """Every position as a tuple of non-negative canvas indices, one per tiled axis."""
        out = []
        lengths = layout.lengths
        for p in self.positions:
            idx = tuple(p) if isinstance(p, (tuple, list)) else (p,)
            if len(idx) != len(lengths):
                raise ValueError(f"pin position {p!r} must have one index per tiled axis ({len(lengths)})")
            q = tuple(int(i) + n if int(i) < 0 else int(i) for i, n in zip(idx, lengths))
            if not all(0 <= i < n for i, n in zip(q, lengths)):
                bounds = ", ".join(f"[0, {n - 1}]" for n in lengths)
                raise ValueError(f"pin position {p} outside the canvas {bounds} (or negative from its end)")
            out.append(q)
        return out


def overlap_reward(x0: Tensor, layout: Layout) -> Tensor:
    """``R = −Σ_pairs mean‖R(x̂_i) − L(x̂_j)‖²`` (eq. 9/22) over adjacent windows, per candidate, ``(B,)``."""
    pairs = layout.overlap_pairs(x0)
    if not pairs:
        return x0.new_zeros(x0.shape[0])
    return -sum(reduce(d.pow(2), "b p ... -> b p", "mean").sum(1) for d in pairs)


def _canvas_shape(layout: Layout, plans_shape: Sequence[int]) -> list[int]:
    G = list(plans_shape[2:])
    for ax, n in zip(layout.tiled_axes, layout.lengths):
        G[ax] = n
    return G


def _select(t: Tensor, layout: Layout, q: tuple[int, ...]) -> Tensor:
    """The view of a canvas ``(B, *G)`` at pin position ``q`` (all other axes kept)."""
    for ax, i in sorted(zip(layout.tiled_axes, q), reverse=True):  # from the last axis down
        t = t.select(1 + ax, i)
    return t


def _pin_mask_canvas(pins: Pins, layout: Layout, G: Sequence[int], device) -> Tensor:
    mask = torch.zeros(1, *G, dtype=torch.bool, device=device)
    for k, q in enumerate(pins.resolve(layout)):
        view = _select(mask, layout, q)
        if pins.mask is None:
            view.fill_(True)
        else:
            view.copy_(pins.mask[k].to(device).expand_as(view[0]))
    return mask


def apply_pins(x0: Tensor, pins: Pins | None, layout: Layout) -> Tensor:
    """Write the pinned canvas values into every plan covering them, ``(B, N, *S)``."""
    if pins is None:
        return x0
    B = x0.shape[0]
    G = _canvas_shape(layout, x0.shape)
    rest = [n for a, n in enumerate(G) if a not in layout.tiled_axes]
    v = pins.values.to(x0)
    P = len(pins.positions)
    if v.shape == (P, *rest):
        v = v.unsqueeze(0).expand(B, *v.shape)
    if tuple(v.shape) != (B, P, *rest):
        raise ValueError(
            f"pins.values must have shape ({P}, {', '.join(map(str, rest))}) or "
            f"({B}, {P}, {', '.join(map(str, rest))}), got {tuple(pins.values.shape)}"
        )
    vals = x0.new_zeros(B, *G)
    for k, q in enumerate(pins.resolve(layout)):
        _select(vals, layout, q).copy_(v[:, k])
    mask = layout.split(_pin_mask_canvas(pins, layout, G, x0.device))
    return torch.where(mask, layout.split(vals), x0)


def pin_mask(pins: Pins | None, layout: Layout, plan_shape: Sequence[int], device=None) -> Tensor | None:
    """Boolean mask ``(1, N, *S)`` of plan entries that are pinned (None without pins)."""
    if pins is None:
        return None
    return layout.split(_pin_mask_canvas(pins, layout, _canvas_shape(layout, plan_shape), device))
