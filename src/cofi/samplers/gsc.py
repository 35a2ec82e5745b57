"""GSC / MultiDiffusion / Gen-L-Video: local coupling only (Mishra et al. 2023; Bar-Tal et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..layout import Layout
from .base import Context, GuidanceSchedule, Noise, check_common, denoise_pass

__all__ = ["GSC"]


@dataclass(frozen=True)
class GSC:
    """Compositional DDIM with fusion and/or overlap guidance at every step. NFE = K·N·B.

    Args:
        steps: DDIM steps K.
        eta: DDIM stochasticity η.
        fusion: Bethe averaging of x̂ with the layout's blend at every step.
        guidance: weight of the overlap-MSE gradient guidance (0 = off).
        guidance_schedule: ``constant`` weight, or ``variance``: the weight times 1 − ᾱ_s of
            the level each step lands on (full at high noise, fading to 0 at clean data).
        noise: directional noise per plan (``independent``) or per canvas (``shared``).
        init_noise: x_T drawn on the ``canvas`` and split (overlaps start equal), or per ``plans``.
        consensus: κ of consensus coupling (0 = off; priors with ``accepts_evidence`` such as
            `EmpiricalPrior`): every prediction is conditioned on the neighbouring windows'
            previous x̂ over its overlaps, each counting κ times the window's own noisy state.
        consensus_snr_max: cap on that state's precision ᾱ/(1−ᾱ) in the messages' weight, so
            that near clean data messages cannot outweigh the prior and the pins (10: the
            level t ≈ 0.22·T of a cosine schedule).
    """

    steps: int = 50
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

    def nfe(self, layout: Layout, batch: int) -> int:
        return self.steps * layout.count * batch

    def sample(self, ctx: Context, x: Tensor) -> Tensor:
        ts = ctx.grid(self.steps)
        x, _ = denoise_pass(ctx, x, ts, stage="gsc", eta=self.eta, fusion=self.fusion,
                            guidance=self.guidance, guidance_schedule=self.guidance_schedule, noise=self.noise,
                            consensus=self.consensus, consensus_snr_max=self.consensus_snr_max)
        return x
