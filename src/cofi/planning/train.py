"""Train a `TrajectoryPrior` (1D temporal U-Net) on a PointMaze stitch or a Scene-Play dataset, on CPU.

The data protocol is the planner's (the `Domain`, chosen by the dataset's name):
  - PointMaze: xy positions, episodes padded with 64 copies of their first state
    (`pad_episodes`), 160-env-step windows overlapping by 56;
  - Scene-Play (``scene-*``): the 14 planning dimensions (`cofi.planning.scene.SCENE_PLAN_DIMS`),
    no padding, 128-env-step windows overlapping by 48 (paper Table 4), no feature grid;
at a temporal stride (default 4: 40 and 32 points).

Targets (``--target``):
  - ``stf`` (default): low-variance targets (Stable Target Field, Xu et al. 2023). The
    network regresses the *exact* posterior mean x̂*(x_t, t) of the empirical distribution of
    the training windows (`EmpiricalPrior` over a bank of them), instead of the one clean
    window x_0 that produced x_t; with ``--bank-sample n``, over STF's reference batch (n
    random bank windows plus the batch's own windows), n/M of the cost. Same minimiser, far less variance: at high noise x_0 is
    almost independent of x_t, while x̂* is a smooth function of it.
  - ``plain``: the usual regression on x_0.
Whatever the target, the network outputs ε, x̂ or v (``--prediction``, default v) of it.
With ``--cond-prob p`` (default 0.5 each) the first and the last point of a window (Scene: the
last point's `Domain.goal_dims` only) are
given to the network as clean observations (an extra mask channel), and the target is
conditioned on them exactly, so at planning time a pinned start or goal is read, not
guessed (the inpainting-aware training of CompDiffuser's planners).
With ``--evidence-prob q`` a window gets, with probability q (``--evidence-sides independent``:
each side on its own, as CompDiffuser drops each neighbour), Gaussian evidence
``y = x_0 + ε/√π`` about its first and/or last overlap (56 env steps), at the precision
consensus coupling uses, ``π = κ·min(ᾱ/(1−ᾱ), 10)`` with κ log-uniform in
``--evidence-kappa``; the target is the bank's posterior mean under that evidence
(`EmpiricalPrior.denoise(evidence=...)`), so the network learns the closed-form prior's
consensus conditioning and planners can couple its windows (``consensus=κ``).

Resumable: ``<out>/state.safetensors`` (weights, EMA, optimiser, RNG, and in its metadata the
step, history, wall time and the run's settings) + ``<out>/state.json`` (a readable copy of
that metadata); rerunning the same command continues bit-identically. The shipped artefact is
``<out>/model.safetensors`` (EMA weights) + ``<out>/config.json``.

Every file is written atomically (temporary file, then `os.replace`) and
``state.safetensors`` alone is the commit point: a run killed at any moment resumes from the
last complete save (a checkpoint written after that save is rewritten from the state).
Resuming refuses a command whose settings differ from the state's (``--prediction``,
``--T``, model size, ...; only ``--steps``, ``--stop-at``, ``--every``, ``--threads``, ``--out``
and the path of ``--data`` may change: the data is compared by ``--env`` and its xy range)
and then writes nothing. Arguments are checked before anything is read or written
(`validate_train_args`); errors are `TrainingSetupError` (a `ValueError`) naming the flag or
the file, which ``python -m cofi.planning train`` reports as usage errors (exit status 2).

    python -m cofi.planning train --data data/pointmaze-giant-stitch-v0.npz --out runs/giant --steps 12000
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..prior import append_dims
from ..priors.empirical import EmpiricalPrior
from ..priors.trajectory import (PLANNING_SETTINGS, TrajectoryPrior, XYNormalizer, atomic_write,
                                  cosine_alphas_cumprod, read_json, read_safetensors)
from ..priors.unet1d import TemporalUNet, UNet1DConfig, expand_input_weights
from .data import HORIZON_STEPS, OVERLAP_STEPS, PAD, cut_windows, load_episodes, pad_episodes
from .scene_plan import GOAL_DIMS, SEGMENT_STEPS, load_scene_episodes
from .scene_plan import OVERLAP_STEPS as SCENE_OVERLAP_STEPS

__all__ = ["Domain", "POINTMAZE", "SCENE", "domain_of", "add_train_args", "train_from_args", "train", "validate_train_args", "TrainingSetupError",
           "sample_windows", "sample_evidence", "save_state", "load_state", "read_state", "validation_path"]


class TrainingSetupError(ValueError):
    """A bad argument of `train` (the message names the flag and the valid range), or an input
    file or run directory that training cannot start or continue from (it names the file)."""


@dataclass(frozen=True)
class Domain:
    """What training needs to know of a family of datasets.

    Attributes:
        name: ``pointmaze`` or ``scene``.
        horizon_steps, overlap_steps: env steps of a local plan and of the overlap of two.
        pad: default copies of each episode's first state prepended (`pad_episodes`).
        grid: default resolution of the xy feature grid (0: none; only 2-D positions have one).
        load: ``path -> (E, T, D)`` float32 episodes in the planning space.
        goal_dims: the dimensions a goal fixes (None: all). With ``--cond-prob``, a window's
            last point is observed on these only, and the network gets one observation-mask
            channel per dimension (``UNet1DConfig.cond_entries``) instead of one per point.
    """

    name: str
    horizon_steps: int
    overlap_steps: int
    pad: int
    grid: int
    load: Callable[[Path], np.ndarray]
    goal_dims: tuple[int, ...] | None = None


POINTMAZE = Domain("pointmaze", HORIZON_STEPS, OVERLAP_STEPS, PAD, 64, load_episodes)
SCENE = Domain("scene", SEGMENT_STEPS, SCENE_OVERLAP_STEPS, 0, 0, load_scene_episodes, GOAL_DIMS)


def domain_of(data, env: str | None = None) -> Domain:
    """`SCENE` when ``env`` (or else the file name of ``data``) starts with ``scene``, else `POINTMAZE`."""
    return SCENE if (env or Path(str(data)).name).startswith("scene") else POINTMAZE


def sample_windows(eps: Tensor, n: int, horizon: int, g: torch.Generator, stride: int = 1) -> Tensor:
    """``n`` random within-episode windows of ``horizon`` env steps, one point per ``stride``
    steps: ``(n, horizon // stride, D)``. Any start, not only multiples of the stride."""
    e = torch.randint(0, eps.shape[0], (n,), generator=g)
    s = torch.randint(0, eps.shape[1] - horizon + 1, (n,), generator=g)
    idx = s[:, None] + torch.arange(0, horizon, stride)[None]
    return eps[e[:, None], idx]


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="training npz, <name>.npz (its validation split <name>-val.npz must lie beside it)")
    p.add_argument("--out", required=True)
    p.add_argument("--env", default=None, help="environment name stored in the config (default: from --data)")
    p.add_argument("--steps", type=int, default=12000, help="length of the schedule (>= 1)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--dim-mults", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--stride", type=int, default=4,
                   help="env steps per plan point (PointMaze: 160 // stride points, Scene: 128 // stride)")
    p.add_argument("--pad", type=int, default=None,
                   help="copies of the first state prepended to each episode (default: PointMaze 64, Scene 0)")
    p.add_argument("--target", choices=("stf", "plain"), default="stf", help="exact posterior mean or x_0")
    p.add_argument("--bank-every", type=int, default=4, help="window starts of the STF bank (env steps)")
    p.add_argument("--bank-sample", type=int, default=0,
                   help="STF reference batch: this many random bank windows plus the batch (0: the whole bank)")
    p.add_argument("--cond-prob", type=float, default=0.5, help="probability that each end point is observed")
    p.add_argument("--evidence-prob", type=float, default=0.0,
                   help="probability that a window gets consensus evidence on its prefix and/or suffix "
                        "(> 0: a network that reads evidence, UNet1DConfig.evidence)")
    p.add_argument("--evidence-kappa", type=float, nargs=2, default=(0.5, 20.0), metavar=("LO", "HI"),
                   help="evidence precision κ·min(ᾱ/(1−ᾱ), 10), κ log-uniform in [LO, HI]")
    p.add_argument("--evidence-sides", choices=EVIDENCE_SIDES, default="one-or-both",
                   help="one-or-both: a window gets evidence with probability q, on its prefix, suffix or both "
                        "(a third each); independent: each side with probability q and its own κ "
                        "(CompDiffuser's per-side dropout, q = 0.8: both sides 64 %%, none 4 %%)")
    p.add_argument("--fourier", type=int, default=0, help="Fourier input features per coordinate (0: raw xy only)")
    p.add_argument("--grid", type=int, default=None,
                   help="resolution of the learned xy feature grid (0: none; default: PointMaze 64, Scene 0)")
    p.add_argument("--grid-dim", type=int, default=8, help="channels of the feature grid")
    p.add_argument("--grid-smooth", type=int, nargs="*", default=[],
                   help="also read the grid at moving averages of these odd widths (e.g. 9 33 161)")
    p.add_argument("--grid-wiener", action="store_true",
                   help="read the grid at the Wiener estimate of x_0 (noise-level aware), not at x_t")
    p.add_argument("--scale", type=float, default=1.0, help="normalised data lies in [-scale, scale]")
    p.add_argument("--prediction", choices=("epsilon", "sample", "v_prediction"), default="v_prediction")
    p.add_argument("--T", type=int, default=200, help="diffusion steps of the cosine schedule")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--every", type=int, default=500, help="checkpoint / validation interval (steps, >= 1)")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="also keep the checkpoint of every step that is a multiple of this in "
                        "<out>/snapshots/step-<step>/ (0: none), for learning curves (benchmarks/learning_curve.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stop-at", type=int, default=None,
                   help="end this run at this step (checkpointed; the schedule still spans --steps), "
                        "e.g. to split training across sessions")
    p.add_argument("--init", default=None,
                   help="warm start: a previous run's directory (its weights and EMA, state.safetensors) or a "
                        "checkpoint directory (model.safetensors: the EMA weights start both); a fresh optimiser "
                        "and a new schedule of --steps")


# ----------------------------------------------------------------------------- arguments
GROUPS = UNet1DConfig.groups  # GroupNorm groups of the network: every width must be a multiple
# settings that may differ when a run is resumed; all others must equal the state's
RESUMABLE_CHANGES = ("steps", "stop_at", "every", "snapshot_every", "threads", "out", "data")
EVIDENCE_SIDES = ("one-or-both", "independent")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _need_int(a, dest: str, minimum: int, maximum: int | None = None, what: str = "") -> None:
    v = getattr(a, dest)
    if not (_is_int(v) and v >= minimum and (maximum is None or v <= maximum)):
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise TrainingSetupError(f"{_flag(dest)} must be an int {rng}{what}, got {v!r}")


def _need_real(a, dest: str, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    v = getattr(a, dest)
    ok = _is_real(v) and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = (f"> {lo:g}" if lo_open else f">= {lo:g}") if hi is None else f"in [{lo:g}, {hi:g}]"
        raise TrainingSetupError(f"{_flag(dest)} must be a finite number {rng}, got {v!r}")


def validation_path(data: str | Path) -> Path:
    """The validation split of a training file: ``<dir>/<name>-val.npz`` for ``<dir>/<name>.npz``."""
    data = Path(data)
    if data.suffix != ".npz":
        raise TrainingSetupError(f"--data must be a .npz file (its validation split <name>-val.npz beside it), "
                                 f"got {str(data)!r}")
    return data.with_name(data.name[: -len(".npz")] + "-val.npz")


def _train_defaults() -> dict:
    p = argparse.ArgumentParser()
    add_train_args(p)
    return vars(p.parse_args(["--data", "", "--out", ""]))


def validate_train_args(args) -> argparse.Namespace:
    """Check every argument of `train` (types, finite values, ranges, files, and their
    combinations) before anything is read or written; returns a complete copy of ``args``
    (missing attributes take the command line's defaults, sequences become tuples).

    Raises `TrainingSetupError` naming the flag and the valid range (or the file)."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    for dest in ("data", "out"):
        if given.get(dest) in (None, ""):
            raise TrainingSetupError(f"{_flag(dest)} is required")
    a = argparse.Namespace(**{**_train_defaults(), **given})
    if a.env is not None and not (isinstance(a.env, str) and a.env.strip()):
        raise TrainingSetupError(f"--env must be a non-empty name, got {a.env!r}")
    if not isinstance(a.data, (str, os.PathLike)):
        raise TrainingSetupError(f"--data must be a path, got {a.data!r}")
    dom = domain_of(a.data, a.env)
    a.pad = dom.pad if a.pad is None else a.pad
    a.grid = dom.grid if a.grid is None else a.grid
    # numbers
    _need_int(a, "steps", 1)
    _need_int(a, "batch", 1)
    _need_real(a, "lr", 0.0)
    _need_int(a, "dim", 1)
    if isinstance(a.dim_mults, (str, bytes)) or not isinstance(a.dim_mults, Sequence) or not a.dim_mults \
            or not all(_is_int(m) and m >= 1 for m in a.dim_mults):
        raise TrainingSetupError(f"--dim-mults must be one or more ints >= 1, got {a.dim_mults!r}")
    a.dim_mults = tuple(int(m) for m in a.dim_mults)
    _need_int(a, "stride", 1, dom.horizon_steps)
    if dom.horizon_steps % a.stride:
        raise TrainingSetupError(f"--stride must divide the window of {dom.horizon_steps} env steps, got {a.stride}")
    _need_int(a, "pad", 0)
    if a.target not in ("stf", "plain"):
        raise TrainingSetupError(f"--target must be 'stf' or 'plain', got {a.target!r}")
    _need_int(a, "bank_every", 1)
    _need_int(a, "bank_sample", 0)
    _need_real(a, "cond_prob", 0.0, 1.0)
    _need_real(a, "evidence_prob", 0.0, 1.0)
    k = a.evidence_kappa
    if isinstance(k, (str, bytes)) or not isinstance(k, Sequence) or len(k) != 2 \
            or not all(_is_real(v) for v in k) or not 0 < k[0] <= k[1]:
        raise TrainingSetupError(f"--evidence-kappa must be two finite numbers LO HI with 0 < LO <= HI, got {k!r}")
    a.evidence_kappa = tuple(float(v) for v in k)
    if a.evidence_sides not in EVIDENCE_SIDES:
        raise TrainingSetupError(f"--evidence-sides must be one of {', '.join(EVIDENCE_SIDES)}, got {a.evidence_sides!r}")
    _need_int(a, "fourier", 0)
    if not (_is_int(a.grid) and (a.grid == 0 or a.grid >= 2)):
        raise TrainingSetupError(f"--grid must be 0 (no grid) or an int >= 2, got {a.grid!r}")
    _need_int(a, "grid_dim", 1)
    gs = a.grid_smooth
    if isinstance(gs, (str, bytes)) or not isinstance(gs, Sequence) \
            or not all(_is_int(w) and w >= 1 and w % 2 == 1 for w in gs):
        raise TrainingSetupError(f"--grid-smooth must be odd ints >= 1, got {gs!r}")
    if a.grid and dom is not POINTMAZE:
        raise TrainingSetupError(f"--grid {a.grid}: the feature grid reads 2-D maze positions; {dom.name} windows "
                                 "have more dimensions (use --grid 0)")
    if gs and not a.grid:
        raise TrainingSetupError(f"--grid-smooth {' '.join(map(str, gs))} needs a feature grid (--grid >= 2)")
    a.grid_smooth = tuple(int(w) for w in gs)
    if not isinstance(a.grid_wiener, bool):
        raise TrainingSetupError(f"--grid-wiener must be a bool, got {a.grid_wiener!r}")
    _need_real(a, "scale", 0.0, lo_open=True)
    if a.prediction not in ("epsilon", "sample", "v_prediction"):
        raise TrainingSetupError(f"--prediction must be 'epsilon', 'sample' or 'v_prediction', got {a.prediction!r}")
    _need_int(a, "T", 1, what=" (diffusion steps)")
    _need_real(a, "ema", 0.0, 1.0)
    _need_int(a, "every", 1)
    _need_int(a, "snapshot_every", 0)
    if a.snapshot_every and a.snapshot_every % a.every:
        raise TrainingSetupError(f"--snapshot-every must be a multiple of --every ({a.every}), got {a.snapshot_every}")
    _need_int(a, "seed", 0, 2**63 - 1)
    _need_int(a, "threads", 1)
    if a.stop_at is not None:
        _need_int(a, "stop_at", 1)
    # combinations
    widths = [a.dim * m for m in a.dim_mults]
    if any(w % GROUPS for w in widths):
        raise TrainingSetupError(f"--dim × each of --dim-mults must be a multiple of {GROUPS} (the network's "
                                 f"GroupNorm groups), got --dim {a.dim} --dim-mults "
                                 f"{' '.join(map(str, a.dim_mults))} (widths {widths})")
    points, halvings = dom.horizon_steps // a.stride, 2 ** (len(a.dim_mults) - 1)
    if points % halvings:
        raise TrainingSetupError(f"--stride {a.stride} gives {points} points per window, which --dim-mults "
                                 f"{' '.join(map(str, a.dim_mults))} ({len(a.dim_mults) - 1} halvings) needs "
                                 f"divisible by {halvings}")
    if a.evidence_prob > 0 and dom.overlap_steps // a.stride < 1:
        raise TrainingSetupError(f"--evidence-prob > 0 needs --stride <= {dom.overlap_steps} (the overlap the evidence "
                                 f"covers), got --stride {a.stride}")
    # files
    val = validation_path(a.data)
    if not Path(a.data).is_file():
        raise TrainingSetupError(f"--data {str(a.data)!r}: no such file")
    if not val.is_file():
        raise TrainingSetupError(f"--data {str(a.data)!r}: its validation split {str(val)!r} is missing "
                                 "(`python -m cofi.planning generate` writes both)")
    if not isinstance(a.out, (str, os.PathLike)):
        raise TrainingSetupError(f"--out must be a path, got {a.out!r}")
    if Path(a.out).exists() and not Path(a.out).is_dir():
        raise TrainingSetupError(f"--out {str(a.out)!r} exists and is not a directory")
    if a.init is not None:
        if not isinstance(a.init, (str, os.PathLike)):
            raise TrainingSetupError(f"--init must be a path, got {a.init!r}")
        a.init = str(a.init)
        init = Path(a.init)
        if not init.is_dir():
            raise TrainingSetupError(f"--init {str(a.init)!r}: no such directory")
        run = (init / "state.safetensors").is_file()
        if not (init / "config.json").is_file() or not (run or (init / "model.safetensors").is_file()):
            raise TrainingSetupError(f"--init {str(a.init)!r}: neither a training run (state.safetensors, "
                                     "config.json) nor a checkpoint (model.safetensors, config.json)")
    return a


def _run_settings(a: argparse.Namespace, env: str, lo, hi) -> dict:
    """What a resumed run must share with its state (JSON-normalised)."""
    known = _train_defaults()
    d = {k: v for k, v in vars(a).items() if k in known and k not in RESUMABLE_CHANGES}
    d.update(env=env, data_range=[np.asarray(lo).tolist(), np.asarray(hi).tolist()])
    return json.loads(json.dumps(d))


def _settings_from_config(cfg: dict) -> dict:
    """The settings a checkpoint written before states recorded theirs (``config.json``) knows."""
    unet = cfg.get("unet") or {}
    d = {k: cfg[k] for k in ("prediction", "T", "stride", "pad", "target", "bank_every", "bank_sample", "cond_prob",
                             "evidence_prob", "evidence_kappa", "scale", "batch", "lr", "seed") if k in cfg}
    d.update({k: unet[k] for k in ("dim", "dim_mults", "fourier", "grid", "grid_dim", "grid_smooth", "grid_wiener")
              if k in unet})
    if "env_name" in cfg:
        d["env"] = cfg["env_name"]
    if "lo" in cfg and "hi" in cfg:
        d["data_range"] = [cfg["lo"], cfg["hi"]]
    if "command" in cfg:  # written by `train`, which records a warm start's path (and nothing without one)
        d["init"] = (cfg.get("init") or {}).get("path")
    return json.loads(json.dumps(d))


def _check_resumable(out: Path, saved: dict, settings: dict) -> None:
    diffs = [k for k in settings if k in saved and saved[k] != settings[k]]
    if not diffs:
        return
    label = lambda k: "the xy range (lo, hi) of --data" if k == "data_range" else _flag(k)  # noqa: E731
    what = "; ".join(f"{label(k)}: the state has {saved[k]!r}, this command {settings[k]!r}" for k in diffs)
    raise TrainingSetupError(f"cannot resume {out}: this command's settings differ from its saved state's ({what}). "
                             "Rerun with the state's settings, or train into another --out.")


def _net_target(x0_star: Tensor, x_in: Tensor, a: Tensor, prediction: str) -> Tensor:
    """What the network must output so that `to_x0` of it, at input ``x_in``, is ``x0_star``."""
    a = append_dims(a, x_in.ndim)
    if prediction == "sample":
        return x0_star
    eps = (x_in - a.sqrt() * x0_star) / (1 - a).sqrt()
    return eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0_star


def sample_evidence(x0: Tensor, a: Tensor, args, g: torch.Generator, overlap_steps: int = OVERLAP_STEPS
                    ) -> dict[str, Tensor]:
    """Consensus-like evidence for a batch of clean windows ``x0 (n, H, C)`` at ᾱ ``a (n,)``:
    a window's first and/or last ``overlap_steps // stride`` points get ``y = x_0 + ε/√π``,
    ``π = κ·min(ᾱ/(1−ᾱ), 10)``, κ log-uniform in ``args.evidence_kappa``; elsewhere π = 0.
    Which sides (``args.evidence_sides``), with q = ``args.evidence_prob``:
      - ``one-or-both``: with probability q the prefix, the suffix or both (a third each), one κ;
      - ``independent``: each side with probability q and its own κ, as CompDiffuser drops each
        neighbour's chunk independently (q = 0.8: both 64 %, one 32 %, none 4 %)."""
    n, H = x0.shape[:2]
    k = overlap_steps // args.stride
    lo, hi = (math.log(v) for v in args.evidence_kappa)
    if getattr(args, "evidence_sides", "one-or-both") == "independent":
        on = torch.rand(n, 2, generator=g) < args.evidence_prob  # (prefix, suffix)
        kappa = torch.exp(lo + (hi - lo) * torch.rand(n, 2, generator=g))
    else:
        any_ = torch.rand(n, generator=g) < args.evidence_prob
        side = torch.randint(0, 3, (n,), generator=g)  # 0: prefix, 1: suffix, 2: both
        on = torch.stack([any_ & (side != 1), any_ & (side != 0)], 1)
        kappa = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))[:, None].expand(n, 2)
    per_point = torch.zeros(n, H)
    per_point[:, :k] = (kappa[:, 0] * on[:, 0])[:, None]
    per_point[:, H - k:] = (kappa[:, 1] * on[:, 1])[:, None]
    prec = (per_point * (a / (1 - a)).clamp(max=10.0)[:, None])[..., None].expand_as(x0).to(x0).contiguous()
    noise = torch.randn(x0.shape, generator=g)
    y = torch.where(prec > 0, x0 + noise / prec.clamp(min=1e-12).sqrt(), torch.zeros_like(x0))
    return {"evidence": y, "evidence_precision": prec}


class Batcher:
    """Noised training batches with their targets: ``(x_in, t, mask, target, evidence)``
    (``evidence``: keyword tensors for the network, empty unless ``--evidence-prob``)."""

    def __init__(self, eps: Tensor, ac: Tensor, args, bank: EmpiricalPrior | None, cond: bool,
                 domain: Domain = POINTMAZE) -> None:
        self.eps, self.ac, self.args, self.bank, self.cond, self.domain = eps, ac, args, bank, cond, domain

    def __call__(self, n: int, g: torch.Generator):
        a_ = self.args
        x0 = sample_windows(self.eps, n, self.domain.horizon_steps, g, a_.stride)
        t = torch.randint(0, self.ac.shape[0], (n,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = self.ac[t]
        x_t = append_dims(a, 3).sqrt() * x0 + append_dims(1 - a, 3).sqrt() * noise
        full = torch.zeros(x0.shape, dtype=torch.bool)  # observed entries
        goal = list(self.domain.goal_dims or range(x0.shape[-1]))
        if self.cond:
            ends = torch.rand(n, 2, generator=g) < a_.cond_prob
            full[:, 0] = ends[:, :1]
            full[:, -1, goal] = ends[:, 1:]
        mask = full if self.domain.goal_dims is not None else full.any(-1)  # what the network reads
        x_in = torch.where(full, x0, x_t)
        ev = sample_evidence(x0, a, a_, g, self.domain.overlap_steps) if a_.evidence_prob > 0 else {}
        if self.bank is None:
            x0_star = x0
        else:
            obs = dict(observed=x0, observed_mask=full) if self.cond else {}
            obs.update(ev)
            bank = self.bank
            if a_.bank_sample:  # STF's reference batch: a random part of the bank + the batch itself
                rows = torch.randint(0, bank.size, (a_.bank_sample,), generator=g)
                ref = torch.cat([x0.reshape(n, -1), bank.bank[rows]]).reshape(-1, *x0.shape[1:])
                bank = EmpiricalPrior(ref, self.ac, obs_std=bank.obs_std)
            with torch.no_grad():
                x0_star = bank.denoise(x_t, t, **obs)
        return x_in, t, mask, _net_target(x0_star, x_in, a, a_.prediction), ev


def _loss(net, batch, cond: bool, ac: Tensor) -> Tensor:
    x_in, t, mask, target, ev = batch
    out = net(x_in, t, mask if cond else None, alpha=ac[t], **ev)
    return (out - target).pow(2).mean()


def _plot(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history["train"]:
        s, l = zip(*history["train"])
        ax.plot(s, l, lw=0.8, label="train (EMA of batch loss)")
    if history["val"]:
        s, l = zip(*history["val"])
        ax.plot(s, l, "o-", label="validation (EMA weights)")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE of the network's target")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


# ----------------------------------------------------------------------------- state
_STATE_KEY = "cofi_state"  # metadata of state.safetensors holding the JSON part


def save_state(path: Path, net, ema, opt, g: torch.Generator, info: dict) -> None:
    """Training state as ``<path>.safetensors`` (tensors, with the JSON part ``info`` in its
    metadata) + ``<path>.json`` (a readable copy of the JSON part); no pickle. Both are
    written atomically, the tensors first: ``<path>.safetensors`` alone is the commit point."""
    from safetensors.torch import save

    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v)
    tensors["rng"] = g.get_state()
    text = json.dumps(dict(info, param_groups=osd["param_groups"]))
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={"format": "pt", _STATE_KEY: text})
    atomic_write(str(path) + ".safetensors", data)
    atomic_write(str(path) + ".json", text.encode())


def read_state(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The tensors and the JSON part of a state written by `save_state` (``<path>.safetensors``;
    states written before it carried its JSON part are read with ``<path>.json``). Errors name
    the file."""
    st, js = Path(str(path) + ".safetensors"), Path(str(path) + ".json")
    if not st.is_file():
        raise FileNotFoundError(f"{st}: no such file (an incomplete training state)")
    tensors, metadata = read_safetensors(st)
    if _STATE_KEY in metadata:
        try:
            meta = json.loads(metadata[_STATE_KEY])
        except ValueError as e:
            raise ValueError(f"{st}: corrupt state metadata: {e}") from e
    else:  # written before the metadata held it
        meta = read_json(js)
    for key in ("step", "history", "wall_s", "param_groups"):
        if key not in meta:
            raise ValueError(f"{st}: the training state lacks {key!r}")
    return tensors, meta


def _apply_state(tensors: dict, meta: dict, net, ema, opt, g: torch.Generator, where: str) -> dict:
    meta = dict(meta)
    if "rng" not in tensors:
        raise ValueError(f"{where}: the training state lacks the tensor 'rng'")
    try:
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
        g.set_state(tensors["rng"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}: the training state does not fit this network: {e}") from e
    return meta


def load_state(path: Path, net, ema, opt, g: torch.Generator) -> dict:
    """Inverse of `save_state`; returns the JSON part."""
    tensors, meta = read_state(path)
    return _apply_state(tensors, meta, net, ema, opt, g, str(path) + ".safetensors")


def _checkpoint_is_at(out: Path, step: int) -> bool:
    """Whether ``<out>``'s checkpoint (both files) was written at ``step``."""
    try:
        cfg = read_json(out / "config.json")
        _, metadata = read_safetensors(out / "model.safetensors")
    except (OSError, ValueError):
        return False
    return cfg.get("step") == step and metadata.get("step") == str(step)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of saves that a killed process left behind (`atomic_write`)."""
    for name in ("model.safetensors", "config.json", "state.safetensors", "state.json", "loss.png"):
        for tmp in out.glob(f".{name}.*.tmp"):
            pid = tmp.name[len(name) + 2:].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot tell: leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# ----------------------------------------------------------------------------- training
def _load_split(path: Path, what: str, domain: Domain = POINTMAZE) -> np.ndarray:
    try:
        eps = domain.load(path)
    except Exception as e:  # numpy / zip / layout errors, which do not all name the file
        raise TrainingSetupError(f"{what} {str(path)!r}: cannot read OGBench-layout episodes "
                                 f"({type(e).__name__}: {e})") from e
    if len(eps) == 0:
        raise TrainingSetupError(f"{what} {str(path)!r}: holds no episodes")
    if not np.isfinite(eps).all():
        raise TrainingSetupError(f"{what} {str(path)!r}: holds NaN or infinite positions")
    return eps


def train(args: argparse.Namespace, command: str = "") -> Path:
    """Train (or resume, see the module docstring) with the settings of ``args`` (the namespace
    of `add_train_args`; missing attributes take its defaults); returns the output folder.
    Raises `TrainingSetupError` for a bad argument or an unusable input, before writing anything."""
    args = validate_train_args(args)
    data = Path(args.data)
    out = Path(args.out)
    env = args.env or data.name[: -len(".npz")]
    dom = domain_of(data, args.env)
    train_eps = _load_split(data, "--data", dom)
    val_eps = _load_split(validation_path(data), "the validation split of --data", dom)
    dims = train_eps.shape[-1]
    lo, hi = train_eps.reshape(-1, dims).min(0), train_eps.reshape(-1, dims).max(0)
    try:
        norm = XYNormalizer(lo, hi, scale=args.scale, env_name=env, stride=args.stride)
    except ValueError as e:
        raise TrainingSetupError(f"--data {str(data)!r}: {e} (every dimension of the positions must vary)") from e
    settings = _run_settings(args, env, lo, hi)
    state_path = out / "state"
    resume = Path(str(state_path) + ".safetensors").exists() or Path(str(state_path) + ".json").exists()
    saved = None
    if resume:  # read and check the state before anything is built or written
        try:
            saved = read_state(state_path)
        except (OSError, ValueError) as e:
            raise TrainingSetupError(f"cannot resume {out}: {e}") from e
        recorded = saved[1].get("settings")
        if recorded is None and (out / "config.json").is_file():  # a state from before settings were recorded
            try:
                recorded = _settings_from_config(read_json(out / "config.json"))
            except ValueError:
                recorded = None
        _check_resumable(out, recorded or {}, settings)
    torch.set_num_threads(args.threads)
    tr = norm.normalize(pad_episodes(train_eps, args.pad))
    va = norm.normalize(pad_episodes(val_eps, args.pad))
    cond = args.cond_prob > 0
    cfg = UNet1DConfig(horizon=dom.horizon_steps // args.stride, channels=dims, dim=args.dim, dim_mults=tuple(args.dim_mults),
                       fourier=args.fourier, grid=args.grid, grid_dim=args.grid_dim,
                       grid_smooth=tuple(args.grid_smooth), grid_extent=args.scale,
                       grid_wiener=args.grid_wiener, cond=cond, cond_entries=cond and dom.goal_dims is not None,
                       evidence=args.evidence_prob > 0)
    ac = cosine_alphas_cumprod(args.T)
    bank = None
    if args.target == "stf":
        windows = cut_windows(tr.numpy(), dom.horizon_steps, args.stride, args.bank_every)
        bank = EmpiricalPrior(torch.from_numpy(windows), ac, obs_std=0.02)
    torch.manual_seed(args.seed)
    net = TemporalUNet(cfg)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    step, history, wall_before = 0, {"train": [], "val": []}, 0.0
    ema_age = 0  # steps the EMA has already averaged (a warm start's)
    info: dict = {}
    if saved is not None:  # resume
        try:
            info = _apply_state(*saved, net, ema, opt, g, str(state_path) + ".safetensors")
        except ValueError as e:
            raise TrainingSetupError(f"cannot resume {out}: {e}") from e
        step, history, wall_before = info["step"], info["history"], info["wall_s"]
        ema_age = info.get("ema_age", 0)
        print(f"resumed from step {step}")
    elif args.init is not None:  # warm start: weights + EMA, fresh optimiser and schedule
        init = Path(args.init)
        try:
            if (init / "state.safetensors").exists():  # a training run: its weights and its EMA
                tensors, init_meta = read_state(init / "state")
                for prefix, module in (("net.", net), ("ema.", ema)):
                    part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                    module.load_state_dict(expand_input_weights(part, module))
                ema_age = init_meta["step"]
            else:  # a shipped checkpoint: its EMA weights start both
                shipped = TrajectoryPrior.from_pretrained(init)
                weights = expand_input_weights(shipped.net.state_dict(), net)  # e.g. adding evidence inputs
                net.load_state_dict(weights)
                ema.load_state_dict(weights)
                ema_age = int(read_json(init / "config.json").get("step", 0))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise TrainingSetupError(f"--init {str(args.init)!r}: cannot start from it "
                                     f"({type(e).__name__}: {e})") from e
        print(f"initialised from {args.init} (step {ema_age})")
    batches = Batcher(tr, ac, args, bank, cond, dom)
    val_batch = Batcher(va, ac, args, bank, cond, dom)(512, torch.Generator().manual_seed(1234))
    meta = dict(env_name=env, T=args.T, schedule="cosine", command=command, seed=args.seed, steps=args.steps,
                batch=args.batch, lr=args.lr, target=args.target, pad=args.pad, bank_every=args.bank_every,
                cond_prob=args.cond_prob, bank_windows=None if bank is None else bank.size,
                evidence_prob=args.evidence_prob, evidence_kappa=list(args.evidence_kappa),
                evidence_sides=args.evidence_sides,
                bank_sample=args.bank_sample)
    planning = {}  # a warm start keeps the planning settings its checkpoint was tuned with
    if args.init is not None:
        try:
            init_cfg = read_json(Path(args.init) / "config.json")
        except (OSError, ValueError) as e:
            raise TrainingSetupError(f"--init {str(args.init)!r}: {e}") from e
        meta.update(init=dict(path=str(args.init), command=init_cfg.get("command"), steps=init_cfg.get("step"),
                              wall_s=init_cfg.get("wall_s")))
        planning = {k: init_cfg[k] for k in PLANNING_SETTINGS if init_cfg.get(k)}

    def export(extra: dict) -> None:
        TrajectoryPrior(ema, ac, lo, hi, env_name=env, prediction=args.prediction, scale=args.scale,
                        stride=args.stride, **planning).save_pretrained(out, extra=extra)

    out.mkdir(parents=True, exist_ok=True)  # nothing is written before this line
    _remove_stale_temporaries(out)
    if saved is not None:  # a save that was killed after its checkpoint or before its state.json
        if info.get("checkpoint") is not None and not _checkpoint_is_at(out, step):
            export(info["checkpoint"])
            print(f"rewrote the checkpoint of step {step} from the state")
        try:
            stale = read_json(Path(str(state_path) + ".json")) != saved[1]
        except (OSError, ValueError):
            stale = True
        if stale:
            atomic_write(str(state_path) + ".json", json.dumps(saved[1]).encode())
    running = history["train"][-1][1] if history["train"] else None
    end = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
    if step >= end:
        print(f"{out} is at step {step}, at or past the end of this run ({end}): nothing to train")
        return out
    bar = tqdm(total=args.steps, initial=step, desc=f"train {env}")
    t0 = time.time()
    while step < end:
        batch = batches(args.batch, g)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = _loss(net, batch, cond, ac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step + ema_age) / (10 + step + ema_age))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if step % 50 == 0:
            history["train"].append((step, running))
        if step % args.every == 0 or step == end:
            with torch.no_grad():
                val = _loss(ema, val_batch, cond, ac).item()
            history["val"].append((step, val))
            wall = round(wall_before + time.time() - t0, 1)
            meta.update(step=step, val_loss=val, train_loss=running, wall_s=wall)
            export(meta)
            save_state(state_path, net, ema, opt, g, dict(step=step, history=history, wall_s=wall, ema_age=ema_age,
                                                          settings=settings, checkpoint=meta))
            _plot(history, out / "loss.png")
            if args.snapshot_every and step % args.snapshot_every == 0:
                _snapshot(out, step)
            bar.write(f"step {step}: train {running:.4f}  val {val:.4f}")
    bar.close()
    return out


def _snapshot(out: Path, step: int) -> None:
    """Copy the checkpoint just written (``model.safetensors`` + ``config.json``) to
    ``<out>/snapshots/step-<step>/`` (each file atomically)."""
    dest = out / "snapshots" / f"step-{step:07d}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        atomic_write(dest / name, (out / name).read_bytes())


def train_from_args(args: argparse.Namespace, argv: list[str]) -> Path:
    return train(args, "python -m cofi.planning " + " ".join(argv[1:]))
