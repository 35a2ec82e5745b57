"""`Run`: what a sampler needs besides its own config, handed to ``sample(run, x_T)`` by `compose`.

A run is immutable: the prior, the layout (its collectives span the ranks when the layout is a
`cofi.distributed.Shard`), the candidates' generators, the pins and conditioning, the callback.
It gives the sampler its timestep grid (``run.grid``), the schedule (``run.alpha``), its noise
source (``run.noise``) and a progress bar; the only thing that changes during a run is its
`Meter` of prior evaluations. Solver state lives in the sampler's local variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .coupling import Pins, pin_mask
from .layout import Layout
from .prior import LocalPrior, timestep_grid

Noise = Literal["independent", "shared", "blend"]
NOISE_MODES = ("independent", "shared", "blend")
Generator = torch.Generator | Sequence[torch.Generator] | None

__all__ = ["Run", "Meter", "Sampled", "Noise", "NOISE_MODES", "Generator", "all_finite"]


def all_finite(x: Tensor) -> bool:
    """Whether ``x`` holds no NaN or inf, by one reduction (a NaN or inf survives a sum; finite
    values large enough to overflow it, ~1e38 in float32, are no sampler state either)."""
    return bool(torch.isfinite(x.detach().sum()))


@dataclass
class Meter:
    """Prior evaluations spent by this process: ``nfe`` plan-evaluations, of which
    ``grad_evals`` were also differentiated (guidance, SyncDiffusion)."""

    nfe: int = 0
    grad_evals: int = 0


@dataclass(frozen=True)
class Run:
    """The fixed context of one composition.

    Attributes:
        prior: the `LocalPrior`.
        alphas_cumprod: the prior's schedule ᾱ, checked (`compose`).
        layout: the windows (a `Chain`, a `Grid`, or this rank's `cofi.distributed.Shard`).
        batch: candidates B.
        generator: one ``torch.Generator``, one per candidate, or None (torch's default).
        dtype, device: of the sampler state.
        max_batch: most plans per prior call (None: all at once).
        pins: known canvas positions (`cofi.Pins`) or None.
        constraint: ``constraint(plans, layout) -> plans``, a projection of every estimate x̂
            onto what the domain allows (applied before the pins, `cofi.steps.pin`), or None.
        cond: keyword conditioning passed to every ``prior.denoise`` call.
        callback: ``callback(dict)`` after every step; it receives copies.
        progress: show progress bars.
        meter: the NFE counters (`Meter`).
    """

    prior: LocalPrior
    layout: Layout
    alphas_cumprod: Tensor
    batch: int
    generator: Generator
    dtype: torch.dtype
    device: torch.device
    max_batch: int | None = None
    pins: Pins | None = None
    constraint: Callable[[Tensor, Layout], Tensor] | None = None
    cond: Mapping[str, object] = field(default_factory=dict)
    callback: Callable[[dict], None] | None = None
    progress: bool = True
    meter: Meter = field(default_factory=Meter)

    # ------------------------------------------------------------- schedule
    def grid(self, steps: int) -> Tensor:
        """K descending timesteps laid over the prior's schedule (its ``timestep_spacing``)."""
        return timestep_grid(self.alphas_cumprod.shape[0], steps,
                             getattr(self.prior, "timestep_spacing", "leading"),
                             getattr(self.prior, "steps_offset", 0))

    def alpha(self, t: int) -> Tensor:
        """ᾱ_t as a 0-dim tensor; ``t < 0`` is the end of the grid: the prior's optional
        ``final_alpha_cumprod`` (diffusers' ``set_alpha_to_one=False``), else ᾱ = 1 (clean)."""
        if t < 0:
            final = float(getattr(self.prior, "final_alpha_cumprod", 1.0))
            return torch.full((), final, device=self.device, dtype=self.dtype)
        return self.alphas_cumprod[t].to(self.device, self.dtype)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.prior.sample_shape)

    @cached_property
    def pin_mask(self) -> Tensor | None:
        """``(1, count, *S)``: which entries of the plans held here the pins fix (None without pins)."""
        return pin_mask(self.pins, self.layout, (1, self.layout.count, *self.sample_shape), self.device)

    @cached_property
    def pinned_entries(self) -> Tensor:
        """How many entries of all N plans the pins fix (at least 1), for the pins' mean reward."""
        full = self.layout.full
        mask = pin_mask(self.pins, full, (1, full.count, *self.sample_shape), self.device)
        return (mask.sum() if mask is not None else torch.zeros(())).to(self.dtype).clamp(min=1)

    @property
    def windows(self) -> int:
        """N, the composition's window count (``layout.count`` is this process's share)."""
        return self.layout.full.count

    # ------------------------------------------------------------- randomness
    def randn(self, shape: Sequence[int]) -> Tensor:
        """``(B, *shape)`` standard normals; one draw per candidate generator if a list."""
        g = self.generator
        if isinstance(g, (list, tuple)):
            parts = [torch.randn(tuple(shape), generator=gi, device=gi.device, dtype=self.dtype) for gi in g]
            return torch.stack(parts).to(self.device)
        dev = g.device if g is not None else self.device
        return torch.randn((self.batch, *shape), generator=g, device=dev, dtype=self.dtype).to(self.device)

    def noise(self, mode: Noise) -> Tensor:
        """Standard normals for the plans held here, ``(B, count, *S)``: ``independent`` per plan;
        ``shared``: one canvas draw split into windows; ``blend``: per-plan draws merged into a
        unit-variance canvas with the blend weights, then split. Overlaps share the last two.
        The draws cover all N windows whichever of them this process holds."""
        if mode == "shared":
            return self.layout.split(self.randn(self.layout.global_shape(self.sample_shape)))
        z = self.randn((self.windows, *self.sample_shape))
        if mode == "blend":
            return self.layout.split(self.layout.blend_noise(z))
        return self.layout.local(z)

    # ------------------------------------------------------------- reporting
    def bar(self, total: int, desc: str) -> tqdm:
        """A progress bar (disabled with ``progress=False``)."""
        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def emit(self, **info) -> None:
        """Report a finished step: check that the state ``x`` is finite (FloatingPointError naming
        the stage and step otherwise; a non-finite *prediction* is caught earlier, in `predict`,
        and blamed on the prior), then call the callback with copies, so it cannot change the run."""
        x = info.get("x")
        if isinstance(x, Tensor) and not all_finite(x):
            raise FloatingPointError(
                f"the sampler state became NaN or inf at stage {info.get('stage')!r}, step {info.get('step')} "
                f"(t={info.get('t')}); the prior's predictions were finite, so look at the sampler's settings "
                f"(guidance weight, dtype) and the prior's schedule")
        if self.callback is not None:
            self.callback({k: (v.detach().clone() if isinstance(v, Tensor) else v) for k, v in info.items()})


@dataclass(frozen=True)
class Sampled:
    """What a sampler's ``sample(run, x_T)`` returns.

    Attributes:
        plans: ``(B, count, *S)`` the final local plans.
        disagreement: ``(B,)`` how much the candidates' local estimates disagreed over the
            overlaps before fusion at the last step (`cofi.steps.disagreement`); `compose`
            selects the candidate with the lowest.
        scaffold: ``(B, *G)`` a global by-product to report (CoFi's coarse scaffold), or None.
    """

    plans: Tensor
    disagreement: Tensor
    scaffold: Tensor | None = None
