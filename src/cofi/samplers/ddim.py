"""The DDIM update (Song et al. 2021, eq. 12) and the forward re-noising kernel."""

from __future__ import annotations

from torch import Tensor

from ..prior import eps_from_x0

__all__ = ["ddim_sigma", "ddim_step", "renoise"]


def ddim_sigma(a_t: Tensor, a_s: Tensor, eta: float) -> Tensor:
    """``σ = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1−ᾱ_t/ᾱ_s)`` for a step t → s < t."""
    return eta * ((1 - a_s) / (1 - a_t)).sqrt() * (1 - a_t / a_s).sqrt()


def ddim_step(x_t: Tensor, x0: Tensor, a_t: Tensor, a_s: Tensor, eta: float, z: Tensor | None,
              eps: Tensor | None = None) -> Tensor:
    """``x_s = √ᾱ_s x̃ + √(1−ᾱ_s−σ²) ε̃ + σ z`` with ``ε̃`` recomputed from ``x̃ = x0``
    unless given as ``eps``.

    ``a_t``, ``a_s`` are 0-dim tensors; ``z`` may be None when ``eta == 0``.
    """
    if eps is None:
        eps = eps_from_x0(x0, x_t, a_t.expand(x_t.shape[0]))
    sigma = ddim_sigma(a_t, a_s, eta)
    x_s = a_s.sqrt() * x0 + (1 - a_s - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        if z is None:
            raise ValueError("ddim_step: eta > 0 needs the directional noise z")
        x_s = x_s + sigma * z
    return x_s


def renoise(x_s: Tensor, a_s: Tensor, a_t: Tensor, z: Tensor) -> Tensor:
    """Forward kernel q(x_t | x_s): ``√(ᾱ_t/ᾱ_s) x_s + √(1 − ᾱ_t/ᾱ_s) z`` for t > s."""
    r = a_t / a_s
    return r.sqrt() * x_s + (1 - r).sqrt() * z


