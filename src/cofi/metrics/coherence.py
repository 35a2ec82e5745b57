"""Exact composition metrics on the mixture priors (ground truth for the coherence benchmarks)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from ..layout import Chain, Layout
from ..priors.gaussian_mixture import GaussianMixturePrior

__all__ = ["window_components", "coherence", "overlap_error", "nll", "ground_truth"]


def window_components(prior, plans: Tensor) -> Tensor:
    """Most likely component of every window, ``(B, N)`` for plans ``(B, N, *S)``, under a mixture
    prior with ``component_logprob`` (`GaussianMixturePrior`, `GaussianFieldMixturePrior`)."""
    logp = prior.component_logprob(rearrange(plans, "b n ... -> (b n) ..."))
    return rearrange(logp.argmax(1), "(b n) -> b n", b=plans.shape[0])


def coherence(prior, layout: Layout, canvas: Tensor) -> Tensor:
    """Per canvas ``(B,)`` bool: every window of the canvas is assigned to the same component."""
    comp = window_components(prior, layout.split(canvas))
    return (comp == comp[:, :1]).all(1)


def overlap_error(layout: Chain, plans: Tensor) -> Tensor:
    """Overlap MSE of adjacent plans, ``(B,)`` (eq. 22)."""
    return layout.overlap_error(plans)


def nll(prior, canvas: Tensor) -> Tensor:
    """Exact negative log-likelihood per dimension of canvases ``(B, *G)`` under the prior's
    global law (``global_logpdf``), ``(B,)``."""
    return -prior.global_logpdf(canvas) / canvas[0].numel()


def ground_truth(prior: GaussianMixturePrior, layout: Chain, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` canvases ``(n, L, C)`` drawn directly from the global distribution."""
    return prior.sample_global(n, layout.length, generator)[0]
