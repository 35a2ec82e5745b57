"""Executing an x-y plan with OGBench's ant: an inverse-dynamics MLP and a waypoint controller.

An AntMaze plan says where the torso should be (x-y), not how eight joints get it there.
`AntInverseDynamics` maps the 29-dim observation (qpos and qvel) and the plan's x-y a few
environment steps ahead, relative to the torso, to the 8-dim action (CompDiffuser's recipe: an
MLP from the observation and a near-future x-y to the action, trained by regression on the stitch
data). `AntController` keeps `WaypointController`'s progress index along the plan and its
deviation (what replanning reads) and asks the model for the action.

    python -m cofi.planning.ant_control train --data data/antmaze-giant-stitch-v0.npz --out runs/ant-invdyn
    python -m cofi.planning.ant_control eval --model runs/ant-invdyn --data data/antmaze-giant-stitch-v0-val.npz

``eval`` restores validation episodes to their first state and follows their own x-y path as the
plan: how often the controller ends within 0.5 (OGBench's goal tolerance) of where the episode
ended, the upper bound of what it can do with a composed plan.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..samplers.config import check_number
from .control import WaypointController, fit_actions

__all__ = ["OBS_DIM", "ACTION_DIM", "CHECKPOINT", "REACH_SCALE", "UPRIGHT", "AntInverseDynamics", "ant_controller", "torso_up", "AntController", "train_ant_inverse_dynamics",
           "load_ant_arrays", "follow_episodes"]

OBS_DIM = 29
ACTION_DIM = 8
EPISODE_STEPS = 201
TARGET_SCALE = 4.0  # one maze cell: relative targets enter the network in cells
REACH_QUANTILE = 0.9  # of the data's displacement over each offset: AntInverseDynamics.reach
REACH_SCALE = 1.0  # AntController follows targets within this fraction of the model's reach
UPRIGHT = 0.98  # torso_up above which AntController's tilt guard lets go
CHECKPOINT = "antmaze-invdyn"  # the shipped model, in src/cofi/checkpoints/


class AntInverseDynamics(nn.Module):
    """``a_t = tanh(MLP([z(obs_t), (xy_{t+k} − xy_t) / 4 for k in offsets]))``.

    Args:
        offsets: environment steps ahead of each x-y target, increasing.
        hidden, depth: ``depth`` GELU layers of ``hidden`` units.
        obs_mean, obs_std: standardisation of the 29 observation dims.
        reach: per offset, the farthest a target is given (maze units; None: no limit).
            Training sets it to the 90th percentile of how far the data's torso moved in that
            many steps: `AntController` pulls a plan point beyond it back toward the torso, so
            the model never reads a target faster than the data it learned from. Without it
            the ant flipped onto its back on fast stretches and turns of learned plans, which
            ended most failed closed-loop episodes (docs/planning.md).
    """

    def __init__(self, *, offsets: Sequence[int] = (8, 16), hidden: int = 512, depth: int = 3,
                 obs_mean=None, obs_std=None, reach: Sequence[float] | None = None) -> None:
        super().__init__()
        offsets = tuple(int(o) for o in offsets)
        if not offsets or any(o < 1 for o in offsets) or list(offsets) != sorted(set(offsets)):
            raise ValueError(f"offsets must be increasing ints >= 1, got {offsets!r}")
        if int(hidden) < 1 or int(depth) < 1:
            raise ValueError(f"hidden and depth must be >= 1, got {hidden}, {depth}")
        self.offsets, self.hidden, self.depth = offsets, int(hidden), int(depth)
        if reach is not None:
            reach = tuple(float(r) for r in reach)
            if len(reach) != len(offsets) or not all(r > 0 for r in reach):
                raise ValueError(f"reach must hold one positive distance per offset {offsets}, got {reach!r}")
        self.reach = reach
        mean = torch.zeros(OBS_DIM) if obs_mean is None else torch.as_tensor(np.asarray(obs_mean), dtype=torch.float32)
        std = torch.ones(OBS_DIM) if obs_std is None else torch.as_tensor(np.asarray(obs_std), dtype=torch.float32)
        if mean.shape != (OBS_DIM,) or std.shape != (OBS_DIM,) or not (std > 0).all():
            raise ValueError(f"obs_mean and obs_std must have shape ({OBS_DIM},), std > 0")
        self.register_buffer("obs_mean", mean.clone())
        self.register_buffer("obs_std", std.clone())
        layers, width = [], OBS_DIM + 2 * len(offsets)
        for _ in range(self.depth):
            layers += [nn.Linear(width, self.hidden), nn.GELU()]
            width = self.hidden
        layers.append(nn.Linear(width, ACTION_DIM))
        self.net = nn.Sequential(*layers)

    def config(self) -> dict:
        return dict(offsets=list(self.offsets), hidden=self.hidden, depth=self.depth,
                    reach=None if self.reach is None else list(self.reach))

    def inputs(self, obs: Tensor, targets: Tensor) -> Tensor:
        """The network's input from ``obs (..., 29)`` and x-y ``targets (..., n, 2)``."""
        rel = (targets - obs[..., None, :2]) / TARGET_SCALE
        return torch.cat([(obs - self.obs_mean) / self.obs_std, rel.flatten(-2)], -1)

    def forward(self, obs: Tensor, targets: Tensor) -> Tensor:
        n = len(self.offsets)
        if obs.shape[-1] != OBS_DIM or tuple(targets.shape[-2:]) != (n, 2) or targets.shape[:-2] != obs.shape[:-1]:
            raise ValueError(f"need obs (..., {OBS_DIM}) and targets (..., {n}, 2); got {tuple(obs.shape)}, "
                             f"{tuple(targets.shape)}")
        return torch.tanh(self.net(self.inputs(obs, targets)))

    @torch.no_grad()
    def act(self, obs, targets) -> np.ndarray:
        """One action ``(8,)`` for numpy ``obs (29,)`` and ``targets (n, 2)``."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        t = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        return self(o, t).double().numpy()

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        from safetensors.torch import save

        from ..priors.trajectory import atomic_write

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dict(extra or {}) | dict(model="AntInverseDynamics", obs_dim=OBS_DIM, action_dim=ACTION_DIM,
                                       **self.config())
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(d / "model.safetensors", save(tensors, metadata={"format": "pt"}))
        atomic_write(d / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path = CHECKPOINT) -> "AntInverseDynamics":
        """Load a `save_pretrained` directory, or the shipped model by its name ``antmaze-invdyn``."""
        from ..priors.trajectory import _PACKAGE_DIR, read_json, read_safetensors

        d = _PACKAGE_DIR / CHECKPOINT if str(directory) == CHECKPOINT else Path(directory)
        if not (d / "model.safetensors").is_file() or not (d / "config.json").is_file():
            raise FileNotFoundError(f"no ant inverse-dynamics checkpoint at {directory!r} (need model.safetensors "
                                    f"and config.json); shipped name: {CHECKPOINT}")
        cfg = read_json(d / "config.json")
        model = cls(**{k: cfg[k] for k in ("offsets", "hidden", "depth")}, reach=cfg.get("reach"))
        model.load_state_dict(read_safetensors(d / "model.safetensors")[0])
        model.train_config = cfg
        return model.eval().requires_grad_(False)


class AntController(WaypointController):
    """Follow an x-y plan ``(L, 2)`` (one point per env step) with an `AntInverseDynamics` model.

    Progress and deviation are `WaypointController`'s (nearest plan point within ``window``
    points ahead of the progress index); the model's targets are the plan points its offsets
    ahead of the progress index (the plan's end beyond it). A target farther from the torso
    than the model's ``reach`` × ``reach_scale`` (if the model has a reach) is replaced:
      - ``along_plan=False`` (default), or when the plan at the progress index is itself out of
        reach (the ant is off the plan): by the point at that distance on the line from the
        torso to the target (a chord, which cuts corners);
      - ``along_plan=True``: by the point where the plan, walked from the progress index, first
        leaves that distance (interpolated between plan points), so the target stays on the
        plan and follows it around a corner.
    The defaults (the full reach, the chord) are what the AntMaze results use; 0.8 of the reach
    along the plan saved the episodes where the ant had flipped at a wall corner, but lost
    others (AntMaze-Giant CoFi 15/20 against 18/20, docs/planning.md).

    ``tilt_guard``: when the torso's up axis (`torso_up`) falls below it, the controller relaxes
    every joint (action 0) until the torso is back above ``UPRIGHT`` (0.98), rather than keep
    pushing; an ant that catches a leg on a wall corner tips over within ~10 steps of the first
    tilt. None (the default): off. At 0.95 it did not make AntMaze-Giant episodes fall less
    often (3 falls in 26 episodes against 2 without it, docs/planning.md) and slowed the ant.
    """

    def __init__(self, model: AntInverseDynamics, plan, *, window: int = 40, reach_scale: float = REACH_SCALE,
                 along_plan: bool = False, tilt_guard: float | None = None) -> None:
        super().__init__(plan, ahead=model.offsets[-1], window=window)
        self.model = model
        check_number("reach_scale", reach_scale, open_lo=True)
        if tilt_guard is not None:
            check_number("tilt_guard", tilt_guard, -1.0, UPRIGHT)
        self.reach_scale, self.along_plan = float(reach_scale), bool(along_plan)
        self.tilt_guard = None if tilt_guard is None else float(tilt_guard)
        self.relaxed = False  # the guard holds the joints relaxed
        self.relaxed_steps = 0
        self._reach = None if model.reach is None else np.asarray(model.reach, dtype=np.float64) * self.reach_scale

    def _along(self, xy: np.ndarray, end: int, r: float) -> np.ndarray | None:
        """Where the plan from the progress index to ``end`` first gets farther than ``r`` from
        ``xy`` (None if its first point already is)."""
        seg = self.plan[self.index:end + 1]
        d = np.linalg.norm(seg - xy, axis=1)
        if d[0] > r:
            return None
        e = int(np.argmax(d > r))  # first point out of reach (>= 1)
        f, g = seg[e - 1] - xy, seg[e] - seg[e - 1]
        gg, fg = float(g @ g), float(f @ g)
        u = (-fg + np.sqrt(max(fg * fg - gg * (float(f @ f) - r * r), 0.0))) / gg
        return seg[e - 1] + min(max(u, 0.0), 1.0) * g

    def act(self, obs) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        xy = obs[:2]
        self.update(xy)
        last = len(self.plan) - 1
        ends = [min(self.index + k, last) for k in self.model.offsets]
        targets = self.plan[ends]  # a copy (fancy indexing)
        if self._reach is not None:
            for j, (end, r) in enumerate(zip(ends, self._reach)):
                dist = float(np.linalg.norm(targets[j] - xy))
                if dist <= r:
                    continue
                on_plan = self._along(xy, end, r) if self.along_plan else None
                targets[j] = on_plan if on_plan is not None else xy + (targets[j] - xy) * (r / dist)
        self.target = targets[-1]
        if self.tilt_guard is not None:
            up = torso_up(obs)
            self.relaxed = up < self.tilt_guard or (self.relaxed and up < UPRIGHT)
            if self.relaxed:
                self.relaxed_steps += 1
                return np.zeros(ACTION_DIM)
        return self.model.act(obs, targets)


def torso_up(qpos) -> float:
    """The z component of the torso's up axis from the ant's ``qpos`` (quaternion w, x, y, z at
    3:7): 1 upright, below 0 on its back (an ant on its back cannot right itself)."""
    w, x, y, z = (float(v) for v in np.asarray(qpos)[3:7])
    return 1.0 - 2.0 * (x * x + y * y)


def ant_controller(model: AntInverseDynamics | str | Path = CHECKPOINT, *, window: int = 40,
                   reach_scale: float = REACH_SCALE, along_plan: bool = False, tilt_guard: float | None = None):
    """A controller factory for `cofi.planning.run_episode` / `evaluate`: ``plan_xy ->``
    `AntController` with ``model`` (an `AntInverseDynamics`, a checkpoint directory, or the
    shipped ``antmaze-invdyn``) and the controller's ``window``, ``reach_scale``, ``along_plan``
    and ``tilt_guard``."""
    if not isinstance(model, AntInverseDynamics):
        model = AntInverseDynamics.from_pretrained(model)
    AntController(model, np.zeros((1, 2)), window=window, reach_scale=reach_scale, along_plan=along_plan,
                  tilt_guard=tilt_guard)  # the arguments are checked now, not at the first plan

    def factory(plan) -> AntController:
        return AntController(model, plan, window=window, reach_scale=reach_scale, along_plan=along_plan,
                             tilt_guard=tilt_guard)

    factory.model = model
    return factory


def load_ant_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """An OGBench AntMaze file as arrays: observations, actions, qpos, qvel (if stored), in
    episodes of 201 steps."""
    z = np.load(path)
    out = {k: z[k] for k in ("observations", "actions", "qpos", "qvel") if k in z.files}
    if out["observations"].shape[1] != OBS_DIM or len(out["observations"]) % EPISODE_STEPS:
        raise ValueError(f"{path}: expected AntMaze stitch data ({OBS_DIM}-dim observations in episodes of "
                         f"{EPISODE_STEPS} steps), got {out['observations'].shape}")
    return out


def _paths(paths) -> list[str]:
    """One path or several, as a list of strings."""
    return [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]


def _load_many(paths) -> dict[str, np.ndarray]:
    """`load_ant_arrays` of one path or of several, concatenated (whole episodes each)."""
    paths = _paths(paths)
    if not paths:
        raise ValueError("no AntMaze data files given")
    arrays = [load_ant_arrays(p) for p in paths]
    return {k: np.concatenate([a[k] for a in arrays]) for k in ("observations", "actions")}


def _target_rows(n: int, offsets: Sequence[int]) -> np.ndarray:
    """Row of each target: ``t + k`` within the same 201-step episode (its last row beyond)."""
    t = np.arange(n)
    end = (t // EPISODE_STEPS + 1) * EPISODE_STEPS - 1
    return np.minimum(t[:, None] + np.asarray(offsets)[None], end[:, None])


def train_ant_inverse_dynamics(data: str | Path, out_dir: str | Path | None = None, *,
                               offsets: Sequence[int] = (8, 16), hidden: int = 512, depth: int = 3,
                               steps: int = 50_000, batch: int = 512, lr: float = 1e-3, seed: int = 0,
                               val: str | Path | None = None, threads: int = 1, command: str | None = None,
                               log_every: int = 5000, log=print) -> AntInverseDynamics:
    """Regress the recorded actions on (observation, x-y ``offsets`` steps ahead): AdamW, cosine
    decay over ``steps``; the validation MSE on ``val`` (AntMaze ``-val`` files) is logged.
    ``data`` and ``val``: one file or a list (the ant's dynamics do not depend on the maze)."""
    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    g = torch.Generator().manual_seed(int(seed))
    d = _load_many(data)
    obs = torch.from_numpy(d["observations"].astype(np.float32))
    act = torch.from_numpy(d["actions"].astype(np.float32))
    ahead = obs[torch.from_numpy(_target_rows(len(obs), offsets)), :2]  # (M, offsets, 2)
    moved = torch.linalg.vector_norm(ahead - obs[:, None, :2], dim=-1)
    every = max(1, len(moved) // 200_000)  # torch.quantile takes at most 2**24 values; a subsample is plenty
    reach = [float(torch.quantile(moved[::every, j], REACH_QUANTILE)) for j in range(len(offsets))]
    model = AntInverseDynamics(offsets=offsets, hidden=hidden, depth=depth, obs_mean=obs.mean(0),
                               obs_std=obs.std(0).clamp_min(1e-2), reach=reach)
    x_all = model.inputs(obs, ahead)
    vx = vy = None
    if val is not None:
        v = _load_many(val)
        vo = torch.from_numpy(v["observations"].astype(np.float32))
        vx = model.inputs(vo, vo[torch.from_numpy(_target_rows(len(vo), offsets))][..., :2])
        vy = torch.from_numpy(v["actions"].astype(np.float32))
    t0 = time.perf_counter()
    history = fit_actions(model.net, lambda i: x_all[i], act, steps=steps, batch=batch, lr=lr, generator=g,
                          log_every=log_every,
                          validate=None if vx is None else (lambda: torch.mean((torch.tanh(model.net(vx)) - vy) ** 2)),
                          log=lambda e: log(json.dumps(e | dict(wall_s=round(time.perf_counter() - t0, 1)))))
    model.eval().requires_grad_(False)
    info = dict(command=command, data=_paths(data), rows=len(obs), steps=steps, batch=batch, lr=lr, seed=seed,
                val=None if val is None else _paths(val), history=history, train_s=round(time.perf_counter() - t0, 1),
                params=sum(p.numel() for p in model.net.parameters()), torch=torch.__version__)
    model.train_config = info
    if out_dir is not None:
        model.save_pretrained(out_dir, extra=info)
    return model


def follow_episodes(model: AntInverseDynamics, data: str | Path, env_name: str, *, episodes: int = 50,
                    seed: int = 0, tol: float = 0.5) -> dict:
    """Restore ``episodes`` random episodes of ``data`` to their first state, give the controller
    their own x-y path as the plan for 201 steps, and count how often the ant ends within ``tol``
    of the path's end (and the median end distance), and how often it ends on its back (``fell``)."""
    from .data import make_data_env

    d = load_ant_arrays(data)
    if "qpos" not in d or "qvel" not in d:
        raise ValueError(f"{data}: needs qpos and qvel to restore episodes")
    env = make_data_env(env_name)
    rng = np.random.default_rng(seed)
    n_eps = len(d["observations"]) // EPISODE_STEPS
    picks = rng.choice(n_eps, size=min(episodes, n_eps), replace=False)
    ends, fell = [], 0
    for e in picks:
        sl = slice(e * EPISODE_STEPS, (e + 1) * EPISODE_STEPS)
        env.reset(seed=int(rng.integers(2**31)))
        u = env.unwrapped
        u.set_state(d["qpos"][sl][0].astype(np.float64), d["qvel"][sl][0].astype(np.float64))
        ob = u.get_ob()
        ctrl = AntController(model, d["observations"][sl][:, :2].astype(np.float64))
        for _ in range(EPISODE_STEPS - 1):
            ob, *_ = env.step(ctrl.act(ob))
        ends.append(float(np.linalg.norm(np.asarray(ob[:2]) - d["observations"][sl][-1, :2])))
        fell += torso_up(u.data.qpos) < 0
    ends = np.asarray(ends)
    return dict(episodes=len(ends), reached=int((ends <= tol).sum()), rate=float((ends <= tol).mean()),
                end_distance_median=float(np.median(ends)), fell=int(fell))


def main(argv: Sequence[str] | None = None) -> None:
    import sys

    p = argparse.ArgumentParser(prog="python -m cofi.planning.ant_control", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the ant's inverse dynamics on AntMaze stitch data")
    t.add_argument("--data", required=True, nargs="+", help="AntMaze stitch files (any of the three mazes)")
    t.add_argument("--val", default=None, nargs="+", help="their -val files")
    t.add_argument("--out", required=True)
    t.add_argument("--offsets", nargs="+", type=int, default=[8, 16])
    t.add_argument("--hidden", type=int, default=512)
    t.add_argument("--depth", type=int, default=3)
    t.add_argument("--steps", type=int, default=50_000)
    t.add_argument("--batch", type=int, default=512)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("eval", help="follow held-out episodes' own paths (the controller's upper bound)")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--env", default=None, help="default: from the data file's name")
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "train":
        train_ant_inverse_dynamics(args.data, args.out, offsets=args.offsets, hidden=args.hidden, depth=args.depth,
                                   steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, val=args.val,
                                   threads=args.threads,
                                   command="python -m cofi.planning.ant_control " + " ".join(argv or sys.argv[1:]))
    else:
        torch.set_num_threads(1)
        env = args.env or Path(args.data).name.replace("-val.npz", "").replace(".npz", "")
        print(json.dumps(follow_episodes(AntInverseDynamics.from_pretrained(args.model), args.data, env,
                                         episodes=args.episodes, seed=args.seed)))


if __name__ == "__main__":
    main()
