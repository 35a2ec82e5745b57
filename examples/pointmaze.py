"""Plan and execute one OGBench PointMaze task with a composed diffusion plan (CPU, under a minute).

    python examples/pointmaze.py                      # giant maze, task 1, CoFi
    python examples/pointmaze.py --env pointmaze-large-stitch-v0 --task 3 --method gsc

Loads the shipped 160-step trajectory prior of the maze, composes N windows of it into a
start-to-goal plan (8 for giant), follows the plan with a waypoint controller, replans
when the agent strays more than 1.0 from it, and writes a figure of the plans it executed
(the first plan and each replan, older ones fainter) with the path it walked.
`examples/antmaze.py` runs the same script for the ant.
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None, *, env: str = "pointmaze-giant-stitch-v0", out: str = "pointmaze_plan.png",
         description: str = __doc__) -> None:
    from cofi.planning.planner import METHODS

    ap = argparse.ArgumentParser(description=description.splitlines()[0])
    ap.add_argument("--env", default=env,
                    help="pointmaze-{medium,large,giant}-stitch-v0 or antmaze-{medium,large,giant}-stitch-v0")
    ap.add_argument("--task", type=int, default=1, help="OGBench evaluation task 1..5")
    ap.add_argument("--method", default="cofi", choices=METHODS,
                    help="cd (CompDiffuser-style GSC with neighbour-conditioned scores) needs --closed-form")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the planning preset)")
    ap.add_argument("--guidance", type=float, default=None, help="overlap guidance weight (default: the preset's)")
    ap.add_argument("--consensus", type=float, default=None,
                    help="consensus coupling κ (0 = off; default: the prior's planning_consensus)")
    ap.add_argument("--max-replans", type=int, default=10, help="replans allowed (the benchmark's 10)")
    ap.add_argument("--checkpoint", default=None, help="a local prior directory instead of the shipped one")
    ap.add_argument("--closed-form", default=None, metavar="NPZ",
                    help="plan with the closed-form EmpiricalPrior of this stitch dataset instead "
                         "(e.g. data/pointmaze-giant-stitch-v0.npz from `python -m cofi.planning generate`)")
    ap.add_argument("--out", default=out, help="figure path (PNG)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (the small U-Net plans fastest on one; two threads on a busy 2-core "
                         "machine ran many times slower)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    from cofi.planning.evaluate import make_env, max_steps_for, run_episode
    from cofi.planning.maze import Maze, agent_of, parse_env_name
    from cofi.planning.planner import default_batch, default_count, planning_sampler
    from cofi.priors import EmpiricalPrior, TrajectoryPrior
    from cofi.viz import plot_episode

    maze_type, _ = parse_env_name(args.env)
    if args.closed_form:
        prior = EmpiricalPrior.from_stitch_data(args.closed_form, top_k=64)
    else:
        prior = TrajectoryPrior.from_pretrained(args.checkpoint or f"{agent_of(args.env)}maze-{maze_type}-stitch")
    if args.consensus is not None:  # ValueError unless the network reads evidence
        prior.planning_consensus = args.consensus
    sampler = planning_sampler(args.method, prior=prior, **({} if args.steps is None else {"steps": args.steps}),
                               **({} if args.guidance is None else {"guidance": args.guidance}))
    count, batch = default_count(args.env), default_batch(args.method, prior)
    max_steps = max_steps_for(args.env)  # 1000; AntMaze-Giant 2000
    env = make_env(args.env, max_steps)
    maze = Maze.from_env(env)
    print(f"{args.env} task {args.task}: {args.method}, {count} windows x 160 steps "
          f"({prior.sample_shape[0]} points at stride {prior.stride}), {batch} candidates, "
          f"{sampler.steps} DDIM steps, consensus κ = {sampler.consensus:g}, seed {args.seed}")
    t0 = time.perf_counter()
    rec = run_episode(env, prior, task=args.task, sampler=sampler, method=args.method, count=count,
                      batch=batch, seed=args.seed, maze=maze, max_steps=max_steps, max_replans=args.max_replans,
                      keep_paths=True,
                      env_name=args.env)
    env.close()
    total = time.perf_counter() - t0
    print(f"success      {rec.success} (final distance to goal {rec.final_distance:.2f}, success radius "
          f"{maze.goal_tol:g})")
    print(f"steps        {rec.steps} / {max_steps}")
    print(f"replans      {rec.replans}")
    print(f"first plan   open-loop valid: {rec.plan_valid}; NFE {rec.first_plan_nfe}; "
          f"{rec.first_plan_time_s:.1f} s; overlap MSE {rec.overlap_error:.2e}")
    print(f"all plans    NFE {rec.nfe}; planning {rec.plan_time_s:.1f} s; episode {total:.1f} s")
    plot_episode(maze, rec.plans, rec.path, rec.plan_steps, goal=rec.plans[0][-1],
                 title=f"{args.env} task {args.task} · {args.method} · "
                       f"{'success' if rec.success else 'failure'} in {rec.steps} steps, {rec.replans} replans",
                 save=args.out)
    print(f"figure       {args.out}")


if __name__ == "__main__":
    main()
