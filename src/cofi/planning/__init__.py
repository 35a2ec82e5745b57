"""Planning domain: OGBench PointMaze data, the trajectory prior's training, planning,
execution and evaluation. Nothing here imports ogbench until it is used."""

from __future__ import annotations

from .control import WaypointController, waypoint_action
from .planner import (
    HORIZON,
    METHODS,
    PRESETS,
    OVERLAP,
    PlanResult,
    default_batch,
    default_count,
    plan,
    planning_layout,
    planning_sampler,
)

__all__ = [
    "plan", "planning_sampler", "planning_layout", "default_count", "default_batch", "PlanResult",
    "HORIZON", "OVERLAP", "METHODS", "PRESETS", "WaypointController", "waypoint_action",
    "evaluate", "run_episode", "EpisodeRecord", "summarize", "markdown_table", "make_env",
    "Maze", "PlanCheck", "parse_env_name", "generate_dataset",
]

_LAZY = {
    "evaluate": ".evaluate", "run_episode": ".evaluate", "EpisodeRecord": ".evaluate", "summarize": ".evaluate",
    "markdown_table": ".evaluate", "make_env": ".evaluate", "Maze": ".maze", "PlanCheck": ".maze",
    "parse_env_name": ".maze", "generate_dataset": ".data",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'cofi.planning' has no attribute {name!r}")
