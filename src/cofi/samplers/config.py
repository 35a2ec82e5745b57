"""Argument checks and option names the sampler configs share."""

from __future__ import annotations

import math
from typing import Literal

from ..run import NOISE_MODES, Noise
from ..steps import SWEEPS

GuidanceSchedule = Literal["constant", "variance"]
GUIDANCE_SCHEDULES = ("constant", "variance")
InitNoise = Literal["canvas", "plans"]
ConsensusFrom = Literal["estimate", "state"]
ConsensusSweep = Literal["jacobi", "red-black", "forward"]

__all__ = ["Noise", "GuidanceSchedule", "InitNoise", "ConsensusFrom", "ConsensusSweep", "check_common", "check_number", "check_choice"]


def check_number(name: str, value, lo: float = 0.0, hi: float = math.inf, *, integer: bool = False,
                 open_lo: bool = False) -> None:
    """ValueError unless ``value`` is a finite real (an int if ``integer``) in [lo, hi]
    (``(lo, hi]`` with ``open_lo``), naming the argument and the range."""
    kind = int if integer else (int, float)
    ok = (isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
          and (lo < value if open_lo else lo <= value) and value <= hi)
    if not ok:
        rng = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]" if hi < math.inf else f"{'>' if open_lo else '>='} {lo:g}"
        what = "an int" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {'in ' if hi < math.inf else ''}{rng}, got {value!r}")


def check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_common(cfg) -> None:
    """The checks every sampler config shares (fields it lacks are skipped)."""
    check_number("steps", cfg.steps, 1, integer=True)
    check_number("eta", cfg.eta)
    check_choice("noise", cfg.noise, NOISE_MODES)
    check_choice("init_noise", cfg.init_noise, ("canvas", "plans"))
    if hasattr(cfg, "guidance"):
        check_number("guidance", cfg.guidance)
        check_choice("guidance_schedule", cfg.guidance_schedule, GUIDANCE_SCHEDULES)
    if hasattr(cfg, "consensus"):
        check_number("consensus", cfg.consensus)
        check_number("consensus_snr_max", cfg.consensus_snr_max, open_lo=True)
        check_choice("consensus_from", cfg.consensus_from, ("estimate", "state"))
        check_choice("consensus_sweep", cfg.consensus_sweep, SWEEPS)
        if cfg.consensus_sweep != "jacobi" and cfg.consensus_from != "estimate":
            raise ValueError(f"consensus_sweep={cfg.consensus_sweep!r} passes fresh estimates; it needs "
                             "consensus_from='estimate'")
