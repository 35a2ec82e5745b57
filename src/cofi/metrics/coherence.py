"""Exact composition metrics on the Gaussian-mixture prior (ground truth for the benchmark)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..layout import Chain
from ..priors.gaussian_mixture import GaussianMixturePrior

__all__ = ["window_components", "coherence", "overlap_error", "nll", "ground_truth"]


def window_components(prior: GaussianMixturePrior, plans: Tensor) -> Tensor:
    """Most likely component of every window, ``(B, N)`` for plans ``(B, N, W, C)``."""
    B, N = plans.shape[:2]
    return prior.component_logprob(plans.reshape(B * N, *plans.shape[2:])).argmax(1).reshape(B, N)


def coherence(prior: GaussianMixturePrior, layout: Chain, canvas: Tensor) -> Tensor:
    """Per canvas ``(B,)`` bool: every window of the canvas is assigned to the same component."""
    comp = window_components(prior, layout.split(canvas))
    return (comp == comp[:, :1]).all(1)


def overlap_error(layout: Chain, plans: Tensor) -> Tensor:
    """Overlap MSE of adjacent plans, ``(B,)`` (eq. 22)."""
    return layout.overlap_error(plans)


def nll(prior: GaussianMixturePrior, canvas: Tensor) -> Tensor:
    """Exact negative log-likelihood per dimension of canvases ``(B, L, C)`` under the global law."""
    return -prior.global_logpdf(canvas) / (canvas.shape[1] * canvas.shape[2])


def ground_truth(prior: GaussianMixturePrior, layout: Chain, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` canvases ``(n, L, C)`` drawn directly from the global distribution."""
    return prior.sample_global(n, layout.length, generator)[0]
