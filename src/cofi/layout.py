"""Windows on a canvas: `Chain` (N overlapping windows along one axis of a local plan) and `Grid`
(chains along several axes at once, windows on a lattice). One implementation, `Lattice`: a
`Chain` is a one-axis lattice, so both have the same methods with the same signatures.

Shapes: a local plan is ``S = sample_shape``; plans are ``(B, N, *S)``; the canvas is
``(B, *G)`` where ``G`` is ``S`` with every tiled axis stretched to its chain's ``length``.

A layout also carries the *collectives* a sampler needs across the windows of one composition
(``window_mean``, ``neighbour_mean``, ``all_reduce``, ``gather``, ``local``). On one process
they are plain reductions or identities; `cofi.distributed.Shard` implements the same methods
across the ranks of a process group, so samplers never ask where their windows live.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from einops import rearrange, reduce
from torch import Tensor

from .prior import append_dims

Blend = Literal["uniform", "ramp", "exp"]

__all__ = ["Chain", "Grid", "Lattice", "Layout", "Blend"]


class Lattice:
    """What `Chain` and `Grid` share: geometry over their ``chains`` (one per tiled axis, the
    first chain's window index varying slowest), split / merge / fuse, overlap pairs, and the
    single-process collectives."""

    chains: tuple["Chain", ...]
    count: int  # windows N (the product of the chains' counts)

    # ---------------------------------------------------------------- geometry
    @property
    def tiled_axes(self) -> tuple[int, ...]:
        """The axes of the local plan that windows tile, one per chain."""
        return tuple(c.axis for c in self.chains)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Canvas length along each tiled axis."""
        return tuple(c.length for c in self.chains)

    @cached_property
    def index(self) -> list[tuple[int, ...]]:
        """Lattice index of every window, in window order."""
        return list(itertools.product(*(range(c.count) for c in self.chains)))

    @cached_property
    def _footprints(self) -> list[tuple[tuple[int, int, int], ...]]:
        """Per window, per chain: (canvas dim, start, length), for `_window`'s narrows."""
        return [tuple((1 + c.axis, c.starts[j], c.window) for c, j in zip(self.chains, idx)) for idx in self.index]

    def footprint(self, i: int) -> tuple[slice, ...]:
        """Canvas positions of window ``i``: one slice per tiled axis (in chain order)."""
        return tuple(slice(s, s + n) for _, s, n in self._footprints[i])

    def global_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Canvas shape ``G`` for local plans of shape ``sample_shape``."""
        g = list(sample_shape)
        for c in self.chains:
            c.check_sample_shape(sample_shape)
            g[c.axis] = c.length
        return tuple(g)

    # ---------------------------------------------------------------- weights
    def weights(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """Blend weight of every window position, ``(N, *d)``, positive everywhere; ``d`` spans
        the plan's axes up to the last tiled one, ``window`` on tiled axes and 1 elsewhere (a
        chain along axis 0: ``(N, window)``). A grid window's weight is the product of its
        chains' 1-D weights, so ``merge`` is a partition of unity at every canvas position."""
        nd = 1 + max(self.tiled_axes)
        per_chain = [c.chain_weights(dtype, device) for c in self.chains]
        out = []
        for idx in self.index:
            w = None
            for c, wc, j in zip(self.chains, per_chain, idx):
                shape = [1] * nd
                shape[c.axis] = c.window
                wj = wc[j].reshape(shape)
                w = wj if w is None else w * wj
            out.append(w)
        return torch.stack(out)

    # ---------------------------------------------------------------- canvas <-> plans
    def _check_canvas(self, canvas: Tensor) -> None:
        for c in self.chains:
            ax = 1 + c.axis
            if canvas.ndim <= ax or canvas.shape[ax] != c.length:
                raise ValueError(f"canvas must have {c.length} positions on dim {ax} (window={c.window}, "
                                 f"overlap={c.overlap}, count={c.count}), got shape {tuple(canvas.shape)}")

    def _window(self, canvas: Tensor, i: int) -> Tensor:
        """The view of window ``i`` in a canvas-shaped ``(B, *G)`` tensor."""
        for dim, start, length in self._footprints[i]:
            canvas = canvas.narrow(dim, start, length)
        return canvas

    def split(self, canvas: Tensor, ids: Tensor | None = None) -> Tensor:
        """Canvas ``(B, *G)`` -> plans ``(B, N, *S)`` (or only the windows ``ids``)."""
        self._check_canvas(canvas)
        ids = range(self.count) if ids is None else [int(i) for i in ids]
        return torch.stack([self._window(canvas, i) for i in ids], dim=1)

    def _canvas_like(self, plans: Tensor) -> list[int]:
        g = [plans.shape[0], *plans.shape[2:]]
        for c in self.chains:
            g[1 + c.axis] = c.length
        return g

    def accumulate(self, plans: Tensor, weights: Tensor, ids: Tensor | None = None) -> Tensor:
        """``Σ_i w_i plans_i`` on the canvas ``(B, *G)``, for the windows ``ids`` of ``plans``
        (default: all N, in order); ``weights (N, *d)`` as `weights` returns."""
        ids = list(range(self.count)) if ids is None else [int(i) for i in ids]
        if plans.shape[1] != len(ids):
            raise ValueError(f"plans must have {len(ids)} windows on dim 1, got {plans.shape[1]}")
        num = plans.new_zeros(self._canvas_like(plans))
        for k, i in enumerate(ids):
            self._window(num, i).add_(plans[:, k] * append_dims(weights[i], plans.ndim - 2))
        return num

    def _blend(self, dtype: torch.dtype, device, ndim: int, kind: str = "merge") -> tuple[Tensor, Tensor]:
        """Per-window weights and the canvas denominator for a canvas of ``ndim`` dims, cached
        (layouts are immutable and every step needs them): ``merge``: the blend weights and their
        `coverage`; ``noise``: the blend weights and √(Σ w²); ``count``: ones and the number of
        windows covering each position."""
        cache = self.__dict__.setdefault("_blend_cache", {})
        key = (dtype, str(device), ndim, kind)
        if key not in cache:
            w = self.weights(dtype, device)
            if kind == "count":
                w = torch.ones_like(w)
            den = self.coverage(w.pow(2), ndim).sqrt() if kind == "noise" else self.coverage(w, ndim)
            cache[key] = (w, den)
        return cache[key]

    def coverage(self, weights: Tensor, ndim: int) -> Tensor:
        shape = [1] * ndim
        for c in self.chains:
            shape[1 + c.axis] = c.length
        den = weights.new_zeros(shape)
        for i in range(self.count):
            self._window(den, i).add_(append_dims(weights[i], ndim - 1))
        return den

    def merge(self, plans: Tensor, weights: Tensor | None = None) -> Tensor:
        """Plans ``(B, N, *S)`` -> canvas ``(B, *G)``: the blend-weighted mean of the windows
        covering each position (Bethe averaging, eq. 10/26). ``weights``: ``(N, *d)``
        instead of the blend's."""
        self._check_count(plans)
        if weights is None:
            w, den = self._blend(plans.dtype, plans.device, plans.ndim - 1)
        else:
            w = weights.to(plans)
            den = self.coverage(w, plans.ndim - 1)
        return self.accumulate(plans, w) / den

    def fuse(self, plans: Tensor) -> Tensor:
        """``split(merge(plans))``: every overlap gets the blended value of its windows."""
        return self.split(self.merge(plans))

    def blend_noise(self, z: Tensor) -> Tensor:
        """Per-window standard normals ``(B, N, *S)`` -> one unit-variance canvas ``(B, *G)``:
        ``Σ_i w_i z_i / √(Σ_i w_i²)`` with the blend weights (the authors' panorama noise;
        split it and overlapping windows share it)."""
        self._check_count(z)
        w, den = self._blend(z.dtype, z.device, z.ndim - 1, "noise")
        return self.accumulate(z, w) / den

    def _check_count(self, plans: Tensor) -> None:
        if plans.ndim < 2 or plans.shape[1] != self.count:
            raise ValueError(f"plans must have count={self.count} windows on dim 1, got shape {tuple(plans.shape)}")

    # ---------------------------------------------------------------- overlaps
    def adjacent_pairs(self) -> list[tuple[int, int, int]]:
        """Every pair of overlapping windows ``(i, j, a)``, j following i along chain a, chain
        by chain and in window order (the order of `overlap_pairs`)."""
        return list(self._adjacent)

    @cached_property
    def _adjacent(self) -> tuple[tuple[int, int, int], ...]:
        pos = {idx: i for i, idx in enumerate(self.index)}
        out = []
        for a, c in enumerate(self.chains):
            if c.count < 2 or c.overlap == 0:
                continue
            out += [(i, pos[idx[:a] + (idx[a] + 1,) + idx[a + 1:]], a) for idx, i in pos.items()
                    if idx[a] + 1 < c.count]
        return tuple(out)

    def pair_difference(self, x_i: Tensor, x_j: Tensor, a: int) -> Tensor:
        """``R(x_i) − L(x_j)`` along chain a for windows ``(B, *S)``: their shared band."""
        c = self.chains[a]
        return x_i.narrow(1 + c.axis, c.window - c.overlap, c.overlap) - x_j.narrow(1 + c.axis, 0, c.overlap)

    def overlap_pairs(self, plans: Tensor) -> list[Tensor]:
        """Per tiled axis, the differences of every pair of windows adjacent along it on their
        shared band, ``(B, pairs, ...)``; empty without overlaps."""
        if len(self.chains) == 1:  # a chain: every window's right band against the next one's left
            c = self.chains[0]
            if c.count < 2 or c.overlap == 0:
                return []
            ax = 2 + c.axis
            right = plans.narrow(ax, c.window - c.overlap, c.overlap)
            return [right[:, :-1] - plans.narrow(ax, 0, c.overlap)[:, 1:]]
        per_axis: dict[int, list[Tensor]] = {}
        for i, j, a in self.adjacent_pairs():
            per_axis.setdefault(a, []).append(self.pair_difference(plans[:, i], plans[:, j], a))
        return [torch.stack(v, 1) for _, v in sorted(per_axis.items())]

    def overlap_error(self, plans: Tensor) -> Tensor:
        """Per-candidate overlap MSE ``mean_pairs mean ‖R(x_i) − L(x_j)‖²`` (eq. 22), ``(B,)``."""
        pairs = self.overlap_pairs(plans)
        if not pairs:
            return plans.new_zeros(plans.shape[0])
        per_pair = torch.cat([reduce(d.pow(2), "b p ... -> b p", "mean") for d in pairs], 1)
        return per_pair.mean(1)

    def neighbour_mean(self, plans: Tensor, known: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """What the *other* windows say about each window's positions.

        Returns ``(mean, count)``: ``mean (B, N, *S)`` is the uniform mean of the other windows
        covering each position of each window (0 where none does) and ``count (1, N, ...)``
        (broadcastable) how many there are (0 outside every overlap): the messages of
        consensus coupling (`cofi.steps.consensus`). ``known (N,)`` (bool): only these windows
        speak (the others' entries of ``plans`` are ignored; a Gauss-Seidel sweep's first half).
        """
        ones, cover = self._blend(plans.dtype, plans.device, plans.ndim - 1, "count")
        if known is None:
            total = self.accumulate(plans, ones)
            count = self.split(cover) - 1
            others = self.split(total) - plans
        else:
            if tuple(known.shape) != (self.count,):
                raise ValueError(f"known must be a ({self.count},) mask of windows, got shape {tuple(known.shape)}")
            m = known.to(device=plans.device, dtype=plans.dtype).reshape(1, -1, *([1] * (plans.ndim - 2)))
            said = plans * m
            count = self.split(self.accumulate(m.expand(1, *plans.shape[1:]), ones)) - m
            others = self.split(self.accumulate(said, ones)) - said
        mean = torch.where(count > 0, others / count.clamp(min=1), torch.zeros_like(others))
        return mean, count

    # ---------------------------------------------------------------- collectives (one process)
    @property
    def full(self) -> "Lattice":
        """The whole composition's layout (itself on one process)."""
        return self

    @property
    def window_ids(self) -> Tensor:
        """Index in the composition of each window held here, ``(count,)``."""
        return torch.arange(self.count)

    def local(self, plans: Tensor) -> Tensor:
        """The windows held here of a whole plan set ``(B, N, *S)`` (all of them)."""
        return plans

    def gather(self, plans: Tensor) -> Tensor:
        """All N windows ``(B, N, *S)`` from the ones held here (the same tensor)."""
        return plans

    def all_reduce(self, t: Tensor, kind: str = "all_reduce") -> Tensor:
        """Sum over the processes holding the composition's windows (``t`` itself)."""
        return t

    def window_mean(self, x: Tensor, weights: Tensor | None = None) -> Tensor:
        """The mean of ``x (B, N, *S)`` over the N windows, or the ``weights``-weighted mean
        (``weights (N,)``, non-negative, not all zero), ``(B, 1, *S)``: CoFi's scaffold x̄."""
        if weights is None:
            return x.mean(1, keepdim=True)
        if weights.ndim != 1 or weights.shape[0] != x.shape[1]:
            raise ValueError(f"weights must have shape ({x.shape[1]},) (one per window), got {tuple(weights.shape)}")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        w = rearrange(weights.to(x), "n -> 1 n")
        return (x * append_dims(w, x.ndim)).sum(1, keepdim=True) / w.sum()


@dataclass(frozen=True)
class Chain(Lattice):
    """``count`` windows of ``window`` positions along ``axis`` of the local plan,
    adjacent windows sharing ``overlap`` positions: a one-axis `Lattice`.

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
        if not isinstance(self.axis, int) or self.axis < 0:
            raise ValueError(f"axis must be an int >= 0, got {self.axis!r}")
        if self.blend not in ("uniform", "ramp", "exp"):
            raise ValueError(f"blend must be 'uniform', 'ramp' or 'exp', got {self.blend!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")

    @property
    def chains(self) -> tuple["Chain", ...]:
        return (self,)

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
            raise ValueError(f"length {length} is not window + k·stride for window={window}, stride={stride}")
        return chain

    def check_sample_shape(self, sample_shape: tuple[int, ...]) -> None:
        """ValueError unless ``sample_shape`` has ``window`` positions on ``axis``."""
        if not 0 <= self.axis < len(sample_shape):
            raise ValueError(
                f"axis must be in [0, {len(sample_shape) - 1}] for sample_shape {tuple(sample_shape)}, got {self.axis}"
            )
        if sample_shape[self.axis] != self.window:
            raise ValueError(
                f"sample_shape {tuple(sample_shape)} has {sample_shape[self.axis]} positions on axis "
                f"{self.axis}, but the layout's window is {self.window}"
            )

    def chain_weights(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """The 1-D blend weights ``(N, window)``: in every overlap between windows i and i+1 the
        two weights sum to 1 (``ramp``, ``exp``), so ``merge`` is a cross-fade."""
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

    def left(self, plans: Tensor) -> Tensor:
        """First ``overlap`` positions of each plan along the axis, ``(B, N, ...)``."""
        return plans.narrow(2 + self.axis, 0, self.overlap)

    def right(self, plans: Tensor) -> Tensor:
        """Last ``overlap`` positions of each plan along the axis, ``(B, N, ...)``."""
        return plans.narrow(2 + self.axis, self.window - self.overlap, self.overlap)


@dataclass(frozen=True)
class Grid(Lattice):
    """Windows on a lattice: one `Chain` per tiled axis of the local plan, windows in
    row-major order of the chains (the first chain's index varies slowest).

    A grid whose other chains have one window each reproduces its one real chain bit for bit.
    Example: 4 × 6 windows of a ``(4, 64, 64)`` latent, overlap 32 both ways::

        cofi.Grid((cofi.Chain(64, 32, 4, axis=1, blend="ramp"), cofi.Chain(64, 32, 6, axis=2, blend="ramp")))
    """

    chains: tuple[Chain, ...]

    def __post_init__(self) -> None:
        chains = tuple(self.chains) if isinstance(self.chains, (list, tuple)) else self.chains
        if not isinstance(chains, tuple) or not chains or not all(isinstance(c, Chain) for c in chains):
            raise ValueError(f"chains must be a non-empty sequence of Chain, got {self.chains!r}")
        axes = [c.axis for c in chains]
        if len(set(axes)) != len(axes):
            raise ValueError(f"chains must run along distinct axes, got axes {axes}")
        object.__setattr__(self, "chains", chains)

    @property
    def count(self) -> int:
        """Number of windows N (the product of the chains' counts)."""
        return math.prod(c.count for c in self.chains)

    @property
    def starts(self) -> list[tuple[int, ...]]:
        """Canvas start of every window along each tiled axis."""
        return [tuple(sl.start for sl in self.footprint(i)) for i in range(self.count)]


Layout = Chain | Grid
