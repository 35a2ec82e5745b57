"""Samplers: frozen config dataclasses with the paper's defaults, each with a ``sample(run, x_T)``
that is its algorithm's loop over `cofi.steps`."""

from .cdgs import CDGS
from .cofi import CoFi
from .gsc import GSC
from .pruned import Pruned
from .syncdiffusion import SyncDiffusion

__all__ = ["GSC", "CoFi", "CDGS", "SyncDiffusion", "Pruned"]
