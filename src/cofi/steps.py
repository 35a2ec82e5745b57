"""The sampler vocabulary: small functions a sampler's loop is written in (DESIGN §2, §3).

    x0 = predict(run, x, t)                         # one micro-batched prior call for B·N plans
    x0, grad = guide(run, x, t, w)                  # x̂ and ∇_{x_t} R (eq. 9/11) when w > 0
    x0 = fuse(run, x0)                              # Bethe averaging (eq. 10/26)
    x0 = shrink(x0, lam, mean=run.layout.window_mean(x0))   # scaffold (eq. 13)
    x0 = pin(run, x0)                               # the domain's constraint, then known canvas positions
    x = ddim_step(x, x0, a_t, a_s, eta, run.noise("independent"))
    x = nudge(run, x, w, grad)                      # the guidance step, off the pins
    x = renoise_canvas(run, canvas, a_r)            # eq. 16: one noise on the global canvas

Tensors are plans ``(B, N, *S)`` (on a sharded layout: this rank's windows); ``a_t``, ``a_s``
are 0-dim tensors from ``run.alpha``. Nothing here keeps state: a sampler's state is its loop's
local variables.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from einops import rearrange, repeat
from torch import Tensor

from .coupling import apply_pins, overlap_reward, pin_mask
from .prior import eps_from_x0
from .run import Run, all_finite
from .scaffold import shrink

__all__ = [
    "pairs", "predict", "guide", "guidance_weight", "nudge", "fuse", "shrink", "pin", "pin_state",
    "consensus", "coupled_guide", "sweep_groups", "SWEEPS", "check_consensus", "ddim_sigma", "ddim_step", "renoise", "renoise_canvas", "disagreement",
    "self_consistency", "eps_from_x0",
]


def pairs(timesteps: Tensor) -> Iterator[tuple[int, int]]:
    """``(t_k, t_{k+1})`` over a descending grid, the last step landing on ``−1`` (clean data)."""
    ts = [int(t) for t in timesteps]
    return zip(ts, ts[1:] + [-1])


# ----------------------------------------------------------------------------- the prior
def _observations(run: Run, B: int, ids: Tensor) -> dict[str, Tensor]:
    """The pins as exact observations ``observed`` / ``observed_mask`` ``(B·n, *S)`` for a prior
    with ``accepts_observations`` (e.g. `EmpiricalPrior`); else nothing."""
    if run.pins is None or not getattr(run.prior, "accepts_observations", False):
        return {}
    full = run.layout.full
    shape = (B, full.count, *run.sample_shape)
    mask = pin_mask(run.pins, full, shape, run.device).expand(shape)
    vals = apply_pins(torch.zeros(shape, device=run.device, dtype=run.dtype), run.pins, full)
    return {"observed": rearrange(vals[:, ids], "b n ... -> (b n) ..."),
            "observed_mask": rearrange(mask[:, ids], "b n ... -> (b n) ...")}


def predict(run: Run, x: Tensor, t: int, *, ids: Tensor | None = None, grad: bool = False,
            evidence: dict[str, Tensor] | None = None) -> Tensor:
    """x̂ = D(x_t, t) for the plans ``x (B, n, *S)``: one prior call per ``max_batch`` plans, with
    shape and NaN checks, counted in ``run.meter``. ``ids (n,)``: the composition index of each
    plan's window (default: the windows held here); the prior receives them as ``window=``.
    ``evidence``: extra keyword tensors ``(B·n, *S)`` (consensus messages), sliced with the
    micro-batches. ``grad``: keep the graph (guidance)."""
    B, n = x.shape[:2]
    ids = (run.layout.window_ids if ids is None else ids).to(run.device)
    flat = rearrange(x, "b n ... -> (b n) ...")
    tt = torch.full((B * n,), int(t), device=run.device, dtype=torch.long)
    extra = {"window": repeat(ids, "n -> (b n)", b=B), **_observations(run, B, ids), **(evidence or {})}
    mb = run.max_batch or B * n
    outs = []
    with torch.set_grad_enabled(grad):
        for i in range(0, B * n, mb):
            part = flat[i : i + mb]
            out = run.prior.denoise(part, tt[i : i + mb], **{k: v[i : i + mb] for k, v in extra.items()}, **run.cond)
            if not isinstance(out, Tensor) or tuple(out.shape) != tuple(part.shape):
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"prior.denoise must return shape {tuple(part.shape)} (the input's), got {got}")
            outs.append(out.to(run.dtype))
    x0 = rearrange(torch.cat(outs), "(b n) ... -> b n ...", b=B)
    run.meter.nfe += B * n
    if not all_finite(x0):
        raise FloatingPointError(f"prior.denoise returned NaN or inf at t={int(t)}")
    return x0


def guidance_weight(guidance: float, s: int, a_s: Tensor, schedule: str = "constant") -> float:
    """The overlap-guidance weight of the step landing on timestep ``s`` (ᾱ_s): ``guidance``, or
    times ``1 − ᾱ_s`` (``variance``: fading to 0 at clean data). 0 on the last step of the grid
    (``s < 0``) whatever its ᾱ: the state it lands on *is* x̂, and a sharp prior's gradient
    there is orders of magnitude larger than at any noise level (also 0 on a level with ᾱ = 1)."""
    w = guidance if s >= 0 and float(a_s) < 1.0 else 0.0
    return w * float(1 - a_s) if schedule == "variance" else w


def guide(run: Run, x: Tensor, t: int, weight: float,
          evidence: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """x̂ and, when ``weight > 0``, ``∇_{x_t} R`` through the prior (eq. 9/11): R is the overlap
    reward ``−Σ mean‖R(x̂_i) − L(x̂_j)‖²`` plus, with pins, ``−Σ mean‖x̂_pinned − v‖²`` (so the
    pinned values pull the whole plan, not only their own entries). Without guidance (or with
    one unpinned window) it is `predict` and the gradient is None."""
    if not _guides(run, weight):
        return predict(run, x, t, evidence=evidence), None
    xg = x.detach().requires_grad_(True)
    x0 = predict(run, xg, t, grad=True, evidence=evidence)
    return x0.detach(), _reward_grad(run, xg, x0)


def _guides(run: Run, weight: float) -> bool:
    """Whether a step with this guidance weight takes ∇R (`guide`)."""
    if weight <= 0 or (run.windows < 2 and run.pins is None):
        return False
    if not getattr(run.prior, "supports_grad", False):
        raise ValueError("guidance > 0 needs a prior with supports_grad = True (autograd through denoise)")
    return True


def _reward_grad(run: Run, xg: Tensor, x0: Tensor) -> Tensor:
    """∇_{x_t} R for x̂ = ``x0`` computed from ``xg`` (with its graph): the overlap reward plus,
    with pins, their pull (`guide`)."""
    reward = overlap_reward(x0, run.layout)
    if run.pins is not None:
        miss = (x0 - apply_pins(x0.detach(), run.pins, run.layout)).pow(2) * run.pin_mask
        reward = reward - rearrange(miss, "b ... -> b (...)").sum(1) / run.pinned_entries
    (g,) = torch.autograd.grad(reward.sum(), xg)
    run.meter.grad_evals += xg.shape[0] * xg.shape[1]
    return g


def nudge(run: Run, x: Tensor, weight: float, grad: Tensor | None) -> Tensor:
    """The guidance step ``x + w ∇R`` (nothing without a gradient), never moving pinned entries."""
    if grad is None:
        return x
    return x + weight * (grad if run.pin_mask is None else grad.masked_fill(run.pin_mask, 0.0))


# ----------------------------------------------------------------------------- coupling
def fuse(run: Run, x0: Tensor) -> Tensor:
    """Bethe averaging (eq. 10/26): every overlap gets the blend-weighted mean of its windows."""
    return run.layout.fuse(x0)


def pin(run: Run, x0: Tensor) -> Tensor:
    """Project the estimates onto the run's ``constraint`` (if any), then write the pinned canvas
    values into every estimate covering them (identity without pins and constraint)."""
    if run.constraint is not None:
        out = run.constraint(x0, run.layout)
        if not isinstance(out, Tensor) or out.shape != x0.shape:
            raise ValueError(f"constraint must return plans of shape {tuple(x0.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        x0 = out.to(x0.dtype)
    return apply_pins(x0, run.pins, run.layout)


def pin_state(run: Run, x: Tensor) -> Tensor:
    """With ``Pins(hard=True)``: overwrite the state's pinned entries with the clean values
    (Janner et al. 2022's inpainting); the state otherwise carries them at its noise level."""
    if run.pins is None or not run.pins.hard:
        return x
    return apply_pins(x, run.pins, run.layout)


def check_consensus(run: Run, kappa: float) -> None:
    """Consensus coupling needs a prior that reads evidence."""
    if kappa > 0 and not getattr(run.prior, "accepts_evidence", False):
        raise ValueError(f"consensus > 0 needs a prior with accepts_evidence = True (e.g. EmpiricalPrior); "
                         f"{type(run.prior).__name__} has none")


def consensus(run: Run, x0: Tensor | None, t: int, kappa: float, snr_max: float = math.inf,
              state: Tensor | None = None, known: Tensor | None = None) -> dict[str, Tensor] | None:
    """Consensus messages for the next prediction at timestep t (the conditional scores of
    eq. 10): what the *other* windows say about each window's overlap entries, as Gaussian
    evidence ``evidence`` / ``evidence_precision`` for a prior with ``accepts_evidence``.

    By default the messages are the neighbours' last estimates ``x0 (B, N, *S)``, each covering
    neighbour counting ``kappa`` times as much as the window's own noisy state, whose precision
    about x_0 is ``ᾱ_t / (1 − ᾱ_t)``, capped at ``snr_max``. With ``state`` (the plans' noisy
    states x_t at level t, CompDiffuser's conditioning on its neighbours' noisy chunks) the
    messages are the neighbours' ``x_t / √ᾱ_t``, whose precision about x_0 is exactly
    ``ᾱ_t / (1 − ᾱ_t)``: the same weight, now the true one at ``kappa = 1``. None when
    ``kappa == 0`` or there is no estimate yet (estimates only). ``known (N,)``: only these
    windows' estimates speak (`coupled_guide`'s red-black sweep)."""
    if kappa <= 0 or (x0 is None and state is None):
        return None
    a = run.alpha(t)
    said = x0 if state is None else state / a.sqrt()
    mean, count = run.layout.neighbour_mean(said, known)
    snr = (a / (1 - a)).clamp(max=snr_max)
    prec = (kappa * snr) * count.expand_as(mean)
    return {"evidence": rearrange(mean, "b n ... -> (b n) ..."),
            "evidence_precision": rearrange(prec, "b n ... -> (b n) ...")}


SWEEPS = ("jacobi", "red-black", "forward")


def sweep_groups(sweep: str, n: int) -> list[Tensor]:
    """The groups of window indices a consensus sweep predicts one after another (`coupled_guide`):
    ``jacobi`` all ``n`` at once, ``red-black`` the even then the odd ones, ``forward`` one at a
    time from the first."""
    ids = torch.arange(n)
    if sweep == "jacobi":
        return [ids]
    if sweep == "red-black":
        return [ids[ids % 2 == 0], ids[ids % 2 == 1]]
    if sweep == "forward":
        return [ids[i:i + 1] for i in range(n)]
    raise ValueError(f"sweep must be one of {', '.join(map(repr, SWEEPS))}, got {sweep!r}")


def coupled_guide(run: Run, x: Tensor, t: int, weight: float, x0: Tensor | None, kappa: float,
                  snr_max: float = math.inf, state: Tensor | None = None,
                  sweep: str = "jacobi") -> tuple[Tensor, Tensor | None]:
    """`guide` with consensus messages: x̂ (and ∇R when ``weight > 0``) for every window,
    each conditioned on what its neighbours say (`consensus`).

    ``sweep="jacobi"``: every window reads its neighbours' previous estimates ``x0`` (one
    prior call). The Gauss-Seidel sweeps predict the windows in groups (`sweep_groups`), each
    group reading the *fresh* x̂ of the groups before it and the previous ``x0`` of the rest:
    ``red-black``, the even windows then the odd ones (two prior calls; every neighbour of an
    odd window is even), and ``forward``, window 0, 1, 2, … (N calls; the start pin reaches the
    last window within one step, as CompDiffuser's autoregressive chain). The same NFE as
    Jacobi; at the first step (no ``x0``) only the first group reads nothing. Needs estimate
    messages (``state=None``) and a one-process, one-chain layout."""
    groups = sweep_groups(sweep, run.windows)
    if len(groups) == 1 or kappa <= 0:
        return guide(run, x, t, weight, consensus(run, x0, t, kappa, snr_max, state))
    layout = run.layout
    if state is not None:
        raise ValueError(f"the {sweep} sweep passes estimates (consensus_from='estimate'); a state message "
                         "does not change within a step")
    if layout.full is not layout or len(layout.chains) != 1:
        raise ValueError(f"the {sweep} sweep needs a one-process layout with one chain of windows")
    grad = _guides(run, weight)
    B, N = x.shape[:2]
    xg = x.detach().requires_grad_(True) if grad else x
    said = torch.zeros_like(x) if x0 is None else x0.detach().clone()
    known = torch.full((N,), x0 is not None)
    parts = []
    for group in groups:
        msgs = consensus(run, said, t, kappa, snr_max, known=known) if bool(known.any()) else None
        if msgs is not None:
            msgs = {k: rearrange(rearrange(v, "(b n) ... -> b n ...", b=B)[:, group], "b n ... -> (b n) ...")
                    for k, v in msgs.items()}
        out = predict(run, xg[:, group], t, ids=group, grad=grad, evidence=msgs)
        said[:, group] = out.detach()
        known[group] = True
        parts.append(out)
    x0_new = torch.cat(parts, 1)[:, torch.argsort(torch.cat(groups)).to(x.device)]
    if not grad:
        return x0_new, None
    return x0_new.detach(), _reward_grad(run, xg, x0_new)


def disagreement(run: Run, x0: Tensor) -> Tensor:
    """How much the local estimates disagree over the overlaps, per candidate ``(B,)``: the
    overlap MSE of x̂ *before* fusion (eq. 22). Candidates are ranked by it at the last step
    (fused plans agree on their overlaps by construction, so their own error ranks nothing)."""
    return run.layout.overlap_error(x0.detach())


def self_consistency(prior, plans: Tensor, *, alphas=(0.9, 0.7, 0.5), draws: int = 4,
                     generator: torch.Generator | None = None, max_batch: int | None = None) -> Tensor:
    """How far the prior moves finished plans, per candidate ``(B,)``: each window of ``plans``
    ``(B, N, *S)`` is noised to every ᾱ in ``alphas`` (``draws`` noises each) and denoised once;
    a window scores the mean squared change ``‖x̂(x_t) − x_0‖²`` over its entries, levels and
    draws, and a candidate scores its worst window. A plan the prior would not have made (a
    trajectory through a wall, a teleport) is pulled back toward its data and scores high; a
    plan on the prior's manifold scores near its denoising error. Costs
    ``len(alphas)·draws·B·N`` unconditional prior calls (no pins, no evidence). Lower is better:
    ``argmin`` ranks candidates by the prior alone, where `disagreement` ranks them by their
    overlaps."""
    if plans.ndim < 3:
        raise ValueError(f"plans must be (B, N, *S), got shape {tuple(plans.shape)}")
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    alphas = [float(a) for a in alphas]
    if not alphas or not all(0.0 < a < 1.0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty sequence of numbers in (0, 1), got {alphas!r}")
    ac = prior.alphas_cumprod
    B, N = plans.shape[:2]
    x0 = plans.detach().reshape(B * N, *plans.shape[2:]).to(ac.device)
    step = max_batch or len(x0)
    err = torch.zeros(B * N, dtype=torch.float64, device=x0.device)
    for a in alphas:
        t = int(torch.argmin((ac.double() - a).abs()))
        a_t = ac[t].to(x0.dtype)
        for _ in range(draws):
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * z
            with torch.no_grad():
                x_hat = torch.cat([prior.denoise(c, torch.full((len(c),), t, device=x0.device))
                                   for c in x_t.split(step)])
            err += (x_hat - x0).double().pow(2).flatten(1).mean(1)
    return (err / (len(alphas) * draws)).reshape(B, N).amax(1)


# ----------------------------------------------------------------------------- updates
def ddim_sigma(a_t: Tensor, a_s: Tensor, eta: float) -> Tensor:
    """``σ = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_s)`` for a step t → s < t (0 from a clean level, ᾱ_t = 1)."""
    if float(a_t) >= 1.0:
        return torch.zeros_like(a_t)
    return eta * ((1 - a_s) / (1 - a_t)).sqrt() * (1 - a_t / a_s).sqrt()


def ddim_step(x_t: Tensor, x0: Tensor, a_t: Tensor, a_s: Tensor, eta: float, z: Tensor | None,
              eps: Tensor | None = None) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12): ``x_s = √ᾱ_s x̃ + √(1−ᾱ_s−σ²) ε̃ + σ z``, the direction
    ``ε̃`` recomputed from ``x̃ = x0`` unless given as ``eps``. ``z`` may be None when ``eta == 0``."""
    sigma = ddim_sigma(a_t, a_s, eta)
    x_s = a_s.sqrt() * x0
    c = (1 - a_s - sigma**2).clamp(min=0).sqrt()
    if float(c) > 0:  # no direction term when landing on clean data (nor a 0·∞ from a clean level)
        x_s = x_s + c * (eps_from_x0(x0, x_t, a_t.expand(x_t.shape[0])) if eps is None else eps)
    if eta > 0:
        if z is None:
            raise ValueError("ddim_step: eta > 0 needs the directional noise z")
        x_s = x_s + sigma * z
    return x_s


def renoise(x_s: Tensor, a_s: Tensor, a_t: Tensor, z: Tensor) -> Tensor:
    """Forward kernel q(x_t | x_s): ``√(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) z`` for t > s."""
    r = a_t / a_s
    return r.sqrt() * x_s + (1 - r).sqrt() * z


def renoise_canvas(run: Run, canvas: Tensor, a: Tensor) -> Tensor:
    """Eq. 16: ``X_r = √ᾱ_r X_c + √(1−ᾱ_r) Z`` with *one* Z on the global canvas (per-plan noise
    would break the scaffold), split into the windows held here."""
    z = run.randn(canvas.shape[1:])
    return run.layout.split(a.sqrt() * canvas + (1 - a).sqrt() * z)
