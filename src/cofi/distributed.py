"""Composition across processes: each rank of a ``torch.distributed`` group owns a contiguous
block of windows and calls the prior on its block only (docs/distributed.md).

Within one denoising step the windows of a composition are independent except for a few
cheap reductions, and `Shard` is the layout that performs them across ranks:

- **fusion** (``fuse``): every rank accumulates its windows' blend-weighted estimates on the
  canvas and exchanges the partial sums on the canvas positions it shares with another rank
  (the overlap bands at block boundaries), point to point;
- **guidance and overlap errors** (``overlap_pairs``, ``overlap_error``): the neighbouring
  windows a rank's pairs need (its *halo*) are exchanged point to point;
- **CoFi's scaffold mean** (``window_mean``): one all-reduce of ``Σ_i w_i x̂_i``;
- **CDGS's likelihood proxy** and the final overlap errors: an all-reduce of ``B`` numbers;
- **the scaffold and the final canvas** (``merge``): one all-reduce of the canvas, and the
  final plans (``gather``) one all-gather, once per composition.

Randomness is rank-independent: every rank draws the noise of the whole plan set or canvas
with the same generator and keeps its slice, so the result equals the single-process run's
to float rounding (the order of a few sums changes), whatever the number of ranks.

    import torch.distributed as dist
    dist.init_process_group("gloo")            # torchrun sets rank and world size
    comp = cofi.compose(prior, layout, cofi.CoFi(), group=dist.group.WORLD)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from einops import reduce
import torch.distributed as dist
from torch import Tensor

from .layout import Lattice, Layout

__all__ = ["Shard", "CommStats", "block", "shard"]


def block(count: int, world: int, rank: int) -> tuple[int, int]:
    """The contiguous block ``[a, b)`` of ``count`` windows that ``rank`` of ``world`` owns
    (as even as possible; the first ``count % world`` ranks get one more)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world) with world >= 1, got rank {rank}, world {world}")
    if count < world:
        raise ValueError(f"a composition of {count} windows cannot be split over {world} ranks "
                         f"(each rank needs at least one window)")
    q, r = divmod(count, world)
    a = rank * q + min(rank, r)
    return a, a + q + (1 if rank < r else 0)


@dataclass
class CommStats:
    """What a `Shard` communicated: bytes sent by this rank and seconds spent in
    communication calls, per kind (``fuse``, ``halo``, ``all_reduce``, ``gather``)."""

    bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int, seconds: float) -> None:
        self.bytes[kind] = self.bytes.get(kind, 0) + nbytes
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


class Shard:
    """A layout's windows ``[a, b)`` on one rank of a process group. It implements the layout
    protocol of `cofi.layout.Lattice` (``count`` is the local count; ``full`` the whole layout)
    with collectives that span the ranks, so a sampler runs on it unchanged.

    Args:
        layout: the whole composition's `Chain` or `Grid`.
        group: an initialised ``torch.distributed`` process group (``dist.group.WORLD``).
    """

    def __init__(self, layout: Layout, group=None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("group= needs an initialised torch.distributed process group "
                               "(torch.distributed.init_process_group, or launch with torchrun)")
        if not isinstance(layout, Lattice):
            raise TypeError(f"layout must be a Chain or a Grid, got {type(layout).__name__}")
        self.full = layout
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.a, self.b = block(layout.count, self.world, self.rank)
        self.blocks = [block(layout.count, self.world, r) for r in range(self.world)]
        self.stats = CommStats()
        # canvas lattice positions covered by each rank's windows, (world, *lengths)
        cover = torch.zeros(self.world, *layout.lengths, dtype=torch.bool)
        for r, (a, b) in enumerate(self.blocks):
            for i in range(a, b):
                cover[(r, *layout.footprint(i))] = True
        self._shared = {q: cover[self.rank] & cover[q] for q in range(self.world)
                        if q != self.rank and bool((cover[self.rank] & cover[q]).any())}
        # adjacent pairs (i, j, chain) in the layout's order, and the halo windows they need
        self._pairs = layout.adjacent_pairs()
        owner = torch.zeros(layout.count, dtype=torch.long)
        for r, (a, b) in enumerate(self.blocks):
            owner[a:b] = r
        need: list[set[int]] = [set() for _ in range(self.world)]  # windows rank r needs from others
        for i, j, _ in self._pairs:
            if owner[i] != owner[j]:
                need[int(owner[i])].add(j)
                need[int(owner[j])].add(i)
        self._recv = {q: sorted(w for w in need[self.rank] if owner[w] == q) for q in range(self.world)}
        self._send = {q: sorted(w for w in need[q] if owner[w] == self.rank) for q in range(self.world)}

    # ---------------------------------------------------------------- geometry (as the layout)
    @property
    def count(self) -> int:
        """Windows on this rank."""
        return self.b - self.a

    @property
    def window_ids(self) -> Tensor:
        """Global index of this rank's windows, ``(count,)``."""
        return torch.arange(self.a, self.b)

    @property
    def tiled_axes(self) -> tuple[int, ...]:
        return self.full.tiled_axes

    @property
    def lengths(self) -> tuple[int, ...]:
        return self.full.lengths

    def global_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.full.global_shape(sample_shape)

    def weights(self, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """This rank's windows' blend weights, ``(count, *d)``."""
        return self.full.weights(dtype, device)[self.a:self.b]

    def local(self, plans: Tensor) -> Tensor:
        """This rank's block of a whole plan set ``(B, N, *S) -> (B, count, *S)``."""
        return plans[:, self.a:self.b]

    def split(self, canvas: Tensor, ids: Tensor | None = None) -> Tensor:
        """Canvas ``(B, *G)`` -> this rank's plans ``(B, count, *S)`` (or the windows ``ids``)."""
        return self.full.split(canvas, self.window_ids if ids is None else ids)

    # ---------------------------------------------------------------- reductions
    def _timed(self, kind: str, nbytes: int, fn):
        t0 = time.perf_counter()
        out = fn()
        self.stats.add(kind, nbytes, time.perf_counter() - t0)
        return out

    def all_reduce(self, t: Tensor, kind: str = "all_reduce") -> Tensor:
        """Sum of ``t`` over the ranks (a new tensor; autograd does not flow through it)."""
        out = t.detach().clone().contiguous()
        self._timed(kind, out.numel() * out.element_size(),
                    lambda: dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.group))
        return out

    def _partial(self, plans: Tensor) -> tuple[Tensor, Tensor]:
        """``Σ_{i local} w_i plans_i`` on the whole canvas and the full ``Σ_i w_i``."""
        if plans.shape[1] != self.count:
            raise ValueError(f"plans must have this rank's {self.count} windows on dim 1, got {plans.shape[1]}")
        w, den = self.full._blend(plans.dtype, plans.device, plans.ndim - 1)  # all windows' weights, cached
        return self.full.accumulate(plans, w, self.window_ids), den

    def _exchange_shared(self, num: Tensor) -> Tensor:
        """Add the other ranks' partial sums on the canvas positions shared with them."""
        if not self._shared:
            return num
        axes = [1 + a for a in self.tiled_axes]
        k = len(axes)
        moved = num.movedim(axes, list(range(num.ndim - k, num.ndim))).contiguous()
        sends, recvs = {}, {}
        for q, mask in self._shared.items():
            sends[q] = moved[..., mask].contiguous()
            recvs[q] = torch.empty_like(sends[q])
        nbytes = sum(s.numel() * s.element_size() for s in sends.values())

        def run():
            ops = []
            for q in self._shared:
                ops.append(dist.P2POp(dist.isend, sends[q], self._global_rank(q), self.group))
                ops.append(dist.P2POp(dist.irecv, recvs[q], self._global_rank(q), self.group))
            for req in dist.batch_isend_irecv(ops):
                req.wait()

        self._timed("fuse", nbytes, run)
        for q, mask in self._shared.items():
            moved[..., mask] += recvs[q]
        return moved.movedim(list(range(num.ndim - k, num.ndim)), axes)

    def _global_rank(self, q: int) -> int:
        if self.group is None or self.group is dist.group.WORLD:
            return q
        return dist.get_global_rank(self.group, q)

    def fuse(self, plans: Tensor) -> Tensor:
        """``split(merge(plans))`` for this rank's windows: partial sums exchanged on the
        shared overlap bands only."""
        num, den = self._partial(plans)
        return self.split(self._exchange_shared(num) / den)

    def merge(self, plans: Tensor) -> Tensor:
        """The whole canvas ``(B, *G)`` on every rank (one all-reduce of the canvas)."""
        num, den = self._partial(plans)
        return self.all_reduce(num, "canvas") / den

    def blend_noise(self, z: Tensor) -> Tensor:
        """As the layout's, from the draws of *all* windows ``(B, N, *S)`` (every rank draws them)."""
        return self.full.blend_noise(z)

    def window_mean(self, x: Tensor, weights: Tensor | None = None) -> Tensor:
        """The (weighted) mean over all N windows of ``x (B, count, *S)``, ``(B, 1, *S)``."""
        if weights is None:
            s, tot = x.sum(1, keepdim=True), float(self.full.count)
        else:
            w = weights.to(x).reshape(-1, *([1] * (x.ndim - 2)))
            s, tot = (x * w[self.a:self.b]).sum(1, keepdim=True), weights.sum()
        return self.all_reduce(s, "scaffold") / tot

    def neighbour_mean(self, plans: Tensor, known: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """As the layout's for this rank's windows: the neighbours of its edge windows live on
        other ranks, so the estimates are all-gathered first (``known``: over all N windows)."""
        mean, count = self.full.neighbour_mean(self.gather(plans), known)
        return mean[:, self.a:self.b], count[:, self.a:self.b]

    def halo(self, plans: Tensor) -> dict[int, Tensor]:
        """The windows of other ranks that this rank's pairs need, ``{window: (B, *S)}`` (detached)."""
        sends = {q: plans[:, [w - self.a for w in ws]].detach().contiguous()
                 for q, ws in self._send.items() if ws}
        recvs = {q: plans.new_empty(plans.shape[0], len(ws), *plans.shape[2:])
                 for q, ws in self._recv.items() if ws}
        if not sends and not recvs:
            return {}
        nbytes = sum(s.numel() * s.element_size() for s in sends.values())

        def run():
            ops = [dist.P2POp(dist.isend, t, self._global_rank(q), self.group) for q, t in sends.items()]
            ops += [dist.P2POp(dist.irecv, t, self._global_rank(q), self.group) for q, t in recvs.items()]
            for req in dist.batch_isend_irecv(ops):
                req.wait()

        self._timed("halo", nbytes, run)
        return {w: recvs[q][:, k] for q in recvs for k, w in enumerate(self._recv[q])}

    def _pair_diffs(self, plans: Tensor, owned_only: bool) -> list[tuple[int, Tensor]]:
        halo = self.halo(plans)

        def win(i):
            return plans[:, i - self.a] if self.a <= i < self.b else halo[i]

        out = []
        for i, j, ai in self._pairs:
            mine_i, mine_j = self.a <= i < self.b, self.a <= j < self.b
            if mine_i if owned_only else (mine_i or mine_j):
                out.append((ai, self.full.pair_difference(win(i), win(j), ai)))
        return out

    def overlap_pairs(self, plans: Tensor) -> list[Tensor]:
        """Per tiled axis, the differences of every adjacent pair that touches one of this
        rank's windows (pairs across a block boundary appear on both ranks). For gradients:
        ``∂/∂x_local`` of the overlap reward equals the single-process one."""
        per_axis: dict[int, list[Tensor]] = {}
        for ai, d in self._pair_diffs(plans, owned_only=False):
            per_axis.setdefault(ai, []).append(d)
        return [torch.stack(v, 1) for _, v in sorted(per_axis.items())]

    def overlap_error(self, plans: Tensor) -> Tensor:
        """Per-candidate overlap MSE of the whole composition, ``(B,)``, on every rank."""
        if not self._pairs:
            return plans.new_zeros(plans.shape[0])
        diffs = self._pair_diffs(plans, owned_only=True)
        s = plans.new_zeros(plans.shape[0])
        for _, d in diffs:
            s = s + reduce(d.pow(2), "b ... -> b", "mean")
        return self.all_reduce(s, "overlap_error") / len(self._pairs)

    def gather(self, plans: Tensor) -> Tensor:
        """All N windows ``(B, N, *S)`` on every rank (one all-gather)."""
        n_max = max(b - a for a, b in self.blocks)
        pad = plans.new_zeros(plans.shape[0], n_max, *plans.shape[2:])
        pad[:, : self.count] = plans.detach()
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        self._timed("gather", pad.numel() * pad.element_size(),
                    lambda: dist.all_gather(parts, pad.contiguous(), group=self.group))
        return torch.cat([p[:, : b - a] for p, (a, b) in zip(parts, self.blocks)], dim=1)


def shard(layout: Layout, group) -> Layout | Shard:
    """``layout`` itself without a group, else this rank's `Shard` of it. ``group`` may also be
    a `Shard` of ``layout`` made beforehand, to read its `CommStats` afterwards."""
    if group is None:
        return layout
    if isinstance(group, Shard):
        if group.full != layout:
            raise ValueError("a Shard passed as group= must be a shard of the composition's layout")
        return group
    return Shard(layout, group)
