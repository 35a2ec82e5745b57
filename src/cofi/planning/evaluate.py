"""Plan, execute and replan on OGBench's PointMaze and AntMaze evaluation tasks.

One episode: reset to task i (``env.reset(options=dict(task_id=i, render_goal=False))``;
OGBench adds uniform noise of ±1 to the start and the goal), plan from the agent's
position to the goal, follow the plan with `WaypointController`, and replan from the
current position when the agent deviates more than ``replan_distance`` from the plan
or stalls (no progress along it for ``stall_steps``), at most ``max_replans`` times, with
as many windows as the rest of the abandoned plan had (one more than that plan if the agent is
still where it started, `replan_count`).
Success is the environment's ``info["success"]`` (within 1.0 of the goal for the point, 0.5
for the ant); an episode ends at success or after ``max_steps`` (1000, OGBench's limit; 2000
for AntMaze-Giant, as CompDiffuser evaluates it, `max_steps_for`).
The point follows its plan with `WaypointController`; the ant with `AntController`, the shipped
inverse-dynamics model (`cofi.planning.ant_control`), and replans at a larger deviation and
after a longer stall (`ANT_EXECUTION`): its gait sways the torso by more than the point's
whole tracking error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from .control import WaypointController
from .maze import Maze, agent_of, parse_env_name
from .planner import METHODS, PlanResult, check_select, default_batch, default_count, plan, planning_sampler

__all__ = ["EpisodeRecord", "make_env", "max_steps_for", "episode_problem", "run_episode", "replan_count", "evaluate", "summarize",
           "markdown_table", "POINT_EXECUTION", "ANT_EXECUTION"]

#: Replanning thresholds per agent: deviation from the plan (maze units) and steps without
#: progress along it that trigger a replan.
POINT_EXECUTION = dict(replan_distance=1.0, stall_steps=40)
ANT_EXECUTION = dict(replan_distance=2.0, stall_steps=60)


@dataclass
class EpisodeRecord:
    """One executed episode. ``plan_valid`` is the open-loop validity of the first plan
    (reaches the goal without crossing a wall, `Maze.check_plan`), ``plan_in_wall`` the
    fraction of its points inside a wall cell (a graded version); ``nfe`` and
    ``plan_time_s`` add up every plan of the episode (first plan and replans). With
    ``keep_paths``: the executed ``path`` ``(T + 1, 2)``, every executed plan (``plans``, xy;
    ``windows``, its local plans) and the env step at which each began (``plan_steps``).
    ``fell_at``: the ant's first env step on its back (torso up-axis below the horizon,
    `cofi.planning.ant_control.torso_up`; it cannot right itself), None if it never was (and
    for the point)."""

    env_name: str
    method: str
    task: int
    seed: int
    episode: int
    success: bool
    steps: int
    replans: int
    nfe: int
    plan_time_s: float
    plan_valid: bool
    first_plan_nfe: int
    first_plan_time_s: float
    overlap_error: float
    final_distance: float
    plan_in_wall: float = float("nan")
    fell_at: int | None = None
    path: np.ndarray | None = field(default=None, repr=False)
    plans: list[np.ndarray] | None = field(default=None, repr=False)
    windows: list[np.ndarray] | None = field(default=None, repr=False)
    plan_steps: list[int] | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The scalar fields (no path, no plans), e.g. for a JSON line."""
        d = asdict(self)
        for k in ("path", "plans", "windows", "plan_steps"):
            d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EpisodeRecord":
        """Inverse of `to_dict` (unknown keys, e.g. a JSON line's ``label``, are ignored)."""
        names = {f.name for f in fields(cls)} - {"path", "plans", "windows", "plan_steps"}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_env(env_name: str, max_steps: int | None = None):
    """The gymnasium environment of ``env_name`` (``pointmaze-giant-stitch-v0`` ->
    ``pointmaze-giant-v0``), goal-conditioned, truncated after ``max_steps`` (None: the
    registered 1000)."""
    _, env_id = parse_env_name(env_name)
    import gymnasium

    import ogbench  # noqa: F401  (registers the environments)

    return gymnasium.make(env_id, **({} if max_steps is None else {"max_episode_steps": int(max_steps)}))


def max_steps_for(env_name: str) -> int:
    """Steps an episode may take: OGBench's 1000, except AntMaze-Giant's 2000 (CompDiffuser's
    evaluation, which the paper's AntMaze rows follow: the ant's route across giant takes
    700-950 steps when nothing goes wrong, so one replan can end an episode at 1000)."""
    maze, _ = parse_env_name(env_name)
    return 2000 if agent_of(env_name) == "ant" and maze == "giant" else 1000


def _episode_seeds(seed: int, task: int, episode: int) -> tuple[int, int]:
    ss = np.random.SeedSequence([int(seed), int(task), int(episode)])
    a, b = ss.generate_state(2)
    return int(a), int(b)


def _reset(env, task: int, env_seed: int):
    """Reset to ``task``; ogbench draws the start/goal noise from the global numpy RNG,
    so it is seeded here and its state restored afterwards."""
    state = np.random.get_state()
    try:
        np.random.seed(env_seed % 2**32)
        env.action_space.seed(env_seed % 2**32)
        ob, _ = env.reset(seed=env_seed % 2**31, options=dict(task_id=int(task), render_goal=False))
    finally:
        np.random.set_state(state)
    return ob


def _problem(env, task: int, seed: int, episode: int, device):
    env_seed, plan_seed = _episode_seeds(seed, task, episode)
    ob = np.asarray(_reset(env, task, env_seed), dtype=np.float64)
    goal = np.asarray(env.unwrapped.cur_goal_xy, dtype=np.float64)
    return ob, goal, torch.Generator(device=device).manual_seed(plan_seed)


def _controller_factory(controller, agent: str) -> Callable:
    """``plan_xy -> controller`` from `run_episode`'s ``controller`` argument."""
    if callable(controller):
        return controller
    if agent == "ant":
        if controller:
            raise ValueError("controller: the ant takes a factory (cofi.planning.ant_control.ant_controller), "
                             f"not keyword arguments {sorted(controller)}")
        from .ant_control import ant_controller

        return ant_controller()
    if controller is not None and not isinstance(controller, dict):
        raise TypeError(f"controller must be a dict of WaypointController arguments or a callable plan -> "
                        f"controller, got {type(controller).__name__}")
    return lambda plan_xy: WaypointController(plan_xy, **(controller or {}))


def episode_problem(env, task: int, seed: int = 0, episode: int = 0, device="cpu"):
    """The planning problem that `run_episode` starts from, without executing anything.

    Resets ``env`` to ``task`` exactly as `run_episode` does for (``seed``, ``episode``) and
    returns ``(start_xy, goal_xy, generator)``: the agent's position, the goal and the seeded
    torch generator of the first plan. Use it to study first plans (e.g. sampler settings)
    on the evaluation's own starts, goals and noise.
    """
    ob, goal, gen = _problem(env, task, seed, episode, device)
    return ob[:2].copy(), goal, gen


def replan_count(previous: int, count: int, progress: float, moved: float, min_move: float = 1.0) -> int:
    """Windows of a replan (`run_episode` with ``adaptive_count``).

    ``previous``: windows of the plan being abandoned; ``count``: the episode's first plan's N;
    ``progress``: the fraction of that plan the agent got through; ``moved``: how far the agent
    is from where that plan started. If it moved at least ``min_move``, what is left of the
    plan, ``⌈previous · (1 − progress)⌉`` (at least 1, CompDiffuser's rule); otherwise it is
    stuck where that plan started, and the replan gets one window more, at most ``count``.
    """
    if moved < min_move:
        return min(count, previous + 1)
    return max(1, math.ceil(previous * (1 - progress) - 1e-9))


def run_episode(
    env,
    prior,
    *,
    task: int,
    sampler,
    method: str,
    count: int,
    batch: int,
    seed: int = 0,
    episode: int = 0,
    maze: Maze | None = None,
    max_steps: int = 1000,
    max_replans: int = 10,
    replan_distance: float | None = None,
    stall_steps: int | None = None,
    controller: dict | Callable | None = None,
    keep_paths: bool = False,
    progress: bool = False,
    env_name: str = "",
    adaptive_count: bool = True,
    select: str | None = None,
) -> EpisodeRecord:
    """Plan, execute and replan one episode of ``task`` (1…5); see the module docstring.

    With ``adaptive_count`` a replan composes only as many windows as the remaining part of
    the current plan had, ``⌈N · (1 − progress)⌉`` (at least 1), as CompDiffuser's replanner
    does: a fixed N would stretch a short remaining route over the whole horizon. But when the
    agent is still within ``replan_distance`` of where the previous plan started, the replan
    composes one window more than that plan (at most N) instead (`replan_count`): an agent
    stuck in a dead end, whose remaining plan was too short to lead out, gets longer plans
    rather than the same short one again. ``select``: how each plan's candidate is chosen
    (`plan`).

    ``controller``: keyword arguments of `WaypointController` (the point), or a factory
    ``plan_xy (L, 2) -> controller`` whose ``act(observation)`` returns the action and whose
    ``index``, ``deviation`` and ``plan`` track progress (`WaypointController`'s); for the ant
    (an ``antmaze`` env) None means the shipped inverse dynamics
    (`cofi.planning.ant_control.ant_controller`). ``replan_distance`` and ``stall_steps``
    default to the agent's (`POINT_EXECUTION`, `ANT_EXECUTION`).
    """
    agent = agent_of(env.spec.id if getattr(env, "spec", None) is not None else env_name or "point")
    defaults = ANT_EXECUTION if agent == "ant" else POINT_EXECUTION
    replan_distance = defaults["replan_distance"] if replan_distance is None else replan_distance
    stall_steps = defaults["stall_steps"] if stall_steps is None else stall_steps
    make_controller = _controller_factory(controller, agent)
    maze = Maze.from_env(env) if maze is None else maze
    ob, goal, gen = _problem(env, task, seed, episode, device=prior.alphas_cumprod.device)
    xy = ob[:2].copy()

    def new_plan(from_xy, n) -> PlanResult:
        return plan(prior, from_xy, goal, sampler, count=n, batch=batch, generator=gen,
                    progress=progress, maze=maze, select=select)

    first = new_plan(xy, count)
    check = maze.check_plan(first.xy, goal)
    plans = [first]
    plan_starts, plan_steps = [xy.copy()], [0]
    ctrl = make_controller(first.xy)
    path = [xy.copy()]
    success, steps, replans, fell_at = False, 0, 0, None
    best_index, since_progress = 0, 0
    if agent == "ant":
        from .ant_control import torso_up
    while steps < max_steps:
        action = ctrl.act(ob)
        if ctrl.index > best_index:
            best_index, since_progress = ctrl.index, 0
        else:
            since_progress += 1
        near_end = ctrl.index >= len(ctrl.plan) - 1
        off_plan = ctrl.deviation > replan_distance or (since_progress >= stall_steps and not near_end)
        if off_plan and replans < max_replans and maze.is_free(xy):
            replans += 1
            n = plans[-1].layout.count
            if adaptive_count:  # what is left of the plan, in windows (CompDiffuser's replanning)
                moved = float(np.linalg.norm(xy - plan_starts[-1]))
                n = replan_count(n, count, ctrl.index / len(ctrl.plan), moved, replan_distance)
            plans.append(new_plan(xy, n))
            plan_starts.append(xy.copy())
            plan_steps.append(steps)
            ctrl = make_controller(plans[-1].xy)
            best_index, since_progress = 0, 0
            action = ctrl.act(ob)
        ob, _, terminated, truncated, info = env.step(action)
        steps += 1
        ob = np.asarray(ob, dtype=np.float64)
        xy = ob[:2].copy()
        path.append(xy.copy())
        if agent == "ant" and fell_at is None and torso_up(ob) < 0:
            fell_at = steps
        if info.get("success", 0.0) > 0:
            success = True
            break
        if terminated or truncated:
            break
    return EpisodeRecord(
        env_name=env_name, method=method, task=int(task), seed=int(seed), episode=int(episode),
        success=success, steps=steps, replans=replans,
        nfe=sum(p.nfe for p in plans), plan_time_s=sum(p.time_s for p in plans),
        plan_valid=check.valid, first_plan_nfe=first.nfe, first_plan_time_s=first.time_s,
        overlap_error=first.best_overlap_error, final_distance=float(np.linalg.norm(xy - goal)),
        plan_in_wall=float((~maze.is_free(first.xy)).mean()), fell_at=fell_at,
        path=np.stack(path) if keep_paths else None,
        plans=[p.xy for p in plans] if keep_paths else None,
        windows=[p.windows for p in plans] if keep_paths else None,
        plan_steps=plan_steps if keep_paths else None,
    )


def evaluate(
    env_name: str,
    prior,
    method: str = "cofi",
    *,
    tasks: Iterable[int] = (1, 2, 3, 4, 5),
    episodes: int = 1,
    seeds: Sequence[int] = (0,),
    sampler=None,
    steps: int | None = None,
    count: int | None = None,
    batch: int | None = None,
    max_steps: int | None = None,
    max_replans: int = 10,
    replan_distance: float | None = None,
    stall_steps: int | None = None,
    controller: dict | Callable | None = None,
    keep_paths: bool = False,
    progress: bool = False,
    log=None,
    select: str | None = None,
) -> list[EpisodeRecord]:
    """Run ``method`` on the maze's evaluation tasks: every task × seed × episode.

    Args:
        env_name: ``pointmaze-{medium,large,giant}-stitch-v0`` or ``antmaze-...``.
        prior: the trajectory prior (e.g. ``TrajectoryPrior.from_pretrained(env_name[:-3])``).
        method: ``cofi`` / ``gsc`` / ``cd`` / ``cdgs`` (the `planning_sampler` preset), used when
            ``sampler`` is None; otherwise only the records' label.
        tasks: OGBench task ids (1…5).
        episodes, seeds: episodes per task and seed; start/goal noise and the planner's
            noise are functions of (seed, task, episode) alone.
        sampler: a sampler config overriding the preset; ``steps`` changes the preset's steps.
        count, batch: windows N (default per maze) and candidates (16, CDGS 40).
        max_steps, max_replans, replan_distance, stall_steps: execution (module docstring;
            None: the maze's and agent's defaults, `max_steps_for`, `ANT_EXECUTION`).
        controller: keyword arguments of `WaypointController` (gain, ahead, window), or a
            factory ``plan_xy -> controller`` (`run_episode`); the ant's default is the shipped
            inverse dynamics.
        keep_paths: keep executed paths, plans and their windows in the records (figures).
        progress: progress bars while planning. ``log``: called with each finished record.
        select: how each plan's candidate is chosen (`plan`: ``overlap`` or ``consistency``; None: the prior's
            ``planning_select``, else ``overlap``).
    Returns:
        One `EpisodeRecord` per episode.
    """
    maze_type, _ = parse_env_name(env_name)
    check_select(select)
    tasks = [int(t) for t in tasks]
    if any(not 1 <= t <= 5 for t in tasks):
        raise ValueError(f"tasks must be OGBench task ids in 1..5, got {tasks}")
    if episodes < 1 or not len(seeds):
        raise ValueError(f"need episodes >= 1 and at least one seed, got {episodes}, {list(seeds)}")
    if sampler is None:
        method = str(method).lower()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        sampler = planning_sampler(method, prior=prior, **({} if steps is None else {"steps": steps}))
    count = default_count(env_name) if count is None else count
    batch = default_batch(method, prior) if batch is None and method in METHODS else (batch or 16)
    max_steps = max_steps_for(env_name) if max_steps is None else int(max_steps)
    env = make_env(env_name, max_steps if max_steps > 1000 else None)
    maze = Maze.from_env(env)
    controller = _controller_factory(controller, agent_of(env_name))  # loads a model once, not per episode
    records = []
    try:
        for seed in seeds:
            for task in tasks:
                for ep in range(episodes):
                    t0 = time.perf_counter()
                    rec = run_episode(env, prior, task=task, sampler=sampler, method=method, count=count,
                                      batch=batch, seed=seed, episode=ep, maze=maze, max_steps=max_steps,
                                      max_replans=max_replans, replan_distance=replan_distance,
                                      stall_steps=stall_steps, controller=controller,
                                      keep_paths=keep_paths, progress=progress, env_name=env_name,
                                      select=select)
                    records.append(rec)
                    if log is not None:
                        log(rec, time.perf_counter() - t0)
    finally:
        env.close()
    return records


def summarize(records: Sequence[EpisodeRecord]) -> list[dict]:
    """One row per (env, method): success rate with counts, first-plan validity, mean
    replans, NFE and wall time per plan problem (the first plan of each episode)."""
    groups: dict[tuple[str, str], list[EpisodeRecord]] = {}
    for r in records:
        groups.setdefault((r.env_name, r.method), []).append(r)
    rows = []
    for (env_name, method), rs in groups.items():
        n = len(rs)
        wins = sum(r.success for r in rs)
        rows.append(dict(
            env_name=env_name, method=method, episodes=n, successes=wins, success_rate=wins / n,
            valid=sum(r.plan_valid for r in rs), valid_rate=sum(r.plan_valid for r in rs) / n,
            replans=float(np.mean([r.replans for r in rs])),
            nfe_per_plan=float(np.mean([r.first_plan_nfe for r in rs])),
            time_per_plan_s=float(np.mean([r.first_plan_time_s for r in rs])),
            steps=float(np.mean([r.steps for r in rs])),
            plan_in_wall=float(np.mean([r.plan_in_wall for r in rs])),
            final_distance=float(np.mean([r.final_distance for r in rs])),
        ))
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows of `summarize` as a markdown table."""
    head = ("| maze | method | success | open-loop valid | plan in walls | final dist. | replans / ep | NFE / plan "
            "| wall s / plan | steps / ep |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        maze = parse_env_name(r["env_name"])[0] if r["env_name"] else "?"
        lines.append(
            f"| {maze} | {r['method']} | {100 * r['success_rate']:.0f}% ({r['successes']}/{r['episodes']}) "
            f"| {100 * r['valid_rate']:.0f}% ({r['valid']}/{r['episodes']}) | {100 * r.get('plan_in_wall', float('nan')):.0f}% "
            f"| {r.get('final_distance', float('nan')):.1f} | {r['replans']:.1f} "
            f"| {r['nfe_per_plan']:.0f} | {r['time_per_plan_s']:.2f} | {r['steps']:.0f} |"
        )
    return "\n".join(lines)
