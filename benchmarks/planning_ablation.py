"""CoFi's λ0 × refinement-depth grid on first plans (the analogue of the paper's Fig. 6).

    python benchmarks/planning_ablation.py --maze giant --seeds 0 1 --figure docs/figures/giant_ablation.png
    python benchmarks/planning_ablation.py --prior unet --maze medium
    python benchmarks/planning_ablation.py --prior unet --checkpoint runs/giant8 --consensus 5 --lam0 0.9 1.0 --depth 0 0.6

For every setting and every OGBench task × seed, composes the first plan of the evaluation
episode (the same start, goal and generator as `benchmarks/planning.py`, no execution) and
reports how many plans are valid open loop (`Maze.check_plan`), the fraction of plan points
inside walls, the RMS disagreement of adjacent windows on their overlaps (env units; where the
blend cuts corners) and the NFE. Depth is the fraction of
the K = 20 steps the refinement stage re-runs from the renoised scaffold (0: no refinement).
Prints a markdown table; ``--figure`` draws both metrics as heat maps.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maze", default="giant", choices=("medium", "large", "giant"))
    ap.add_argument("--prior", choices=("closed-form", "unet"), default="closed-form")
    ap.add_argument("--data", default="data")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--consensus", type=float, default=None,
                    help="consensus κ (0 = off). Default: 5 for the closed-form prior, the checkpoint's "
                         "planning_consensus for a U-Net (only one trained with --evidence-prob reads it)")
    ap.add_argument("--checkpoint", default=None, help="U-Net prior: a checkpoint directory (default: the shipped one)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--lam0", type=float, nargs="+", default=[0.5, 0.8, 0.9, 1.0])
    ap.add_argument("--depth", type=float, nargs="+", default=[0.0, 0.2, 0.6, 0.8])
    ap.add_argument("--figure", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cofi.planning.evaluate import episode_problem, make_env
    from cofi.planning.maze import Maze
    from cofi.planning.planner import plan, planning_sampler
    from cofi.priors import EmpiricalPrior, TrajectoryPrior

    env_name = f"pointmaze-{args.maze}-stitch-v0"
    if args.prior == "closed-form":
        prior = EmpiricalPrior.from_stitch_data(os.path.join(args.data, f"{env_name}.npz"), top_k=args.top_k,
                                                planning_consensus=5.0 if args.consensus is None else args.consensus)
    else:
        prior = TrajectoryPrior.from_pretrained(args.checkpoint or env_name[:-3])
        if args.consensus is not None:  # ValueError unless the network reads evidence
            prior.planning_consensus = args.consensus
    env = make_env(env_name)
    maze = Maze.from_env(env)
    problems = [episode_problem(env, task, seed) for seed in args.seeds for task in args.tasks]
    wall = np.zeros((len(args.lam0), len(args.depth)))
    rms = np.zeros_like(wall)
    print(f"# {env_name}, {args.prior} prior, {len(problems)} first plans per setting\n")
    print("| λ0 | refinement depth | valid open loop | plan points in walls | overlap RMS (env units) | NFE / plan |")
    print("|---|---|---|---|---|---|")
    for i, lam0 in enumerate(args.lam0):
        for j, depth in enumerate(args.depth):
            sampler = planning_sampler("cofi", lam0=lam0, refine_at=None if depth <= 0 else 1 - depth, prior=prior)
            w, o, ok = [], [], 0
            for start, goal, gen in problems:
                gen = torch.Generator().set_state(gen.get_state())  # every setting sees the same noise
                out = plan(prior, start, goal, sampler, generator=gen, maze=maze)
                w.append(float((~maze.is_free(out.xy)).mean()))
                ok += bool(maze.check_plan(out.xy, goal).valid)
                win = out.windows
                ov = out.layout.overlap
                o.append(float(np.sqrt(((win[:-1, -ov:] - win[1:, :ov]) ** 2).sum(-1).mean())))
            wall[i, j], rms[i, j] = np.mean(w), np.mean(o)
            print(f"| {lam0} | {depth:.1f} | {ok}/{len(problems)} | {100 * wall[i, j]:.1f} % | {rms[i, j]:.2f} | "
                  f"{out.nfe} |", flush=True)
    env.close()
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, grid, title in ((axes[0], 100 * wall, "plan points in walls (%)"),
                                (axes[1], rms, "overlap RMS (env units)")):
            im = ax.imshow(grid, cmap="viridis_r", origin="lower")
            ax.set_xticks(range(len(args.depth)), [f"{d:.1f}" for d in args.depth])
            ax.set_yticks(range(len(args.lam0)), [str(v) for v in args.lam0])
            ax.set_xlabel("refinement depth (fraction of K)")
            ax.set_ylabel("λ0")
            ax.set_title(title)
            for (a, b), v in np.ndenumerate(grid):
                ax.text(b, a, f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
            fig.colorbar(im, ax=ax)
        fig.suptitle(f"CoFi on {env_name}, {args.prior} prior, {len(problems)} first plans per cell")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
