"""Plots: composed plans over a maze (the paper's Fig. 11), with the executed path.

matplotlib is imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .layout import Chain
    from .planning.maze import Maze

__all__ = ["plot_plan", "plot_maze", "plot_episode"]


def _plt():
    import matplotlib.pyplot as plt  # falls back to Agg without a display

    return plt


def plot_maze(maze: "Maze", ax=None):
    """Draw the maze's walls (grey cells) on ``ax`` (a new figure if None); returns the axes."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    if ax is None:
        H, W = maze.shape
        _, ax = plt.subplots(figsize=(0.5 * W + 1, 0.5 * H + 0.6))
    h = maze.unit / 2
    for i, j in maze.wall_cells():
        x, y = maze.ij_to_xy((i, j))
        ax.add_patch(Rectangle((x - h, y - h), maze.unit, maze.unit, facecolor="0.35", edgecolor="none"))
    x0, x1, y0, y1 = maze.bounds
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_plan(
    maze: "Maze",
    plan,
    layout: "Chain | None" = None,
    *,
    windows=None,
    path=None,
    start=None,
    goal=None,
    title: str | None = None,
    ax=None,
    cmap: str = "turbo",
    save: str | None = None,
):
    """A composed plan over the maze, each window in its own colour (paper Fig. 11).

    Args:
        maze: the `Maze`.
        plan: ``(L, 2)`` the composed xy plan (drawn thin and black beneath the windows).
        layout: the `Chain` of the plan; with it, window i is drawn as its canvas slice.
        windows: ``(N, W, 2)`` the local plans themselves (before blending); drawn instead
            of the canvas slices, so disagreement in the overlaps shows.
        path: ``(T, 2)`` the executed path (dashed white on black).
        start, goal: markers (default: the plan's first and last points).
        title: axes title. ``ax``: draw into these axes. ``cmap``: window colours.
        save: write the figure to this path (PNG by extension), 150 dpi.
    Returns:
        The matplotlib ``Figure``.
    """
    plt = _plt()
    plan = np.asarray(plan, dtype=np.float64)
    ax = plot_maze(maze, ax)
    fig = ax.figure
    ax.plot(plan[:, 0], plan[:, 1], color="k", lw=0.8, alpha=0.6, zorder=2)
    segs = None
    if windows is not None:
        segs = list(np.asarray(windows, dtype=np.float64))
    elif layout is not None:
        segs = [plan[s : s + layout.window] for s in layout.starts]
    if segs:
        colors = plt.get_cmap(cmap)(np.linspace(0.08, 0.92, len(segs)))
        for i, (seg, c) in enumerate(zip(segs, colors)):
            ax.plot(seg[:, 0], seg[:, 1], color=c, lw=2.2, alpha=0.85, zorder=3, label=f"window {i + 1}")
    if path is not None:
        p = np.asarray(path, dtype=np.float64)
        ax.plot(p[:, 0], p[:, 1], color="k", lw=2.6, zorder=4)
        ax.plot(p[:, 0], p[:, 1], color="w", lw=1.2, ls="--", zorder=5, label="executed")
    s = plan[0] if start is None else np.asarray(start)
    g = plan[-1] if goal is None else np.asarray(goal)
    ax.scatter([s[0]], [s[1]], s=90, marker="o", color="limegreen", edgecolor="k", zorder=6, label="start")
    ax.scatter([g[0]], [g[1]], s=160, marker="*", color="gold", edgecolor="k", zorder=6, label="goal")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(6, 3 + len(segs or [])),
              fontsize=6, frameon=False)
    fig.tight_layout()
    if save:
        fig.savefig(save, dpi=150)
    return fig


def plot_episode(
    maze: "Maze",
    plans,
    path,
    plan_steps,
    *,
    goal=None,
    title: str | None = None,
    ax=None,
    cmap: str = "viridis",
    save: str | None = None,
):
    """What an episode executed: every plan the agent followed (the first and each replan,
    older ones fainter) and the path it walked, each stretch in the colour of the plan it
    was following.

    Args:
        maze: the `Maze`.
        plans: the executed plans, a list of ``(L_k, 2)`` xy arrays in the order they were made.
        path: ``(T + 1, 2)`` the executed path (positions before and after every env step).
        plan_steps: the env step at which each plan began (0 for the first).
        goal: the goal marker (default: the last plan's end).
        title, ax, cmap, save: as in `plot_plan`.
    Returns:
        The matplotlib ``Figure``.
    """
    plt = _plt()
    plans = [np.asarray(p, dtype=np.float64) for p in plans]
    path = np.asarray(path, dtype=np.float64)
    if len(plan_steps) != len(plans):
        raise ValueError(f"plan_steps must give one start step per plan ({len(plans)}), got {len(plan_steps)}")
    ax = plot_maze(maze, ax)
    fig = ax.figure
    colors = plt.get_cmap(cmap)(np.linspace(0.1, 0.9, len(plans)))
    ends = list(plan_steps[1:]) + [len(path) - 1]
    for k, (p, c, a, b) in enumerate(zip(plans, colors, plan_steps, ends)):
        age = len(plans) - 1 - k  # 0 for the last plan
        label = "first plan" if k == 0 else f"replan {k} (step {a})"
        ax.plot(p[:, 0], p[:, 1], color=c, lw=2.0, alpha=max(0.2, 0.9 * 0.6 ** age), zorder=3, label=label)
        seg = path[a : b + 1]
        ax.plot(seg[:, 0], seg[:, 1], color="k", lw=2.8, zorder=4)
        ax.plot(seg[:, 0], seg[:, 1], color=c, lw=1.4, ls="--", zorder=5)
    s = path[0]
    g = plans[-1][-1] if goal is None else np.asarray(goal)
    ax.scatter([s[0]], [s[1]], s=90, marker="o", color="limegreen", edgecolor="k", zorder=6, label="start")
    ax.scatter([g[0]], [g[1]], s=160, marker="*", color="gold", edgecolor="k", zorder=6, label="goal")
    ax.plot([], [], color="k", lw=1.4, ls="--", label="executed (colour: plan followed)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=min(4, len(plans) + 3), fontsize=6,
              frameon=False)
    fig.tight_layout()
    if save:
        fig.savefig(save, dpi=150)
    return fig
