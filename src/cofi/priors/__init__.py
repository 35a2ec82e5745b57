"""LocalPrior adapters. Heavy ones (diffusers, transformers) load on first access."""

from __future__ import annotations

from .gaussian_field import GaussianFieldMixturePrior
from .gaussian_mixture import GaussianMixturePrior

__all__ = ["GaussianMixturePrior", "GaussianFieldMixturePrior", "TrajectoryPrior", "EmpiricalPrior", "StableDiffusionPrior", "CogVideoXPrior"]

_LAZY = {
    "TrajectoryPrior": ".trajectory",
    "EmpiricalPrior": ".empirical",
    "StableDiffusionPrior": ".stable_diffusion",
    "CogVideoXPrior": ".cogvideox",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'cofi.priors' has no attribute {name!r}")
