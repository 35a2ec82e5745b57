"""GSC / MultiDiffusion / Gen-L-Video: local coupling only (Mishra et al. 2023; Bar-Tal et al. 2023)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..layout import Layout
from ..run import Run, Sampled
from ..steps import check_consensus, coupled_guide, ddim_step, disagreement, fuse, guidance_weight, nudge, \
    pairs, pin, pin_state
from .config import ConsensusFrom, ConsensusSweep, GuidanceSchedule, InitNoise, Noise, check_common

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
        noise: directional noise per plan (``independent``), per canvas (``shared``) or
            ``blend`` (per-plan draws merged to a unit-variance canvas).
        init_noise: x_T drawn on the ``canvas`` and split (overlaps start equal), or per ``plans``.
        consensus: κ of consensus coupling (0 = off; priors with ``accepts_evidence`` such as
            `EmpiricalPrior`): every prediction is conditioned on the neighbouring windows'
            previous x̂ over its overlaps, each counting κ times the window's own noisy state.
        consensus_snr_max: cap on that state's precision ᾱ/(1−ᾱ) in the messages' weight, so
            that near clean data messages cannot outweigh the prior and the pins (10: the
            level t ≈ 0.22·T of a cosine schedule).
        consensus_from: what the messages carry: the neighbours' last ``estimate`` x̂, or their
            current noisy ``state`` x_t / √ᾱ_t (CompDiffuser conditions each window on its
            neighbours' noisy chunks; for that message ``consensus = 1`` is its true precision).
        consensus_sweep: ``jacobi`` (every window reads its neighbours' previous x̂), or a
            Gauss-Seidel sweep where windows read the x̂ their neighbours made earlier in the same
            step: ``red-black`` (the even windows, then the odd ones; two prior calls per step)
            or ``forward`` (window 0, 1, …; N calls). Same NFE (`steps.coupled_guide`).
    """

    steps: int = 50
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

    def nfe(self, layout: Layout, batch: int) -> int:
        return self.steps * layout.count * batch

    def _state(self, x: Tensor) -> Tensor | None:
        return x if self.consensus_from == "state" else None

    def sample(self, run: Run, x: Tensor) -> Sampled:
        check_consensus(run, self.consensus)
        ts = run.grid(self.steps)
        x0 = None
        bar = run.bar(len(ts), "gsc")
        for k, (t, s) in enumerate(pairs(ts)):
            a_t, a_s = run.alpha(t), run.alpha(s)
            w = guidance_weight(self.guidance, s, a_s, self.guidance_schedule)
            x0, grad = coupled_guide(run, x, t, w, x0, self.consensus, self.consensus_snr_max, self._state(x),
                                     self.consensus_sweep)  # x̂ (and ∇R, eq. 11)
            x0_c = fuse(run, x0) if self.fusion else x0       # eq. 10
            x0_c = pin(run, x0_c)
            z = run.noise(self.noise) if self.eta > 0 else None
            x = pin_state(run, nudge(run, ddim_step(x, x0_c, a_t, a_s, self.eta, z), w, grad))
            run.emit(stage="gsc", step=k, t=t, x=x, x0=x0_c)
            bar.update()
        bar.close()
        return Sampled(x, disagreement(run, x0))
