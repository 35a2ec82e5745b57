"""`Chain`: N overlapping windows along one axis of a local plan; `Grid`: chains along several
axes at once, windows on a lattice (DESIGN §1, §2).

Shapes: a local plan is ``S = sample_shape``; plans are ``(B, N, *S)``; the canvas is
``(B, *G)`` where ``G`` is ``S`` with the chain axis stretched to ``length``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Blend = Literal["uniform", "ramp", "exp"]

__all__ = ["Chain", "Grid", "Layout", "Blend"]


@dataclass(frozen=True)
class Chain:
    """``count`` windows of ``window`` positions along ``axis`` of the local plan,
    adjacent windows sharing ``overlap`` positions.

    Args:
        window: length of one local plan along the axis.
        overlap: positions shared by adjacent windows, ``0 <= overlap < window``.
        count: number of windows N >= 1.
        axis: the axis of ``sample_shape`` that the chain runs along.
        blend: how ``merge`` weights the windows covering a canvas position:
            ``uniform`` (MultiDiffusion's mean), ``ramp`` (linear cross-fade across each
            overlap, eq. 27/28), ``exp`` (logistic cross-fade of slope ``beta``, eq. 23).
        beta: sharpness of the ``exp`` cross-fade.
    """

    window: int
    overlap: int
    count: int
    axis: int = 0
    blend: Blend = "uniform"
    beta: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an int >= 1, got {self.window!r}")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.window:
            raise ValueError(
                f"overlap must be an int in [0, window-1] = [0, {self.window - 1}], got {self.overlap!r}"
            )
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"count must be an int >= 1, got {self.count!r}")
        if self.blend not in ("uniform", "ramp", "exp"):
            raise ValueError(f"blend must be 'uniform', 'ramp' or 'exp', got {self.blend!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")

    # ---------------------------------------------------------------- geometry
    @property
    def stride(self) -> int:
        """Offset between the starts of adjacent windows."""
        return self.window - self.overlap

    @property
    def length(self) -> int:
        """Global length along the axis: ``window + (count − 1)·stride``."""
        return self.window + (self.count - 1) * self.stride

    @property
    def starts(self) -> list[int]:
        """Canvas index of the first position of every window."""
        return [i * self.stride for i in range(self.count)]

    @staticmethod
    def covering(window: int, overlap: int, length: int) -> "Chain":
        """The chain of the fewest windows whose length is exactly ``length``."""
        stride = window - overlap
        count = 1 + math.ceil(max(length - window, 0) / stride)
        chain = Chain(window, overlap, count)
        if chain.length != length:
            raise ValueError(
                f"length {length} is not window + k·stride for window={window}, stride={stride}"
            )
        return chain

    def global_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Canvas shape ``G`` for local plans of shape ``sample_shape``."""
        self._check_sample_shape(sample_shape)
        g = list(sample_shape)
        g[self.axis] = self.length
        return tuple(g)

    def _check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        if not 0 <= self.axis < len(sample_shape):
            raise ValueError(
                f"axis must be in [0, {len(sample_shape) - 1}] for sample_shape {tuple(sample_shape)}, got {self.axis}"
            )
        if sample_shape[self.axis] != self.window:
            raise ValueError(
                f"sample_shape {tuple(sample_shape)} has {sample_shape[self.axis]} positions on axis "
                f"{self.axis}, but the layout's window is {self.window}"
            )

    # ---------------------------------------------------------------- weights
    def weights(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Blend weight of every window position, ``(N, window)``; positive everywhere.

        In every overlap between windows i and i+1 the two weights sum to 1 (for ramp and
        exp), so ``merge`` is a cross-fade; ``merge`` normalises anyway, so weights form a
        partition of unity at every canvas position whatever the overlap structure.
        """
        N, W, o = self.count, self.window, self.overlap
        w = torch.ones(N, W, dtype=torch.float64)
        if self.blend != "uniform" and o > 0:
            j = torch.arange(W, dtype=torch.float64)
            rise = (j + 1) / (o + 1)  # left overlap: rises to 1 at position o
            fall = (W - j) / (o + 1)  # right overlap: falls from 1
            if self.blend == "exp":  # logistic cross-fade σ(β(2s − 1)); f(s) + f(1 − s) = 1
                rise = torch.where(rise < 1, torch.sigmoid(self.beta * (2 * rise - 1)), 1.0)
                fall = torch.where(fall < 1, torch.sigmoid(self.beta * (2 * fall - 1)), 1.0)
            for i in range(N):
                if i > 0:
                    w[i] = torch.minimum(w[i], rise.clamp(max=1))
                if i < N - 1:
                    w[i] = torch.minimum(w[i], fall.clamp(max=1))
        return w.to(dtype=dtype, device=device)

    # ---------------------------------------------------------------- transforms
    def split(self, canvas: Tensor) -> Tensor:
        """Canvas ``(B, *G)`` -> plans ``(B, N, *S)`` (views copied into one tensor)."""
        ax = 1 + self.axis
        if canvas.ndim <= ax or canvas.shape[ax] != self.length:
            raise ValueError(
                f"canvas must have {self.length} positions on dim {ax} (window={self.window}, "
                f"overlap={self.overlap}, count={self.count}), got shape {tuple(canvas.shape)}"
            )
        parts = [canvas.narrow(ax, s, self.window) for s in self.starts]
        return torch.stack(parts, dim=1)

    def merge(self, plans: Tensor, weights: Tensor | None = None) -> Tensor:
        """Plans ``(B, N, *S)`` -> canvas ``(B, *G)``: the blend-weighted mean of the
        windows covering each position (Bethe averaging, eq. 10/26)."""
        w = self.weights(plans.dtype, plans.device) if weights is None else weights
        num, den = self._accumulate(plans, w)
        return num / den

    def blend_noise(self, z: Tensor) -> Tensor:
        """Per-window standard normals ``(B, N, *S)`` -> one unit-variance canvas ``(B, *G)``:
        ``Σ_i w_i z_i / √(Σ_i w_i²)`` with the blend weights (the authors' panorama noise; split
        it and overlapping windows share it)."""
        w = self.weights(z.dtype, z.device)
        num, _ = self._accumulate(z, w)
        _, den2 = self._accumulate(z, w.pow(2), weights_only=True)
        return num / den2.sqrt()

    def _accumulate(self, plans: Tensor, w: Tensor, weights_only: bool = False) -> tuple[Tensor | None, Tensor]:
        """``Σ_i w_i plans_i`` on the canvas ``(B, *G)`` (None if ``weights_only``) and ``Σ_i w_i``
        per canvas position, shaped to broadcast against it."""
        B, N = plans.shape[:2]
        if N != self.count:
            raise ValueError(f"plans must have count={self.count} windows on dim 1, got {N}")
        ax = 1 + self.axis  # chain axis of the canvas (B, *G)
        g = [B, *plans.shape[2:]]
        g[ax] = self.length
        num = None if weights_only else plans.new_zeros(g)
        den = plans.new_zeros(self.length)
        bshape = [1] * len(g)
        bshape[ax] = self.window  # one window's weights broadcast over (B, *S)
        for i, s in enumerate(self.starts):
            if num is not None:
                num.narrow(ax, s, self.window).add_(plans[:, i] * w[i].reshape(bshape))
            den[s : s + self.window] += w[i]
        bshape[ax] = self.length
        return num, den.reshape(bshape)

    def fuse(self, plans: Tensor) -> Tensor:
        """``split(merge(plans))``: every overlap gets the blended value of its windows."""
        return self.split(self.merge(plans))

    def neighbour_mean(self, plans: Tensor) -> tuple[Tensor, Tensor]:
        """What the *other* windows say about each window's positions.

        Returns ``(mean, count)``: ``mean (B, N, *S)`` is the uniform mean of the other windows
        covering each position of each window (0 where none does) and ``count (1, N, *S)``
        (broadcastable) how many there are (0 outside every overlap). The messages of
        consensus coupling (`cofi.samplers.base.denoise_pass`).
        """
        return _neighbour_mean(self, plans, torch.ones(self.count, self.window, dtype=plans.dtype,
                                                       device=plans.device))

    def left(self, plans: Tensor) -> Tensor:
        """First ``overlap`` positions of each plan along the axis, ``(B, N, ...)``."""
        return plans.narrow(2 + self.axis, 0, self.overlap)

    def right(self, plans: Tensor) -> Tensor:
        """Last ``overlap`` positions of each plan along the axis, ``(B, N, ...)``."""
        return plans.narrow(2 + self.axis, self.window - self.overlap, self.overlap)

    @property
    def tiled_axes(self) -> tuple[int, ...]:
        """The axes of the local plan that windows tile (one for a chain)."""
        return (self.axis,)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Canvas length along each tiled axis."""
        return (self.length,)

    def overlap_pairs(self, plans: Tensor) -> list[Tensor]:
        """Differences of neighbouring windows on their shared positions, one tensor per tiled
        axis, ``(B, pairs, ...)``: here ``R(x_i) − L(x_{i+1})``; empty without overlaps."""
        if self.count < 2 or self.overlap == 0:
            return []
        return [self.right(plans)[:, :-1] - self.left(plans)[:, 1:]]

    def overlap_error(self, plans: Tensor) -> Tensor:
        """Per-candidate overlap MSE ``mean_i mean ‖R(x_i) − L(x_{i+1})‖²`` (eq. 22), ``(B,)``."""
        if self.count < 2 or self.overlap == 0:
            return plans.new_zeros(plans.shape[0])
        d = self.right(plans)[:, :-1] - self.left(plans)[:, 1:]
        return d.pow(2).flatten(1).mean(1)

    def window_index(self, batch: int, device=None) -> Tensor:
        """Window index of each of the ``batch·N`` flattened plans, ``(batch·N,)``."""
        return torch.arange(self.count, device=device).repeat(batch)


@dataclass(frozen=True)
class Grid:
    """Windows on a lattice: one `Chain` per tiled axis of the local plan, windows in
    row-major order of the chains (the first chain's index varies slowest).

    A window's blend weight is the product of its chains' 1-D weights, so ``merge`` is a
    partition of unity at every canvas position, as for a chain. A grid whose other chains
    have one window each reproduces its one real chain bit for bit. Example: 4 × 6 windows of
    a ``(4, 64, 64)`` latent, overlap 32 both ways::

        cofi.Grid((cofi.Chain(64, 32, 4, axis=1, blend="ramp"), cofi.Chain(64, 32, 6, axis=2, blend="ramp")))
    """

    chains: tuple[Chain, ...]

    def __post_init__(self) -> None:
        chains = tuple(self.chains)
        if not chains or not all(isinstance(c, Chain) for c in chains):
            raise ValueError(f"chains must be a non-empty sequence of Chain, got {self.chains!r}")
        axes = [c.axis for c in chains]
        if len(set(axes)) != len(axes):
            raise ValueError(f"chains must run along distinct axes, got axes {axes}")
        object.__setattr__(self, "chains", chains)

    # ---------------------------------------------------------------- geometry
    @property
    def count(self) -> int:
        """Number of windows N (the product of the chains' counts)."""
        return math.prod(c.count for c in self.chains)

    @property
    def tiled_axes(self) -> tuple[int, ...]:
        return tuple(c.axis for c in self.chains)

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(c.length for c in self.chains)

    @property
    def index(self) -> list[tuple[int, ...]]:
        """Lattice index of every window, in window order."""
        return list(itertools.product(*(range(c.count) for c in self.chains)))

    @property
    def starts(self) -> list[tuple[int, ...]]:
        """Canvas start of every window along each tiled axis."""
        return [tuple(c.starts[i] for c, i in zip(self.chains, idx)) for idx in self.index]

    def global_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        g = list(sample_shape)
        for c in self.chains:
            c.global_shape(sample_shape)  # validates axis and window
            g[c.axis] = c.length
        return tuple(g)

    def window_index(self, batch: int, device=None) -> Tensor:
        """Window index of each of the ``batch·N`` flattened plans, ``(batch·N,)``."""
        return torch.arange(self.count, device=device).repeat(batch)

    # ---------------------------------------------------------------- weights
    def weights(self, dtype: torch.dtype = torch.float32, device=None) -> list[Tensor]:
        """Each chain's 1-D weights ``(count_a, window_a)``; a window's weight is their product."""
        return [c.weights(dtype, device) for c in self.chains]

    def _window_weight(self, ws: list[Tensor], idx: tuple[int, ...], ndim: int) -> Tensor:
        """The product weight of window ``idx``, shaped to broadcast over ``(B, *S)`` (``ndim`` dims)."""
        out = None
        for c, w, i in zip(self.chains, ws, idx):
            shape = [1] * ndim
            shape[1 + c.axis] = c.window
            wi = w[i].reshape(shape)
            out = wi if out is None else out * wi
        return out

    # ---------------------------------------------------------------- transforms
    def _slices(self, t: Tensor, start: tuple[int, ...]) -> Tensor:
        for c, s in zip(self.chains, start):
            t = t.narrow(1 + c.axis, s, c.window)
        return t

    def split(self, canvas: Tensor) -> Tensor:
        """Canvas ``(B, *G)`` -> plans ``(B, N, *S)``."""
        for c in self.chains:
            ax = 1 + c.axis
            if canvas.ndim <= ax or canvas.shape[ax] != c.length:
                raise ValueError(f"canvas must have {c.length} positions on dim {ax} (window={c.window}, "
                                 f"overlap={c.overlap}, count={c.count}), got shape {tuple(canvas.shape)}")
        return torch.stack([self._slices(canvas, s) for s in self.starts], dim=1)

    def _accumulate(self, plans: Tensor, ws: list[Tensor], weights_only: bool = False):
        B, N = plans.shape[:2]
        if N != self.count:
            raise ValueError(f"plans must have count={self.count} windows on dim 1, got {N}")
        g = [B, *plans.shape[2:]]
        for c in self.chains:
            g[1 + c.axis] = c.length
        num = None if weights_only else plans.new_zeros(g)
        den_shape = [1] * len(g)
        for c in self.chains:
            den_shape[1 + c.axis] = c.length
        den = plans.new_zeros(den_shape)
        for i, (idx, start) in enumerate(zip(self.index, self.starts)):
            w = self._window_weight(ws, idx, len(g))
            if num is not None:
                self._slices(num, start).add_(plans[:, i] * w)
            self._slices(den, start).add_(w)
        return num, den

    def merge(self, plans: Tensor) -> Tensor:
        """Plans ``(B, N, *S)`` -> canvas ``(B, *G)``: the blend-weighted mean of the windows
        covering each position."""
        num, den = self._accumulate(plans, self.weights(plans.dtype, plans.device))
        return num / den

    def fuse(self, plans: Tensor) -> Tensor:
        """``split(merge(plans))``."""
        return self.split(self.merge(plans))

    def neighbour_mean(self, plans: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, count)`` of the other windows covering each window position (see
        `Chain.neighbour_mean`)."""
        return _neighbour_mean(self, plans, [torch.ones(c.count, c.window, dtype=plans.dtype, device=plans.device)
                                             for c in self.chains])

    def blend_noise(self, z: Tensor) -> Tensor:
        """Per-window standard normals -> a unit-variance canvas, ``Σ_i w_i z_i / √(Σ_i w_i²)``."""
        ws = self.weights(z.dtype, z.device)
        num, _ = self._accumulate(z, ws)
        _, den2 = self._accumulate(z, [w.pow(2) for w in ws], weights_only=True)
        return num / den2.sqrt()

    def adjacent_pairs(self) -> list[tuple[int, int, int]]:
        """Every pair of overlapping windows ``(i, j, a)``, j following i along chain a, chain
        by chain and in window order (the order of `overlap_pairs`)."""
        pos = {idx: i for i, idx in enumerate(self.index)}
        out = []
        for a, c in enumerate(self.chains):
            if c.count < 2 or c.overlap == 0:
                continue
            out += [(i, pos[idx[:a] + (idx[a] + 1,) + idx[a + 1:]], a) for idx, i in pos.items()
                    if idx[a] + 1 < c.count]
        return out

    def pair_difference(self, x_i: Tensor, x_j: Tensor, a: int) -> Tensor:
        """``R(x_i) − L(x_j)`` along chain a for windows ``(B, *S)``: their shared band."""
        c = self.chains[a]
        return x_i.narrow(1 + c.axis, c.window - c.overlap, c.overlap) - x_j.narrow(1 + c.axis, 0, c.overlap)

    def overlap_pairs(self, plans: Tensor) -> list[Tensor]:
        """Per tiled axis, the differences of every pair of windows adjacent along it on their
        shared band, ``(B, pairs, ...)`` (the band spans the whole window on the other axes)."""
        per_axis: dict[int, list[Tensor]] = {}
        for i, j, a in self.adjacent_pairs():
            per_axis.setdefault(a, []).append(self.pair_difference(plans[:, i], plans[:, j], a))
        return [torch.stack(v, 1) for _, v in sorted(per_axis.items())]

    def overlap_error(self, plans: Tensor) -> Tensor:
        """Per-candidate overlap MSE, ``(B,)``: the mean over all adjacent pairs of the mean
        squared difference on their shared band."""
        pairs = self.overlap_pairs(plans)
        if not pairs:
            return plans.new_zeros(plans.shape[0])
        if len(pairs) == 1:
            return pairs[0].pow(2).flatten(1).mean(1)
        per = torch.cat([d.pow(2).flatten(2).mean(2) for d in pairs], 1)  # (B, all pairs)
        return per.mean(1)


Layout = Chain | Grid


def _neighbour_mean(layout, plans: Tensor, ones) -> tuple[Tensor, Tensor]:
    """Leave-one-out sums of uniform weights: the canvas sum minus the window's own value."""
    total, cover = layout._accumulate(plans, ones)
    count = layout.split(cover) - 1  # cover is (1, *G) with singleton non-tiled dims: (1, N, ...) others
    others = layout.split(total) - plans
    mean = torch.where(count > 0, others / count.clamp(min=1), torch.zeros_like(others))
    return mean, count
