"""Waypoint tracking of an xy plan for OGBench's point agent.

The point agent moves by ``0.2·action`` per step (``qpos += 0.2·a``, then contacts), and
the environment does not clip the action, so the controller does:
``a = clip(k (w − xy), −1, 1)``. With the default gain ``k = 5 = 1/0.2`` a waypoint closer
than 0.2 is reached in one step; farther ones are approached at full speed.

Which waypoint: pursuit along the plan's own clock. The controller keeps a progress index
``i`` (never decreasing): each step it moves ``i`` to the plan point nearest the agent within
the next ``window`` points, then aims at the plan point ``ahead`` points after ``i`` (the
plan's last point, the true goal, at the end). Progress follows the agent, not the wall
clock: a slow agent is not dragged across a wall. Aiming a fixed number of plan points ahead,
not at the first point some distance away, matters for composed plans: they hover where one
window's episode ended, and may go up a dead end and come back; a distance rule then aims
at a point on the way back, behind the agent, and the agent swings between the two forever.
The distance to the nearest plan point is the *deviation* that triggers replanning; an index
that stops advancing is *stalling*.
"""

from __future__ import annotations

import numpy as np

__all__ = ["waypoint_action", "WaypointController", "fit_actions"]


def waypoint_action(xy, waypoint, gain: float = 5.0) -> np.ndarray:
    """``clip(gain · (waypoint − xy), −1, 1)``, the point agent's action toward ``waypoint``."""
    d = np.asarray(waypoint, dtype=np.float64) - np.asarray(xy, dtype=np.float64)
    return np.clip(gain * d, -1.0, 1.0)


class WaypointController:
    """Follow an xy plan ``(L, 2)`` (its last point is the goal).

    Args:
        plan: ``(L, 2)`` waypoints in environment coordinates, one per env step (a plan at a
            temporal stride is interpolated first, `cofi.planning.planner.upsample`).
        gain: proportional gain k of `waypoint_action`.
        ahead: how many plan points after the progress index the pursued waypoint lies; at
            the agent's top speed (≤ 0.28 per step) 4 points are ≤ 1.1 units, below the
            corridor half-width left to the agent's centre (2 − 0.7 = 1.3), so cutting a
            corner of the plan stays off the walls.
        window: how many plan points ahead the progress index may jump in one step
            (keeps progress from skipping to a later pass through the same place).
    """

    def __init__(self, plan, *, gain: float = 5.0, ahead: int = 4, window: int = 40) -> None:
        plan = np.asarray(plan, dtype=np.float64)
        if plan.ndim != 2 or plan.shape[1] != 2 or len(plan) < 1:
            raise ValueError(f"plan must have shape (L, 2) with L >= 1, got {plan.shape}")
        if not np.isfinite(plan).all():
            raise ValueError("plan contains NaN or inf")
        if gain <= 0 or ahead < 1 or window < 1:
            raise ValueError(f"need gain > 0, ahead >= 1, window >= 1; got {gain}, {ahead}, {window}")
        self.plan = plan
        self.gain = gain
        self.ahead = int(ahead)
        self.window = int(window)
        self.tie = 0.05  # plan points this much farther than the nearest count as nearest
        self.index = 0  # progress along the plan
        self.deviation = 0.0  # distance from the agent to the nearest plan point near `index`
        self.target = plan[0]

    @property
    def goal(self) -> np.ndarray:
        return self.plan[-1]

    def update(self, xy) -> None:
        """Advance the progress index to the plan point nearest ``xy`` within the window."""
        xy = np.asarray(xy, dtype=np.float64)
        hi = min(len(self.plan), self.index + self.window + 1)
        d = np.linalg.norm(self.plan[self.index:hi] - xy, axis=1)
        # ties go to the latest point: a plan that stands still (a padded window's copies
        # of one state) must not hold the index, and the waypoint with it, in place
        j = int(np.nonzero(d <= d.min() + self.tie)[0][-1])
        self.index += j
        self.deviation = float(d[j])

    def waypoint(self, xy=None) -> np.ndarray:
        """The plan point ``ahead`` points after the progress index (the goal at the end)."""
        return self.plan[min(self.index + self.ahead, len(self.plan) - 1)]

    def act(self, xy) -> np.ndarray:
        """Update progress from the agent's position and return the action ``(2,)``."""
        self.update(xy)
        self.target = self.waypoint(xy)
        return waypoint_action(xy, self.target, self.gain)


def fit_actions(net, inputs, actions, *, steps: int, batch: int, lr: float, generator, log_every: int,
                validate=None, log=None) -> list[dict]:
    """Regress ``actions (M, A)`` on ``tanh(net(inputs(rows)))`` by MSE: AdamW (weight decay
    1e-4) with a cosine decay to 0 over ``steps``, ``batch`` rows drawn with ``generator``
    each step. ``inputs(rows)`` builds the network's input for the drawn rows (it may draw
    noise from the same generator). Every ``log_every`` steps (and at the end) the mean
    training MSE since the last entry, and ``validate()`` as ``val_mse`` if given, are appended
    to the returned history and passed to ``log(entry)``. The inverse-dynamics models of Scene
    and AntMaze train with it."""
    import math

    import torch

    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    run, history = 0.0, []
    for step in range(1, steps + 1):
        i = torch.randint(0, len(actions), (batch,), generator=generator)
        loss = torch.mean((torch.tanh(net(inputs(i))) - actions[i]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run += loss.item()
        if step % log_every == 0 or step == steps:
            entry = dict(step=step, train_mse=run / (log_every if step % log_every == 0 else step % log_every))
            run = 0.0
            if validate is not None:
                with torch.no_grad():
                    entry["val_mse"] = float(validate())
            history.append(entry)
            if log is not None:
                log(entry)
    return history
