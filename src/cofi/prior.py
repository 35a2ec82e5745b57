"""The `LocalPrior` protocol, prediction-type conversions and timestep grids.

The core of cofi speaks only two things with a prior: its cumulative noise schedule
``alphas_cumprod`` and its denoised (Tweedie) estimate ``x0 = denoise(x_t, t)``.
Everything else (classifier-free guidance, text encoders, VAEs, normalisers,
the model's dtype) lives inside the adapter.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

PredictionType = Literal["epsilon", "sample", "v_prediction"]
Spacing = Literal["leading", "trailing", "linspace"]

__all__ = [
    "LocalPrior",
    "PredictionType",
    "Spacing",
    "append_dims",
    "to_x0",
    "eps_from_x0",
    "timestep_grid",
    "schedule_from_diffusers",
]


@runtime_checkable
class LocalPrior(Protocol):
    """A short-horizon diffusion prior over local plans of shape ``sample_shape``.

    Required:
      - ``alphas_cumprod``: ``(T_train,)`` float tensor, the cumulative product ``ᾱ_t``:
        finite, strictly decreasing in t, in (0, 1] (store a zero-terminal-SNR ᾱ_T = 0 as a tiny
        positive number); its device is where cofi keeps the sampler state.
      - ``sample_shape``: the shape ``S`` of one local plan (no batch dimension).
      - ``denoise(x_t, t, **cond) -> x0``: for ``x_t`` of shape ``(M, *S)`` and integer
        timesteps ``t`` of shape ``(M,)``, the denoised estimate ``x̂ = E[x_0 | x_t]``,
        shape ``(M, *S)``, in ``x_t``'s dtype. ``compose`` only passes ``(M, *S)``; what
        ``denoise`` does with another shape is the adapter's choice (an error that says what is
        wrong is kind; broadcasting is allowed). ``compose`` always passes ``window=(M,)``, the layout index of
        each plan (for adapters with per-window conditioning such as one prompt per
        window); adapters that do not need it accept and ignore it via ``**cond``.

    Optional attributes read with defaults by the core:
      - ``supports_grad: bool = False``: ``denoise`` is differentiable w.r.t. ``x_t``
        (needed by overlap guidance).
      - ``timestep_spacing: Spacing = "leading"`` and ``steps_offset: int = 0``:
        how K sampling steps are laid over the T_train schedule (diffusers' names).
      - ``final_alpha_cumprod: float = 1.0``: ᾱ after the last step (diffusers'
        ``set_alpha_to_one=False`` gives ``alphas_cumprod[0]``); 1 lands on x̂ exactly.
      - ``accepts_observations: bool = False``: ``denoise`` also takes ``observed`` and
        ``observed_mask`` (both ``(M, *S)``), the entries of each plan known without noise
        (``compose`` builds them from its `Pins`), and conditions on them exactly.
      - ``accepts_evidence: bool = False``: ``denoise`` also takes ``evidence`` and
        ``evidence_precision`` (both ``(M, *S)``, precisions ≥ 0, 0 where none): Gaussian
        evidence about entries of x_0, which consensus coupling (``consensus=κ`` on GSC, CoFi,
        CDGS) uses to pass each window its neighbours' estimates of its overlaps.
    """

    alphas_cumprod: Tensor
    sample_shape: tuple[int, ...]

    def denoise(self, x_t: Tensor, t: Tensor, **cond) -> Tensor: ...


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to ``x`` until it has ``ndim`` dims (k-diffusion)."""
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"append_dims: input has {x.ndim} dims, more than target {ndim}")
    return x.reshape(*x.shape, *(1,) * missing)


def to_x0(
    model_output: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: PredictionType
) -> Tensor:
    """Denoised estimate from a network output (DDIM eq. 12; v-param. of Salimans & Ho).

    ``alpha_bar`` is ``ᾱ_t`` per sample, shape ``(M,)``; it is broadcast over ``x_t``.
    """
    a = append_dims(alpha_bar.to(x_t.dtype), x_t.ndim)
    if prediction_type == "epsilon":
        if (alpha_bar < 1e-20).any():
            raise ValueError("an epsilon-prediction model cannot give x̂ at ᾱ_t = 0 (a zero-terminal-SNR "
                             "schedule's last timestep): x̂ = (x_t − √(1−ᾱ) ε̂)/√ᾱ divides by 0; use a "
                             "v_prediction model, a schedule with ᾱ_T > 0, or fewer steps so the grid skips t = T−1")
        return (x_t - (1 - a).sqrt() * model_output) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(
        f"prediction_type must be 'epsilon', 'sample' or 'v_prediction', got {prediction_type!r}"
    )


def eps_from_x0(x0: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """Direction term recomputed from a (possibly modified) x̂: ``(x_t − √ᾱ x̂)/√(1−ᾱ)``."""
    a = append_dims(alpha_bar.to(x_t.dtype), x_t.ndim)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def schedule_from_diffusers(scheduler, device=None) -> dict:
    """The LocalPrior schedule attributes of a diffusers scheduler instance.

    Returns ``prediction_type``, ``timestep_spacing``, ``steps_offset``, ``alphas_cumprod``
    (float64, read from the instantiated scheduler so SNR shifts and zero-terminal-SNR
    rescaling are exactly diffusers'; ᾱ = 0 is stored as the smallest positive float32) and
    ``final_alpha_cumprod`` (1, or ``alphas_cumprod[0]`` under ``set_alpha_to_one=False``).
    Adapters assign them with ``vars(self).update(schedule_from_diffusers(scheduler))``.
    """
    sc = scheduler.config
    ac = scheduler.alphas_cumprod.to(torch.float64).clamp(min=torch.finfo(torch.float32).tiny).to(device)
    return dict(
        prediction_type=sc.get("prediction_type", "epsilon"),
        timestep_spacing=sc.get("timestep_spacing", "leading"),
        steps_offset=int(sc.get("steps_offset", 0)),
        alphas_cumprod=ac,
        final_alpha_cumprod=1.0 if sc.get("set_alpha_to_one", True) else float(ac[0]),
    )


def timestep_grid(
    num_train_timesteps: int,
    steps: int,
    spacing: Spacing = "leading",
    steps_offset: int = 0,
) -> Tensor:
    """K descending integer timesteps over a T_train schedule, as diffusers lays them out.

    ``leading``: ``t_k = (K−1−k)·⌊T/K⌋ + offset`` (DDIM paper, SD); ``trailing``:
    ``t_k = round(T − k·T/K) − 1`` (Lin et al. 2024, CogVideoX); ``linspace``: evenly from
    ``T−1`` to 0. Returns a long tensor of shape ``(K,)``.
    """
    T, K = int(num_train_timesteps), int(steps)
    if not 1 <= K <= T:
        raise ValueError(f"steps must be in [1, {T}] (the prior's T_train), got {steps}")
    if spacing == "leading":
        ratio = T // K
        t = torch.arange(K - 1, -1, -1, dtype=torch.float64) * ratio + steps_offset
    elif spacing == "trailing":
        t = torch.round(torch.arange(T, 0, -T / K, dtype=torch.float64)[:K]) - 1
    elif spacing == "linspace":
        t = torch.linspace(T - 1, 0, K, dtype=torch.float64).round()
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    t = t.long()
    if t.max() >= T or t.min() < 0:
        raise ValueError(f"steps_offset={steps_offset} pushes the grid outside [0, {T - 1}]")
    return t
