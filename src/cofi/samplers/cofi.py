"""CoFi: coarse scaffold by shrinkage, global renoise, local refinement (Algorithms 1 + 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..layout import Layout
from ..run import Run, Sampled
from ..scaffold import Schedule, lam_schedule
from ..steps import check_consensus, coupled_guide, ddim_step, disagreement, eps_from_x0, fuse, guidance_weight, \
    nudge, pairs, pin, pin_state, renoise, renoise_canvas, shrink
from .config import ConsensusFrom, ConsensusSweep, GuidanceSchedule, InitNoise, Noise, check_choice, check_common, check_number

Update = Literal["ddim", "renoise"]
Direction = Literal["recompute", "fused"]

__all__ = ["CoFi"]


@dataclass(frozen=True)
class CoFi:
    """Coarse-to-Fine Compositional Diffusion. NFE = (K + (K − r)·U)·N·B, r = ⌊refine_at·K⌋,
    U = ``refine_inner`` (1 in the paper).

    Args:
        steps: steps K of the timestep grid both stages share.
        eta: η of the coarse stage's DDIM update (1: the paper samples its directional noise).
        lam0: first λ of the coarse schedule (λ = 1 is no shrinkage).
        schedule: ``constant`` / ``linear`` (λ0 → 1) / ``cosine``.
        refine_at: refinement depth as a fraction of the schedule, in [0, 1): the merged
            scaffold is renoised to grid step r = ⌊refine_at·K⌋ and steps r … K−1 run again
            (0.3 → step 15 of 50, 3 of 10). ``None`` skips refinement.
        refine_eta: η of the refinement stage.
        refine_inner: rounds U per refinement step (1: the paper's Algorithm 2). Each round
            denoises t → s and, but for the last, re-noises s → t with the forward kernel
            (CDGS's inner iterations, here only where refinement runs: low noise, local
            detail).
        fusion: Bethe averaging with the layout's blend in both stages.
        refine_fusion: Bethe averaging in the refinement stage; None: as ``fusion``.
        guidance: overlap-MSE gradient guidance weight in both stages (0 = off).
        guidance_schedule: ``constant`` weight, or ``variance``: the weight times 1 − ᾱ_s of
            the level each step lands on (full at high noise, fading to 0 at clean data).
        noise: the coarse stage's noise: ``independent`` per plan, ``shared`` (one canvas
            draw, split) or ``blend`` (per-plan draws merged to a unit-variance canvas).
        refine_noise: the refinement stage's noise; None: as ``noise``.
        coarse_update: ``ddim`` (DDIM with ``eta``) or ``renoise`` (x̃ re-noised straight to
            the next level, ``√ᾱ_s x̃ + √(1−ᾱ_s) z``: the authors' panorama loop).
        direction: the coarse DDIM direction, ``recompute``d from the shrunk x̃ or the
            prior's ``fused`` ε̂ (the authors' video loop); only with ``coarse_update="ddim"``.
        init_noise: x_T on the ``canvas`` (split) or per ``plans``.
        weights: optional ``(N,)`` weights of the scaffold mean (uniform if None).
        consensus, consensus_snr_max, consensus_from, consensus_sweep: consensus coupling in both
            stages, as in `GSC` (the refinement's first prediction reads the coarse stage's last x̂).
    """

    steps: int = 50
    eta: float = 1.0
    lam0: float = 0.8
    schedule: Schedule = "linear"
    refine_at: float | None = 0.3
    refine_eta: float = 1.0
    refine_inner: int = 1
    fusion: bool = True
    refine_fusion: bool | None = None
    guidance: float = 0.0
    guidance_schedule: GuidanceSchedule = "constant"
    noise: Noise = "independent"
    refine_noise: Noise | None = None
    coarse_update: Update = "ddim"
    direction: Direction = "recompute"
    init_noise: InitNoise = "canvas"
    weights: tuple[float, ...] | None = None
    consensus: float = 0.0
    consensus_snr_max: float = 10.0
    consensus_from: ConsensusFrom = "estimate"
    consensus_sweep: ConsensusSweep = "jacobi"

    def __post_init__(self) -> None:
        check_common(self)
        check_number("refine_eta", self.refine_eta)
        check_number("refine_inner", self.refine_inner, 1, integer=True)
        if self.refine_noise is not None:
            check_choice("refine_noise", self.refine_noise, ("independent", "shared", "blend"))
        check_number("lam0", self.lam0, 0.0, 1.0)
        check_choice("schedule", self.schedule, ("constant", "linear", "cosine"))
        if self.refine_at is not None and not (
            isinstance(self.refine_at, (int, float)) and not isinstance(self.refine_at, bool)
            and 0.0 <= self.refine_at < 1.0
        ):
            raise ValueError(f"refine_at must be None or a fraction of the schedule in [0, 1), got {self.refine_at!r}")
        check_choice("coarse_update", self.coarse_update, ("ddim", "renoise"))
        check_choice("direction", self.direction, ("recompute", "fused"))
        if self.direction == "fused" and self.coarse_update != "ddim":
            raise ValueError("direction='fused' needs coarse_update='ddim' (a re-noise step has no direction term)")
        if self.weights is not None:
            w = [float(v) for v in self.weights]
            if not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
                raise ValueError(f"weights must be finite, >= 0 and not all 0, got {self.weights!r}")

    @property
    def refine_step(self) -> int | None:
        """Grid index r = ⌊refine_at·K⌋ where refinement starts (None: no refinement)."""
        if self.refine_at is None:
            return None
        return min(self.steps - 1, math.floor(self.refine_at * self.steps + 1e-9))

    def nfe(self, layout: Layout, batch: int) -> int:
        r = self.refine_step
        return (self.steps + (0 if r is None else (self.steps - r) * self.refine_inner)) * layout.count * batch

    def _state(self, x: Tensor) -> Tensor | None:
        return x if self.consensus_from == "state" else None

    def sample(self, run: Run, x: Tensor) -> Sampled:
        check_consensus(run, self.consensus)
        ts = run.grid(self.steps)
        w_mean = None if self.weights is None else torch.tensor(self.weights, device=run.device, dtype=run.dtype)
        if w_mean is not None and w_mean.shape[0] != run.windows:
            raise ValueError(f"weights must have one entry per window ({run.windows}), got {w_mean.shape[0]}")
        lams = lam_schedule(self.lam0, self.steps, self.schedule)
        r = self.refine_step
        x0 = None
        bar = run.bar(len(ts) + (0 if r is None else (len(ts) - r) * self.refine_inner), "cofi")
        # 1. coarse stage (Algorithm 1): every x̂ shrinks toward the shared scaffold
        for k, (t, s) in enumerate(pairs(ts)):
            a_t, a_s = run.alpha(t), run.alpha(s)
            w = guidance_weight(self.guidance, s, a_s, self.guidance_schedule)
            x0, grad = coupled_guide(run, x, t, w, x0, self.consensus, self.consensus_snr_max, self._state(x),
                                     self.consensus_sweep)  # x̂ (and ∇R, eq. 11)
            if self.direction == "fused":  # the authors' video loop keeps the prior's ε̂, fused like x̂
                eps = eps_from_x0(x0, x, a_t.expand(x.shape[0]))
                eps = fuse(run, eps) if self.fusion else eps
            x0_c = fuse(run, x0) if self.fusion else x0           # eq. 10
            if lams[k] < 1.0:                                     # eq. 13
                x0_c = shrink(x0_c, lams[k], mean=run.layout.window_mean(x0_c, w_mean))
            x0_c = pin(run, x0_c)
            if self.coarse_update == "renoise":  # the authors' panorama loop: x̃ straight to level s
                x = a_s.sqrt() * x0_c + (1 - a_s).sqrt() * run.noise(self.noise)
            else:
                z = run.noise(self.noise) if self.eta > 0 else None
                x = ddim_step(x, x0_c, a_t, a_s, self.eta, z, eps if self.direction == "fused" else None)
            x = pin_state(run, nudge(run, x, w, grad))
            run.emit(stage="coarse", step=k, t=t, x=x, x0=x0_c)
            bar.update()
        if r is None:
            bar.close()
            return Sampled(x, disagreement(run, x0))
        # 2. global scaffold X_c = merge(x_0); 3. renoise it with ONE canvas noise (eq. 16)
        scaffold = run.layout.merge(x)
        x = renoise_canvas(run, scaffold, run.alpha(int(ts[r])))
        # 4. refinement stage (Algorithm 2): local coupling only (λ = 1)
        fusion = self.fusion if self.refine_fusion is None else self.refine_fusion
        x0 = x0_c  # the refinement's first consensus messages: the coarse stage's last x̃
        for k, (t, s) in enumerate(pairs(ts[r:]), start=r):
            a_t, a_s = run.alpha(t), run.alpha(s)
            w = guidance_weight(self.guidance, s, a_s, self.guidance_schedule)
            for u in range(self.refine_inner):
                x0, grad = coupled_guide(run, x, t, w, x0, self.consensus, self.consensus_snr_max, self._state(x),
                                         self.consensus_sweep)
                x0_c = pin(run, fuse(run, x0) if fusion else x0)
                z = run.noise(self.refine_noise or self.noise) if self.refine_eta > 0 else None
                x_s = pin_state(run, nudge(run, ddim_step(x, x0_c, a_t, a_s, self.refine_eta, z), w, grad))
                if u + 1 < self.refine_inner:  # back to level t for another round
                    x = renoise(x_s, a_s, a_t, run.noise(self.refine_noise or self.noise))
                bar.update()
            x = x_s
            run.emit(stage="refine", step=k, t=t, x=x, x0=x0_c)
        bar.close()
        return Sampled(x, disagreement(run, x0), scaffold)
