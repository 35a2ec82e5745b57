"""How well does a PointMaze trajectory prior know its maze? (no planning, no composition)

    python benchmarks/prior_quality.py runs/pointmaze-giant-stitch pointmaze-giant-stitch
    python benchmarks/prior_quality.py pointmaze-medium-stitch --samples 512
    python benchmarks/prior_quality.py closed-form:giant runs/giant     # the EmpiricalPrior of data/, a run
    python benchmarks/prior_quality.py training/giant-neighbour --steps 50 --t0 --bridge 5 20

For each prior (a shipped name or a checkpoint directory), prints:
  - unconditional samples (one 160-env-step window, DDIM with η = 1): fraction of points inside
    a wall cell, fraction of windows whose polyline enters a wall;
  - SDEdit from validation data: noise real windows to step t0, denoise back with DDIM (η = 0),
    and report the same fraction and the RMSE to the clean window. It shows at which noise
    level the prior stops knowing where the walls are.
With ``--bridge κ…``, a prior that reads evidence (``accepts_evidence``) also samples validation
windows from pure noise given their two 56-step overlaps as consensus evidence (precision
κ·min(ᾱ/(1−ᾱ), 10), as a planner's neighbours would send if they were right; ``--bridge-sides
prefix`` gives one side): it shows whether the network bridges between correct neighbours.
The regenerated dataset itself has no point inside a wall (the first row, ``data``).
Needs ``data/<env>-val.npz`` (``python -m cofi.planning generate``) for the SDEdit rows.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from cofi.planning.data import OVERLAP_STEPS
from cofi.steps import ddim_step


def inside_fraction(maze, xy: np.ndarray) -> float:
    return float((~maze.is_free(xy.reshape(-1, 2))).mean())


def crossing_fraction(maze, xy: np.ndarray) -> float:
    return float(np.mean([maze.crosses_wall(w) for w in xy]))


def ddim_from(prior, x: torch.Tensor, t0: int, steps: int) -> torch.Tensor:
    """Deterministic DDIM from step t0 to 0 (about ``steps`` steps)."""
    ac = prior.alphas_cumprod
    ts = list(range(t0, -1, -max(1, t0 // steps)))
    if ts[-1] != 0:
        ts.append(0)
    with torch.no_grad():
        for k, t in enumerate(ts):
            x0 = prior.denoise(x, torch.full((len(x),), t))
            if k + 1 == len(ts):
                return x0
            a_t, a_s = ac[t], ac[ts[k + 1]]
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps
    return x


def bridge(prior, x0: torch.Tensor, kappa: float, sides: str, steps: int, seed: int) -> torch.Tensor:
    """DDIM (η = 1) from pure noise with the clean overlaps of ``x0`` as evidence on ``sides``
    (``both`` or ``prefix``) at precision κ·min(ᾱ_t/(1−ᾱ_t), 10)."""
    ac = prior.alphas_cumprod
    k = OVERLAP_STEPS // prior.stride
    ts = torch.linspace(len(ac) - 1, 0, steps + 1).round().long().tolist()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x0.shape, generator=g)
    for i, t in enumerate(ts):
        a = ac[t]
        prec = torch.zeros_like(x0)
        prec[:, :k] = kappa * min(float(a / (1 - a)), 10.0)
        if sides == "both":
            prec[:, -k:] = prec[:, :1]
        with torch.no_grad():
            xh = prior.denoise(x, torch.full((len(x),), t), evidence=x0, evidence_precision=prec)
        if i + 1 == len(ts):
            return xh
        x = ddim_step(x, xh, a, ac[ts[i + 1]], 1.0, torch.randn(x.shape, generator=g))
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("priors", nargs="+", help="shipped names (pointmaze-giant-stitch) or checkpoint directories")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of the unconditional samples")
    ap.add_argument("--t0", type=int, nargs="*", default=[20, 50, 100, 150])
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bridge", type=float, nargs="*", default=[],
                    help="κ of the bridging rows (priors that read evidence: both overlaps given)")
    ap.add_argument("--bridge-sides", choices=("both", "prefix"), default="both")
    args = ap.parse_args()

    import cofi
    from cofi.planning.data import cut_windows, load_episodes, pad_episodes
    from cofi.planning.maze import Maze
    from cofi.priors import EmpiricalPrior, TrajectoryPrior

    rows = []
    for name in args.priors:
        if name.startswith("closed-form:"):  # closed-form:giant -> EmpiricalPrior of data/…-train
            env = f"pointmaze-{name.split(':', 1)[1]}-stitch-v0"
            prior = EmpiricalPrior.from_stitch_data(os.path.join(args.data_dir, f"{env}.npz"), top_k=64)
        else:
            prior = TrajectoryPrior.from_pretrained(name)
        maze = Maze.from_name(prior.env_name)
        val_path = os.path.join(args.data_dir, f"{prior.env_name}-val.npz")
        data = None
        if os.path.exists(val_path):  # validation windows, padded and strided as the prior's
            wins = cut_windows(pad_episodes(load_episodes(val_path)), 160, getattr(prior, "stride", 1), 4)
            data = wins[np.random.default_rng(args.seed).choice(len(wins), args.samples, replace=False)]
            rows.append((name, "data", "–", inside_fraction(maze, data), crossing_fraction(maze, data), "–"))
        t = time.perf_counter()
        window = prior.sample_shape[0]
        comp = cofi.compose(prior, cofi.Chain(window, 0, 1), cofi.GSC(steps=args.steps, eta=1.0), batch=args.samples,
                            generator=torch.Generator().manual_seed(args.seed), progress=False)
        xy = prior.unnormalize(comp.plans[:, 0]).numpy()
        rows.append((name, f"samples, DDIM {args.steps}, η=1", "–", inside_fraction(maze, xy),
                     crossing_fraction(maze, xy), f"{time.perf_counter() - t:.1f} s"))
        if data is None:
            continue
        x0 = prior.normalize(torch.from_numpy(data.copy()))
        for kappa in args.bridge if getattr(prior, "accepts_evidence", False) else []:
            k = OVERLAP_STEPS // prior.stride
            out = bridge(prior, x0.float(), kappa, args.bridge_sides, args.steps, args.seed)
            rmse = (out - x0)[:, k:-k].pow(2).mean().sqrt().item() / prior.scale
            xy = prior.unnormalize(out).numpy()
            rows.append((name, f"bridge, {args.bridge_sides} overlaps given, κ={kappa:g}, DDIM {args.steps}",
                         f"{rmse:.3f} (middle)", inside_fraction(maze, xy), crossing_fraction(maze, xy), "–"))
        g = torch.Generator().manual_seed(args.seed)
        for t0 in args.t0:
            a = prior.alphas_cumprod[t0]
            x = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
            out = ddim_from(prior, x, t0, 10)
            rmse = (out - x0).pow(2).mean().sqrt().item() / prior.scale  # in [-1, 1] units
            xy = prior.unnormalize(out).numpy()
            rows.append((name, f"SDEdit t0={t0} (ᾱ={a:.3f})", f"{rmse:.3f}", inside_fraction(maze, xy),
                         crossing_fraction(maze, xy), "–"))

    print("| prior | windows | RMSE to data ([-1,1] units) | points inside walls | windows entering a wall | time |")
    print("|---|---|---|---|---|---|")
    for name, what, rmse, inside, cross, secs in rows:
        print(f"| {name} | {what} | {rmse} | {inside:.3f} | {cross:.3f} | {secs} |")


if __name__ == "__main__":
    main()
