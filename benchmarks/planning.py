"""PointMaze and AntMaze planning benchmark: success, open-loop validity, NFE and planning time.

    python benchmarks/planning.py                                   # all mazes x methods, 5 tasks x 1 episode
    python benchmarks/planning.py --mazes giant --methods cofi gsc --episodes 2 --seeds 0 1
    python benchmarks/planning.py --mazes giant --ablation          # λ0 and refinement-depth sweeps (CoFi)
    python benchmarks/planning.py --mazes giant --figure docs/figures/pointmaze_giant.png
    python benchmarks/planning.py --from-json runs/a.jsonl runs/b.jsonl     # tables of saved records
    python benchmarks/planning.py --prior closed-form --data data            # the EmpiricalPrior of the data
    python benchmarks/planning.py --agent ant --mazes medium                 # AntMaze (antmaze-medium-stitch)

Per maze x method: success rate over tasks x episodes x seeds (with counts), open-loop
validity of the first plan, replans, NFE and wall time per plan. Prints markdown
tables; ``--json`` appends one line per episode and is resumable: a (task, seed) whose
episodes the file already holds for the same maze and label is read back, not run again.
Priors: the shipped
``{agent}maze-{maze}-stitch`` checkpoints, ``--checkpoint-dir DIR`` holding
``{agent}maze-{maze}-stitch/``, or ``--prior closed-form``: the exact posterior mean over
the padded, strided windows of ``--data/{agent}maze-{maze}-stitch-v0.npz`` (regenerate with
``python -m cofi.planning generate``), top-k 64 and consensus coupling κ = 5 by default
(``--consensus 0``: off) for the methods that condition on neighbours (CoFi, CD, CDGS; GSC
composes unconditional scores, see `planning_sampler`). For a U-Net trained with
``--evidence-prob``, ``--consensus κ`` overrides the checkpoint's ``planning_consensus``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from cofi.steps import SWEEPS


def load_prior(maze: str, args):
    """The shipped U-Net (``--prior unet``) or the closed-form `EmpiricalPrior` over the
    regenerated stitch data in ``--data`` (``--prior closed-form``); ``--lam0`` sets its
    ``planning_lam0`` (CoFi's λ0), ``--consensus-sweep`` its ``planning_consensus_sweep``,
    ``--refine-fusion`` its ``planning_refine_fusion`` and ``--refine-inner`` its
    ``planning_refine_inner``."""
    prior = _load_prior(maze, args)
    if args.refine_fusion is not None:
        prior.planning_refine_fusion = args.refine_fusion == "on"
    if args.lam0 is not None:
        prior.planning_lam0 = args.lam0
    if args.refine_inner is not None:
        prior.planning_refine_inner = args.refine_inner
    if args.consensus_sweep is not None:
        prior.planning_consensus_sweep = args.consensus_sweep
    return prior


def _load_prior(maze: str, args):
    name = f"{args.agent}maze-{maze}-stitch"
    if args.prior == "closed-form":
        from cofi.priors import EmpiricalPrior

        return EmpiricalPrior.from_stitch_data(os.path.join(args.data, f"{name}-v0.npz"), top_k=args.top_k,
                                               planning_consensus=5.0 if args.consensus is None else args.consensus)
    from cofi.priors import TrajectoryPrior

    prior = TrajectoryPrior.from_pretrained(os.path.join(args.checkpoint_dir, name) if args.checkpoint_dir else name)
    if args.consensus is not None:  # ValueError unless the network reads evidence
        prior.planning_consensus = args.consensus
    return prior


def ant_controller(args):
    """The ant's controller factory for ``--reach-scale`` / ``--along-plan`` / ``--tilt-guard`` (None: the default
    one, and always for the point)."""
    if args.agent != "ant" or (args.reach_scale is None and not args.along_plan and args.tilt_guard is None):
        return None
    from cofi.planning.ant_control import ant_controller as factory

    return factory(**({} if args.reach_scale is None else {"reach_scale": args.reach_scale}), along_plan=args.along_plan,
                   tilt_guard=args.tilt_guard)


def recorded(path, env_name: str, label: str) -> dict:
    """The records of ``path`` (JSON lines) with this env and label, by (task, seed, episode)."""
    if not path or not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                if d.get("env_name") == env_name and d.get("label") == label:
                    out[(d["task"], d["seed"], d["episode"])] = {k: v for k, v in d.items() if k != "label"}
    return out


def run(env_name, prior, method, args, sampler=None, label=None, keep_paths=False):
    from cofi.planning.evaluate import evaluate

    def log(rec, secs):
        if args.verbose:
            print(f"  {label or method:>18} task {rec.task} seed {rec.seed} ep {rec.episode}: "
                  f"{'ok  ' if rec.success else 'fail'} steps {rec.steps:4d} replans {rec.replans} "
                  f"valid {int(rec.plan_valid)} plan {rec.first_plan_time_s:.1f}s ({secs:.0f}s)", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({**rec.to_dict(), "label": label or method}) + "\n")

    steps = args.cdgs_steps if method == "cdgs" and sampler is None else args.steps
    if sampler is None and args.guidance is not None:
        from cofi.planning.planner import planning_sampler

        sampler = planning_sampler(method, prior=prior, guidance=args.guidance, **({"steps": steps} if steps else {}))
    batch = args.cdgs_population if method == "cdgs" else args.batch
    kw = dict(episodes=args.episodes, sampler=sampler, steps=steps, batch=batch, max_replans=args.max_replans,
              count=args.count, stall_steps=args.stall_steps,
              keep_paths=keep_paths, log=log, select=args.select, controller=ant_controller(args))
    done = recorded(args.json, env_name, label or method)
    if not done:
        recs = evaluate(env_name, prior, method, tasks=args.tasks, seeds=args.seeds, **kw)
    else:  # resume: the (task, seed) pairs whose episodes are all in the file are not run again
        from cofi.planning.evaluate import EpisodeRecord

        recs = []
        for seed in args.seeds:
            for task in args.tasks:
                have = [done[(task, seed, ep)] for ep in range(args.episodes) if (task, seed, ep) in done]
                if len(have) == args.episodes:
                    recs.extend(EpisodeRecord.from_dict(d) for d in have)
                else:
                    recs.extend(evaluate(env_name, prior, method, tasks=[task], seeds=[seed], **kw))
    if label:
        for r in recs:
            r.method = label
    return recs


def ablation(env_name, prior, args):
    """CoFi on one maze: λ0 sweep (refinement fixed) and refinement-depth sweep (λ0 fixed)."""
    from cofi.planning.evaluate import markdown_table, summarize
    from cofi.planning.planner import LAM0, planning_sampler

    steps = args.steps or 20
    rows = []
    for lam0 in (0.2, 0.5, 0.8, 1.0):
        s = planning_sampler("cofi", steps=steps, lam0=lam0, prior=prior)
        rows += summarize(run(env_name, prior, "cofi", args, s, label=f"λ0={lam0} refine_at={s.refine_at}"))
    for frac in (None, 0.2, 0.6, 0.8):
        s = planning_sampler("cofi", steps=steps, lam0=LAM0, refine_at=frac, prior=prior)
        depth = "none" if frac is None else f"{steps - s.refine_step} of {steps}"
        rows += summarize(run(env_name, prior, "cofi", args, s, label=f"λ0={LAM0} refine {depth}"))
    print(f"\n### CoFi ablation on {env_name} (first column: setting)\n")
    print(markdown_table(rows).replace("| cofi |", "|").replace("| method |", "| setting |"))


def figure(env_name, prior, method, args):
    from cofi.planning.evaluate import make_env, run_episode
    from cofi.planning.maze import Maze
    from cofi.planning.planner import default_batch, default_count, planning_sampler
    from cofi.viz import plot_plan

    env = make_env(env_name)
    maze = Maze.from_env(env)
    sampler = planning_sampler(method, prior=prior, **({"steps": args.steps} if args.steps else {}))
    rec = run_episode(env, prior, task=args.tasks[0], sampler=sampler, method=method,
                      count=default_count(env_name), batch=default_batch(method, prior), seed=args.seeds[0],
                      maze=maze, max_replans=args.max_replans, keep_paths=True, env_name=env_name)
    env.close()
    plot_plan(maze, rec.plans[0], windows=rec.windows[0], path=rec.path,
              title=f"{env_name} task {rec.task}, {method}: {'success' if rec.success else 'failure'} "
                    f"({rec.steps} steps, {rec.replans} replans)", save=args.figure)
    print(f"figure: {args.figure}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", choices=("point", "ant"), default="point",
                    help="pointmaze-* or antmaze-* (the ant executes with the shipped antmaze-invdyn)")
    ap.add_argument("--mazes", nargs="+", default=["medium", "large", "giant"])
    ap.add_argument("--methods", nargs="+", default=["cofi", "gsc", "cd", "cdgs"],
                    help="cd runs only with a prior that has consensus coupling (the closed-form prior)")
    ap.add_argument("--tasks", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--episodes", type=int, default=1, help="episodes per task and seed")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps of CoFi and GSC (preset: 20)")
    ap.add_argument("--cdgs-steps", type=int, default=None, help="DDIM steps of CDGS (preset: 20)")
    ap.add_argument("--max-replans", type=int, default=10)
    ap.add_argument("--stall-steps", type=int, default=None,
                    help="replan after this many env steps without progress along the plan (default: the agent's, "
                         "cofi.planning.evaluate.ANT_EXECUTION / POINT_EXECUTION)")
    ap.add_argument("--count", type=int, default=None, help="windows per plan (default: the maze's, default_count)")
    ap.add_argument("--label", default=None,
                    help="records and rows are labelled '<method> <label>' (a variant beside the presets)")
    ap.add_argument("--guidance", type=float, default=None,
                    help="overlap guidance weight (default: the prior's planning_guidance, else 20)")
    ap.add_argument("--batch", type=int, default=None, help="candidates of CoFi and GSC (preset: 16)")
    ap.add_argument("--reach-scale", type=float, default=None,
                    help="ant: AntController's reach_scale (default: cofi.planning.ant_control.REACH_SCALE)")
    ap.add_argument("--along-plan", action="store_true",
                    help="ant: AntController pulls far targets back along the plan, not along the chord")
    ap.add_argument("--tilt-guard", type=float, default=None,
                    help="ant: relax the joints while the torso's up axis is below this (AntController.tilt_guard)")
    ap.add_argument("--lam0", type=float, default=None,
                    help="CoFi's first shrinkage weight λ0 (default: the prior's planning_lam0, else 0.9)")
    ap.add_argument("--refine-fusion", choices=("on", "off"), default=None,
                    help="CoFi fuses the windows in its refinement stage (default: the prior's planning_refine_fusion)")
    ap.add_argument("--refine-inner", type=int, default=None,
                    help="CoFi's rounds per refinement step (default: the prior's planning_refine_inner, else 1)")
    ap.add_argument("--select", choices=("overlap", "consistency"), default=None,
                    help="how a plan's candidate is chosen (cofi.planning.plan; default: the prior's planning_select)")
    ap.add_argument("--cdgs-population", type=int, default=None, help="CDGS population P (preset: 40)")
    ap.add_argument("--prior", choices=("unet", "closed-form"), default="unet",
                    help="the shipped U-Net priors, or the closed-form EmpiricalPrior of the stitch data")
    ap.add_argument("--data", default="data", help="directory of the regenerated stitch datasets (closed-form)")
    ap.add_argument("--top-k", type=int, default=64, help="closed-form prior: bank windows kept per query")
    ap.add_argument("--consensus", type=float, default=None,
                    help="consensus coupling κ of CoFi, CD and CDGS (0 = off). Default: 5 for the closed-form "
                         "prior, the checkpoint's planning_consensus for a U-Net (one trained with evidence)")
    ap.add_argument("--consensus-sweep", choices=SWEEPS, default=None,
                    help="how CoFi, CD and CDGS windows take turns reading their neighbours (default: the prior's "
                         "planning_consensus_sweep, else jacobi)")
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--ablation", action="store_true", help="λ0 and refinement-depth sweeps instead")
    ap.add_argument("--figure", default=None, help="PNG of a composed plan (first maze, method, task, seed)")
    ap.add_argument("--json", default=None, help="append per-episode records to this JSON-lines file")
    ap.add_argument("--from-json", nargs="+", default=None, metavar="FILE",
                    help="print the tables of records saved with --json (grouped by maze and label); run nothing")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from cofi.planning.evaluate import EpisodeRecord, markdown_table, summarize

    if args.from_json:
        recs = []
        for path in args.from_json:
            with open(path) as f:
                for line in filter(str.strip, f):
                    d = json.loads(line)
                    recs.append(EpisodeRecord.from_dict({**d, "method": d.get("label", d["method"])}))
        for env_name in dict.fromkeys(r.env_name for r in recs):
            print(f"\n### {env_name}\n")
            print(markdown_table(summarize([r for r in recs if r.env_name == env_name])))
        return
    print(f"# {'AntMaze' if args.agent == 'ant' else 'PointMaze'} planning ({'cuda' if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}); "
          f"tasks {args.tasks}, episodes {args.episodes}, seeds {args.seeds}", flush=True)
    for maze in args.mazes:
        env_name = f"{args.agent}maze-{maze}-stitch-v0"
        prior = load_prior(maze, args)
        if args.figure:
            figure(env_name, prior, args.methods[0], args)
            args.figure = None
        if args.ablation:
            ablation(env_name, prior, args)
            continue
        rows = []
        for method in args.methods:
            if method == "cd":  # the preset refuses a prior without consensus coupling
                from cofi.planning.planner import planning_sampler

                try:
                    planning_sampler("cd", prior=prior)
                except ValueError:
                    print(f"  {maze} cd: skipped (CD needs a prior with consensus coupling; this one has none)",
                          file=sys.stderr, flush=True)
                    continue
            t0 = time.perf_counter()
            rows += summarize(run(env_name, prior, method, args,
                                  label=f"{method} {args.label}" if args.label else None))
            print(f"  {maze} {method}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        print(f"\n### {env_name}\n")
        print(markdown_table(rows), flush=True)


if __name__ == "__main__":
    main()
