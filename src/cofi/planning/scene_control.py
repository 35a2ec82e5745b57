"""Executing a Scene-Play plan: an inverse-dynamics MLP and a plan-tracking controller.

A plan in the 14-dim planning space (`cofi.planning.scene.SCENE_PLAN_DIMS`: effector xyz, cube
xyz, cube yaw cos/sin, the two buttons' one-hots, drawer, window) says where the scene should
be, not how the arm gets it there. `InverseDynamics` maps the current 40-dim observation and a
*subgoal* -- the plan's 14 dims ``k`` environment steps ahead -- to the 5-dim action
(``dx, dy, dz, dyaw, dgripper`` in [-1, 1]). It is a plain MLP trained by regression (MSE) on
the play data's ``(observation_t, plan_dims(observation_{t+k}), action_t)``; inputs are
standardised by the training data's per-dimension mean and std, which are stored with the
weights. `SceneController` walks along a plan and asks the model for the next action, and
exposes the tracked plan point (``index``) and the distance from it (``deviation``) to a
replanning rule.

    python -m cofi.planning.scene_control train --data data/scene-play-v0.npz --out runs/invdyn
    python -m cofi.planning.scene_control eval --model scene-play-invdyn --data data/scene-play-v0-val.npz

``--data`` is an OGBench-format file (`cofi.planning.scene.generate_scene`) or a
``scene-play-v0.parts`` folder of chunks (``train-*.npz`` / ``val-*.npz``, the split given by
``--split``). The shipped checkpoint ``scene-play-invdyn`` (``src/cofi/checkpoints/``) records
in its ``config.json`` the command that made it and the measured reproduction rates.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .control import fit_actions
from .scene import DRAWER_SCALE, OBS_DIM, OBS_LAYOUT, SCENE_PLAN_DIMS, WINDOW_SCALE, XYZ_CENTER, XYZ_SCALE

__all__ = [
    "InverseDynamics", "SceneController", "train_inverse_dynamics", "load_scene_arrays", "episode_bounds",
    "reproduce_segments", "object_state", "success_conditions", "interpolate_plan", "GRIPPER_DIM", "ACTION_DIM", "CHECKPOINT", "main",
]

ACTION_DIM = 5
GRIPPER_DIM = 17  # obs[17]: gripper opening, clip(qpos / 0.8, 0, 1) * 3
CHECKPOINT = "scene-play-invdyn"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
_BUTTON_PLAN = slice(8, 12)  # the buttons' one-hots inside the 14 plan dims
_OBJECTS = slice(3, 14)  # the object dims inside the 14 plan dims (cube xyz and yaw, buttons, drawer, window)
_STD_FLOOR = 1e-2
_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


# --------------------------------------------------------------------------- the model
class InverseDynamics(nn.Module):
    """``a_t = tanh(MLP([z(obs_t), z(goal_1), ..., z(goal_n)]))``.

    Args:
        offsets: the subgoals' distances ahead, in environment steps (``(k,)`` for a single
            subgoal k steps ahead).
        gripper: whether each subgoal also holds the gripper opening ``obs[17]`` (a 15th
            dim); the 14-dim planning space does not have it, so a plan must carry it.
        hidden, depth: ``depth`` hidden layers of ``hidden`` units.
        activation: ``"gelu"`` or ``"relu"``.
        obs_mean, obs_std: standardisation of the 40 observation dims (``z(x) = (x - mean) /
            std``); subgoal dims use the statistics of the observation dims they copy.

    Inputs and outputs are in environment units: ``forward(obs (..., 40), goal (..., n, g))``
    with ``g = 14`` (15 with ``gripper``) returns actions ``(..., 5)`` in ``(-1, 1)``.
    """

    def __init__(self, *, offsets: Sequence[int] = (16,), gripper: bool = False, hidden: int = 256,
                 depth: int = 3, activation: str = "gelu", obs_mean=None, obs_std=None) -> None:
        super().__init__()
        offsets = tuple(int(o) for o in offsets)
        if not offsets or any(o < 1 for o in offsets) or list(offsets) != sorted(set(offsets)):
            raise ValueError(f"offsets must be increasing ints >= 1, got {offsets!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if int(hidden) < 1 or int(depth) < 1:
            raise ValueError(f"hidden and depth must be >= 1, got {hidden}, {depth}")
        self.offsets = offsets
        self.gripper = bool(gripper)
        self.hidden, self.depth, self.activation = int(hidden), int(depth), activation
        self.goal_dims = tuple(SCENE_PLAN_DIMS) + ((GRIPPER_DIM,) if self.gripper else ())
        mean = torch.zeros(OBS_DIM) if obs_mean is None else torch.as_tensor(np.asarray(obs_mean), dtype=torch.float32)
        std = torch.ones(OBS_DIM) if obs_std is None else torch.as_tensor(np.asarray(obs_std), dtype=torch.float32)
        if mean.shape != (OBS_DIM,) or std.shape != (OBS_DIM,):
            raise ValueError(f"obs_mean and obs_std must have shape ({OBS_DIM},), got {tuple(mean.shape)}, "
                             f"{tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("obs_mean must be finite and obs_std finite and > 0")
        self.register_buffer("obs_mean", mean.clone())
        self.register_buffer("obs_std", std.clone())
        layers, width = [], OBS_DIM + len(offsets) * len(self.goal_dims)
        for _ in range(self.depth):
            layers += [nn.Linear(width, self.hidden), _ACTIVATIONS[activation]()]
            width = self.hidden
        layers.append(nn.Linear(width, ACTION_DIM))
        self.net = nn.Sequential(*layers)

    @property
    def k(self) -> int:
        """The farthest subgoal offset (environment steps)."""
        return self.offsets[-1]

    @property
    def goal_dim(self) -> int:
        return len(self.goal_dims)

    @property
    def plan_std(self) -> Tensor:
        """The data std of the 14 planning dims: the metric of `SceneController.deviation`."""
        return self.obs_std[list(SCENE_PLAN_DIMS)]

    def config(self) -> dict:
        return dict(offsets=list(self.offsets), gripper=self.gripper, hidden=self.hidden, depth=self.depth,
                    activation=self.activation)

    # ------------------------------------------------------------------ standardisation
    def normalize_obs(self, obs: Tensor) -> Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def unnormalize_obs(self, z: Tensor) -> Tensor:
        return z * self.obs_std + self.obs_mean

    def normalize_goal(self, goal: Tensor) -> Tensor:
        dims = list(self.goal_dims)
        return (goal - self.obs_mean[dims]) / self.obs_std[dims]

    def unnormalize_goal(self, z: Tensor) -> Tensor:
        dims = list(self.goal_dims)
        return z * self.obs_std[dims] + self.obs_mean[dims]

    # ------------------------------------------------------------------ forward
    def forward(self, obs: Tensor, goal: Tensor) -> Tensor:
        """Actions ``(..., 5)`` from observations ``(..., 40)`` and subgoals ``(..., n, g)``
        (``(..., g)`` accepted when there is a single offset), all in environment units."""
        if goal.dim() == obs.dim():
            goal = goal.unsqueeze(-2)
        n, g = len(self.offsets), self.goal_dim
        if obs.shape[-1] != OBS_DIM or tuple(goal.shape[-2:]) != (n, g) or goal.shape[:-2] != obs.shape[:-1]:
            raise ValueError(f"need obs (..., {OBS_DIM}) and goal (..., {n}, {g}); got {tuple(obs.shape)}, "
                             f"{tuple(goal.shape)}")
        x = torch.cat([self.normalize_obs(obs), self.normalize_goal(goal).flatten(-2)], -1)
        return torch.tanh(self.net(x))

    @torch.no_grad()
    def act(self, obs, goal) -> np.ndarray:
        """One action ``(5,)`` (float64, in [-1, 1]) for numpy ``obs (40,)`` and ``goal (n, g)``."""
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32)).to(self.obs_mean.device)
        gl = torch.as_tensor(np.asarray(goal, dtype=np.float32)).to(self.obs_mean.device)
        return self(o, gl).double().cpu().numpy()

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """``model.safetensors`` (weights and standardisation) and ``config.json``, each written
        atomically (temporary file, then `os.replace`)."""
        from safetensors.torch import save

        from ..priors.trajectory import atomic_write

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dict(extra or {})
        cfg.update(model="InverseDynamics", obs_dim=OBS_DIM, action_dim=ACTION_DIM, goal_dims=list(self.goal_dims),
                   k=self.k, **self.config())
        text = json.dumps(cfg, indent=2) + "\n"
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(d / "model.safetensors", save(tensors, metadata={"format": "pt"}))
        atomic_write(d / "config.json", text.encode())
        return d

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path = CHECKPOINT, device: str | torch.device = "cpu"
                        ) -> "InverseDynamics":
        """Load the shipped checkpoint (``"scene-play-invdyn"``) or a directory written by
        `save_pretrained`; the model is in eval mode with gradients off."""
        from ..priors.trajectory import read_json, read_safetensors

        d = _PACKAGE_DIR / CHECKPOINT if str(name_or_dir) == CHECKPOINT else Path(name_or_dir)
        if not (d / "model.safetensors").is_file() or not (d / "config.json").is_file():
            raise FileNotFoundError(f"no checkpoint at {name_or_dir!r} (need model.safetensors and config.json); "
                                    f"shipped name: {CHECKPOINT}")
        cfg = read_json(d / "config.json")
        try:
            model = cls(**{k: cfg[k] for k in ("offsets", "gripper", "hidden", "depth", "activation")})
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{d / 'config.json'}: invalid model config: {e!r}") from e
        tensors, _ = read_safetensors(d / "model.safetensors")
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            raise ValueError(f"{d / 'model.safetensors'}: weights do not fit {d / 'config.json'}: {e}") from e
        model.train_config = cfg
        return model.eval().requires_grad_(False).to(device)


# --------------------------------------------------------------------------- the controller
def interpolate_plan(plan, stride: int) -> np.ndarray:
    """A plan ``(L, g)`` at one point per ``stride`` env steps -> ``((L-1)·stride + 1, g)`` at one
    point per step (linear; the button one-hots, plan dims 8-11, are held from the earlier point
    until the later one, so they stay one-hots)."""
    plan = np.asarray(plan, dtype=np.float64)
    if stride == 1 or len(plan) == 1:
        return plan.copy()
    L = len(plan)
    u = np.arange((L - 1) * stride + 1) / stride
    i0 = np.minimum(np.floor(u).astype(int), L - 2)
    w = (u - i0)[:, None]
    dense = (1 - w) * plan[i0] + w * plan[i0 + 1]
    held = np.minimum(np.floor(u + 1e-9).astype(int), L - 1)
    dense[:, _BUTTON_PLAN] = plan[held][:, _BUTTON_PLAN]
    return dense


class SceneController:
    """Execute a plan ``(L, 14)`` (env units, one point per ``stride`` env steps; ``(L, 15)`` with
    the gripper opening last for a model trained with ``gripper=True``).

    The plan is interpolated to one point per env step. A progress position ``pos`` (env steps
    along the plan) is kept; each `act` feeds the model the plan ``pos + offset`` steps ahead
    (clamped to the plan's end, which is then held) and advances ``pos``:

    * ``tracking="time"``: ``pos`` is the number of steps taken (the plan's own clock).
    * ``tracking="nearest"``: ``pos`` moves to the plan point nearest the current state (in the
      normalised metric below) among the next ``window`` steps, never backwards; ties go to
      the latest point, so that a plan holding still does not hold the controller.

    ``index`` is ``pos`` in plan points (``pos // stride``), ``deviation`` how far the state is
    from ``plan[pos]``, measured before the step (``metric``): ``"std"``, the RMS over the 14
    planning dims of ``(state - plan[pos]) / std`` (std: the training data's per-dimension std,
    `InverseDynamics.plan_std`); ``"env"``, the Euclidean distance in env units over the 14
    dims (the paper's replanning distance, Table 4: 2.0 for Scene); ``"objects"``, the largest
    deviation of an object dimension (cube xyz and yaw, buttons, drawer, window: plan dims 3-13)
    in standard deviations, against the plan points from ``lag`` steps behind ``pos`` to ``pos``,
    whichever is closest: the arm may run late without counting, a button that was not pressed
    or a cube that was dropped counts at once. ``cube_deviation`` is measured whatever the
    metric: the distance (plan units, 10 per metre) from the cube to the plan's cube over the
    same lagging stretch, whichever point is closest (a grasp that missed shows here at once,
    while the RMS over 14 dims may stay small). ``done`` says the plan's end has been reached.
    ``tracking="nearest"`` always matches points in the ``std`` metric.
    """

    def __init__(self, model: InverseDynamics, plan, *, stride: int = 4, tracking: str = "time",
                 window: int = 16, tie: float = 0.05, metric: str = "std", lag: int = 32) -> None:
        plan = np.asarray(plan, dtype=np.float64)
        g = model.goal_dim
        if plan.ndim != 2 or plan.shape[1] != g or len(plan) < 1:
            raise ValueError(f"plan must have shape (L, {g}) with L >= 1 for this model, got {plan.shape}")
        if not np.isfinite(plan).all():
            raise ValueError("plan contains NaN or inf")
        if tracking not in ("time", "nearest"):
            raise ValueError(f"tracking must be 'time' or 'nearest', got {tracking!r}")
        if metric not in ("std", "env", "objects"):
            raise ValueError(f"metric must be 'std', 'env' or 'objects', got {metric!r}")
        if int(lag) < 0:
            raise ValueError(f"lag must be >= 0, got {lag}")
        if int(stride) < 1 or int(window) < 1:
            raise ValueError(f"stride and window must be >= 1, got {stride}, {window}")
        self.model = model
        self.plan = plan
        self.stride = int(stride)
        self.tracking = tracking
        self.window = int(window)
        self.tie = float(tie)
        self.metric = metric
        self.lag = int(lag)
        self.dense = interpolate_plan(plan, self.stride)
        self._std = model.plan_std.double().cpu().numpy()
        self.pos = 0
        self.steps = 0
        self.deviation = 0.0
        self.cube_deviation = 0.0
        self.goal = self.dense[:1]

    @property
    def index(self) -> int:
        """The tracked plan point (plan index, at the plan's stride)."""
        return min(self.pos // self.stride, len(self.plan) - 1)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.dense) - 1

    def _dist(self, state: np.ndarray, points: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(((points[:, :14] - state) / self._std) ** 2, axis=-1))

    def update(self, obs) -> None:
        """Move ``pos`` for the current observation ``(40,)`` and measure ``deviation``."""
        state = np.asarray(obs, dtype=np.float64)[list(SCENE_PLAN_DIMS)]
        last = len(self.dense) - 1
        if self.tracking == "time":
            self.pos = min(self.steps, last)
        else:
            hi = min(last, self.pos + self.window)
            d = self._dist(state, self.dense[self.pos:hi + 1])
            self.pos += int(np.nonzero(d <= d.min() + self.tie)[0][-1])
        here = self.dense[self.pos, :14]
        recent = self.dense[max(0, self.pos - self.lag):self.pos + 1, 3:6]
        self.cube_deviation = float(np.linalg.norm(recent - state[3:6], axis=-1).min())
        if self.metric == "env":
            self.deviation = float(np.linalg.norm(state - here))
        elif self.metric == "objects":
            near = self.dense[max(0, self.pos - self.lag):self.pos + 1, _OBJECTS]
            off = np.abs(near - state[_OBJECTS]) / self._std[_OBJECTS]
            self.deviation = float(off.max(1).min())
        else:
            self.deviation = float(self._dist(state, here[None])[0])

    def act(self, obs) -> np.ndarray:
        """The action ``(5,)`` for observation ``obs (40,)``; advances the controller one step."""
        self.update(obs)
        last = len(self.dense) - 1
        self.goal = self.dense[[min(self.pos + o, last) for o in self.model.offsets]]
        self.steps += 1
        return self.model.act(obs, self.goal)


# --------------------------------------------------------------------------- data
_ARRAY_KEYS = ("observations", "actions", "terminals", "qpos", "qvel", "button_states")


def load_scene_arrays(path: str | Path, split: str = "train", keys: Sequence[str] = _ARRAY_KEYS,
                      max_episodes: int | None = None) -> dict[str, np.ndarray]:
    """Arrays of an OGBench-format Scene file, or of the ``<split>-*.npz`` chunks of a
    ``scene-play-v0.parts`` folder (in index order). ``max_episodes`` keeps the first episodes."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(f"{split}-*.npz"))
        if not files:
            raise FileNotFoundError(f"no {split}-*.npz chunks in {p}")
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"no Scene data at {p}")
    out: dict[str, list] = {k: [] for k in keys}
    n_ep = 0
    for f in files:
        with np.load(f) as z:
            arrays = {k: z[k] for k in set(keys) | {"terminals"}}
        ends = np.flatnonzero(arrays["terminals"])
        if max_episodes is not None and n_ep + len(ends) > max_episodes:
            rows = ends[max_episodes - n_ep - 1] + 1
            arrays = {k: v[:rows] for k, v in arrays.items()}
            ends = ends[: max_episodes - n_ep]
        for k in keys:
            out[k].append(arrays[k])
        n_ep += len(ends)
        if max_episodes is not None and n_ep >= max_episodes:
            break
    data = {k: np.concatenate(v) for k, v in out.items()}
    data["files"] = np.array([str(f) for f in files])
    return data


def episode_bounds(terminals) -> np.ndarray:
    """``(E, 2)`` [start, end] row (inclusive) of each episode from the ``terminals`` flags."""
    ends = np.flatnonzero(np.asarray(terminals))
    if len(ends) == 0 or ends[-1] != len(terminals) - 1:
        raise ValueError("the data must end with a terminal row")
    return np.stack([np.r_[0, ends[:-1] + 1], ends], 1)


def _goal_rows(terminals, offsets: Sequence[int]) -> np.ndarray:
    """``(N, n)``: row ``t + offset`` of each row, clamped to its episode's last row."""
    b = episode_bounds(terminals)
    last = np.repeat(b[:, 1], b[:, 1] - b[:, 0] + 1)
    t = np.arange(len(terminals))
    return np.minimum(t[:, None] + np.asarray(offsets)[None], last[:, None])


# --------------------------------------------------------------------------- training
def train_inverse_dynamics(data: str | Path, out_dir: str | Path | None = None, *, k: int | Sequence[int] = 16,
                           gripper: bool = False, steps: int = 20000, batch: int = 1024, lr: float = 1e-3,
                           seed: int = 0, val: str | Path | None = None, val_split: str = "val",
                           hidden: int = 256, depth: int = 3, activation: str = "gelu",
                           max_episodes: int | None = None, threads: int = 1, command: str | None = None,
                           log_every: int = 1000, progress: bool = True, goal_noise: float = 0.0) -> InverseDynamics:
    """Train an `InverseDynamics` model by MSE regression of the recorded actions.

    Args:
        data: a Scene file or a ``scene-play-v0.parts`` folder (its ``train-*`` chunks).
        out_dir: where to `save_pretrained` (skipped when None).
        k: the subgoal offset(s) in environment steps (an int or increasing ints).
        gripper: add the gripper opening ``obs[17]`` to each subgoal.
        steps, batch, lr, seed: Adam with cosine decay to 0 over ``steps`` steps.
        val: a held-out Scene file or parts folder (its ``val_split`` chunks) whose MSE is
            reported; None: none.
        max_episodes: train on the first episodes only.
        threads: `torch.set_num_threads`.
        command: recorded in ``config.json``.
        goal_noise: standard deviation of Gaussian noise added to the standardised subgoals
            during training (0: none). Composed plans are less precise than data, e.g. the
            effector 1–3 cm off the cube it carries; a model that cannot trust its subgoal to
            the millimetre learns to read the cube's position from the observation.
    """
    if not (isinstance(goal_noise, (int, float)) and math.isfinite(goal_noise) and goal_noise >= 0):
        raise ValueError(f"goal_noise must be a finite number >= 0, got {goal_noise!r}")
    torch.set_num_threads(int(threads))
    offsets = (int(k),) if isinstance(k, (int, np.integer)) else tuple(int(o) for o in k)
    t0 = time.perf_counter()
    log = print if progress else (lambda *a, **kw: None)
    d = load_scene_arrays(data, "train", ("observations", "actions", "terminals"), max_episodes)
    obs = torch.from_numpy(d["observations"].astype(np.float32))
    act = torch.from_numpy(d["actions"].astype(np.float32))
    rows = torch.from_numpy(_goal_rows(d["terminals"], offsets))
    n_episodes = int(d["terminals"].sum())
    mean = obs.mean(0)
    std = obs.std(0).clamp_min(_STD_FLOOR)
    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    model = InverseDynamics(offsets=offsets, gripper=gripper, hidden=hidden, depth=depth, activation=activation,
                            obs_mean=mean, obs_std=std)
    goal_dims = list(model.goal_dims)
    # standardise once: the network sees z-scores, the loss is on raw actions
    zobs = model.normalize_obs(obs)
    zgoal_all = zobs[:, goal_dims]
    vdata = None
    if val is not None:
        v = load_scene_arrays(val, val_split, ("observations", "actions", "terminals"))
        vo = torch.from_numpy(v["observations"].astype(np.float32))
        vr = torch.from_numpy(_goal_rows(v["terminals"], offsets))
        sel = torch.randperm(len(vo), generator=torch.Generator().manual_seed(1))[:50000]
        vdata = (vo[sel], vo[vr[sel]][..., goal_dims], torch.from_numpy(v["actions"].astype(np.float32))[sel])
    log(f"invdyn: {n_episodes} episodes ({len(obs)} rows) from {data}, offsets {offsets}, gripper {gripper}, "
        f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    t1 = time.perf_counter()

    def inputs(i):
        zg = zgoal_all[rows[i]].flatten(1)
        if goal_noise > 0:
            zg = zg + goal_noise * torch.randn(zg.shape, generator=g)
        return torch.cat([zobs[i], zg], 1)

    def validate():
        return torch.mean((model(vdata[0], vdata[1]) - vdata[2]) ** 2)

    def report(entry):
        log(f"invdyn: step {entry['step']}/{steps} " + " ".join(f"{a} {b:.5f}" for a, b in entry.items() if a != "step")
            + f" ({time.perf_counter() - t1:.0f} s)", flush=True)

    model.train()
    history = fit_actions(model.net, inputs, act, steps=steps, batch=batch, lr=lr, generator=g, log_every=log_every,
                          validate=None if vdata is None else validate, log=report)
    model.eval().requires_grad_(False)
    info = dict(command=command, data=str(data), episodes=n_episodes, rows=len(obs), steps=steps, batch=batch,
                lr=lr, seed=seed, goal_noise=float(goal_noise), val=None if val is None else str(val),
                train_mse=history[-1]["train_mse"],
                val_mse=history[-1].get("val_mse"), train_s=round(time.perf_counter() - t1, 1),
                params=sum(p.numel() for p in model.net.parameters()), torch=torch.__version__)
    model.train_config = info
    if out_dir is not None:
        model.save_pretrained(out_dir, extra=info)
        log(f"invdyn: wrote {out_dir}", flush=True)
    return model


# --------------------------------------------------------------------------- evaluation
def _restore(env, qpos, qvel, button_states) -> np.ndarray:
    import mujoco

    u = env.unwrapped
    u.set_state(np.asarray(qpos, np.float64), np.asarray(qvel, np.float64), np.asarray(button_states).astype(int))
    mujoco.mj_rnePostConstraint(u._model, u._data)  # contact forces: the gripper-contact observation
    return u.compute_observation()


def _object_state(env) -> dict:
    d = env.unwrapped._data
    return dict(cube=d.joint("object_joint_0").qpos[:3].copy(), buttons=env.unwrapped._cur_button_states.copy(),
                drawer=float(d.joint("drawer_slide").qpos[0]), window=float(d.joint("window_slide").qpos[0]))


def _row_state(qpos, button_states) -> dict:
    qpos = np.asarray(qpos, np.float64)
    return dict(cube=qpos[14:17], buttons=np.asarray(button_states), drawer=float(qpos[23]), window=float(qpos[24]))


def object_state(obs) -> dict:
    """The objects of a 40-dim observation in simulator units: cube xyz (m), the two button
    states, drawer and window joint positions (undoing `SceneEnv.compute_observation`'s scalings)."""
    o = {k: np.asarray(obs, dtype=np.float64)[s] for k, s in OBS_LAYOUT.items()}
    return dict(cube=o["cube_pos"] / XYZ_SCALE + XYZ_CENTER,
                buttons=np.array([o["button_0_state"].argmax(), o["button_1_state"].argmax()]),
                drawer=float(o["drawer_pos"][0] / DRAWER_SCALE), window=float(o["window_pos"][0] / WINDOW_SCALE))


def success_conditions(state: dict, target: dict, tol: float = 0.04) -> tuple[bool, ...]:
    """OGBench's five success conditions (cube, button 1, button 2, drawer, window) of ``state``
    against ``target`` (`object_state` dicts): the cube within ``tol`` m, equal button states,
    drawer and window within ``tol`` of their joint positions."""
    buttons = np.asarray(state["buttons"]) == np.asarray(target["buttons"])
    return (bool(np.linalg.norm(state["cube"] - target["cube"]) <= tol), bool(buttons[0]), bool(buttons[1]),
            abs(state["drawer"] - target["drawer"]) <= tol, abs(state["window"] - target["window"]) <= tol)


def segment_starts(terminals, n: int, length: int = 200, seed: int = 0) -> np.ndarray:
    """``n`` random segment start rows (a segment: ``length`` actions and the state after them,
    inside one episode), drawn without replacement with a seeded generator."""
    b = episode_bounds(terminals)
    cand = np.concatenate([np.arange(s, e - length + 1) for s, e in b if e - s >= length])
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(cand, size=min(n, len(cand)), replace=False))


def reproduce_segments(model: InverseDynamics | None, data: dict, starts, *, length: int = 200, stride: int = 4,
                       tracking: str = "time", window: int = 16, settle: int = 0, env=None) -> dict:
    """Closed-loop reproduction of dataset segments.

    Each segment ``[s, s + length]``: the environment is set to row ``s``'s state (qpos, qvel,
    button states), the controller gets rows ``s, s + stride, ..., s + length`` as its plan (the
    14 planning dims, plus the gripper opening for a ``gripper`` model) and runs ``length``
    steps; success when the final cube position is within 4 cm of row ``s + length``'s, the
    buttons equal and drawer and window within 0.04. ``model=None`` replays the recorded actions
    instead (the log-replay ceiling). ``settle`` extra controller steps after the plan's end
    (its last point held as the subgoal) tell failures from lag apart (0: the strict test).
    ``data``: arrays from `load_scene_arrays`.

    Returns rates over all segments and over the *active* ones (whose object state changes).
    """
    from .scene import make_scene_env

    own = env is None
    if own:
        env = make_scene_env(length + settle + 10)
    env.reset(seed=0)
    obs_all, qpos, qvel, btn = data["observations"], data["qpos"], data["qvel"], data["button_states"]
    ok, active, devs = [], [], []
    try:
        for s in np.asarray(starts):
            s = int(s)
            env.reset(seed=s)
            ob = _restore(env, qpos[s], qvel[s], btn[s])
            e = s + length
            target = _row_state(qpos[e], btn[e])
            active.append(not all(success_conditions(_row_state(qpos[s], btn[s]), target)))
            if model is not None:
                dims = list(model.goal_dims)
                ctrl = SceneController(model, obs_all[s:e + 1:stride][:, dims], stride=stride, tracking=tracking,
                                       window=window)
            dev = 0.0
            for t in range(length + (0 if model is None else int(settle))):
                if model is None:
                    a = data["actions"][s + t].astype(np.float64)
                else:
                    a = ctrl.act(ob)
                    dev = max(dev, ctrl.deviation)
                ob, *_ = env.step(a)
            ok.append(all(success_conditions(_object_state(env), target)))
            devs.append(dev)
    finally:
        if own:
            env.close()
    ok_a, act_a = np.array(ok), np.array(active)
    return dict(segments=len(ok), success=float(ok_a.mean()), active=int(act_a.sum()),
                active_success=float(ok_a[act_a].mean()) if act_a.any() else float("nan"),
                max_deviation_mean=float(np.mean(devs)), ok=ok_a.tolist(), is_active=act_a.tolist())


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cofi.planning.scene_control",
                                description="Scene-Play inverse dynamics: train / evaluate")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train an InverseDynamics model")
    t.add_argument("--data", required=True, help="scene-play-v0.npz or a scene-play-v0.parts folder")
    t.add_argument("--out", required=True)
    t.add_argument("--val", default=None, help="held-out file or parts folder (its val-* chunks)")
    t.add_argument("--k", type=int, nargs="+", default=[16], help="subgoal offset(s), env steps")
    t.add_argument("--gripper", action="store_true", help="add the gripper opening obs[17] to the subgoal")
    t.add_argument("--steps", type=int, default=20000)
    t.add_argument("--batch", type=int, default=1024)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--depth", type=int, default=3)
    t.add_argument("--activation", default="gelu", choices=sorted(_ACTIVATIONS))
    t.add_argument("--max-episodes", type=int, default=None)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--log-every", type=int, default=1000)
    t.add_argument("--goal-noise", type=float, default=0.0,
                   help="std of Gaussian noise on the standardised subgoals during training (robustness to "
                        "imprecise plans)")
    e = sub.add_parser("eval", help="closed-loop reproduction of held-out dataset segments")
    e.add_argument("--model", default=None, help="checkpoint name or folder; omit with --replay")
    e.add_argument("--replay", action="store_true", help="replay the recorded actions (the ceiling)")
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="val")
    e.add_argument("--segments", type=int, default=100)
    e.add_argument("--length", type=int, default=200)
    e.add_argument("--stride", type=int, default=4)
    e.add_argument("--tracking", default="time", choices=("time", "nearest"))
    e.add_argument("--window", type=int, default=16)
    e.add_argument("--settle", type=int, default=0, help="extra steps holding the plan's end (0: strict)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-episodes", type=int, default=None)
    e.add_argument("--json", default=None, help="also write the result here")
    e.add_argument("--record", action="store_true",
                   help="add the summary to the model's config.json (key 'reproduction'; needs a model folder)")
    return p


def main(argv: Sequence[str] | None = None) -> dict | InverseDynamics:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    if a.cmd == "train":
        cmd = " ".join(["python -m cofi.planning.scene_control", *map(shlex.quote, argv)])
        return train_inverse_dynamics(a.data, a.out, k=a.k if len(a.k) > 1 else a.k[0], gripper=a.gripper,
                                      steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed, val=a.val,
                                      hidden=a.hidden, depth=a.depth, activation=a.activation,
                                      max_episodes=a.max_episodes, threads=a.threads, command=cmd,
                                      log_every=a.log_every, goal_noise=a.goal_noise)
    torch.set_num_threads(1)
    if (a.model is None) == (not a.replay):
        _parser().error("give exactly one of --model and --replay")
    model = None if a.replay else InverseDynamics.from_pretrained(a.model)
    data = load_scene_arrays(a.data, a.split, max_episodes=a.max_episodes)
    starts = segment_starts(data["terminals"], a.segments, a.length, a.seed)
    t0 = time.perf_counter()
    r = reproduce_segments(model, data, starts, length=a.length, stride=a.stride, tracking=a.tracking,
                           window=a.window, settle=a.settle)
    r.update(model=a.model, data=a.data, tracking=a.tracking, wall_s=round(time.perf_counter() - t0, 1))
    print(json.dumps({k: v for k, v in r.items() if k not in ("ok", "is_active")}))
    if a.json:
        Path(a.json).write_text(json.dumps(r) + "\n")
    if a.record and model is not None:
        from ..priors.trajectory import atomic_write, read_json

        d = _PACKAGE_DIR / CHECKPOINT if a.model == CHECKPOINT else Path(a.model)
        cfg = read_json(d / "config.json")
        summary = {k: r[k] for k in ("segments", "success", "active", "active_success")}
        summary.update(data=a.data, split=a.split, length=a.length, stride=a.stride, tracking=a.tracking,
                       settle=a.settle,
                       seed=a.seed, command=" ".join(["python -m cofi.planning.scene_control",
                                                      *map(shlex.quote, argv)]))
        cfg["reproduction"] = summary
        atomic_write(d / "config.json", (json.dumps(cfg, indent=2) + "\n").encode())
    return r


if __name__ == "__main__":
    main()
