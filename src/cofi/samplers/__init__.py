"""Samplers: frozen config dataclasses with the paper's defaults, plus their building blocks."""

from .base import Context, denoise_pass
from .cdgs import CDGS
from .cofi import CoFi
from .ddim import ddim_sigma, ddim_step, renoise
from .gsc import GSC
from .syncdiffusion import SyncDiffusion

__all__ = ["GSC", "CoFi", "CDGS", "SyncDiffusion", "Context", "denoise_pass", "ddim_step", "ddim_sigma", "renoise"]
