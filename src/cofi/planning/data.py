"""Regenerate OGBench's PointMaze and AntMaze *stitch* datasets from the environments `ogbench` ships.

The protocol (OGBench, Park et al. 2025, "stitch" datasets): short episodes of 201 steps;
the start cell is uniform over free cells; the goal cell is uniform among the cells exactly
4 BFS steps away; the agent heads for the environment's oracle subgoal
(`env.unwrapped.get_oracle_subgoal`). The point's action is the unit direction to it plus
N(0, 0.5²) noise; the ant's is a locomotion expert's deterministic action given its state
(without x-y) and that direction, plus N(0, 0.2²) noise (`cofi.planning.ant_expert`). Actions
are clipped to [-1, 1]. Files use OGBench's npz layout (observations, actions, terminals, qpos,
qvel) with the validation split in ``<name>-val.npz`` beside the training file, so
``ogbench.make_env_and_datasets(name, dataset_path=...)`` loads them.

    python -m cofi.planning generate --env pointmaze-giant-stitch-v0 --out data/
    python -m cofi.planning generate --env antmaze-medium-stitch-v0 --expert training/ant-expert --out data/
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "MAZES", "make_data_env", "free_cells", "cells_at_distance", "generate_episodes", "generate_dataset",
    "PAD", "STRIDE", "HORIZON_STEPS", "OVERLAP_STEPS", "load_episodes", "pad_episodes", "cut_windows", "window_stats",
]

POINT_MAZES = ("pointmaze-medium-stitch-v0", "pointmaze-large-stitch-v0", "pointmaze-giant-stitch-v0")
ANT_MAZES = ("antmaze-medium-stitch-v0", "antmaze-large-stitch-v0", "antmaze-giant-stitch-v0")
MAZES = POINT_MAZES + ANT_MAZES
EPISODE_STEPS = 201
GOAL_DISTANCE = 4
ACTION_NOISE = 0.5  # the point's
ANT_ACTION_NOISE = 0.2  # the ant expert's (OGBench's generate_locomaze.py default)


def _check_name(name: str) -> str:
    if name not in MAZES:
        raise ValueError(f"unknown maze {name!r}; valid names: {', '.join(MAZES)}")
    return name


def make_data_env(name: str):
    """The OGBench environment for ``name`` (one of `MAZES`), without its dataset."""
    import ogbench

    return ogbench.make_env_and_datasets(_check_name(name), env_only=True)


def free_cells(maze_map: np.ndarray) -> list[tuple[int, int]]:
    """All free (0) cells of a maze map, row-major."""
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(maze_map == 0))]


def bfs_distances(maze_map: np.ndarray, start: tuple[int, int]) -> dict[tuple[int, int], int]:
    """BFS step count from ``start`` to every reachable free cell (4-neighbourhood)."""
    dist = {start: 0}
    queue = deque([start])
    H, W = maze_map.shape
    while queue:
        i, j = queue.popleft()
        for di, dj in ((-1, 0), (0, -1), (1, 0), (0, 1)):
            n = (i + di, j + dj)
            if 0 <= n[0] < H and 0 <= n[1] < W and maze_map[n] == 0 and n not in dist:
                dist[n] = dist[(i, j)] + 1
                queue.append(n)
    return dist


def cells_at_distance(maze_map: np.ndarray, start: tuple[int, int], k: int = GOAL_DISTANCE) -> list[tuple[int, int]]:
    """Free cells exactly ``k`` BFS steps from ``start``."""
    return sorted(c for c, d in bfs_distances(maze_map, start).items() if d == k)


def _episode(env, rng: np.random.Generator, cells: list[tuple[int, int]], policy=None,
             noise: float = ACTION_NOISE) -> tuple[dict[str, np.ndarray], bool]:
    """One stitch episode and whether it came within the goal's tolerance (OGBench's success)."""
    u = env.unwrapped
    while True:
        start = cells[rng.integers(len(cells))]
        goals = cells_at_distance(u.maze_map, start)
        if goals:
            break
    goal = goals[rng.integers(len(goals))]
    np.random.seed(int(rng.integers(2**31)))  # OGBench's reset noise uses numpy's global state
    ob, _ = env.reset(options=dict(task_info=dict(init_ij=start, goal_ij=goal)))
    goal_xy = np.asarray(u.ij_to_xy(goal))
    subgoals: dict[tuple[int, int], np.ndarray] = {}  # the oracle depends only on the cell
    out = {k: [] for k in ("observations", "actions", "qpos", "qvel")}
    reached = False
    for _ in range(EPISODE_STEPS):
        xy = u.get_xy()
        reached |= bool(np.linalg.norm(xy - goal_xy) <= u._goal_tol)
        cell = u.xy_to_ij(xy)
        if cell not in subgoals:
            subgoals[cell] = np.asarray(u.get_oracle_subgoal(xy, goal_xy)[0])
        d = subgoals[cell] - xy
        d = d / (np.linalg.norm(d) + 1e-6)
        a = (d if policy is None else policy(np.concatenate([np.asarray(ob)[2:], d])))
        a = np.clip(a + rng.normal(0.0, noise, len(a)), -1.0, 1.0).astype(np.float32)
        out["observations"].append(np.asarray(ob, np.float32))
        out["actions"].append(a)
        out["qpos"].append(u.data.qpos.copy())
        out["qvel"].append(u.data.qvel.copy())
        ob, *_ = env.step(a)
    ep = {k: np.stack(v) for k, v in out.items()}
    ep["terminals"] = np.zeros(EPISODE_STEPS, np.float32)
    ep["terminals"][-1] = 1.0
    return ep, reached or bool(np.linalg.norm(u.get_xy() - goal_xy) <= u._goal_tol)


def _load_expert(expert):
    if expert is None:
        raise ValueError("AntMaze data needs the ant expert: pass expert= (a training directory of "
                         "cofi.planning.ant_expert, e.g. training/ant-expert, or a loaded SAC agent)")
    if isinstance(expert, (str, Path)):
        from .ant_expert import load_agent

        return load_agent(expert)[0]
    return expert


def generate_episodes(name: str, episodes: int, seed: int = 0, progress: bool = True, expert=None,
                      stats: dict | None = None) -> dict[str, np.ndarray]:
    """``episodes`` stitch episodes of `name`, concatenated in OGBench's flat layout.

    ``expert``: the ant's locomotion expert (AntMaze only; a directory or an agent). ``stats``,
    if a dict, receives ``episodes`` and ``reached``: how many episodes came within the goal's
    tolerance (0.5 for the ant, 1.0 for the point)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    ant = _check_name(name) in ANT_MAZES
    policy = None
    if ant:
        agent = _load_expert(expert)

        def policy(ob):
            return agent.act(ob, deterministic=True)
    env = make_data_env(name)
    rng = np.random.default_rng(seed)
    cells = free_cells(env.unwrapped.maze_map)
    runs = [_episode(env, rng, cells, policy, ANT_ACTION_NOISE if ant else ACTION_NOISE)
            for _ in tqdm(range(episodes), desc=name, disable=not progress)]
    if stats is not None:
        stats.update(episodes=episodes, reached=sum(r for _, r in runs))
    eps = [e for e, _ in runs]
    data = {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}
    data["qpos"] = data["qpos"].astype(np.float32)
    data["qvel"] = data["qvel"].astype(np.float32)
    return data


def generate_dataset(name: str, out_dir: str | Path, episodes: int = 5000, val_episodes: int = 500,
                     seed: int = 0, progress: bool = True, expert=None) -> tuple[Path, Path]:
    """Write ``<out>/<name>.npz`` and ``<out>/<name>-val.npz``; returns both paths. AntMaze needs
    ``expert`` (`generate_episodes`); how many episodes reached their goal is printed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{_check_name(name)}.npz", out / f"{name}-val.npz")
    if name in ANT_MAZES:
        expert = _load_expert(expert)  # once for both splits
    for path, n, s in ((paths[0], episodes, seed), (paths[1], val_episodes, seed + 1)):
        stats: dict = {}
        np.savez_compressed(path, **generate_episodes(name, n, seed=s, progress=progress, expert=expert,
                                                      stats=stats))
        if progress:
            print(f"{path.name}: {stats['reached']}/{stats['episodes']} episodes reached their goal")
    return paths


# --------------------------------------------------------------------------- windows
PAD = 64  # CompDiffuser/CDGS's OGBench loader: extra_pad=64, pad_type='first'
STRIDE = 4  # env steps per plan point: 160 env steps -> 40 points
HORIZON_STEPS = 160  # env steps of one local plan
OVERLAP_STEPS = 56  # env steps shared by adjacent windows


def load_episodes(path: str | Path) -> np.ndarray:
    """Episodes of xy positions ``(E, 201, 2)`` float32 from an OGBench-layout npz."""
    obs = np.load(path)["observations"][:, :2].astype(np.float32)
    if obs.shape[0] % EPISODE_STEPS:
        raise ValueError(f"{path}: {obs.shape[0]} rows is not a multiple of the episode length {EPISODE_STEPS}")
    return obs.reshape(-1, EPISODE_STEPS, 2)


def pad_episodes(episodes: np.ndarray, pad: int = PAD) -> np.ndarray:
    """Prepend ``pad`` copies of each episode's first state: ``(E, T, D) -> (E, pad + T, D)``.

    The public CompDiffuser/CDGS OGBench loader does this (``use_padding=True``,
    ``pad_type='first'``, ``extra_pad=64``). A stitch episode reaches its goal by step ~108
    and hovers there, so unpadded windows always *end* still and *start* moving; with the
    padding a window can also start still, where another window's episode ended, which is
    what lets consecutive windows agree on a 56-step overlap.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    episodes = np.asarray(episodes)
    if episodes.ndim != 3:
        raise ValueError(f"episodes must have shape (E, T, D), got {episodes.shape}")
    first = np.repeat(episodes[:, :1], pad, axis=1)
    return np.concatenate([first, episodes], axis=1)


def cut_windows(episodes: np.ndarray, horizon: int = HORIZON_STEPS, stride: int = STRIDE,
                every: int = STRIDE) -> np.ndarray:
    """All windows of ``horizon`` env steps starting every ``every`` steps of every episode,
    subsampled to one point per ``stride`` steps: ``(E·n, horizon // stride, D)``."""
    episodes = np.asarray(episodes)
    if horizon % stride:
        raise ValueError(f"horizon ({horizon}) must be a multiple of stride ({stride})")
    if episodes.ndim != 3 or episodes.shape[1] < horizon:
        raise ValueError(f"episodes must have shape (E, T >= {horizon}, D), got {episodes.shape}")
    starts = np.arange(0, episodes.shape[1] - horizon + 1, every)
    idx = starts[:, None] + np.arange(0, horizon, stride)[None]  # (n, horizon // stride)
    return episodes[:, idx].reshape(-1, horizon // stride, episodes.shape[2])


def window_stats(windows: np.ndarray, overlap: int, tol: float = 1.0, sample: int = 2000,
                 seed: int = 0) -> dict[str, float]:
    """How well windows ``(M, H, 2)`` (env coordinates) can chain with an ``overlap``-point overlap.

    Returns the mean displacement (straight-line, so the hovering jitter of the data does not
    count) over the first and the last ``overlap`` points, and
    ``chainable``: the fraction of ``sample`` random windows whose last ``overlap`` points
    are matched (RMS distance ≤ ``tol``) by the first ``overlap`` points of some window whose
    end lies elsewhere (≥ 4 units, one maze cell, from the first window's end).
    """
    w = np.asarray(windows, dtype=np.float64)

    def moved(x):
        return np.linalg.norm(x[:, -1] - x[:, 0], axis=1)

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(w), size=min(sample, len(w)), replace=False)
    heads = w[:, :overlap].reshape(len(w), -1)
    ok = 0
    for i in pick:
        tail = w[i, -overlap:].reshape(-1)
        rms = np.sqrt(((heads - tail) ** 2).reshape(len(w), overlap, -1).sum(2).mean(1))
        onward = np.linalg.norm(w[:, -1] - w[i, -1], axis=1) >= 4.0
        ok += bool(((rms <= tol) & onward).any())
    return dict(head_motion=float(moved(w[:, :overlap]).mean()), tail_motion=float(moved(w[:, -overlap:]).mean()),
                chainable=ok / len(pick))
