"""`compose()`: run a sampler over a layout of local plans and collect the result.

`compose` knows no domain: it checks its arguments, draws x_T, hands the sampler a `Run`, and
selects the best candidate. Domain front-ends (`cofi.panorama`, `cofi.video`, `cofi.planning`)
choose a preset and call it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .coupling import Pins
from .distributed import shard
from .layout import Lattice, Layout
from .prior import LocalPrior
from .run import Generator, Run, Sampled
from .samplers import CDGS, GSC, CoFi, SyncDiffusion

__all__ = ["compose", "Composition", "Sampler", "SAMPLERS", "check_schedule"]

#: The sampler classes `compose` also accepts by name (with their paper defaults).
SAMPLERS = {"gsc": GSC, "cofi": CoFi, "cdgs": CDGS, "syncdiffusion": SyncDiffusion}


class Sampler(Protocol):
    """What `compose` needs of a sampler config (see `cofi.GSC`, `cofi.CoFi`, `cofi.CDGS`):
    where x_T is drawn (``init_noise``: ``canvas`` or ``plans``), the NFE it will spend, and
    ``sample(run, x_T) -> Sampled``, its algorithm's loop over `cofi.steps`."""

    init_noise: str

    def nfe(self, layout: Layout, batch: int) -> int: ...

    def sample(self, run: Run, x: Tensor) -> Sampled: ...


@dataclass
class Composition:
    """The result of `compose`.

    Attributes:
        canvas: ``(B, *G)`` merged global plans, one per candidate.
        plans: ``(B, N, *S)`` the final local plans (before merging).
        nfe: plan-evaluations of the prior spent, all candidates together.
        grad_evals: plan-evaluations that were also differentiated (guidance).
        overlap_error: ``(B,)`` overlap MSE of the final plans (eq. 22; 0 after fusion).
        disagreement: ``(B,)`` overlap MSE of the local estimates before fusion at the last
            step: how much the windows disagreed (`cofi.steps.disagreement`).
        best: index of the candidate with the lowest ``disagreement``.
        scaffold: ``(B, *G)`` CoFi's global coarse scaffold, None for other samplers.
    """

    canvas: Tensor
    plans: Tensor
    nfe: int
    grad_evals: int
    overlap_error: Tensor
    disagreement: Tensor
    best: int
    scaffold: Tensor | None = None

    @property
    def best_canvas(self) -> Tensor:
        """``(*G)`` the canvas of the best candidate."""
        return self.canvas[self.best]

    @property
    def best_plans(self) -> Tensor:
        """``(N, *S)`` the local plans of the best candidate."""
        return self.plans[self.best]


def _sampler(sampler) -> Sampler:
    if isinstance(sampler, str):
        key = sampler.lower()
        if key not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; by name compose takes {', '.join(SAMPLERS)} (their "
                             f"paper defaults), else a sampler config such as cofi.CoFi(steps=50)")
        return SAMPLERS[key]()
    if not (callable(getattr(sampler, "sample", None)) and callable(getattr(sampler, "nfe", None))):
        raise TypeError(f"sampler must be a sampler config (cofi.GSC(), cofi.CoFi(), cofi.CDGS(), "
                        f"cofi.SyncDiffusion(), or an object with sample() and nfe()) or one of their names "
                        f"({', '.join(SAMPLERS)}); got {type(sampler).__name__}")
    return sampler


def check_schedule(alphas_cumprod) -> Tensor:
    """The prior's ᾱ as a float64 tensor, or ValueError: 1-D, finite, strictly decreasing in
    (0, 1] (a list or array converts; ᾱ = 1 at t = 0 is allowed)."""
    ac = alphas_cumprod
    if not isinstance(ac, Tensor):
        try:
            ac = torch.as_tensor(ac, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"prior.alphas_cumprod must be a 1-D tensor of ᾱ_t, got {type(ac).__name__}") from e
    if ac.ndim != 1 or ac.numel() < 1:
        raise ValueError(f"prior.alphas_cumprod must be 1-D (T_train,), got shape {tuple(ac.shape)}")
    if not ac.is_floating_point():
        raise ValueError(f"prior.alphas_cumprod must be floating point (ᾱ in (0, 1]), got {ac.dtype}")
    if not torch.isfinite(ac).all():
        raise ValueError("prior.alphas_cumprod contains NaN or inf")
    if not ((ac > 0) & (ac <= 1)).all():
        raise ValueError(f"prior.alphas_cumprod must lie in (0, 1], got values in "
                         f"[{float(ac.min()):.3g}, {float(ac.max()):.3g}] (store ᾱ = 0 as a tiny positive number)")
    if ac.numel() > 1 and not (ac[1:] < ac[:-1]).all():
        raise ValueError("prior.alphas_cumprod must be strictly decreasing in t (ᾱ_0 is the least noisy level)")
    return ac


def _dtype(dtype) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype (the sampler state's) must be torch.float32 or torch.float64, got {dtype!r}; "
                         f"a half-precision model keeps its own dtype inside the adapter")
    return dtype


def _generator(generator, batch: int):
    if isinstance(generator, bool):
        raise TypeError(f"generator must be a torch.Generator, a list of them (one per candidate), an int seed "
                        f"or None, got {generator!r}")
    if isinstance(generator, int):  # a seed, as a user would naturally pass
        return torch.Generator().manual_seed(generator)
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator list must have one generator per candidate ({batch}), got {len(generator)}")
        if not all(isinstance(g, torch.Generator) for g in generator):
            raise TypeError("generator must be a torch.Generator, a list of them (one per candidate), an int seed "
                            "or None")
        return list(generator)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, a list of them (one per candidate), an int seed "
                        f"or None, got {type(generator).__name__}")
    return generator


def _initial_state(run: Run, x_T: Tensor | None, init_noise: str) -> Tensor:
    canvas_shape = (run.batch, *run.layout.global_shape(run.sample_shape))
    if x_T is None:
        return run.noise("shared" if init_noise == "canvas" else "independent")
    if not isinstance(x_T, Tensor):
        try:
            x_T = torch.as_tensor(x_T)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"x_T must be a tensor (or array) of noise, got {type(x_T).__name__}") from e
    x_T = x_T.to(run.device, run.dtype)
    if not torch.isfinite(x_T).all():
        raise ValueError("x_T contains NaN or inf")
    full_plans = (run.batch, run.windows, *run.sample_shape)
    if tuple(x_T.shape) == full_plans:
        return run.layout.local(x_T).clone()
    if tuple(x_T.shape) == canvas_shape:
        return run.layout.split(x_T)
    raise ValueError(f"x_T must be plans of shape {full_plans} or a canvas of shape {canvas_shape}, "
                     f"got {tuple(x_T.shape)}")


def compose(
    prior: LocalPrior,
    layout: Layout,
    sampler: Sampler | str,
    *,
    batch: int = 1,
    generator: Generator = None,
    max_batch: int | None = None,
    x_T: Tensor | None = None,
    pins: Pins | None = None,
    constraint: Callable[[Tensor, Layout], Tensor] | None = None,
    cond: Mapping[str, object] | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    dtype: torch.dtype = torch.float32,
    group=None,
) -> Composition:
    """Compose ``layout.count`` overlapping local plans of ``prior`` into ``batch`` global plans.

    Args:
        prior: any `LocalPrior`.
        layout: a `Chain` or `Grid` of windows; its windows must match the prior's plan shape.
        sampler: `GSC`, `CoFi`, `CDGS`, `SyncDiffusion` (or any object with ``sample`` and
            ``nfe``), or the name of one of the four (``gsc``, ``cofi``, ``cdgs``,
            ``syncdiffusion``) with its paper defaults.
        batch: candidates B, composed together; ``best`` is the one whose local estimates
            disagreed least over the overlaps (before fusion, at the last step).
        generator: a ``torch.Generator``, an int seed, or one generator per candidate (then every candidate depends
            on its own generator alone, except under CDGS's pruning, which resamples the
            population together). The result is a function of the seed(s) only.
        max_batch: most plans per prior call (None: all B·N at once). Never changes the
            random draws, so results agree across values up to the prior's float rounding.
        x_T: initial state, plans ``(B, N, *S)`` or a canvas ``(B, *G)`` (like diffusers' ``latents=``).
        pins: known canvas positions written into every prediction (e.g. start and goal).
        constraint: ``constraint(plans, layout) -> plans``: a projection of every denoised
            estimate x̂ ``(B, N, *S)`` onto what the domain allows (e.g. an object that only
            moves while it is held: `cofi.planning.scene_plan.CarryConstraint`), applied before
            the pins wherever a sampler pins (`cofi.steps.pin`). It sees all N windows, so it
            cannot be combined with ``group``.
        cond: keyword conditioning passed to every ``prior.denoise`` call.
        progress: show tqdm progress bars.
        callback: ``callback(dict)`` after every step, keys ``stage, step, t, x, x0`` (copies:
            it cannot change the run).
        dtype: sampler state dtype, float32 or float64 (for exactness tests), whatever the
            model's: a half-precision network keeps its dtype inside the adapter.
        group: a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``): each rank
            calls the prior on its own contiguous block of windows and the ranks exchange only
            what a step needs (`cofi.distributed`, docs/distributed.md). Every rank passes the
            same arguments and gets the same `Composition`, equal to the single-process one to
            float rounding.
    Returns:
        A `Composition`.
    """
    sampler = _sampler(sampler)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if max_batch is not None and (not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1):
        raise ValueError(f"max_batch must be None or an int >= 1, got {max_batch!r}")
    generator = _generator(generator, batch)
    dtype = _dtype(dtype)
    if cond is not None and not isinstance(cond, Mapping):
        raise TypeError(f"cond must be a mapping of keyword arguments for prior.denoise, got {type(cond).__name__}")
    if constraint is not None and not callable(constraint):
        raise TypeError(f"constraint must be callable or None, got {type(constraint).__name__}")
    if constraint is not None and group is not None:
        raise ValueError("constraint sees all windows of the layout and cannot be combined with group (sharded "
                         "windows)")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    for name in ("alphas_cumprod", "sample_shape", "denoise"):
        if not hasattr(prior, name):
            raise TypeError(f"prior must implement LocalPrior: missing '{name}'")
    if not callable(prior.denoise):
        raise TypeError("prior.denoise must be callable: denoise(x_t, t, **cond) -> x̂")
    ac = check_schedule(prior.alphas_cumprod)
    if not isinstance(layout, Lattice):
        raise TypeError(f"layout must be a cofi.Chain or cofi.Grid, got {type(layout).__name__}")
    layout.global_shape(tuple(prior.sample_shape))  # validates window and axis against the prior
    if pins is not None:
        pins.resolve(layout)
    part = shard(layout, group)
    run = Run(prior=prior, layout=part, alphas_cumprod=ac, batch=batch, generator=generator, dtype=dtype,
              device=ac.device, max_batch=max_batch, pins=pins, constraint=constraint, cond=dict(cond or {}),
              callback=callback, progress=progress)
    out = sampler.sample(run, _initial_state(run, x_T, sampler.init_noise))
    plans = out.plans.detach()
    if not torch.isfinite(plans).all():
        raise FloatingPointError(f"{type(sampler).__name__} returned NaN or inf plans (the prior's predictions were "
                                 f"finite)")
    err = part.overlap_error(plans)
    canvas = part.merge(plans)
    counts = part.all_reduce(torch.tensor([run.meter.nfe, run.meter.grad_evals], dtype=torch.float64), "gather")
    return Composition(
        canvas=canvas,
        plans=part.gather(plans),
        nfe=int(counts[0]),
        grad_evals=int(counts[1]),
        overlap_error=err,
        disagreement=out.disagreement,
        best=int(torch.argmin(out.disagreement)),
        scaffold=out.scaffold,
    )
