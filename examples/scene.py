"""Plan and execute one OGBench Scene-Play task with a composed diffusion plan (CPU, a few minutes).

    python examples/scene.py                          # task 1 (open the drawer and the window), CoFi
    python examples/scene.py --task 4 --method gsc
    python examples/scene.py --closed-form data/scene-play-v0.npz   # the exact prior of regenerated data

Loads the shipped Scene prior (128-step windows of the 14 planning dimensions at one point per
4 steps), composes 4 to 8 windows (two per condition the task still misses, plus two) into a plan
from the current state to the goal's object state (the cube, both buttons, the drawer and the
window; the arm is free; the cube moves only while the arm holds it), executes it with the shipped
inverse-dynamics controller, replans when the state strays from the plan, and writes a figure of
what each plan asked for and what happened.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from cofi.planning.planner import METHODS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", type=int, default=1, choices=range(1, 6), help="OGBench evaluation task 1..5")
    ap.add_argument("--method", default="cofi", choices=METHODS,
                    help="cd (neighbour-conditioned scores) needs a prior that reads evidence (--closed-form)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-replans", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=1500, help="episode length (the paper's 1 500)")
    ap.add_argument("--checkpoint", default=None, help="a local prior directory instead of the shipped one")
    ap.add_argument("--closed-form", default=None, metavar="NPZ",
                    help="plan with the closed-form EmpiricalPrior of a regenerated scene-play-v0.npz instead")
    ap.add_argument("--out", default="scene_episode.png", help="figure path (PNG)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (the 1.1 M-parameter prior plans fastest on one; with two threads on a "
                         "busy 2-core machine planning ran 30x slower)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from cofi.planning.scene_control import InverseDynamics
    from cofi.planning.scene_evaluate import SCENE_REPLAN, make_eval_env, run_scene_episode
    from cofi.planning.scene_plan import scene_prior
    from cofi.priors import TrajectoryPrior
    from cofi.viz import plot_scene_episode

    prior = scene_prior(args.closed_form) if args.closed_form else TrajectoryPrior.from_pretrained(
        args.checkpoint or "scene-play")
    model = InverseDynamics.from_pretrained()
    env = make_eval_env(args.max_steps)
    task_name = env.unwrapped.task_infos[args.task - 1]["task_name"]
    print(f"scene-play-v0 task {args.task} ({task_name}): {args.method}, 4-8 windows x 128 steps "
          f"({prior.sample_shape[0]} points at stride {prior.stride}; two per unmet condition plus two), cube carried "
          f"only while held, seed {args.seed}, replan at a {SCENE_REPLAN[0]} deviation of {SCENE_REPLAN[1]}")
    t0 = time.perf_counter()
    rec = run_scene_episode(env, prior, model, args.task, args.method, seed=args.seed,
                            max_replans=args.max_replans, max_steps=args.max_steps, keep_paths=True)
    _, info = env.reset(seed=args.seed, options=dict(task_id=args.task))
    env.close()
    total = time.perf_counter() - t0
    print(f"success      {rec.success}")
    print(f"steps        {rec.steps} / {args.max_steps}")
    print(f"replans      {rec.replans}")
    print(f"planning     NFE {rec.first_plan_nfe} per plan, {rec.nfe} in all; {rec.plan_time_s:.1f} s; "
          f"episode {total:.1f} s")
    plot_scene_episode(rec.plans, rec.states, rec.plan_steps, goal=info["goal"], stride=prior.stride,
                       title=f"scene-play-v0 task {args.task} ({task_name}) · {args.method} · "
                             f"{'success' if rec.success else 'failure'} in {rec.steps} steps, {rec.replans} replans",
                       save=args.out)
    print(f"figure       {args.out}")


if __name__ == "__main__":
    main()
