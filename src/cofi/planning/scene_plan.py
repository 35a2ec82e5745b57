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

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..compose import compose
from ..coupling import Pins
from ..layout import Chain
from ..samplers import Pruned
from .planner import PlanResult, check_select, planning_sampler, reselect, resolve_planning
from .scene import SCENE_PLAN_DIMS, scene_plan_space

__all__ = ["SEGMENT_STEPS", "OVERLAP_STEPS", "STRIDE", "COUNT", "GOAL_DIMS", "load_scene_episodes", "scene_prior",
           "scene_layout", "scene_pins", "CarryConstraint", "CONSTRAINTS", "SCENE_COFI", "SCENE_COFI_BATCH", "SCENE_COFI_KEEP", "object_manipulation",
           "object_effort", "plan_scene"]

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


class CarryConstraint:
    """The cube moves only while it is held: a projection of every estimate x̂ (`cofi.compose`'s
    ``constraint``).

    A learned prior's windows let the cube slide while the effector is elsewhere (its first
    free point after the pinned start is already 2-9 cm away), and its grasps then close
    where *its* cube is, not where the real one lies, so the controller grasps air. On the
    canvas (the blend of the windows, in env units) the projection

    1. keeps every motion of the cube made while it is *held* (the effector within ``hold``)
       or off the table (above ``rest_z``: lifted, falling, or riding in the drawer), and
       removes the rest, so a cube on the table stays where it is until the arm takes it;
    2. adds back the displacement it removed, spread over the held steps in proportion to
       their count, so the plan still carries the cube where its windows meant it to end (a
       pinned goal included) instead of teleporting it there; a plan with no held step is
       left as it is;
    3. moves the effector with the cube's correction where it is near the cube (fully within
       ``hold``, fading to nothing at ``reach``), so that the approach and the carry follow
       the corrected cube.

    Every window receives the canvas correction at its footprint (its own details stay), so
    the sampler's state carries a cube that only moves when held and the prior refines the
    arm around it. Positions are plan units (env metres × 10, `SCENE_PLAN_DIMS`).

    Args:
        prior: the planning prior (its ``normalize`` / ``unnormalize``).
        hold: effector-cube distance below which the cube counts as held (0.3: 3 cm; the data's
            effector is within 0.5 cm of a cube it carries, the learned prior's within 1-2 cm).
        reach: distance beyond which the effector is not moved (1.0: 10 cm).
        rest_z: cube height below which it rests on the table (0.35: 3.5 cm; a resting cube's
            centre is at 2 cm, in the drawer at 6.6 cm).
    """

    def __init__(self, prior, *, hold: float = 0.3, reach: float = 1.0, rest_z: float = 0.35) -> None:
        if not 0 < hold < reach:
            raise ValueError(f"need 0 < hold < reach, got hold={hold}, reach={reach}")
        for name in ("normalize", "unnormalize"):
            if not callable(getattr(prior, name, None)):
                raise TypeError(f"prior must have {name}() (a Scene prior: scene_prior or a TrajectoryPrior)")
        self.prior, self.hold, self.reach, self.rest_z = prior, float(hold), float(reach), float(rest_z)

    def correction(self, canvas: Tensor) -> tuple[Tensor, Tensor]:
        """For a canvas ``(B, L, 14)`` in env units: the correction of the cube's dims 3-7
        ``(B, L, 5)`` and the weight ``(B, L, 1)`` with which the effector follows it."""
        e, c = canvas[..., 0:3], canvas[..., 3:8]
        d = (e - c[..., :3]).norm(dim=-1)
        held = (d < self.hold).to(c.dtype)
        moves = torch.maximum(held, (c[..., 2] >= self.rest_z).to(c.dtype))[:, 1:, None]
        kept = torch.cat([c[:, :1], c[:, :1] + torch.cumsum(moves * torch.diff(c, dim=1), dim=1)], dim=1)
        removed = c[:, -1] - kept[:, -1]
        count = torch.cat([torch.zeros_like(held[:, :1]), torch.cumsum(held[:, 1:], dim=1)], dim=1)
        total = count[:, -1:]
        share = count / total.clamp(min=1)
        carried = kept + share[..., None] * removed[:, None]
        out = torch.where((total > 0)[..., None], carried, c)
        follow = ((self.reach - d) / (self.reach - self.hold)).clamp(0, 1)[..., None]
        return out - c, follow

    def __call__(self, plans: Tensor, layout) -> Tensor:
        x = self.prior.unnormalize(plans).to(plans.dtype)
        off, follow = self.correction(layout.merge(x))
        full = torch.cat([follow * off[..., :3], off, off.new_zeros(*off.shape[:-1], x.shape[-1] - 8)], dim=-1)
        return self.prior.normalize(x + layout.split(full)).to(plans.dtype)


#: CoFi's preset on Scene-Play, where `plan_scene` is given ``"cofi"`` or no sampler: the planning
#: preset (`cofi.planning.planning_sampler`) with the windows' estimates fused at every step and 4
#: denoise / re-noise rounds per refinement step (`cofi.CoFi.refine_inner`), 20 candidates, the plan
#: chosen among the likeliest 10 % (`cofi.Pruned`: CDGS's inversion proxy). With the carry
#: constraint the constraint's canvas correction then reaches windows that agree; CDGS fuses too
#: (its message passing). GSC keeps its definition (no fusion). docs/scene.md measures each part.
SCENE_COFI = dict(fusion=True, refine_inner=4)
SCENE_COFI_BATCH = 20
SCENE_COFI_KEEP = 0.1

#: Constraints `plan_scene` knows by name.
CONSTRAINTS = ("carry",)


def object_manipulation(plans: np.ndarray | Tensor) -> np.ndarray:
    """How much plans ``(..., L, 14)`` (env units) manipulate, ``(..., 3)``: button toggles (of
    the rounded ``unlocked`` one-hots), the cube's path length (plan units, 10 per metre) and the
    drawer's plus the window's path (their observation units). The play data makes 4.5 toggles
    and carries the cube 2.2 m per 684 steps; OGBench's tasks need less than one toggle and 20 cm
    on average."""
    p = np.asarray(plans.detach().cpu() if isinstance(plans, Tensor) else plans, dtype=np.float64)
    d = np.diff(p, axis=-2)
    return np.stack([np.abs(np.diff(np.round(p[..., [9, 11]]), axis=-2)).sum((-1, -2)),
                     np.linalg.norm(d[..., 3:6], axis=-1).sum(-1), np.abs(d[..., 12:14]).sum((-1, -2))], axis=-1)


def object_effort(plans: np.ndarray | Tensor) -> np.ndarray:
    """The sum of `object_manipulation`: one number per plan, lower moves the objects less."""
    return object_manipulation(plans).sum(-1)


def plan_scene(prior, start_obs, goal_obs, sampler=None, *, count: int = COUNT, batch: int | None = None,
               generator: torch.Generator | None = None, progress: bool = False, max_batch: int | None = None,
               hard_pins: bool = True, select: str | None = None, constraint="carry") -> PlanResult:
    """Compose a Scene plan from the current observation to a goal observation.

    Args:
        prior: a `LocalPrior` over normalised ``(32, 14)`` windows with ``normalize`` /
            ``unnormalize`` (`scene_prior`, or a trained `TrajectoryPrior`).
        start_obs, goal_obs: 40-dim observations (the goal's arm is ignored).
        sampler: a planning method (``cofi``, ``gsc``, ``cd``, ``cdgs``: `planning_sampler`; ``cofi``
            with `SCENE_COFI`, chosen among the likeliest `SCENE_COFI_KEEP` by `cofi.Pruned`) or
            a sampler config; None: ``cofi``.
        count: windows N. batch: candidates (None: CoFi `SCENE_COFI_BATCH`, CDGS 40, else 16).
            generator: the only randomness.
        select: which candidate is the plan: ``overlap`` (the windows' lowest disagreement),
            ``consistency`` (the lowest `cofi.steps.self_consistency`), ``effort`` (the one that
            moves the objects least, `object_effort`), or None (the prior's
            ``planning_select``, else ``overlap``), as in `cofi.planning.plan`.
        constraint: ``"carry"`` (`CarryConstraint`: the cube moves only while held), None, or a
            callable ``(plans, layout) -> plans`` (`cofi.compose`).
    Returns:
        A `PlanResult` whose ``xy`` is the best candidate's plan ``(L, 14)`` in env units at one
        point per 4 steps (``raw_xy`` the same) and ``windows`` its local plans.
    """
    if tuple(prior.sample_shape) != (SEGMENT_STEPS // STRIDE, len(SCENE_PLAN_DIMS)):
        raise ValueError(f"prior.sample_shape must be ({SEGMENT_STEPS // STRIDE}, {len(SCENE_PLAN_DIMS)}), "
                         f"got {tuple(prior.sample_shape)}")
    check_select(None if select == "effort" else select)
    if isinstance(constraint, str):
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS}, None or a callable, got {constraint!r}")
        constraint = CarryConstraint(prior)
    elif constraint is not None and not callable(constraint):
        raise TypeError(f"constraint must be one of {CONSTRAINTS}, None or a callable, got {type(constraint).__name__}")
    preset = sampler is None or sampler == "cofi"
    if preset:
        sampler = Pruned(planning_sampler("cofi", prior=prior, **SCENE_COFI), keep=SCENE_COFI_KEEP)
        batch = batch or SCENE_COFI_BATCH
    sampler, method, batch = resolve_planning(prior, sampler, batch)
    method = "cofi" if preset else method
    layout = scene_layout(count)
    pins = scene_pins(prior, start_obs, goal_obs, hard=hard_pins)
    t0 = time.perf_counter()
    comp = compose(prior, layout, sampler, batch=batch, generator=generator, pins=pins, progress=progress,
                   max_batch=max_batch, constraint=constraint)
    if select == "effort":
        effort = object_effort(prior.unnormalize(comp.canvas))
        comp = dataclasses.replace(comp, best=int(np.argmin(effort)))
    else:
        comp = reselect(prior, comp, select, generator, max_batch)
    elapsed = time.perf_counter() - t0
    plan = prior.unnormalize(comp.best_canvas).double().numpy()
    windows = prior.unnormalize(comp.plans[comp.best]).double().numpy()
    return PlanResult(**vars(comp), xy=plan, windows=windows, layout=layout, time_s=elapsed, method=method,
                      raw_xy=plan.copy())
