"""Plots: composed plans over a maze (the paper's Fig. 11), with the executed path; a Scene-Play
episode's planned and executed object trajectories.

matplotlib is imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .layout import Chain
    from .planning.maze import Maze

__all__ = ["plot_plan", "plot_maze", "plot_episode", "plot_scene_episode", "SCENE_PANELS"]


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


#: Panels of `plot_scene_episode`: (title, plan dims, their labels).
SCENE_PANELS = (
    ("effector", (0, 1, 2), ("x", "y", "z")),
    ("cube", (3, 4, 5), ("x", "y", "z")),
    ("buttons (state)", (9, 11), ("button 1", "button 2")),
    ("drawer / window", (12, 13), ("drawer", "window")),
)


def plot_scene_episode(plans, states, plan_steps, *, goal=None, stride: int = 4, title: str | None = None,
                       save: str | None = None):
    """A Scene-Play episode over time: for the effector, the cube, the two buttons and the
    drawer and window, what each plan asked for (thin, from the step it was made, older plans
    fainter) and what happened (thick), with the goal's value at the right edge.

    Args:
        plans: the plans in the order they were made, each ``(L_k, 14)`` in the planning space
            (`cofi.planning.scene.SCENE_PLAN_DIMS`) at one point per ``stride`` env steps.
        states: ``(T + 1, 14)`` the executed states in the planning space (or ``(T + 1, 40)``
            observations).
        plan_steps: the env step at which each plan began (0 for the first).
        goal: ``(14,)`` or ``(40,)`` the goal (only the dimensions a task fixes are drawn).
        title, save: figure title; PNG path.
    Returns:
        The matplotlib ``Figure``.
    """
    from .planning.scene import SCENE_PLAN_DIMS
    from .planning.scene_plan import GOAL_DIMS

    plt = _plt()

    def space(a):
        a = np.asarray(a, dtype=np.float64)
        return a[..., list(SCENE_PLAN_DIMS)] if a.shape[-1] == 40 else a

    plans, states = [space(p) for p in plans], space(states)
    if len(plan_steps) != len(plans):
        raise ValueError(f"plan_steps must give one start step per plan ({len(plans)}), got {len(plan_steps)}")
    if states.ndim != 2 or states.shape[1] != 14 or any(p.ndim != 2 or p.shape[1] != 14 for p in plans):
        raise ValueError("plans and states must be (L, 14) planning-space or (L, 40) observation arrays")
    g = None if goal is None else space(goal)
    fig, axes = plt.subplots(len(SCENE_PANELS), 1, figsize=(8, 8), sharex=True)
    steps = np.arange(len(states))
    for ax, (name, dims, labels) in zip(axes, SCENE_PANELS):
        for j, (d, lab) in enumerate(zip(dims, labels)):
            c = f"C{j}"
            for k, (p, a) in enumerate(zip(plans, plan_steps)):
                age = len(plans) - 1 - k
                ax.plot(a + stride * np.arange(len(p)), p[:, d], color=c, lw=1.0, ls="--",
                        alpha=max(0.25, 0.9 * 0.6 ** age))
            ax.plot(steps, states[:, d], color=c, lw=2.0, label=lab)
            if g is not None and d in GOAL_DIMS:
                ax.scatter([len(states) - 1], [g[d]], marker="*", s=120, color=c, edgecolor="k", zorder=5)
        for a in plan_steps[1:]:
            ax.axvline(a, color="0.6", lw=0.8, ls=":")
        ax.set_ylabel(name, fontsize=8)
        ax.legend(fontsize=7, loc="upper left", ncol=len(dims), frameon=False)
    axes[-1].set_xlabel("env step (dashed: plans, dotted lines: replans, stars: the goal)")
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    if save:
        fig.savefig(save, dpi=120)
    return fig
