"""Maze geometry: maze names, free cells, xy <-> cell, wall-crossing checks of plans.

PointMaze and AntMaze share their maps and geometry; only the agent (and its goal tolerance:
1.0 for the point, 0.5 for the ant) differs.

OGBench's maze is a grid of ``unit × unit`` cells; ``maze_map[i, j] == 1`` is a wall.
Cell ``(i, j)`` (row i runs along y, column j along x) is centred at
``(j·unit − offset_x, i·unit − offset_y)`` (``unit = 4``, ``offset = 4``), and the point
agent is a ball of radius 0.7. Nothing here imports ogbench except `Maze.from_name`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Maze", "PlanCheck", "parse_env_name", "agent_of", "MAZE_TYPES", "AGENTS", "AGENT_RADIUS"]

MAZE_TYPES = ("medium", "large", "giant")
AGENTS = ("point", "ant")
AGENT_RADIUS = 0.7  # ogbench/locomaze/assets/point.xml: the point body's sphere
_NAME = re.compile(r"^(?P<agent>point|ant)maze-(?P<maze>[a-z]+)(?:-(?P<data>[a-z]+))?-v(?P<version>\d+)$")


def parse_env_name(env_name: str) -> tuple[str, str]:
    """``"pointmaze-giant-stitch-v0"`` (or ``"pointmaze-giant-v0"``, ``"giant"``) ->
    ``("giant", "pointmaze-giant-v0")``: the maze type and the gymnasium environment id.
    ``"antmaze-giant-stitch-v0"`` -> ``("giant", "antmaze-giant-v0")``; a bare maze type is
    PointMaze's."""
    if not isinstance(env_name, str):
        raise TypeError(f"env_name must be a string such as 'pointmaze-giant-stitch-v0', got {type(env_name).__name__}")
    name = env_name.strip()
    m = _NAME.match(name)
    maze = m.group("maze") if m else name
    version = m.group("version") if m else "0"
    agent = m.group("agent") if m else "point"
    if maze not in MAZE_TYPES:
        valid = ", ".join(f"{a}maze-{t}-stitch-v0" for a in AGENTS for t in MAZE_TYPES)
        raise ValueError(f"unknown maze {env_name!r}; expected one of {valid} (or just {', '.join(MAZE_TYPES)})")
    return maze, f"{agent}maze-{maze}-v{version}"


def agent_of(env_name: str) -> str:
    """``"point"`` or ``"ant"``: the agent of a maze name (`parse_env_name`'s rules)."""
    return parse_env_name(env_name)[1].split("maze-")[0]


@dataclass(frozen=True)
class PlanCheck:
    """Open-loop validity of a plan: it reaches the goal and never crosses a wall."""

    valid: bool
    reaches_goal: bool
    crosses_wall: bool
    first_collision: int | None  # index of the first segment that enters a wall
    goal_distance: float


@dataclass(frozen=True, eq=False)
class Maze:
    """A maze map with OGBench's geometry.

    Args:
        maze_map: ``(H, W)`` ints, 1 = wall, 0 = free.
        unit: cell size.
        offset: ``(offset_x, offset_y)``: cell ``(i, j)`` is centred at ``(j·unit − offset_x, i·unit − offset_y)``.
        goal_tol: success radius of the environment (1.0 for the point agent).
        name: the maze type (``medium``, ``large``, ``giant``) if known.
        agent: ``point`` or ``ant`` (the mazes are the same; the goal tolerance differs).
    """

    maze_map: np.ndarray
    unit: float = 4.0
    offset: tuple[float, float] = (4.0, 4.0)
    goal_tol: float = 1.0
    name: str = ""
    agent: str = "point"

    # ------------------------------------------------------------- construction
    @staticmethod
    def from_env(env) -> "Maze":
        """Read the map and geometry of an OGBench maze environment (wrapped or not)."""
        u = env.unwrapped
        return Maze(
            maze_map=np.asarray(u.maze_map, dtype=np.int64).copy(),
            unit=float(u._maze_unit),
            offset=(float(u._offset_x), float(u._offset_y)),
            goal_tol=float(u._goal_tol),
            name=str(getattr(u, "_maze_type", "")),
            agent=agent_of(env.spec.id) if getattr(env, "spec", None) is not None else "point",
        )

    @staticmethod
    def from_name(env_name: str) -> "Maze":
        """The maze of ``env_name`` (e.g. ``pointmaze-giant-stitch-v0``, ``antmaze-giant-stitch-v0``),
        read from ogbench."""
        maze, env_id = parse_env_name(env_name)
        return _maze_from_env_id(env_id)

    # ------------------------------------------------------------- cells
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.maze_map.shape)  # type: ignore[return-value]

    def xy_to_ij(self, xy) -> np.ndarray:
        """Cell indices ``(..., 2)`` (row i, column j) of points ``(..., 2)``."""
        xy = np.asarray(xy, dtype=np.float64)
        j = np.floor((xy[..., 0] + self.offset[0] + 0.5 * self.unit) / self.unit)
        i = np.floor((xy[..., 1] + self.offset[1] + 0.5 * self.unit) / self.unit)
        return np.stack([i, j], -1).astype(np.int64)

    def ij_to_xy(self, ij) -> np.ndarray:
        """Cell centres ``(..., 2)`` of cell indices ``(..., 2)``."""
        ij = np.asarray(ij, dtype=np.float64)
        return np.stack([ij[..., 1] * self.unit - self.offset[0], ij[..., 0] * self.unit - self.offset[1]], -1)

    def free_cells(self) -> np.ndarray:
        """``(F, 2)`` indices of the free cells, row-major."""
        return np.argwhere(self.maze_map == 0)

    def wall_cells(self) -> np.ndarray:
        """``(W, 2)`` indices of the wall cells, row-major."""
        return np.argwhere(self.maze_map != 0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(x_min, x_max, y_min, y_max)`` of the whole map, walls included."""
        H, W = self.shape
        h = self.unit / 2
        return (-self.offset[0] - h, (W - 1) * self.unit - self.offset[0] + h,
                -self.offset[1] - h, (H - 1) * self.unit - self.offset[1] + h)

    # ------------------------------------------------------------- geometry
    def wall_distance(self, xy) -> np.ndarray:
        """Distance ``(...)`` from each point to the nearest wall cell (0 inside a wall or
        outside the map)."""
        xy = np.asarray(xy, dtype=np.float64)
        flat = xy.reshape(-1, 2)
        centres = self.ij_to_xy(self.wall_cells())  # (W, 2)
        dist = np.full(len(flat), np.inf)
        for k in range(0, len(flat) if len(centres) else 0, 4096):  # chunks bound the (P, W, 2) temporary
            d = np.abs(flat[k : k + 4096, None, :] - centres[None]) - self.unit / 2
            dist[k : k + 4096] = np.sqrt(np.square(np.maximum(d, 0.0)).sum(-1)).min(1)
        ij = self.xy_to_ij(flat)
        H, W = self.shape
        outside = (ij[:, 0] < 0) | (ij[:, 0] >= H) | (ij[:, 1] < 0) | (ij[:, 1] >= W)
        dist[outside] = 0.0
        return dist.reshape(xy.shape[:-1])

    def is_free(self, xy, margin: float = 0.0) -> np.ndarray:
        """Whether each point ``(..., 2)`` is in free space, at least ``margin`` from any wall."""
        if margin > 0:
            return self.wall_distance(xy) > margin
        return self._cell_free(xy)

    def _cell_free(self, xy) -> np.ndarray:
        ij = self.xy_to_ij(xy)
        H, W = self.shape
        inside = (ij[..., 0] >= 0) & (ij[..., 0] < H) & (ij[..., 1] >= 0) & (ij[..., 1] < W)
        free = np.zeros(ij.shape[:-1], dtype=bool)
        free[inside] = self.maze_map[ij[..., 0][inside], ij[..., 1][inside]] == 0
        return free

    def segment_collisions(self, xy, margin: float = 0.0, resolution: float = 0.05) -> np.ndarray:
        """For a polyline ``(L, 2)``: a bool per segment ``(L−1,)``, True where the segment
        (sampled every ``resolution``, both ends included) enters a wall cell, or comes
        closer than ``margin`` to one."""
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 1:
            raise ValueError(f"xy must be a polyline of shape (L, 2), got {xy.shape}")
        if not np.isfinite(xy).all():
            raise ValueError("xy contains NaN or inf")
        if len(xy) == 1:
            return np.zeros(0, dtype=bool)
        a, b = xy[:-1], xy[1:]
        n = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / resolution).astype(np.int64))
        seg = np.repeat(np.arange(len(a)), n + 1)
        u = np.concatenate([np.linspace(0.0, 1.0, k + 1) for k in n])
        pts = a[seg] + u[:, None] * (b - a)[seg]
        bad = ~self.is_free(pts, margin)
        return np.bincount(seg, weights=bad, minlength=len(a)) > 0

    def crosses_wall(self, xy, margin: float = 0.0, resolution: float = 0.05) -> bool:
        """Whether the polyline ``(L, 2)`` enters a wall anywhere (see `segment_collisions`)."""
        xy = np.asarray(xy, dtype=np.float64)
        if len(xy) == 1:
            return not bool(self.is_free(xy, margin)[0])
        return bool(self.segment_collisions(xy, margin, resolution).any())

    def check_plan(self, xy, goal_xy, *, tol: float | None = None, margin: float = 0.0,
                   resolution: float = 0.05) -> PlanCheck:
        """Open-loop validity of a plan ``(L, 2)``: its last point lies within ``tol``
        (default: the environment's success radius) of ``goal_xy`` and no segment crosses a wall."""
        xy = np.asarray(xy, dtype=np.float64)
        tol = self.goal_tol if tol is None else tol
        gd = float(np.linalg.norm(xy[-1] - np.asarray(goal_xy, dtype=np.float64)))
        hits = self.segment_collisions(xy, margin, resolution) if len(xy) > 1 else ~self.is_free(xy, margin)
        first = int(np.argmax(hits)) if hits.any() else None
        return PlanCheck(valid=gd <= tol and first is None, reaches_goal=gd <= tol,
                         crosses_wall=first is not None, first_collision=first, goal_distance=gd)

    def shortest_path(self, start_xy, goal_xy, spacing: float = 0.15) -> np.ndarray:
        """A reference plan ``(L, 2)``: breadth-first search over free cells, through the
        cell centres, from ``start_xy`` to ``goal_xy`` (both kept exactly), resampled every
        ``spacing`` (about the point agent's speed per step). For tests and figures."""
        start = self.check_free(start_xy, "start_xy")
        goal = self.check_free(goal_xy, "goal_xy")
        s, g = (tuple(int(v) for v in self.xy_to_ij(p)) for p in (start, goal))
        prev = {s: s}
        queue = [s]
        for cell in queue:  # grows while iterating: BFS
            if cell == g:
                break
            i, j = cell
            for n in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if n not in prev and self.maze_map[n] == 0:
                    prev[n] = cell
                    queue.append(n)
        if g not in prev:
            raise ValueError(f"goal cell {g} is not reachable from start cell {s}")
        cells = [g]
        while cells[-1] != s:
            cells.append(prev[cells[-1]])
        centres = self.ij_to_xy(np.array(cells[::-1]))[1:-1]
        pts = np.concatenate([start[None], centres, goal[None]])
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        u = np.linspace(0.0, arc[-1], max(2, int(np.ceil(arc[-1] / spacing)) + 1))
        return np.stack([np.interp(u, arc, pts[:, 0]), np.interp(u, arc, pts[:, 1])], -1)

    def check_free(self, xy, what: str = "xy") -> np.ndarray:
        """``xy`` as a float array ``(2,)``; raises ValueError if it is not a free point of the maze."""
        p = np.asarray(xy, dtype=np.float64).reshape(-1)
        if p.shape != (2,) or not np.isfinite(p).all():
            raise ValueError(f"{what} must be a finite (x, y) pair, got {xy!r}")
        if not self._cell_free(p):
            i, j = (int(v) for v in self.xy_to_ij(p))
            raise ValueError(
                f"{what}={tuple(round(float(v), 3) for v in p)} lies inside a wall (cell {(i, j)}) or outside "
                f"the {self.name or 'maze'} map {self.bounds}"
            )
        return p


@functools.lru_cache(maxsize=8)
def _maze_from_env_id(env_id: str) -> Maze:
    import gymnasium

    import ogbench  # noqa: F401  (registers the environments)

    env = gymnasium.make(env_id)
    try:
        return Maze.from_env(env)
    finally:
        env.close()
