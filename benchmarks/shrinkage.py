"""Does CoFi's shrinkage toward the mean window hurt maze plans? (first plans only, no execution)

    python benchmarks/shrinkage.py                                   # medium, seeds 0-3, table
    python benchmarks/shrinkage.py --figure docs/figures/medium_shrinkage.png

For every OGBench task x seed it composes the first plan of the evaluation episode (same start,
goal and generator as `benchmarks/planning.py`) with the CoFi preset (λ0 = 0.9), CoFi without
shrinkage (λ0 = 1, renoise and refinement kept) and GSC, and prints the fraction of plan points
inside walls, the largest step between consecutive plan points and the plan length. The figure
shows the two preset plans with the most points in walls next to the λ0 = 1 plans of the same
problems, windows coloured.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maze", default="medium", choices=("medium", "large", "giant"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--figure", default=None, help="PNG of the two worst preset plans and their λ0 = 1 twins")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cofi.planning.evaluate import episode_problem, make_env
    from cofi.planning.maze import Maze
    from cofi.planning.planner import plan, planning_sampler
    from cofi.priors import TrajectoryPrior

    env_name = f"pointmaze-{args.maze}-stitch-v0"
    env = make_env(env_name)
    maze = Maze.from_env(env)
    prior = TrajectoryPrior.from_pretrained(env_name[:-3])
    samplers = {
        "CoFi preset (λ0 = 0.9)": planning_sampler("cofi", prior=prior),
        "CoFi, λ0 = 1.0 (no shrinkage)": planning_sampler("cofi", lam0=1.0, prior=prior),
        "GSC": planning_sampler("gsc", prior=prior),
    }
    stats = {k: [] for k in samplers}
    plans = {k: [] for k in samplers}
    for seed in args.seeds:
        for task in args.tasks:
            for name, sampler in samplers.items():
                start, goal, gen = episode_problem(env, task, seed)
                out = plan(prior, start, goal, sampler, generator=gen, maze=maze)
                steps = np.linalg.norm(np.diff(out.xy, axis=0), axis=1)
                stats[name].append(((~maze.is_free(out.xy)).mean(), steps.max(), steps.sum()))
                plans[name].append((seed, task, out))
            print(f"seed {seed} task {task}: " + ", ".join(
                f"{k.split(' (')[0]} {100 * v[-1][0]:.0f}%" for k, v in stats.items()), flush=True)
    env.close()

    print(f"\n{env_name}, {len(args.seeds) * len(args.tasks)} first plans per row\n")
    print("| sampler | plan points in walls (mean / median) | plans with > 30 % in walls | largest step | plan length |")
    print("|---|---|---|---|---|")
    for name, rows in stats.items():
        a = np.array(rows)
        print(f"| {name} | {100 * a[:, 0].mean():.1f} % / {100 * np.median(a[:, 0]):.1f} % | "
              f"{int((a[:, 0] > 0.3).sum())} / {len(a)} | {a[:, 1].mean():.1f} | {a[:, 2].mean():.0f} |")

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from cofi.viz import plot_plan

        preset, free = list(samplers)[:2]
        worst = np.argsort([-r[0] for r in stats[preset]])[:2]
        fig, axes = plt.subplots(2, 2, figsize=(10, 8))
        for row, i in enumerate(worst):
            for col, name in enumerate((preset, free)):
                seed, task, out = plans[name][i]
                frac = stats[name][i][0]
                lam0 = samplers[name].lam0
                plot_plan(maze, out.xy, out.layout, windows=out.windows, ax=axes[row, col],
                          title=f"seed {seed} task {task}, CoFi λ0={lam0:g}: {100 * frac:.0f}% in walls")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=80)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
