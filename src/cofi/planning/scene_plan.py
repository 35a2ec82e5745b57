"""Composed plans for OGBench Scene-Play in the 14-dim planning space (paper §5.1, Table 4).

A local plan is 128 env steps of the 14 planning dimensions (`SCENE_PLAN_DIMS`: effector xyz,
cube xyz, cube yaw cos/sin, the two buttons' one-hots, drawer, window) at one point every 4
steps: ``(32, 14)``. 8 windows overlapping by 48 steps (12 points) compose a 684-step plan. The
start pins every dimension at canvas position 0; the goal pins only the *object* dimensions at
the end (`GOAL_DIMS`): an evaluation goal fixes the cube, buttons, drawer and window, not where
the arm is.

    prior = scene_prior("data/scene-play-v0.npz")          # the exact EmpiricalPrior of the data
    out = plan_scene(prior, obs, goal_obs, "cofi", generator=torch.Generator().manual_seed(0))
    out.xy                                                  # (L, 14) env units, one point per 4 steps
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..compose import compose
from ..coupling import Pins
from ..layout import Chain
from .planner import PlanResult, check_select, reselect, resolve_planning
from .scene import SCENE_PLAN_DIMS, scene_plan_space

__all__ = ["SEGMENT_STEPS", "OVERLAP_STEPS", "STRIDE", "COUNT", "GOAL_DIMS", "load_scene_episodes", "scene_prior",
           "scene_layout", "scene_pins", "plan_scene"]

SEGMENT_STEPS = 128  # env steps of one local plan (Table 4)
OVERLAP_STEPS = 48  # env steps shared by adjacent windows
STRIDE = 4  # env steps per plan point
COUNT = 8  # windows per plan
EPISODE_STEPS = 1001
#: Planning dimensions a goal fixes: cube xyz, both buttons, drawer, window: what OGBench's success
#: checks. Not the arm (a goal's arm pose is random) and not the cube's yaw (every task's goal has
#: yaw 0, which success ignores; pinning it makes plans turn the cube for nothing).
GOAL_DIMS = (3, 4, 5, 8, 9, 10, 11, 12, 13)


def load_scene_episodes(path: str | Path) -> np.ndarray:
    """Scene episodes in the planning space, ``(E, 1001, 14)`` float32, from an OGBench-format
    ``.npz`` or a folder of `generate_scene` chunks (``train-*.npz``; for a dataset still being
    generated)."""
    path = Path(path)
    files = sorted(path.glob("train-*.npz")) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        raise ValueError(f"{path}: no OGBench scene file (.npz) or train-*.npz chunks found")
    obs = np.concatenate([np.load(f)["observations"] for f in files]).astype(np.float32)
    if obs.shape[0] % EPISODE_STEPS or obs.shape[1] != 40:
        raise ValueError(f"{path}: observations {obs.shape} are not whole {EPISODE_STEPS}-step episodes of 40 dims")
    return scene_plan_space(obs).reshape(-1, EPISODE_STEPS, len(SCENE_PLAN_DIMS))


def scene_prior(path: str | Path, *, every: int = 16, T: int = 200, top_k: int | None = 64,
                planning_consensus: float = 5.0, max_episodes: int | None = None):
    """The closed-form prior of Scene-Play windows (`cofi.priors.EmpiricalPrior`): every
    128-step window starting every ``every`` env steps, at one point per 4 steps, normalised to
    [-1, 1] per dimension by the data's min / max. The exact posterior mean over the bank: the
    diagnostic upper bound for a learned Scene prior. ``max_episodes``: use only the first ones."""
    from ..priors import EmpiricalPrior
    from ..priors.trajectory import cosine_alphas_cumprod
    from .data import cut_windows

    eps = load_scene_episodes(path)[:max_episodes]
    lo, hi = eps.reshape(-1, eps.shape[-1]).min(0), eps.reshape(-1, eps.shape[-1]).max(0)
    hi = np.maximum(hi, lo + 1e-3)  # a dimension that never moved in the data
    windows = cut_windows(eps, SEGMENT_STEPS, STRIDE, every)
    bank = 2 * (windows - lo) / (hi - lo) - 1
    return EmpiricalPrior(torch.as_tensor(bank), cosine_alphas_cumprod(T), lo=lo, hi=hi, env_name="scene-play-v0",
                          stride=STRIDE, top_k=top_k, planning_consensus=planning_consensus)


def scene_layout(count: int = COUNT) -> Chain:
    """``count`` windows of 32 points overlapping by 12, exponential blend (β = 2)."""
    return Chain(SEGMENT_STEPS // STRIDE, OVERLAP_STEPS // STRIDE, count, axis=0, blend="exp", beta=2.0)


def scene_pins(prior, start_obs, goal_obs, *, hard: bool = True) -> Pins:
    """The start (every planning dimension, canvas position 0) and the goal's object dimensions
    (`GOAL_DIMS`, position −1), from 40-dim observations, normalised by the prior."""
    ends = np.stack([scene_plan_space(np.asarray(start_obs, dtype=np.float32)),
                     scene_plan_space(np.asarray(goal_obs, dtype=np.float32))])
    if not np.isfinite(ends).all():
        raise ValueError("start_obs and goal_obs must be finite 40-dim Scene observations")
    mask = torch.zeros(2, len(SCENE_PLAN_DIMS), dtype=torch.bool)
    mask[0] = True
    mask[1, list(GOAL_DIMS)] = True
    return Pins((0, -1), prior.normalize(torch.as_tensor(ends)), hard=hard, mask=mask)


def plan_scene(prior, start_obs, goal_obs, sampler=None, *, count: int = COUNT, batch: int | None = None,
               generator: torch.Generator | None = None, progress: bool = False, max_batch: int | None = None,
               hard_pins: bool = True, select: str | None = None) -> PlanResult:
    """Compose a Scene plan from the current observation to a goal observation.

    Args:
        prior: a `LocalPrior` over normalised ``(32, 14)`` windows with ``normalize`` /
            ``unnormalize`` (`scene_prior`, or a trained `TrajectoryPrior`).
        start_obs, goal_obs: 40-dim observations (the goal's arm is ignored).
        sampler: a planning method (``cofi``, ``gsc``, ``cd``, ``cdgs``: `planning_sampler`) or
            a sampler config; None: ``cofi``.
        count: windows N. batch: candidates (None: 16, CDGS 40). generator: the only randomness.
        select: which candidate is the plan: ``overlap`` (the windows' lowest disagreement) or
            ``consistency`` (the lowest `cofi.steps.self_consistency`), or None (the prior's
            ``planning_select``, else ``overlap``), as in `cofi.planning.plan`.
    Returns:
        A `PlanResult` whose ``xy`` is the best candidate's plan ``(L, 14)`` in env units at one
        point per 4 steps (``raw_xy`` the same) and ``windows`` its local plans.
    """
    if tuple(prior.sample_shape) != (SEGMENT_STEPS // STRIDE, len(SCENE_PLAN_DIMS)):
        raise ValueError(f"prior.sample_shape must be ({SEGMENT_STEPS // STRIDE}, {len(SCENE_PLAN_DIMS)}), "
                         f"got {tuple(prior.sample_shape)}")
    check_select(select)
    sampler, method, batch = resolve_planning(prior, sampler, batch)
    layout = scene_layout(count)
    pins = scene_pins(prior, start_obs, goal_obs, hard=hard_pins)
    t0 = time.perf_counter()
    comp = compose(prior, layout, sampler, batch=batch, generator=generator, pins=pins, progress=progress,
                   max_batch=max_batch)
    comp = reselect(prior, comp, select, generator, max_batch)
    elapsed = time.perf_counter() - t0
    plan = prior.unnormalize(comp.best_canvas).double().numpy()
    windows = prior.unnormalize(comp.plans[comp.best]).double().numpy()
    return PlanResult(**vars(comp), xy=plan, windows=windows, layout=layout, time_s=elapsed, method=method,
                      raw_xy=plan.copy())
