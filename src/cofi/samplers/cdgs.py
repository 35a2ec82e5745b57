"""CDGS: compositional diffusion with guided search (Mishra et al. 2026).

The candidate batch is the population P. Every step runs U inner iterations of
denoise t→s / re-noise s→t (iterative message passing along the chain); once, near
the end, the population is pruned by a likelihood proxy from a short DDIM inversion
(the best fraction survives and refills the population by copying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..layout import Layout
from .base import Context, GuidanceSchedule, Noise, check_common, denoise_pass

__all__ = ["CDGS", "inversion_score"]


@dataclass(frozen=True)
class CDGS:
    """CDGS with the public maze defaults. NFE = K·U·N·P + n_inv·N·P (one pruning).

    Args:
        steps: DDIM steps K.
        inner: inner iterations U per step (each is one prior call per plan).
        prune_at: pruning happens once, at the step where this fraction of the schedule is
            left (0.06 → step K − 3 of 50); 0 disables pruning.
        keep: fraction of the population kept by pruning (at least one candidate).
        inversion: fraction of the schedule the likelihood proxy inverts over (from t = 0).
        eta, fusion, guidance, guidance_schedule, noise, init_noise, consensus, consensus_snr_max:
            as in `GSC`.
    """

    steps: int = 50
    inner: int = 10
    prune_at: float = 0.06
    keep: float = 0.1
    inversion: float = 0.2
    eta: float = 0.0
    fusion: bool = True
    guidance: float = 0.0
    guidance_schedule: GuidanceSchedule = "constant"
    noise: Noise = "independent"
    init_noise: str = "canvas"
    consensus: float = 0.0
    consensus_snr_max: float = 10.0

    def __post_init__(self) -> None:
        check_common(self.steps, self.eta, self.guidance, self.noise, self.init_noise, self.guidance_schedule,
                     self.consensus, self.consensus_snr_max)
        if not isinstance(self.inner, int) or self.inner < 1:
            raise ValueError(f"inner must be an int >= 1, got {self.inner!r}")
        for name in ("prune_at", "keep", "inversion"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    @property
    def prune_step(self) -> int | None:
        """Grid index after which the population is pruned (None: no pruning)."""
        if self.prune_at <= 0:
            return None
        return self.steps - max(1, round(self.prune_at * self.steps))

    @property
    def inversion_steps(self) -> int:
        return max(1, round(self.inversion * self.steps))

    def nfe(self, layout: Layout, batch: int) -> int:
        n = self.steps * self.inner * layout.count * batch
        if self.prune_step is not None:
            n += self.inversion_steps * layout.count * batch
        return n

    def sample(self, ctx: Context, x: Tensor) -> Tensor:
        ts = ctx.grid(self.steps)
        kw = dict(stage="cdgs", eta=self.eta, fusion=self.fusion, guidance=self.guidance,
                  guidance_schedule=self.guidance_schedule, noise=self.noise,
                  inner=self.inner, consensus=self.consensus,
                  consensus_snr_max=self.consensus_snr_max)
        p = self.prune_step
        if p is None:
            x, _ = denoise_pass(ctx, x, ts, **kw)
            return x
        # steps 0 … p, then prune the population by the likelihood proxy, then the rest
        last = p + 1 >= len(ts)
        x, x0 = denoise_pass(ctx, x, ts[: p + 1], end=-1 if last else int(ts[p + 1]), **kw)
        score = inversion_score(ctx, x0, ts[-self.inversion_steps:])
        n_keep = max(1, math.ceil(self.keep * x.shape[0]))
        best = torch.argsort(score, descending=True)[:n_keep]
        refill = best[torch.arange(x.shape[0], device=best.device) % n_keep]
        x = x[refill]
        if not last:
            x, _ = denoise_pass(ctx, x, ts[p + 1:], first_step=p + 1, messages=x0[refill], **kw)
        return x


@torch.no_grad()
def inversion_score(ctx: Context, x0: Tensor, timesteps: Tensor) -> Tensor:
    """Likelihood proxy per candidate, ``(B,)``: deterministic DDIM inversion of the clean
    estimate over the low-noise end of the grid (``timesteps`` descending), scoring
    ``−mean ‖ε̂‖²`` of the noise the prior reads along the path (off-manifold plans need
    larger corrections). Costs ``len(timesteps)·N·B`` prior calls."""
    asc = [int(t) for t in reversed(timesteps.tolist())]
    x = x0
    energy = x0.new_zeros(x0.shape[0])
    for j, t in enumerate(asc):
        a_t = ctx.alpha(t)
        x0_hat = ctx.predict(x, t, stage="cdgs-inversion", step=j)
        eps = (x - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
        energy += ctx.plan_mean(eps.pow(2))
        if j + 1 < len(asc):
            a_n = ctx.alpha(asc[j + 1])
            x = a_n.sqrt() * x0_hat + (1 - a_n).sqrt() * eps
    return -energy / len(asc)
