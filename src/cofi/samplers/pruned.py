"""Pruned: any sampler's candidates, the final choice restricted to the likeliest.

CDGS prunes its population once near the end of sampling by a likelihood proxy (a short DDIM
inversion of the clean estimates, `cofi.samplers.cdgs.inversion_score`) and keeps the best
fraction. `Pruned` applies that choice to any sampler's finished candidates: the candidates
outside the kept fraction get an infinite disagreement, so `compose`'s ``best`` (the lowest
disagreement) is the survivor whose windows agreed most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..layout import Layout
from ..run import Run, Sampled
from .cdgs import inversion_score
from .config import check_number

__all__ = ["Pruned"]


@dataclass(frozen=True)
class Pruned:
    """``sampler``'s candidates, ``best`` chosen among the ``keep`` fraction (at least one) with
    the highest likelihood proxy. NFE = ``sampler``'s + ``n_inv·N·B``, ``n_inv`` =
    ``round(inversion·steps)`` (at least 1) of ``sampler``'s ``steps``.

    Args:
        sampler: any sampler config with ``steps`` (`CoFi`, `GSC`, ...).
        keep: fraction of the candidates eligible (CDGS: 0.1).
        inversion: fraction of the schedule the proxy inverts over, from t = 0 (CDGS: 0.2).
    """

    sampler: Any
    keep: float = 0.1
    inversion: float = 0.2

    def __post_init__(self) -> None:
        if not (callable(getattr(self.sampler, "sample", None)) and isinstance(getattr(self.sampler, "steps", None), int)):
            raise TypeError(f"Pruned needs a sampler config with sample() and an int steps, got "
                            f"{type(self.sampler).__name__}")
        check_number("keep", self.keep, 0.0, 1.0)
        check_number("inversion", self.inversion, 0.0, 1.0)

    @property
    def init_noise(self):
        return self.sampler.init_noise

    @property
    def inversion_steps(self) -> int:
        return max(1, round(self.inversion * self.sampler.steps))

    def nfe(self, layout: Layout, batch: int) -> int:
        return self.sampler.nfe(layout, batch) + self.inversion_steps * layout.count * batch

    def sample(self, run: Run, x) -> Sampled:
        out = self.sampler.sample(run, x)
        ts = run.grid(self.sampler.steps)
        score = inversion_score(run, out.plans, ts[-self.inversion_steps:])
        n_keep = max(1, math.ceil(self.keep * score.shape[0]))
        kept = torch.zeros_like(score, dtype=torch.bool)
        kept[torch.argsort(score, descending=True)[:n_keep]] = True
        dis = torch.where(kept, out.disagreement, torch.full_like(out.disagreement, math.inf))
        return Sampled(out.plans, dis, out.scaffold)
