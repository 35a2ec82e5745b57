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
from einops import reduce
from torch import Tensor

from ..layout import Layout
from ..run import Run, Sampled
from ..steps import check_consensus, coupled_guide, ddim_step, disagreement, fuse, guidance_weight, nudge, \
    pairs, pin, pin_state, predict, renoise
from .config import ConsensusFrom, ConsensusSweep, GuidanceSchedule, InitNoise, Noise, check_common, check_number

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
        eta, fusion, guidance, guidance_schedule, noise, init_noise, consensus, consensus_snr_max,
            consensus_from, consensus_sweep: as in `GSC`.
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
    init_noise: InitNoise = "canvas"
    consensus: float = 0.0
    consensus_snr_max: float = 10.0
    consensus_from: ConsensusFrom = "estimate"
    consensus_sweep: ConsensusSweep = "jacobi"

    def __post_init__(self) -> None:
        check_common(self)
        check_number("inner", self.inner, 1, integer=True)
        for name in ("prune_at", "keep", "inversion"):
            check_number(name, getattr(self, name), 0.0, 1.0)

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

    def survivors(self, score: Tensor) -> Tensor:
        """Population index after pruning, ``(P,)``: the best ``keep`` fraction by ``score``
        (at least one), copied round-robin to refill the population."""
        n_keep = max(1, math.ceil(self.keep * score.shape[0]))
        best = torch.argsort(score, descending=True)[:n_keep]
        return best[torch.arange(score.shape[0], device=best.device) % n_keep]

    def _state(self, x: Tensor) -> Tensor | None:
        return x if self.consensus_from == "state" else None

    def sample(self, run: Run, x: Tensor) -> Sampled:
        check_consensus(run, self.consensus)
        ts = run.grid(self.steps)
        x0 = None
        bar = run.bar(len(ts) * self.inner, "cdgs")
        for k, (t, s) in enumerate(pairs(ts)):
            a_t, a_s = run.alpha(t), run.alpha(s)
            w = guidance_weight(self.guidance, s, a_s, self.guidance_schedule)
            for u in range(self.inner):  # U rounds of message passing: denoise t → s, re-noise s → t
                x0, grad = coupled_guide(run, x, t, w, x0, self.consensus, self.consensus_snr_max, self._state(x),
                                         self.consensus_sweep)
                x0_c = pin(run, fuse(run, x0) if self.fusion else x0)
                z = run.noise(self.noise) if self.eta > 0 else None
                x_s = pin_state(run, nudge(run, ddim_step(x, x0_c, a_t, a_s, self.eta, z), w, grad))
                if u + 1 < self.inner:
                    x = renoise(x_s, a_s, a_t, run.noise(self.noise))
                bar.update()
            x = x_s
            run.emit(stage="cdgs", step=k, t=t, x=x, x0=x0_c)
            if k == self.prune_step:  # once: prune the population by the likelihood proxy, refill
                keep = self.survivors(inversion_score(run, x0_c, ts[-self.inversion_steps:]))
                x, x0 = x[keep], x0_c[keep]  # the next messages read the survivors' coupled x̂
        bar.close()
        return Sampled(x, disagreement(run, x0))


@torch.no_grad()
def inversion_score(run: Run, x0: Tensor, timesteps: Tensor) -> Tensor:
    """Likelihood proxy per candidate, ``(B,)``: deterministic DDIM inversion of the clean
    estimate over the low-noise end of the grid (``timesteps`` descending), scoring
    ``−mean ‖ε̂‖²`` of the noise the prior reads along the path (off-manifold plans need
    larger corrections). Costs ``len(timesteps)·N·B`` prior calls."""
    asc = [int(t) for t in reversed(timesteps.tolist())]
    x = x0
    energy = x0.new_zeros(x0.shape[0])
    entries = run.windows * math.prod(run.sample_shape)
    for j, t in enumerate(asc):
        a_t = run.alpha(t)
        x0_hat = predict(run, x, t)
        eps = (x - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
        energy += run.layout.all_reduce(reduce(eps.pow(2), "b ... -> b", "sum")) / entries
        if j + 1 < len(asc):
            a_n = run.alpha(asc[j + 1])
            x = a_n.sqrt() * x0_hat + (1 - a_n).sqrt() * eps
    return -energy / len(asc)
