"""CoFi: coarse scaffold by shrinkage, global renoise, local refinement (Algorithms 1 + 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..layout import Layout
from ..scaffold import Schedule, lam_schedule
from .base import Context, Direction, GuidanceSchedule, Noise, Update, check_common, denoise_pass

__all__ = ["CoFi"]


@dataclass(frozen=True)
class CoFi:
    """Coarse-to-Fine Compositional Diffusion. NFE = (K + K − r)·N·B, r = ⌊refine_at·K⌋.

    Args:
        steps: steps K of the timestep grid both stages share.
        eta: η of the coarse stage's DDIM update (1: the paper samples its directional noise).
        lam0: first λ of the coarse schedule (λ = 1 is no shrinkage).
        schedule: ``constant`` / ``linear`` (λ0 → 1) / ``cosine``.
        refine_at: refinement depth as a fraction of the schedule, in [0, 1): the merged
            scaffold is renoised to grid step r = ⌊refine_at·K⌋ and steps r … K−1 run again
            (0.3 → step 15 of 50, 3 of 10). ``None`` skips refinement.
        refine_eta: η of the refinement stage.
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
        consensus, consensus_snr_max: consensus coupling in both stages, as in `GSC` (the
            refinement's first prediction reads the coarse stage's last x̂).
    """

    steps: int = 50
    eta: float = 1.0
    lam0: float = 0.8
    schedule: Schedule = "linear"
    refine_at: float | None = 0.3
    refine_eta: float = 1.0
    fusion: bool = True
    refine_fusion: bool | None = None
    guidance: float = 0.0
    guidance_schedule: GuidanceSchedule = "constant"
    noise: Noise = "independent"
    refine_noise: Noise | None = None
    coarse_update: Update = "ddim"
    direction: Direction = "recompute"
    init_noise: str = "canvas"
    weights: tuple[float, ...] | None = None
    consensus: float = 0.0
    consensus_snr_max: float = 10.0

    def __post_init__(self) -> None:
        check_common(self.steps, self.eta, self.guidance, self.noise, self.init_noise, self.guidance_schedule,
                     self.consensus, self.consensus_snr_max)
        if self.refine_noise is not None:
            check_common(self.steps, self.refine_eta, 0.0, self.refine_noise, self.init_noise)
        lam_schedule(self.lam0, self.steps, self.schedule)  # validates lam0 and schedule
        if self.refine_at is not None and not (
            isinstance(self.refine_at, (int, float)) and not isinstance(self.refine_at, bool)
            and 0.0 <= self.refine_at < 1.0
        ):
            raise ValueError(f"refine_at must be None or a fraction of the schedule in [0, 1), got {self.refine_at!r}")
        if self.coarse_update not in ("ddim", "renoise"):
            raise ValueError(f"coarse_update must be 'ddim' or 'renoise', got {self.coarse_update!r}")
        if self.direction not in ("recompute", "fused"):
            raise ValueError(f"direction must be 'recompute' or 'fused', got {self.direction!r}")
        if self.direction == "fused" and self.coarse_update != "ddim":
            raise ValueError("direction='fused' needs coarse_update='ddim' (a re-noise step has no direction term)")
        if self.weights is not None:
            w = [float(v) for v in self.weights]
            if not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
                raise ValueError(f"weights must be finite, >= 0 and not all 0, got {self.weights!r}")
        if self.refine_eta < 0:
            raise ValueError(f"refine_eta must be >= 0, got {self.refine_eta}")

    @property
    def refine_step(self) -> int | None:
        """Grid index r = ⌊refine_at·K⌋ where refinement starts (None: no refinement)."""
        if self.refine_at is None:
            return None
        return min(self.steps - 1, math.floor(self.refine_at * self.steps + 1e-9))

    def nfe(self, layout: Layout, batch: int) -> int:
        r = self.refine_step
        return (self.steps + (0 if r is None else self.steps - r)) * layout.count * batch

    def sample(self, ctx: Context, x: Tensor) -> Tensor:
        ts = ctx.grid(self.steps)
        w = None if self.weights is None else torch.tensor(self.weights, device=ctx.device, dtype=ctx.dtype)
        if w is not None and w.shape[0] != ctx.windows_total:
            raise ValueError(f"weights must have one entry per window ({ctx.windows_total}), got {w.shape[0]}")
        lams = lam_schedule(self.lam0, self.steps, self.schedule)
        # 1. coarse stage: every step shrinks x̂ toward the shared scaffold
        guide = dict(guidance=self.guidance, guidance_schedule=self.guidance_schedule, consensus=self.consensus,
                     consensus_snr_max=self.consensus_snr_max)
        x, x0 = denoise_pass(ctx, x, ts, stage="coarse", eta=self.eta, fusion=self.fusion, noise=self.noise,
                            lams=lams, weights=w, update=self.coarse_update, direction=self.direction, **guide)
        r = self.refine_step
        if r is None:
            return x
        # 2. global scaffold X_c = merge(x_0)
        scaffold = ctx.layout.merge(x)
        ctx.outputs["scaffold"] = scaffold
        # 3. renoise on the global canvas with ONE noise (eq. 16)
        a_r = ctx.alpha(int(ts[r]))
        z = ctx.randn(scaffold.shape[1:])
        x = ctx.layout.split(a_r.sqrt() * scaffold + (1 - a_r).sqrt() * z)
        # 4. refinement stage: local coupling only (λ = 1)
        x, _ = denoise_pass(ctx, x, ts[r:], stage="refine", eta=self.refine_eta,
                            fusion=self.fusion if self.refine_fusion is None else self.refine_fusion,
                            noise=self.refine_noise or self.noise, first_step=r, messages=x0, **guide)
        return x
