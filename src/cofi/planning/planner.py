"""Long-horizon PointMaze plans composed from a 160-step trajectory prior (paper §5.1).

Horizon 160, overlap 56, N = 3 / 6 / 8 windows for medium / large / giant; start and goal
pinned at canvas positions 0 and −1; overlap-MSE guidance in every step (both CoFi
stages); no fusion in the loop: the final plans are composed by exponential blending
(β = 2) and the candidate with the lowest overlap error is the plan.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..compose import Composition, compose
from ..coupling import Pins
from ..layout import Chain
from ..presets import Preset, resolve
from ..samplers import CDGS, GSC, CoFi
from ..steps import self_consistency
from .data import HORIZON_STEPS, OVERLAP_STEPS
from .maze import Maze, agent_of, parse_env_name

__all__ = [
    "HORIZON", "OVERLAP", "METHODS", "PRESETS", "PlanResult", "default_count", "default_batch",
    "planning_layout", "planning_sampler", "resolve_planning", "plan", "upsample", "SELECT", "CONSISTENCY",
    "check_select", "reselect",
]

HORIZON = HORIZON_STEPS  # env steps of one local plan
OVERLAP = OVERLAP_STEPS  # env steps shared by adjacent windows
METHODS = ("cofi", "gsc", "cd", "cdgs")
_COUNT = {"medium": 3, "large": 6, "giant": 8}
# the ant walks at ~0.13 units per step against the point's ~0.19 in its stitch data: a window
# covers ~2/3 of the distance, so a route takes more of them
_ANT_COUNT = {"medium": 4, "large": 8, "giant": 11}

# Planning presets (docs/planning.md, "Settings"). DDIM with stochasticity η = 1, overlap
# guidance in every step, no fusion in the loop (blending of the final plans only).
STEPS = 20
GUIDANCE = 20.0
LAM0 = 0.9
REFINE_AT = 0.4  # refinement re-runs the last 60 % of the grid (step 8 of 20)
CDGS_INNER = 10
CDGS_POPULATION = 40
BATCH = 16


def default_count(env_name: str) -> int:
    """Windows N of the plan for a maze: 3 / 6 / 8 for PointMaze medium / large / giant, 4 / 8 / 11
    for AntMaze's."""
    return (_ANT_COUNT if agent_of(env_name) == "ant" else _COUNT)[parse_env_name(env_name)[0]]


def default_batch(method: str, prior=None) -> int:
    """Candidates per plan: the prior's ``planning_batch`` if it has one, else 16; CDGS: its
    population P = 40."""
    if _method(method) == "cdgs":
        return CDGS_POPULATION
    return int(getattr(prior, "planning_batch", None) or BATCH)


def planning_layout(count: int, stride: int = 1) -> Chain:
    """Windows of 160 env steps overlapping by 56, one plan point every ``stride`` steps:
    ``Chain(160 // stride, 56 // stride, count, axis=0, blend="exp", beta=2.0)``; the plan
    spans ``104·count + 56`` env steps."""
    if not isinstance(stride, int) or stride < 1 or HORIZON % stride or OVERLAP % stride:
        raise ValueError(f"stride must be an int >= 1 dividing {HORIZON} and {OVERLAP}, got {stride!r}")
    return Chain(HORIZON // stride, OVERLAP // stride, count, axis=0, blend="exp", beta=2.0)


def upsample(xy: np.ndarray, stride: int) -> np.ndarray:
    """Linear interpolation of a plan ``(L, D)`` with one point per ``stride`` env steps to
    one point per step, ``((L − 1)·stride + 1, D)``; the end points are kept exactly."""
    xy = np.asarray(xy, dtype=np.float64)
    if stride == 1 or len(xy) < 2:
        return xy.copy()
    u = np.arange((len(xy) - 1) * stride + 1) / stride
    i = np.minimum(u.astype(int), len(xy) - 2)
    f = (u - i)[:, None]
    return (1 - f) * xy[i] + f * xy[i + 1]


def _method(name: str) -> str:
    if str(name).lower() not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return str(name).lower()


def planning_sampler(method: str = "cofi", *, steps: int | None = None, guidance: float | None = None,
                     prior=None, **overrides):
    """The planning preset of a method: ``cofi``, ``gsc``, ``cd`` or ``cdgs`` (the paper's
    Table 1 compositional columns).

    All four: ``steps`` DDIM steps with η = 1 (stochastic DDIM, as the paper; None: the prior's
    ``planning_steps`` if it has one, else 20), overlap-MSE guidance of weight ``guidance`` at
    every step, pins for start and goal. ``guidance=None``
    takes the prior's ``planning_guidance`` if it has one, else 20; the schedule is the prior's
    ``planning_guidance_schedule``, else ``constant`` (see `cofi.GSC`). The right weight depends
    on the prior: the closed-form prior snaps x̂ to data windows at low noise (its Jacobian there
    is ~0), so guidance must be strong to couple the windows at all; a network passes x_t through
    at low noise, and a strong overlap gradient then shrinks windows to a standstill and
    stretches others across walls (docs/planning.md). U-Nets trained here store their weight
    (and the giant prior the ``variance`` schedule) in their config. Consensus coupling
    (``consensus`` κ, priors with ``accepts_evidence``) is the prior's ``planning_consensus``
    (the closed-form prior of stitch data: 5), else off, taking turns as the prior's
    ``planning_consensus_sweep`` says (else all windows at once); it is what separates the
    baselines.
    The paper's compositional score (eq. 10/26) averages each window's score *conditioned on
    its neighbours*, as CompDiffuser (CD, Luo et al. 2026) does and as CoFi and CDGS run on
    its models; GSC (Mishra et al. 2023) composes *unconditional* local scores, coupled by
    guidance alone ("local guidance without resampling or search"):
      - ``gsc``: ``GSC(fusion=False, consensus=0)`` whatever the prior; the final plans are
        blended.
      - ``cd``: the same sampler with the prior's consensus: neighbour-conditioned local
        scores and no scaffold. It needs a prior that reads evidence with
        ``planning_consensus > 0`` (ValueError otherwise: without it CD is GSC).
      - ``cofi``: ``CoFi(fusion=False, lam0=0.9, schedule="linear", refine_at=0.4,
        refine_eta=1)`` (λ0: the prior's ``planning_lam0`` if it has one): the coarse stage
        shrinks toward the scaffold, λ ramping linearly to 1;
        refinement re-runs the last 60 % of the grid from the renoised global scaffold, with
        fusion (``refine_fusion=True``) where the prior's ``planning_refine_fusion`` says so
        and ``refine_inner`` rounds per step as its ``planning_refine_inner`` says (else 1).
      - ``cdgs``: ``CDGS(inner=10, fusion=True)`` with its maze defaults (population P = 40
        via ``batch``, pruning in the last 6 % keeping 10 %); fusion is CDGS's message passing.
    Any field of the sampler's dataclass may be overridden by keyword.
    """
    method = _method(method)
    if guidance is None:
        guidance = getattr(prior, "planning_guidance", None) or GUIDANCE
    schedule = getattr(prior, "planning_guidance_schedule", None) or "constant"
    consensus = float(getattr(prior, "planning_consensus", None) or 0.0)
    if steps is None:
        steps = getattr(prior, "planning_steps", None) or STEPS
    base = dict(steps=int(steps), eta=1.0, guidance=float(guidance),
                guidance_schedule=schedule, consensus=consensus)
    sweep = getattr(prior, "planning_consensus_sweep", None)
    if sweep and method != "gsc":
        base["consensus_sweep"] = sweep
    if method == "gsc":
        return GSC(**{**base, "fusion": False, "consensus": 0.0, **overrides})
    if method == "cd":
        if not consensus and not overrides.get("consensus"):
            raise ValueError("method 'cd' conditions each window on its neighbours (consensus coupling); it needs "
                             "a prior with accepts_evidence and planning_consensus > 0 (e.g. "
                             "EmpiricalPrior.from_stitch_data, or a U-Net trained with --evidence-prob), got "
                             f"{type(prior).__name__} with planning_consensus "
                             f"{getattr(prior, 'planning_consensus', None)!r}; without it use 'gsc'")
        return GSC(**{**base, "fusion": False, **overrides})
    if method == "cdgs":
        return CDGS(**{**base, "inner": CDGS_INNER, "fusion": True, **overrides})
    lam0 = getattr(prior, "planning_lam0", None) or LAM0
    if getattr(prior, "planning_refine_fusion", None):
        base["refine_fusion"] = True
    inner = getattr(prior, "planning_refine_inner", None)
    if inner is not None:  # CoFi validates it: a bad value set on a loaded prior is an error, not 1
        base["refine_inner"] = inner
    return CoFi(**{**base, "fusion": False, "lam0": float(lam0), "schedule": "linear", "refine_at": REFINE_AT,
                   "refine_eta": 1.0, **overrides})


#: The paper's Table 1 compositional columns (`planning_sampler`), the default first.
PRESETS: dict[str, Preset] = {
    name: Preset(functools.partial(planning_sampler, name), cls, None, "exp", f"planning_sampler({name!r})")
    for name, cls in (("cofi", CoFi), ("gsc", GSC), ("cd", GSC), ("cdgs", CDGS))
}


def resolve_planning(prior, sampler, batch: int | None) -> tuple[object, str, int]:
    """A planning method name (its preset for ``prior``), a config or None (``cofi``) as
    ``(sampler config, method name, candidates)``; ``batch=None``: 16, or CDGS's 40."""
    r = resolve(PRESETS, sampler, **({"prior": prior} if sampler is None or isinstance(sampler, str) else {}))
    method = r.method or type(r.sampler).__name__.lower()
    return r.sampler, method, default_batch(method, prior) if batch is None and method in METHODS else (batch or BATCH)


@dataclass
class PlanResult(Composition):
    """A composed plan: the `Composition` of all candidates (normalised coordinates) with the
    best one in environment coordinates.

    Attributes:
        xy: ``(L, 2)`` the executed plan: the best candidate's blended canvas, unnormalised and
            interpolated to one point per env step (`upsample` by the prior's ``stride``);
            ``xy[0]`` is exactly the start and ``xy[-1]`` exactly the goal.
        windows: ``(N, 160 // stride, 2)`` the best candidate's local plans, unnormalised
            (before blending, not interpolated).
        layout: the `Chain` of windows.
        time_s: wall time of the composition, seconds.
        method: ``cofi`` / ``gsc`` / ``cd`` / ``cdgs`` or the sampler's class name.
        raw_xy: ``(L', 2)`` the blended canvas at the prior's stride, ends not overwritten.
    """

    xy: np.ndarray | None = None
    windows: np.ndarray | None = None
    layout: Chain | None = None
    time_s: float = 0.0
    method: str = ""
    raw_xy: np.ndarray | None = None

    @property
    def best_overlap_error(self) -> float:
        """Overlap MSE of the executed candidate's local plans (normalised units)."""
        return float(self.overlap_error[self.best])

    @property
    def max_jump(self) -> float:
        """Largest distance between consecutive points of the composed plan before the ends
        are overwritten (env units per ``stride`` steps; the agent moves ≤ 0.28 per step)."""
        return float(np.linalg.norm(np.diff(self.raw_xy, axis=0), axis=1).max())


#: `self_consistency` settings of ``select="consistency"``: three noise levels, four draws each.
CONSISTENCY = dict(alphas=(0.9, 0.7, 0.5), draws=4)
CONSISTENCY_NFE = len(CONSISTENCY["alphas"]) * CONSISTENCY["draws"]
SELECT = ("overlap", "consistency")


def check_select(select: str | None) -> None:
    if select is not None and select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")


def reselect(prior, comp: Composition, select: str | None, generator=None,
             max_batch: int | None = None) -> Composition:
    """``comp`` with ``best`` chosen by ``select`` (``overlap``: unchanged; ``consistency``: the
    lowest `self_consistency`, its prior calls added to ``nfe``; None: the prior's
    ``planning_select`` if it has one, else ``overlap``)."""
    check_select(select)
    select = select or getattr(prior, "planning_select", None) or "overlap"
    if select == "overlap":
        return comp
    score = self_consistency(prior, comp.plans, generator=generator, max_batch=max_batch, **CONSISTENCY)
    return dataclasses.replace(comp, best=int(torch.argmin(score)),
                               nfe=comp.nfe + CONSISTENCY_NFE * comp.plans.shape[0] * comp.plans.shape[1])


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _resolve_maze(prior, maze: Maze | str | None) -> Maze | None:
    if maze is None:
        maze = getattr(prior, "env_name", None)
    if maze is None or isinstance(maze, Maze):
        return maze
    return Maze.from_name(maze)


def plan(
    prior,
    start_xy,
    goal_xy,
    sampler=None,
    count: int | None = None,
    batch: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    *,
    maze: Maze | str | None = None,
    max_batch: int | None = None,
    hard_pins: bool = True,
    group=None,
    select: str | None = None,
) -> PlanResult:
    """Compose a start-to-goal plan with a trajectory prior.

    Args:
        prior: a `LocalPrior` over normalised ``(160 // stride, 2)`` xy segments with
            ``normalize(xy)`` / ``unnormalize(x)`` and an optional ``stride`` (env steps per
            point, default 1), e.g. ``TrajectoryPrior`` or ``EmpiricalPrior``. A prior with
            ``accepts_observations`` conditions exactly on the pinned start and goal.
        start_xy, goal_xy: ``(2,)`` positions in environment coordinates.
        sampler: a sampler config, a method name (``cofi`` / ``gsc`` / ``cd`` / ``cdgs``, see
            `planning_sampler`), or None for ``cofi``.
        count: windows N (None: `default_count` of the maze).
        batch: candidates (None: 16, or 40 for CDGS); the lowest overlap error is kept.
        generator: a ``torch.Generator`` (the plan is a function of its seed).
        progress: show progress bars.
        maze: a `Maze` or env name (None: the prior's ``env_name`` if it has one). Used
            for the default count and to reject a start or goal inside a wall.
        max_batch: most plans per prior call (memory); does not change the result.
        hard_pins: also overwrite the state x_t at start and goal after every step
            (Janner et al.'s inpainting, ``Pins(hard=True)``), so the network sees the
            endpoints in its input. With x̂-only pins the end windows of a weak prior jump
            to the pinned points instead of leaving from them.
        group: a ``torch.distributed`` process group: the windows are spread over its ranks
            (`cofi.compose`); every rank gets the same plan.
        select: how the executed candidate is chosen: ``overlap``, the lowest disagreement of
            the windows over their overlaps (`cofi.compose`'s ``best``); ``consistency``, the
            lowest `cofi.steps.self_consistency` (how far the prior moves the finished windows;
            a window through a wall is moved far), at ``CONSISTENCY_NFE`` extra prior calls per
            window and candidate, counted in ``nfe``; None: the prior's ``planning_select`` if
            it has one, else ``overlap``.
    Returns:
        A `PlanResult`.
    """
    check_select(select)
    for name in ("normalize", "unnormalize"):
        if not callable(getattr(prior, name, None)):
            raise TypeError(f"prior must have {name}() (a trajectory prior such as TrajectoryPrior)")
    stride = getattr(prior, "stride", 1)
    if tuple(prior.sample_shape) != (HORIZON // stride, 2):
        raise ValueError(f"prior.sample_shape must be ({HORIZON // stride}, 2) xy segments (160 env steps at "
                         f"stride {stride}), got {tuple(prior.sample_shape)}")
    maze_ = _resolve_maze(prior, maze)
    if maze_ is not None:
        start = maze_.check_free(start_xy, "start_xy")
        goal = maze_.check_free(goal_xy, "goal_xy")
    else:
        start, goal = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (start_xy, goal_xy))
        for what, v in (("start_xy", start), ("goal_xy", goal)):
            if v.shape != (2,) or not np.isfinite(v).all():
                raise ValueError(f"{what} must be a finite (x, y) pair, got {v!r}")
    if count is None:
        if maze_ is None or not maze_.name:
            raise ValueError("count is None and the maze is unknown: pass count= or maze='pointmaze-...-v0'")
        count = default_count(f"{maze_.agent}maze-{maze_.name}-v0")
    sampler, method, batch = resolve_planning(prior, sampler, batch)
    layout = planning_layout(int(count), stride)

    device = prior.alphas_cumprod.device
    ends = torch.tensor(np.stack([start, goal]), dtype=torch.float32, device=device)
    pins = Pins(positions=(0, -1), values=torch.as_tensor(prior.normalize(ends), dtype=torch.float32),
                hard=bool(hard_pins))
    t0 = time.perf_counter()
    comp = compose(prior, layout, sampler, batch=batch, generator=generator, pins=pins,
                   progress=progress, max_batch=max_batch, group=group)
    comp = reselect(prior, comp, select, generator, max_batch)
    elapsed = time.perf_counter() - t0
    raw = _to_numpy(prior.unnormalize(comp.best_canvas))
    windows = _to_numpy(prior.unnormalize(comp.plans[comp.best]))
    xy = upsample(raw, stride)
    xy[0], xy[-1] = start, goal  # equal up to float rounding already (pins)
    return PlanResult(**vars(comp), xy=xy, windows=windows, layout=layout, time_s=elapsed, method=method,
                      raw_xy=raw)
