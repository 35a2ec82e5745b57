"""Compose a plan across processes with torch.distributed (docs/distributed.md).

    torchrun --nproc_per_node 2 examples/distributed.py                # CPU: gloo, 1 thread per process
    torchrun --nproc_per_node 4 examples/distributed.py --device cuda  # GPUs: NCCL, one GPU per process

Plans the first plan of an OGBench PointMaze task (giant, task 1) with the shipped U-Net prior.
The plan's windows are split into contiguous blocks, one per rank; each rank calls the prior
on its block only, and the ranks exchange the overlap bands, CoFi's scaffold mean and, at the
end, the plans. Every rank gets the same plan; rank 0 prints it, checks it against a
single-process composition with the same seed (``--check``) and reports what it sent.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="pointmaze-giant-stitch-v0")
    ap.add_argument("--task", type=int, default=1)
    ap.add_argument("--method", default="cofi", choices=("cofi", "gsc", "cdgs"))
    ap.add_argument("--batch", type=int, default=None, help="candidates (default: the method's)")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    ap.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                    help="rank 0 also composes alone and compares")
    args = ap.parse_args()

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_*
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    import cofi
    from cofi.planning import plan
    from cofi.planning.evaluate import episode_problem, make_env
    from cofi.planning.maze import Maze, parse_env_name
    from cofi.planning.planner import default_count, planning_sampler
    from cofi.priors import TrajectoryPrior

    maze_type, _ = parse_env_name(args.env)
    prior = TrajectoryPrior.from_pretrained(f"pointmaze-{maze_type}-stitch", device=device)
    env = make_env(args.env)
    maze = Maze.from_env(env)
    start, goal, _ = episode_problem(env, args.task)
    env.close()
    sampler = planning_sampler(args.method, prior=prior)
    count = default_count(maze_type)

    def run(group):
        g = torch.Generator(device=device).manual_seed(0)
        return plan(prior, start, goal, sampler, count=count, batch=args.batch, generator=g, maze=maze,
                    group=group)

    dist.barrier()
    t0 = time.perf_counter()
    res = run(dist.group.WORLD)
    wall = time.perf_counter() - t0
    if rank == 0:
        print(f"{args.env} task {args.task}: {args.method}, {count} windows over {world} ranks "
              f"({', '.join(f'{b - a}' for a, b in (cofi.distributed.block(count, world, r) for r in range(world)))} windows each)")
        print(f"plan         {len(res.xy)} points, open-loop valid: {maze.check_plan(res.xy, goal).valid}")
        print(f"NFE          {res.nfe} (all ranks); {wall:.2f} s on {world} ranks")
    if args.check and rank == 0:
        t0 = time.perf_counter()
        alone = run(None)
        print(f"one process  {time.perf_counter() - t0:.2f} s; max |difference| "
              f"{np.abs(alone.xy - res.xy).max():.2e} env units")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
