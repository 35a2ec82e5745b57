"""CoFi: coarse scaffold by shrinkage, global renoise, local refinement (Algorithms 1 + 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..layout import Chain
from ..scaffold import Schedule, lam_schedule
from .base import Context, Noise, check_common, denoise_pass

__all__ = ["CoFi"]


@dataclass(frozen=True)
class CoFi:
    """Coarse-to-Fine Compositional Diffusion. NFE = (K + K − r)·N·B.

    Args:
        steps: DDIM steps K of the grid both stages share.
        eta: η of the coarse stage. 1 by default: the paper samples the coarse stage's
            directional noise (``independent`` per plan or ``shared``), which only matters with η > 0.
        lam0: first λ of the coarse schedule (λ = 1 is no shrinkage).
        schedule: ``constant`` / ``linear`` (λ0 → 1) / ``cosine``.
        refine_start: grid index r where the renoised global scaffold enters the
            refinement stage (steps r … K−1); ``None`` skips refinement.
        refine_eta: η of the refinement stage.
        fusion: Bethe averaging with the layout's blend in both stages.
        guidance: overlap-MSE gradient guidance weight in both stages (0 = off).
        noise: directional noise, ``independent`` per plan or ``shared`` on the canvas.
        init_noise: x_T on the ``canvas`` (split) or per ``plans``.
        weights: optional ``(N,)`` weights of the scaffold mean (uniform if None).
    """

    steps: int = 50
    eta: float = 1.0
    lam0: float = 0.8
    schedule: Schedule = "linear"
    refine_start: int | None = 15
    refine_eta: float = 1.0
    fusion: bool = True
    guidance: float = 0.0
    noise: Noise = "independent"
    init_noise: str = "canvas"
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_common(self.steps, self.eta, self.guidance, self.noise, self.init_noise)
        lam_schedule(self.lam0, self.steps, self.schedule)  # validates lam0 and schedule
        if self.refine_start is not None and not (
            isinstance(self.refine_start, int) and 0 <= self.refine_start < self.steps
        ):
            raise ValueError(
                f"refine_start must be None or an int in [0, steps-1] = [0, {self.steps - 1}], got {self.refine_start!r}"
            )
        if self.weights is not None:
            w = [float(v) for v in self.weights]
            if not all(math.isfinite(v) and v >= 0 for v in w) or sum(w) <= 0:
                raise ValueError(f"weights must be finite, >= 0 and not all 0, got {self.weights!r}")
        if self.refine_eta < 0:
            raise ValueError(f"refine_eta must be >= 0, got {self.refine_eta}")

    def nfe(self, layout: Chain, batch: int) -> int:
        refine = 0 if self.refine_start is None else self.steps - self.refine_start
        return (self.steps + refine) * layout.count * batch

    def sample(self, ctx: Context, x: Tensor) -> Tensor:
        ts = ctx.grid(self.steps)
        w = None if self.weights is None else torch.tensor(self.weights, device=ctx.device, dtype=ctx.dtype)
        if w is not None and w.shape[0] != ctx.layout.count:
            raise ValueError(f"weights must have one entry per window ({ctx.layout.count}), got {w.shape[0]}")
        lams = lam_schedule(self.lam0, self.steps, self.schedule)
        # 1. coarse stage: every step shrinks x̂ toward the shared scaffold
        x, _ = denoise_pass(ctx, x, ts, stage="coarse", eta=self.eta, fusion=self.fusion,
                            guidance=self.guidance, noise=self.noise, lams=lams, weights=w)
        if self.refine_start is None:
            return x
        # 2. global scaffold X_c = merge(x_0)
        scaffold = ctx.layout.merge(x)
        ctx.scaffold = scaffold
        # 3. renoise on the global canvas with ONE noise (eq. 16)
        a_r = ctx.alpha(int(ts[self.refine_start]))
        z = ctx.randn(scaffold.shape[1:])
        x = ctx.layout.split(a_r.sqrt() * scaffold + (1 - a_r).sqrt() * z)
        # 4. refinement stage: local coupling only (λ = 1)
        x, _ = denoise_pass(ctx, x, ts[self.refine_start:], stage="refine", eta=self.refine_eta,
                            fusion=self.fusion, guidance=self.guidance, noise=self.noise)
        return x
