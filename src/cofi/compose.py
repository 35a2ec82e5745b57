"""`compose()`: run a sampler over a layout of local plans and collect the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .coupling import Pins
from .distributed import shard
from .layout import Layout
from .presets import resolve
from .prior import LocalPrior
from .samplers.base import Context, Generator

__all__ = ["compose", "Composition", "Sampler"]


class Sampler(Protocol):
    """What `compose` needs of a sampler config (see `cofi.GSC`, `cofi.CoFi`, `cofi.CDGS`):
    where x_T is drawn (``init_noise``: ``canvas`` or ``plans``), the NFE it will spend, and
    ``sample(ctx, x_T) -> x_0``, both ``(B, N, *S)``."""

    init_noise: str

    def nfe(self, layout: Layout, batch: int) -> int: ...

    def sample(self, ctx: Context, x: Tensor) -> Tensor: ...


@dataclass
class Composition:
    """The result of `compose`.

    Attributes:
        canvas: ``(B, *G)`` merged global plans, one per candidate.
        plans: ``(B, N, *S)`` the final local plans (before merging).
        nfe: plan-evaluations of the prior spent, all candidates together.
        grad_evals: plan-evaluations that were also differentiated (guidance).
        overlap_error: ``(B,)`` overlap MSE of the final plans (eq. 22).
        best: index of the candidate with the lowest overlap error.
        scaffold: ``(B, *G)`` CoFi's global coarse scaffold, None for other samplers.
    """

    canvas: Tensor
    plans: Tensor
    nfe: int
    grad_evals: int
    overlap_error: Tensor
    best: int
    scaffold: Tensor | None = None

    @property
    def best_canvas(self) -> Tensor:
        """``(*G)`` the canvas of the best candidate."""
        return self.canvas[self.best]


def _initial_state(ctx: Context, x_T: Tensor | None, init_noise: str) -> Tensor:
    canvas_shape = (ctx.batch, *ctx.layout.global_shape(ctx.prior.sample_shape))
    if x_T is None:
        return ctx.noise("shared" if init_noise == "canvas" else "independent")
    x_T = x_T.to(ctx.device, ctx.dtype)
    if not torch.isfinite(x_T).all():
        raise ValueError("x_T contains NaN or inf")
    full_plans = (ctx.batch, ctx.windows_total, *ctx.prior.sample_shape)
    if tuple(x_T.shape) == full_plans:
        return ctx.layout.local(x_T).clone() if ctx.sharded else x_T.clone()
    if tuple(x_T.shape) == canvas_shape:
        return ctx.layout.split(x_T)
    raise ValueError(
        f"x_T must be plans of shape {full_plans} or a canvas of shape {canvas_shape}, got {tuple(x_T.shape)}"
    )


def compose(
    prior: LocalPrior,
    layout: Layout,
    sampler: Sampler,
    *,
    batch: int = 1,
    generator: Generator = None,
    max_batch: int | None = None,
    x_T: Tensor | None = None,
    pins: Pins | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    dtype: torch.dtype = torch.float32,
    group=None,
    **cond,
) -> Composition:
    """Compose ``layout.count`` overlapping local plans of ``prior`` into ``batch`` global plans.

    Args:
        prior: any `LocalPrior`.
        layout: a `Chain` or `Grid` of windows; its windows must match the prior's plan shape.
        sampler: `GSC`, `CoFi`, `CDGS`, `SyncDiffusion` (or any object with ``sample`` and
            ``nfe``), or the name of one with its class defaults (``cofi``, ``gsc`` or
            ``multidiffusion``, ``cdgs``, ``syncdiffusion``; `cofi.presets.resolve`).
        batch: candidates B, composed together; the best has the lowest overlap error.
        generator: a ``torch.Generator`` or one per candidate (then every candidate depends
            on its own generator alone). The result is a function of the seed(s) only.
        max_batch: most plans per prior call (None: all B·N at once). Never changes the
            random draws, so results agree across values up to the prior's float rounding.
        x_T: initial state, plans ``(B, N, *S)`` or a canvas ``(B, *G)`` (like diffusers' ``latents=``).
        pins: known canvas positions written into every prediction (e.g. start and goal).
        progress: show tqdm progress bars.
        callback: read-only ``callback(dict)`` after every step, keys ``stage, step, t, x, x0``.
        dtype: sampler state dtype (float32; float64 for exactness tests).
        group: a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``): each rank
            calls the prior on its own contiguous block of windows and the ranks exchange only
            what a step needs (`cofi.distributed`, docs/distributed.md). Every rank passes the
            same arguments and gets the same `Composition`, equal to the single-process one to
            float rounding.
        **cond: passed to ``prior.denoise`` on every call.
    Returns:
        A `Composition`.
    """
    sampler = resolve("generic", sampler).sampler
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be None or an int >= 1, got {max_batch!r}")
    if isinstance(generator, (list, tuple)) and len(generator) != batch:
        raise ValueError(f"generator list must have one generator per candidate ({batch}), got {len(generator)}")
    for name in ("alphas_cumprod", "sample_shape", "denoise"):
        if not hasattr(prior, name):
            raise TypeError(f"prior must implement LocalPrior: missing '{name}'")
    layout.global_shape(tuple(prior.sample_shape))  # validates window and axis against the prior
    device = prior.alphas_cumprod.device
    part = shard(layout, group)
    ctx = Context(prior=prior, layout=part, batch=batch, generator=generator, device=device,
                  dtype=dtype, max_batch=max_batch, pins=pins, cond=cond, callback=callback,
                  progress=progress)
    if pins is not None:
        pins.resolve(layout)
    x = _initial_state(ctx, x_T, sampler.init_noise)
    plans = sampler.sample(ctx, x).detach()
    err = part.overlap_error(plans)
    canvas = part.merge(plans)
    scaffold = ctx.outputs.get("scaffold")
    nfe, grad_evals = ctx.nfe, ctx.grad_evals
    if ctx.sharded:  # the whole composition on every rank
        plans = part.gather(plans)
        counts = part.all_reduce(torch.tensor([nfe, grad_evals], dtype=torch.float64), "gather")
        nfe, grad_evals = int(counts[0]), int(counts[1])
    return Composition(
        canvas=canvas,
        plans=plans,
        nfe=nfe,
        grad_evals=grad_evals,
        overlap_error=err,
        best=int(torch.argmin(err)),
        scaffold=scaffold,
    )
