"""What every sampler shares: the run context, prior calls, noise draws and one denoising pass.

A sampler is a frozen config dataclass with ``sample(ctx, x) -> x0`` and
``nfe(layout, batch) -> int``; the stages of GSC, CoFi and CDGS are all calls of
``denoise_pass`` over slices of one timestep grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..coupling import Pins, apply_pins, overlap_reward, pin_mask
from ..layout import Layout
from ..prior import LocalPrior, eps_from_x0, timestep_grid
from ..scaffold import scaffold_mean, shrink
from .ddim import ddim_step, renoise

Noise = Literal["independent", "shared", "blend"]
NOISE_MODES = ("independent", "shared", "blend")
Update = Literal["ddim", "renoise"]
Direction = Literal["recompute", "fused"]
GuidanceSchedule = Literal["constant", "variance"]
GUIDANCE_SCHEDULES = ("constant", "variance")
Generator = torch.Generator | Sequence[torch.Generator] | None

__all__ = ["Context", "denoise_pass", "Noise", "NOISE_MODES", "Update", "Direction", "GuidanceSchedule",
           "GUIDANCE_SCHEDULES", "check_common"]


def check_common(steps: int, eta: float, guidance: float, noise: str, init_noise: str,
                 guidance_schedule: str = "constant", consensus: float = 0.0,
                 consensus_snr_max: float = math.inf) -> None:
    """Validation shared by every sampler config."""
    if not (isinstance(consensus, (int, float)) and math.isfinite(consensus) and consensus >= 0):
        raise ValueError(f"consensus must be a finite number >= 0, got {consensus!r}")
    if not (isinstance(consensus_snr_max, (int, float)) and consensus_snr_max > 0):
        raise ValueError(f"consensus_snr_max must be a number > 0, got {consensus_snr_max!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    if guidance_schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(f"guidance_schedule must be one of {', '.join(map(repr, GUIDANCE_SCHEDULES))}, "
                         f"got {guidance_schedule!r}")
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {', '.join(map(repr, NOISE_MODES))}, got {noise!r}")
    if init_noise not in ("canvas", "plans"):
        raise ValueError(f"init_noise must be 'canvas' or 'plans', got {init_noise!r}")


@dataclass
class Context:
    """Everything a sampler needs besides its config. What changes during a run is only the
    counters (``nfe``, ``grad_evals``) and ``outputs``, the by-products a sampler reports for
    `Composition` (CoFi's ``scaffold``); solver state stays in the samplers' local variables."""

    prior: LocalPrior
    layout: Layout
    batch: int
    generator: Generator
    device: torch.device
    dtype: torch.dtype
    max_batch: int | None = None
    pins: Pins | None = None
    cond: dict[str, Any] = field(default_factory=dict)
    callback: Callable[[dict], None] | None = None
    progress: bool = True
    nfe: int = 0
    grad_evals: int = 0
    outputs: dict[str, Tensor] = field(default_factory=dict)

    # ------------------------------------------------------------- schedule
    def grid(self, steps: int) -> Tensor:
        ac = self.prior.alphas_cumprod
        return timestep_grid(
            ac.shape[0], steps,
            getattr(self.prior, "timestep_spacing", "leading"),
            getattr(self.prior, "steps_offset", 0),
        )

    def alpha(self, t: int) -> Tensor:
        """ᾱ_t as a 0-dim tensor; ``t < 0`` is the end of the grid: the prior's optional
        ``final_alpha_cumprod`` (diffusers' ``set_alpha_to_one=False``), else ᾱ = 1 (clean)."""
        if t < 0:
            final = float(getattr(self.prior, "final_alpha_cumprod", 1.0))
            return torch.full((), final, device=self.device, dtype=self.dtype)
        return self.prior.alphas_cumprod[t].to(self.device, self.dtype)  # one entry, not the whole table

    @property
    def plan_shape(self) -> tuple[int, ...]:
        return (self.batch, self.layout.count, *self.prior.sample_shape)

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
        """Noise for the plans ``(B, N, *S)``: ``independent`` per plan; ``shared``: one canvas
        draw split into windows; ``blend``: per-plan draws merged into a unit-variance canvas
        with the blend weights (`Chain.blend_noise`), then split. Overlaps share the last two.
        On a `cofi.distributed.Shard` every rank draws for all windows and keeps its own."""
        if mode == "shared":
            return self.layout.split(self.randn(self.layout.global_shape(self.prior.sample_shape)))
        z = self.randn((self.windows_total, *self.prior.sample_shape))
        if mode == "blend":
            return self.layout.split(self.layout.blend_noise(z))
        return self.layout.local(z) if self.sharded else z

    # ------------------------------------------------------------- windows across ranks
    @property
    def sharded(self) -> bool:
        """Whether this run's windows are spread over the ranks of a process group."""
        return getattr(self.layout, "is_shard", False)

    @property
    def windows_total(self) -> int:
        """N, the composition's window count (``layout.count`` is this rank's on a shard)."""
        return self.layout.full.count if self.sharded else self.layout.count

    def window_ids(self) -> Tensor:
        """Global index of each window in the state, ``(count,)``."""
        ids = self.layout.window_ids if self.sharded else torch.arange(self.layout.count)
        return ids.to(self.device)

    def window_mean(self, x: Tensor, weights: Tensor | None = None) -> Tensor:
        """The (``weights``-weighted) mean of ``x (B, count, *S)`` over all N windows, ``(B, 1, *S)``."""
        if self.sharded:
            return self.layout.window_mean(x, weights)
        return scaffold_mean(x, dim=1, weights=weights)

    def pinned_entries(self, mask: Tensor) -> Tensor:
        """How many entries of all N windows the pins write (at least 1), ``(1,)``; ``mask
        (1, count, *S)`` is this rank's (on a shard the count comes from the whole layout)."""
        if self.sharded:
            mask = pin_mask(self.pins, self.layout.full, (1, self.windows_total, *self.prior.sample_shape))
        return mask.flatten(1).sum(1).to(self.dtype).clamp(min=1)

    def plan_mean(self, x: Tensor) -> Tensor:
        """Mean of ``x (B, count, *S)`` over every window and entry, per candidate, ``(B,)``."""
        if not self.sharded:
            return x.flatten(1).mean(1)
        return self.layout.all_reduce(x.flatten(1).sum(1)) / (self.windows_total * x[0, 0].numel())

    # ------------------------------------------------------------- prior calls
    def predict(self, x: Tensor, t: int, *, stage: str, step: int, grad: bool = False,
                windows: Tensor | None = None, evidence: dict[str, Tensor] | None = None) -> Tensor:
        """x̂ for the plans ``x (B, n, *S)`` at timestep t, micro-batched by ``max_batch``, with
        shape and NaN checks and NFE counting. ``windows (n,)``: the position in the state of
        each of the n plans (default: all windows in order; SyncDiffusion passes a subset);
        the prior receives their global window indices. ``evidence``: extra keyword tensors
        ``(B·n, *S)`` for the prior, sliced with the micro-batches (`messages`)."""
        B, n = x.shape[:2]
        S = tuple(self.prior.sample_shape)
        if windows is None:
            windows = torch.arange(self.layout.count, device=self.device)
        windows = windows.to(self.device)
        flat = x.reshape(B * n, *S)
        tt = torch.full((B * n,), int(t), device=self.device, dtype=torch.long)
        win = self.window_ids()[windows].repeat(B)
        obs = {k: v.reshape(B, self.layout.count, *S)[:, windows].flatten(0, 1)
               for k, v in self._observations(B).items()}
        obs.update(evidence or {})
        mb = self.max_batch or B * n
        outs = []
        with torch.set_grad_enabled(grad):
            for i in range(0, B * n, mb):
                extra = {k: v[i : i + mb] for k, v in obs.items()}
                out = self.prior.denoise(flat[i : i + mb], tt[i : i + mb], window=win[i : i + mb], **extra,
                                         **self.cond)
                if not isinstance(out, Tensor) or tuple(out.shape) != tuple(flat[i : i + mb].shape):
                    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ValueError(
                        f"prior.denoise must return shape {tuple(flat[i : i + mb].shape)} "
                        f"(the input's), got {got}"
                    )
                outs.append(out.to(self.dtype))
        x0 = torch.cat(outs).reshape(B, n, *S)
        self.nfe += B * n
        if not torch.isfinite(x0.detach()).all():
            raise FloatingPointError(
                f"prior.denoise returned NaN or inf at stage '{stage}', step {step} (t={int(t)})"
            )
        return x0

    def _observations(self, B: int) -> dict[str, Tensor]:
        """The pins as exact observations ``observed`` / ``observed_mask`` ``(B·N, *S)``, for
        priors with ``accepts_observations = True`` (e.g. `EmpiricalPrior`); else nothing."""
        if self.pins is None or not getattr(self.prior, "accepts_observations", False):
            return {}
        shape = (B, *self.plan_shape[1:])
        mask = pin_mask(self.pins, self.layout, shape, self.device).expand(shape)
        vals = apply_pins(torch.zeros(shape, device=self.device, dtype=self.dtype), self.pins, self.layout)
        return {"observed": vals.flatten(0, 1), "observed_mask": mask.flatten(0, 1)}

    def messages(self, x0: Tensor, t: int, consensus: float, snr_max: float = math.inf) -> dict[str, Tensor]:
        """Consensus messages for the next prediction at timestep t: what the other windows'
        last estimates ``x0 (B, N, *S)`` say about each window's overlap entries, as Gaussian
        evidence for a prior with ``accepts_evidence`` (`EmpiricalPrior`). Each covering
        neighbour counts ``consensus`` times as much as the window's own noisy state, whose
        precision about x_0 is ``ᾱ_t / (1 − ᾱ_t)``, capped at ``snr_max``. On a shard the
        neighbours of its edge windows live on other ranks: the estimates are all-gathered."""
        if self.sharded:
            ids = self.layout.window_ids.to(x0.device)
            mean, count = self.layout.full.neighbour_mean(self.layout.gather(x0))
            mean, count = mean[:, ids], count[:, ids]
        else:
            mean, count = self.layout.neighbour_mean(x0)
        a = self.alpha(t)
        snr = (a / (1 - a)).clamp(max=snr_max)
        prec = (consensus * snr) * count.expand_as(mean)
        return {"evidence": mean.flatten(0, 1), "evidence_precision": prec.flatten(0, 1)}

    def check_consensus(self, consensus: float) -> None:
        """Consensus coupling needs a prior that takes evidence."""
        if consensus > 0 and not getattr(self.prior, "accepts_evidence", False):
            raise ValueError(f"consensus > 0 needs a prior with accepts_evidence = True (e.g. EmpiricalPrior); "
                             f"{type(self.prior).__name__} has none")

    def emit(self, **info) -> None:
        if self.callback is not None:
            self.callback({k: (v.detach() if isinstance(v, Tensor) else v) for k, v in info.items()})


def _guided_predict(ctx: Context, x: Tensor, t: int, guidance: float, stage: str, step: int,
                    mask: Tensor | None, evidence: dict[str, Tensor] | None = None):
    """x̂ and, with guidance, ``∇_{x_t} R`` through the prior (eq. 11): R is the overlap
    reward plus, with pins, the reconstruction reward ``−Σ mean‖x̂_pinned − v‖²`` (so the
    pinned values pull the whole plan, not only their own entries)."""
    if guidance <= 0 or (ctx.windows_total < 2 and ctx.pins is None):
        return ctx.predict(x, t, stage=stage, step=step, evidence=evidence), None
    if not getattr(ctx.prior, "supports_grad", False):
        raise ValueError("guidance > 0 needs a prior with supports_grad = True (autograd through denoise)")
    xg = x.detach().requires_grad_(True)
    x0 = ctx.predict(xg, t, stage=stage, step=step, grad=True, evidence=evidence)
    reward = overlap_reward(x0, ctx.layout)
    if mask is not None:  # the stage's pin mask, (1, N, *S)
        miss = (x0 - apply_pins(x0.detach(), ctx.pins, ctx.layout)).pow(2) * mask
        reward = reward - miss.flatten(1).sum(1) / ctx.pinned_entries(mask)
    (g,) = torch.autograd.grad(reward.sum(), xg)
    ctx.grad_evals += x.shape[0] * x.shape[1]
    return x0.detach(), g


def denoise_pass(
    ctx: Context,
    x: Tensor,
    timesteps: Tensor,
    *,
    stage: str,
    eta: float,
    fusion: bool,
    guidance: float,
    noise: Noise,
    guidance_schedule: GuidanceSchedule = "constant",
    lams: Sequence[float] | None = None,
    inner: int = 1,
    weights: Tensor | None = None,
    update: Update = "ddim",
    direction: Direction = "recompute",
    end: int = -1,
    first_step: int = 0,
    consensus: float = 0.0,
    consensus_snr_max: float = math.inf,
    messages: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One stage over ``timesteps`` (descending), ending at timestep ``end`` (−1: clean
    data); per step: predict → couple (guidance, fusion) → shrink with λ_k → pins → update.

    ``update="ddim"`` is the DDIM step with η and a direction ε̃ that is ``recompute``d from
    the final x̃ or, with ``direction="fused"``, the prior's own ε̂ fused with the layout's
    blend (the authors' video coarse stage). ``update="renoise"`` re-noises x̃ straight to the
    next level, ``√ᾱ_s x̃ + √(1−ᾱ_s) z`` (the authors' panorama coarse stage). Guidance is
    skipped on a step that lands on ᾱ = 1 (the final step of a grid ending at clean data);
    ``guidance_schedule="variance"`` scales its weight by 1 − ᾱ_s, the noise variance of the
    level the step lands on, so that it fades out toward clean data.
    ``inner > 1`` repeats denoise t→s / re-noise s→t (CDGS). ``first_step`` offsets the step
    numbers reported to the callback. ``consensus > 0`` (priors with ``accepts_evidence``)
    conditions every prediction on what the neighbouring windows' previous prediction says
    about its overlaps (`Context.messages`, precision capped by ``consensus_snr_max``);
    ``messages`` is the x̂ ``(B, N, *S)`` the first step reads them from (e.g. the x̂ a previous
    stage returned), None: none on the first step. Returns the final state and the last x̂
    (after coupling), ``(B, N, *S)``.
    """
    mask = pin_mask(ctx.pins, ctx.layout, x.shape, ctx.device)
    ctx.check_consensus(consensus)
    K = len(timesteps)
    x0 = x
    bar = tqdm(total=K * inner, desc=stage, disable=not ctx.progress, leave=False)
    for k in range(K):
        t = int(timesteps[k])
        s = int(timesteps[k + 1]) if k + 1 < K else end
        a_t, a_s = ctx.alpha(t), ctx.alpha(s)
        # no gradient step onto clean data: at ᾱ_s = 1 the state *is* x̂, and a sharp prior's
        # gradient there is orders of magnitude larger than at any noise level
        w = guidance if float(a_s) < 1.0 else 0.0
        if guidance_schedule == "variance":  # the target level's noise variance: vanishes at t = 0
            w = w * float(1 - a_s)
        for u in range(inner):
            ev = None
            if consensus > 0 and messages is not None:
                ev = ctx.messages(messages, t, consensus, consensus_snr_max)
            x0, g = _guided_predict(ctx, x, t, w, stage, first_step + k, mask, ev)
            if consensus > 0:
                messages = x0
            eps = None
            if direction == "fused":  # the prior's ε̂, fused like x̂, before any shrinkage
                eps = eps_from_x0(x0, x, a_t.expand(x.shape[0]))
                eps = ctx.layout.fuse(eps) if fusion else eps
            if fusion:
                x0 = ctx.layout.fuse(x0)
            if lams is not None and lams[k] < 1.0:
                x0 = shrink(x0, lams[k], dim=1, weights=weights, mean=ctx.window_mean(x0, weights))
            x0 = apply_pins(x0, ctx.pins, ctx.layout)
            if update == "renoise":
                x_s = a_s.sqrt() * x0 + (1 - a_s).sqrt() * ctx.noise(noise)  # drawn on every step
            else:
                x_s = ddim_step(x, x0, a_t, a_s, eta, ctx.noise(noise) if eta > 0 else None, eps=eps)
            if g is not None:
                x_s = x_s + w * (g if mask is None else g.masked_fill(mask, 0.0))
            if ctx.pins is not None and ctx.pins.hard:
                x_s = apply_pins(x_s, ctx.pins, ctx.layout)
            if u + 1 < inner:
                x = renoise(x_s, a_s, a_t, ctx.noise(noise))
            bar.update(1)
        x = x_s
        ctx.emit(stage=stage, step=first_step + k, t=t, x=x, x0=x0)
    bar.close()
    return x, x0
