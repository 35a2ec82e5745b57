"""Closed-loop evaluation on OGBench Scene-Play's 5 tasks: plan, execute with the inverse-dynamics
controller, replan.

An episode: reset to task i (``options=dict(task_id=i)``), plan from the observation to the
goal's object state (`plan_scene`, with its carry constraint, as many windows as the unmet
conditions ask for: `auto_count`), follow the plan with `SceneController`. Replan when the
state strays from the plan (``deviation`` above ``replan_deviation`` standard deviations, RMS over
the 14 planning dimensions) or the plan is used up without success, at most ``max_replans``
times. The episode ends on ``info["success"]`` or after ``max_steps`` (the paper: 1 500).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .scene_plan import COUNT, plan_scene

__all__ = ["SCENE_REPLAN", "SceneEpisode", "make_eval_env", "CONDITIONS", "conditions_met", "subgoals_met", "unmet_conditions", "auto_count", "run_scene_episode", "evaluate_scene", "summarize_scene"]

MAX_STEPS = 1500
#: The replanning rule `run_scene_episode` uses by default: (metric, deviation); see `SceneController`.
SCENE_REPLAN = ("std", 1.5)


@dataclass
class SceneEpisode:
    """One executed Scene episode; ``nfe`` and ``plan_time_s`` add up every plan. ``subgoals``:
    how many of the task's 5 conditions (cube, button 1, button 2, drawer, window) held at the
    end; ``best_subgoals``: the most that held together at any step (a failure by how much),
    ``missing`` the conditions that did not hold then."""

    method: str
    task: int
    seed: int
    success: bool
    steps: int
    replans: int
    nfe: int
    plan_time_s: float
    first_plan_nfe: int
    subgoals: int = 0
    best_subgoals: int = 0
    missing: list[str] = field(default_factory=list)
    plans: list[np.ndarray] | None = field(default=None, repr=False)
    plan_steps: list[int] | None = field(default=None, repr=False)
    states: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The scalar fields, e.g. for a JSON line."""
        d = asdict(self)
        for k in ("plans", "plan_steps", "states"):
            d.pop(k)
        return d


CONDITIONS = ("cube", "button 1", "button 2", "drawer", "window")


def conditions_met(env) -> tuple[bool, ...]:
    """Which of the task's 5 success conditions (`CONDITIONS`) hold now (OGBench's own checks)."""
    cube, buttons, drawer, window = env.unwrapped._compute_successes()
    return (bool(all(cube)), *(bool(b) for b in buttons), bool(drawer), bool(window))


def subgoals_met(env) -> int:
    """How many of the task's 5 success conditions hold now (OGBench's own checks)."""
    return sum(conditions_met(env))


def unmet_conditions(obs, goal) -> int:
    """How many of the 5 success conditions (cube within 4 cm, each button's state, drawer and
    window within 0.04) an observation misses against a goal observation, read from the two
    40-dim observations alone (what the agent sees, no simulator state)."""
    from .scene_control import object_state, success_conditions

    return 5 - sum(success_conditions(object_state(obs), object_state(goal)))


def auto_count(obs, goal, most: int = COUNT) -> int:
    """Windows for a plan from ``obs`` to ``goal``: two per unmet condition plus two, at least 4
    (368 env steps) and at most ``most`` (684 steps for 8): a replan near the goal plans only as
    far as the rest of the task needs instead of another full-length tour of the scene."""
    return int(min(most, max(4, 2 + 2 * unmet_conditions(obs, goal))))


def make_eval_env(max_steps: int = MAX_STEPS):
    """The ``scene-play-v0`` evaluation environment (no dataset is read or downloaded), its
    episodes truncated after ``max_steps`` (the paper: 1 500; OGBench's own limit is 750)."""
    import gymnasium
    import ogbench

    env = ogbench.make_env_and_datasets("scene-play-v0", env_only=True)
    if isinstance(env, gymnasium.wrappers.TimeLimit):
        env = env.env
    return gymnasium.wrappers.TimeLimit(env, max_episode_steps=max_steps)


def run_scene_episode(env, prior, model, task: int, sampler="cofi", *, seed: int = 0, batch: int | None = None,
                      count: int | str = "auto", max_steps: int = MAX_STEPS, max_replans: int = 10,
                      replan_deviation: float = SCENE_REPLAN[1], replan_metric: str = SCENE_REPLAN[0],
                      tracking: str = "time", replan_cube: float | None = None,
                      keep_paths: bool = False,
                      progress: bool = False, select: str | None = None, constraint="carry") -> SceneEpisode:
    """Plan, execute and replan one episode of ``task`` (1…5); see the module docstring.

    Args:
        env: `make_eval_env`. prior: a Scene prior (`scene_prior`). model: an `InverseDynamics`.
        sampler: a planning method or config (`plan_scene`). seed: the env's and the planner's.
        replan_deviation: the controller's ``deviation`` that triggers a replan, in its
            ``replan_metric`` (``std``: RMS in the data's standard deviations; ``env``: the
            distance in env units, the paper's rule with 2.0).
        tracking: the controller's progress rule (``time`` or ``nearest``).
        replan_cube: also replan when the cube is this far from the plan's cube (the
            controller's ``cube_deviation``, plan units: 0.4 is OGBench's 4 cm); None: never.
        count: windows per plan, or ``"auto"`` (the default, `auto_count`: two per unmet condition
            plus two, 4 to 8: a plan as long as what is left to do; with the carry constraint the
            controller executes what a plan manipulates, so a plan should not wander).
        select: which candidate each plan executes (`plan_scene`: ``overlap``, ``consistency``, None:
            the prior's ``planning_select``).
    """
    from .scene_control import SceneController

    if task not in (1, 2, 3, 4, 5):
        raise ValueError(f"task must be one of 1..5, got {task!r}")
    if count != "auto" and not (isinstance(count, int) and count >= 1):
        raise ValueError(f"count must be an int >= 1 or 'auto', got {count!r}")
    obs, info = env.reset(seed=seed, options=dict(task_id=task))
    goal = np.asarray(info["goal"], dtype=np.float32)
    gen = torch.Generator().manual_seed(seed)
    method = sampler if isinstance(sampler, str) else type(sampler).__name__.lower()

    def new_plan(o):
        n = auto_count(o, goal) if count == "auto" else count
        return plan_scene(prior, o, goal, sampler, count=n, batch=batch, generator=gen, progress=progress,
                          select=select, constraint=constraint)

    plans = [new_plan(obs)]
    ctrl = SceneController(model, plans[-1].xy, stride=prior.stride, tracking=tracking, metric=replan_metric)
    plan_steps, states = [0], [obs]
    success, steps = False, 0
    now = conditions_met(env)
    met = best = sum(now)
    best_now = now
    while steps < max_steps:
        action = ctrl.act(obs)
        stray = (ctrl.deviation > replan_deviation or ctrl.done
                 or (replan_cube is not None and ctrl.cube_deviation > replan_cube))
        if stray and len(plans) <= max_replans:
            plans.append(new_plan(obs))
            plan_steps.append(steps)
            ctrl = SceneController(model, plans[-1].xy, stride=prior.stride, tracking=tracking, metric=replan_metric)
            action = ctrl.act(obs)
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        states.append(obs)
        now = conditions_met(env)
        met = sum(now)
        if met > best:
            best, best_now = met, now
        if info.get("success", False):
            success = True
            break
        if terminated or truncated:
            break
    return SceneEpisode(method=method, task=int(task), seed=int(seed), success=success, steps=steps,
                        replans=len(plans) - 1, nfe=sum(p.nfe for p in plans),
                        plan_time_s=sum(p.time_s for p in plans), first_plan_nfe=plans[0].nfe,
                        subgoals=met, best_subgoals=best,
                        missing=[c for c, ok in zip(CONDITIONS, best_now) if not ok],
                        plans=[p.xy for p in plans] if keep_paths else None,
                        plan_steps=plan_steps if keep_paths else None,
                        states=np.stack(states) if keep_paths else None)


def evaluate_scene(prior, model, sampler="cofi", *, tasks=(1, 2, 3, 4, 5), seeds=(0,), log=None,
                   **kw) -> list[SceneEpisode]:
    """One episode per task and seed (`run_scene_episode`); ``log(record, seconds)`` after each."""
    env = make_eval_env()
    out = []
    try:
        for seed in seeds:
            for task in tasks:
                t0 = time.perf_counter()
                rec = run_scene_episode(env, prior, model, task, sampler, seed=seed, **kw)
                out.append(rec)
                if log is not None:
                    log(rec, time.perf_counter() - t0)
    finally:
        env.close()
    return out


def summarize_scene(records) -> dict:
    """Success rate, mean steps, replans, conditions met at the end and at best, NFE per plan
    and seconds per plan over ``records`` (`SceneEpisode`s or their `to_dict`)."""
    rs = [r.to_dict() if isinstance(r, SceneEpisode) else r for r in records]
    n, plans = len(rs), sum(r["replans"] + 1 for r in rs)

    def mean(key):
        return float(np.mean([r.get(key, 0) for r in rs])) if n else float("nan")

    return dict(episodes=n, successes=sum(bool(r["success"]) for r in rs),
                success=sum(bool(r["success"]) for r in rs) / max(n, 1), steps=mean("steps"),
                replans=mean("replans"), subgoals=mean("subgoals"), best_subgoals=mean("best_subgoals"),
                nfe_per_plan=sum(r["nfe"] for r in rs) / max(plans, 1),
                s_per_plan=sum(r["plan_time_s"] for r in rs) / max(plans, 1))
