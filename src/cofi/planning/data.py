"""Regenerate OGBench's PointMaze *stitch* datasets from the environments `ogbench` ships.

The protocol (OGBench, Park et al. 2025, "stitch" datasets): short episodes of 201 steps;
the start cell is uniform over free cells; the goal cell is uniform among the cells exactly
4 BFS steps away; the action is the unit vector toward the environment's oracle subgoal
(`env.unwrapped.get_oracle_subgoal`) plus N(0, 0.5²) noise, clipped to [-1, 1]. Files use
OGBench's npz layout (observations, actions, terminals, qpos, qvel) with the validation split
in ``<name>-val.npz`` beside the training file, so
``ogbench.make_env_and_datasets(name, dataset_path=...)`` loads them.

    python -m cofi.planning generate --env pointmaze-giant-stitch-v0 --out data/
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

__all__ = ["MAZES", "make_env", "free_cells", "cells_at_distance", "generate_episodes", "generate_dataset"]

MAZES = ("pointmaze-medium-stitch-v0", "pointmaze-large-stitch-v0", "pointmaze-giant-stitch-v0")
EPISODE_STEPS = 201
GOAL_DISTANCE = 4
ACTION_NOISE = 0.5


def _check_name(name: str) -> str:
    if name not in MAZES:
        raise ValueError(f"unknown maze {name!r}; valid names: {', '.join(MAZES)}")
    return name


def make_env(name: str):
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


def _episode(env, rng: np.random.Generator, cells: list[tuple[int, int]]) -> dict[str, np.ndarray]:
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
    for _ in range(EPISODE_STEPS):
        xy = u.get_xy()
        cell = u.xy_to_ij(xy)
        if cell not in subgoals:
            subgoals[cell] = np.asarray(u.get_oracle_subgoal(xy, goal_xy)[0])
        d = subgoals[cell] - xy
        a = d / (np.linalg.norm(d) + 1e-6) + rng.normal(0.0, ACTION_NOISE, 2)
        a = np.clip(a, -1.0, 1.0).astype(np.float32)
        out["observations"].append(np.asarray(ob, np.float32))
        out["actions"].append(a)
        out["qpos"].append(u.data.qpos.copy())
        out["qvel"].append(u.data.qvel.copy())
        ob, *_ = env.step(a)
    ep = {k: np.stack(v) for k, v in out.items()}
    ep["terminals"] = np.zeros(EPISODE_STEPS, np.float32)
    ep["terminals"][-1] = 1.0
    return ep


def generate_episodes(name: str, episodes: int, seed: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """``episodes`` stitch episodes of `name`, concatenated in OGBench's flat layout."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = make_env(name)
    rng = np.random.default_rng(seed)
    cells = free_cells(env.unwrapped.maze_map)
    eps = [_episode(env, rng, cells) for _ in tqdm(range(episodes), desc=name, disable=not progress)]
    data = {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}
    data["qpos"] = data["qpos"].astype(np.float32)
    data["qvel"] = data["qvel"].astype(np.float32)
    return data


def generate_dataset(name: str, out_dir: str | Path, episodes: int = 5000, val_episodes: int = 500,
                     seed: int = 0, progress: bool = True) -> tuple[Path, Path]:
    """Write ``<out>/<name>.npz`` and ``<out>/<name>-val.npz``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{_check_name(name)}.npz", out / f"{name}-val.npz")
    for path, n, s in ((paths[0], episodes, seed), (paths[1], val_episodes, seed + 1)):
        np.savez_compressed(path, **generate_episodes(name, n, seed=s, progress=progress))
    return paths
