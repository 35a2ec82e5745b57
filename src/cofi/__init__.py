"""cofi — Coarse-to-Fine Compositional Diffusion.

Turn a short-horizon diffusion prior into long-horizon samples by composing overlapping
local plans: ``cofi.compose(prior, cofi.Chain(...), cofi.CoFi())``.
"""

from __future__ import annotations

from . import priors, steps
from .compose import Composition, Sampler, compose
from .coupling import Pins, apply_pins, overlap_reward
from .layout import Chain, Grid, Lattice, Layout
from .prior import LocalPrior, eps_from_x0, timestep_grid, to_x0
from .run import Run, Sampled
from .samplers import CDGS, GSC, CoFi, Pruned, SyncDiffusion
from .scaffold import lam_schedule, shrink

__version__ = "0.1.0"

__all__ = [
    "compose", "Composition", "Sampler", "Run", "Sampled", "steps", "Chain", "Grid", "Lattice", "Layout", "Pins",
    "LocalPrior", "GSC", "CoFi", "CDGS", "SyncDiffusion", "Pruned", "shrink", "lam_schedule", "overlap_reward",
    "apply_pins", "to_x0", "eps_from_x0", "timestep_grid", "priors",
]


_SUBMODULES = ("planning", "metrics", "testing", "viz", "video", "presets", "distributed")


def __getattr__(name: str):
    # Domain modules import heavy dependencies (ogbench, diffusers, transformers, matplotlib);
    # load them on first use, so that `import cofi` stays light.
    import importlib

    if name == "panorama":  # the module is callable: cofi.panorama(pipe, prompt, ...)
        return importlib.import_module(".panorama", __name__)
    if name == "long_video":
        from .video import long_video
        return long_video
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cofi' has no attribute {name!r}")
