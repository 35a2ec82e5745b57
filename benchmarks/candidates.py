"""Which candidate should a maze plan execute? Validity of every candidate of first plans.

    python benchmarks/candidates.py --maze giant --methods cofi gsc --seeds 0 1 2 3 --steps 50
    python benchmarks/candidates.py --maze giant --methods cofi --steps 20 50 --guidance 2 5
    python benchmarks/candidates.py --agent ant --maze giant --methods cofi --lam0 0.9 0.7 0.5 --seeds 0 1
    python benchmarks/candidates.py --agent ant --maze giant --methods cofi cdgs --refine-fusion off on
    python benchmarks/candidates.py --agent ant --maze giant --methods cofi --cofi refine_inner=1 refine_inner=2

For each setting and each OGBench task × seed, composes the first plan of the evaluation episode
(the same start, goal and generator as `benchmarks/planning.py`, no execution) and checks every
one of its candidates open loop (`Maze.check_plan`); settings are the product of ``--steps``,
``--guidance``, ``--lam0`` (CoFi's first λ), ``--refine-fusion`` (CoFi's fusion in its
refinement stage) and ``--cofi`` (any further `cofi.CoFi` fields; these three are ignored by the
other methods), each default the prior's stored planning
setting. Reports the share of valid candidates, how
often the candidate chosen by each rule is valid — ``overlap`` (the lowest disagreement of the
windows, `cofi.compose`'s ``best``), ``consistency`` (the lowest `cofi.steps.self_consistency`,
what ``plan(select="consistency")`` executes) — and how often *some* candidate is valid (the
ceiling of any rule), and the share of windows that cross a wall, per window position. Then the
shape of the plan the prior's own ``planning_select`` executes, what a controller has to follow
(medians over the problems): the largest gap between two adjacent windows over their overlap
(they are blended there; a large gap becomes a fast stretch of the plan), the largest step of
the plan (env units per env step; the ant's data move ≤ 0.18 per step in 90 % of 8-step
spans), its closest approach to a wall (`Maze.wall_distance`) and the env step at which it first
comes within the success radius of the goal.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from scene import parse_set  # benchmarks/scene.py: KEY=VALUE as Python literals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", choices=("point", "ant"), default="point", help="pointmaze-* or antmaze-*")
    ap.add_argument("--maze", default="giant", choices=("medium", "large", "giant"))
    ap.add_argument("--checkpoint", default=None, help="a U-Net checkpoint (default: the shipped one of the maze)")
    ap.add_argument("--methods", nargs="+", default=["cofi", "gsc"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--steps", type=int, nargs="+", default=[None],
                    help="DDIM steps (one setting each; default: the prior's stored one, else 20)")
    ap.add_argument("--guidance", type=float, nargs="+", default=[None],
                    help="overlap guidance weights (default: the prior's stored one)")
    ap.add_argument("--lam0", type=float, nargs="+", default=[None],
                    help="CoFi's λ0 (default: the prior's planning_lam0, else 0.9)")
    ap.add_argument("--refine-fusion", choices=("on", "off"), nargs="+", default=[None],
                    help="CoFi's fusion in its refinement stage (default: the prior's planning_refine_fusion)")
    ap.add_argument("--cofi", nargs="+", default=[""], metavar="KEY=VALUE,...",
                    help="further CoFi settings, one per argument (e.g. refine_inner=2 fusion=True,refine_at=0.2; "
                         "'' is none); each is a setting of its own")
    ap.add_argument("--batch", type=int, default=None, help="candidates per plan (default: the prior's, else 16)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cofi.planning.evaluate import episode_problem, make_env
    from cofi.planning.maze import Maze
    from cofi.planning.planner import CONSISTENCY, CONSISTENCY_NFE, default_batch, plan, planning_sampler, upsample
    from cofi.priors import TrajectoryPrior
    from cofi.steps import self_consistency

    env_name = f"{args.agent}maze-{args.maze}-stitch-v0"
    prior = TrajectoryPrior.from_pretrained(args.checkpoint or env_name[:-3])
    env = make_env(env_name)
    maze = Maze.from_env(env)
    print(f"# {env_name}, {args.checkpoint or 'shipped'} prior, {len(args.seeds) * len(args.tasks)} first plans "
          f"per setting\n")
    print("| method | DDIM steps | guidance | λ0 | candidates | candidates valid | overlap-chosen valid | consistency-chosen valid | "
          "some candidate valid | windows crossing a wall (by position) | executed: overlap gap | executed: largest step | "
          "executed: wall clearance | executed: env step at the goal | NFE / plan (+ consistency) | s / plan |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    executes = getattr(prior, "planning_select", None) or "overlap"
    for method, steps, w, lam0, fuse, more in itertools.product(args.methods, args.steps, args.guidance, args.lam0,
                                                                args.refine_fusion, args.cofi):
        if method != "cofi" and (lam0, fuse, more) != (args.lam0[0], args.refine_fusion[0], args.cofi[0]):
            continue  # CoFi's settings: the other methods run once
        cofi_only = {} if method != "cofi" else {**({} if lam0 is None else {"lam0": lam0}),
                                                 **({} if fuse is None else {"refine_fusion": fuse == "on"}),
                                                 **parse_set(more.split(",") if more else [])}
        sampler = planning_sampler(method, prior=prior, steps=steps, **({} if w is None else {"guidance": w}),
                                   **cofi_only)
        batch = args.batch or default_batch(method, prior)
        frac, chosen, cons, some, cross, times = [], 0, 0, 0, [], []
        gaps, jumps, clear, arrive = [], [], [], []
        for seed in args.seeds:
            for task in args.tasks:
                start, goal, gen = episode_problem(env, task, seed)
                t0 = time.perf_counter()
                out = plan(prior, start, goal, sampler, batch=batch, generator=gen, maze=maze, select="overlap")
                score = self_consistency(prior, out.plans, generator=gen, **CONSISTENCY)
                times.append(time.perf_counter() - t0)
                canv = prior.unnormalize(out.canvas).double().numpy()
                paths = [upsample(c, prior.stride) for c in canv]
                for xy in paths:
                    xy[0], xy[-1] = start, goal
                valid = [bool(maze.check_plan(xy, goal).valid) for xy in paths]
                win = prior.unnormalize(out.plans).double().numpy()  # (B, N, H, 2)
                cross.append([[maze.crosses_wall(upsample(win[b, n], prior.stride)) for n in range(win.shape[1])]
                              for b in range(win.shape[0])])
                frac.append(np.mean(valid))
                chosen += valid[out.best]
                cons += valid[int(torch.argmin(score))]
                some += any(valid)
                pick = int(torch.argmin(score)) if executes == "consistency" else out.best
                mine = torch.from_numpy(win[pick:pick + 1])  # window i's last overlap points against i+1's first
                gap = out.layout.right(mine)[:, :-1] - out.layout.left(mine)[:, 1:]
                gaps.append(float(gap.norm(dim=-1).max()) if gap.numel() else 0.0)
                jumps.append(np.linalg.norm(np.diff(paths[pick], axis=0), axis=1).max())
                clear.append(maze.wall_distance(paths[pick]).min())
                near = np.linalg.norm(paths[pick] - goal, axis=1) <= maze.goal_tol
                arrive.append(int(np.argmax(near)))
        n = len(frac)
        by_pos = np.concatenate([np.asarray(c, float) for c in cross]).mean(0)
        extra = CONSISTENCY_NFE * out.plans.shape[0] * out.plans.shape[1]
        name = (f"{method} (refine fusion {'on' if sampler.refine_fusion else 'off'}, "
                f"{sampler.refine_inner} round{'s' if sampler.refine_inner > 1 else ''} per refinement step)"
                if method == "cofi" else method)
        name += f" {more}" if method == "cofi" and more else ""
        lam = f"{sampler.lam0:g}" if method == "cofi" else "–"
        print(f"| {name} | {sampler.steps} | {sampler.guidance:g} | {lam} | {batch} | {100 * np.mean(frac):.0f} % | {chosen}/{n} | {cons}/{n} | "
              f"{some}/{n} | {' '.join(f'{100 * v:.0f}' for v in by_pos)} % | {np.median(gaps):.2f} | "
              f"{np.median(jumps):.2f} | {np.median(clear):.2f} | {np.median(arrive):.0f} | {out.nfe} (+{extra}) | "
              f"{np.mean(times):.1f} |", flush=True)
    env.close()


if __name__ == "__main__":
    main()
