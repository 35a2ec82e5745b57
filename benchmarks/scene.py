"""Scene-Play closed-loop benchmark: success over OGBench's 5 tasks, NFE and time per plan.

    python benchmarks/scene.py --prior exact --data data --methods cofi gsc --seeds 0 1 --json runs/scene.jsonl
    python benchmarks/scene.py --prior unet --methods cofi cdgs --seeds 0-19 --json runs/scene.jsonl
    python benchmarks/scene.py --from-json runs/scene.jsonl            # the table of saved records
    python benchmarks/scene.py --prior unet --open-loop --seeds 0-1     # plan quality only, no execution

One episode per method x task x seed (`cofi.planning.scene_evaluate.run_scene_episode`): plan
with the prior and the method's planning preset, execute with the shipped inverse-dynamics
controller, replan on deviation. ``--json`` appends one line per episode and is *resumable*:
an episode whose (label, task, seed) is already in the file is skipped, so a long run can be
killed and restarted (or split across machines and the files concatenated).

``--open-loop`` plans once per task and seed from the reset state and reports, per method, the
plan's overlap disagreement, its *jumps* (plan steps where some dimension moves farther than the
data ever does in 4 env steps: a teleport the controller cannot execute), its *unheld* cube
motion (of the plan steps where the cube moves more than 1 cm, the share with the effector more
than 5 cm from it: a cube that moves by itself; 6 % of the data's), and how much it manipulates
(button toggles, cube and drawer + window path length, against what the task needs), and how
close the effector is to the cube while the cube moves (a grasp the controller can execute). Its
first row measures the same on 684-step stretches of the validation data.

Priors: ``exact`` is the closed-form `EmpiricalPrior` of ``--data/scene-play-v0.npz`` (the
diagnostic upper bound; regenerate the data with ``python -m cofi.planning generate --env
scene-play-v0``); ``unet`` the shipped ``scene-play`` checkpoint (or ``--checkpoint DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_seeds(items: list[str]) -> list[int]:
    """``0 1 5-9`` -> ``[0, 1, 5, 6, 7, 8, 9]``."""
    out: list[int] = []
    for it in items:
        lo, _, hi = it.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def load_prior(args):
    if args.prior == "exact":
        from cofi.planning.scene_plan import scene_prior

        return scene_prior(os.path.join(args.data, "scene-play-v0.npz"), every=args.every, top_k=args.top_k,
                           planning_consensus=args.consensus)
    from cofi.priors import TrajectoryPrior

    prior = TrajectoryPrior.from_pretrained(args.checkpoint or "scene-play")
    if args.consensus_override is not None:
        prior.planning_consensus = args.consensus_override
    return prior


def done_keys(path: str | None) -> set[tuple[str, int, int]]:
    if not path or not os.path.exists(path):
        return set()
    with open(path) as f:
        return {(r["label"], r["task"], r["seed"]) for r in map(json.loads, filter(str.strip, f))}


def table(records: list[dict]) -> str:
    """Markdown: per label, success (count), mean steps, replans, NFE and seconds per plan."""
    from collections import defaultdict

    by = defaultdict(list)
    for r in records:
        by[r["label"]].append(r)
    from cofi.planning.scene_evaluate import summarize_scene

    rows = ["| method | success | episodes | steps | replans | subgoals met at the end (best) | NFE / plan | s / plan |",
            "|---|---|---|---|---|---|---|---|"]
    for label, rs in by.items():
        m = summarize_scene(rs)
        rows.append(f"| {label} | {100 * m['success']:.0f} % ({m['successes']}/{m['episodes']}) | {m['episodes']} | "
                    f"{m['steps']:.0f} | {m['replans']:.1f} | {m['subgoals']:.1f} / 5 ({m['best_subgoals']:.1f}) | "
                    f"{m['nfe_per_plan']:.0f} | {m['s_per_plan']:.1f} |")
    per_task = ["", "| method | " + " | ".join(f"task {t}" for t in range(1, 6)) + " |", "|---" * 6 + "|"]
    for label, rs in by.items():
        cells = []
        for t in range(1, 6):
            tr = [r for r in rs if r["task"] == t]
            cells.append(f"{sum(r['success'] for r in tr)}/{len(tr)}" if tr else "–")
        per_task.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows + per_task)


def data_step_limits(path: str) -> "np.ndarray":
    """Per planning dimension, the largest change over 4 env steps in the data (``(14,)``)."""
    import numpy as np

    from cofi.planning.scene_plan import STRIDE, load_scene_episodes

    eps = load_scene_episodes(path)
    return np.abs(eps[:, STRIDE:] - eps[:, :-STRIDE]).max((0, 1))


def manipulation(p) -> tuple[float, float, float]:
    """Button toggles, cube path and drawer + window path of a ``(L, 14)`` plan (env units;
    `cofi.planning.scene_plan.object_manipulation`)."""
    from cofi.planning.scene_plan import object_manipulation

    return tuple(float(v) for v in object_manipulation(p))


def parse_set(items: list[str] | None) -> dict:
    """``--set key=value ...`` as sampler overrides (values read as Python literals, else strings)."""
    import ast

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def sampler_for(method: str, prior, args):
    """``(sampler, candidates)``: the method's name and ``--batch`` when no option changes it;
    otherwise its planning preset with ``--guidance``, ``--fusion`` and ``--set``. With ``--set``,
    ``--guidance`` or ``--prune``, CoFi starts from the Scene preset (`SCENE_COFI`, pruned to
    `SCENE_COFI_KEEP` unless ``--prune`` says otherwise, `SCENE_COFI_BATCH` candidates unless
    ``--batch``); ``--prune 1`` keeps every candidate."""
    from cofi.planning.scene_plan import SCENE_COFI, SCENE_COFI_BATCH, SCENE_COFI_KEEP

    preset = method == "cofi" and bool(args.set or args.guidance is not None or args.prune is not None)
    over = dict(SCENE_COFI) if preset else {}
    over |= parse_set(args.set)
    if args.guidance is not None:
        over["guidance"] = args.guidance
    if args.fusion is not None:
        over["fusion"] = args.fusion == "on"
    if not over and args.prune is None:
        return method, args.batch
    import cofi
    from cofi.planning.planner import planning_sampler

    sampler = planning_sampler(method, prior=prior, **over)
    keep = args.prune if args.prune is not None else (SCENE_COFI_KEEP if preset else 1.0)
    if keep < 1.0:
        sampler = cofi.Pruned(sampler, keep=keep)
    return sampler, args.batch or (SCENE_COFI_BATCH if preset else None)


def plan_stats(p, limits) -> tuple:
    """Open-loop measurements of one ``(L, 14)`` plan (env units, one point per 4 steps): jumps,
    unheld and all cube-moving steps, the effector-cube distances while the cube moves, and the
    manipulation (toggles, cube path, drawer + window path)."""
    import numpy as np

    jumped = (np.abs(np.diff(p, axis=0)) > limits).any(1)
    moving = np.linalg.norm(np.diff(p[:, 3:6], axis=0), axis=1) > 0.1
    dist = np.linalg.norm(p[:-1, 0:3] - p[:-1, 3:6], axis=1)[moving]
    return jumped, int((dist > 0.5).sum()), int(moving.sum()), dist, manipulation(p), first_lift_miss(p)


def first_lift_miss(p) -> float:
    """How far (plan units) the plan's cube is, two points before it first rises 2 cm, from where
    the cube lay at the plan's start: where the plan's grasp closes against where the real cube
    is (it has not been touched yet). NaN for a plan that never lifts the cube."""
    import numpy as np

    up = np.nonzero(p[:, 5] > p[0, 5] + 0.2)[0]
    if not len(up):
        return float("nan")
    return float(np.linalg.norm(p[max(0, up[0] - 2), 3:5] - p[0, 3:5]))


def _grasp(d) -> str:
    """Median / 75th percentile of effector-cube distances (plan units: 10 = 1 m) in cm."""
    import numpy as np

    return f"{10 * np.median(d):.1f} / {10 * np.percentile(d, 75):.1f}" if len(d) else "–"


def _miss(m) -> str:
    """Median / max of first-grasp misses (plan units) in cm, over the plans that lift the cube."""
    import numpy as np

    m = np.asarray(m, dtype=float)
    m = m[np.isfinite(m)]
    return f"{10 * np.median(m):.1f} / {10 * m.max():.1f} ({len(m)})" if len(m) else "–"


def open_loop(prior, args, seeds) -> None:
    import numpy as np
    import torch

    from cofi.planning.scene_evaluate import make_eval_env
    from cofi.planning.scene_plan import load_scene_episodes, plan_scene, scene_layout

    limits = data_step_limits(os.path.join(args.data, "scene-play-v0.npz"))
    env = make_eval_env()
    print("| method | plans | disagreement | plans with a jump (into the goal) | jumps / plan | unheld cube motion | "
          "effector-cube cm while the cube moves (median / p75) | first grasp, cm from the cube (median / max) | "
          "toggles (task needs) | cube path (needs) | drawer + window path (needs) | NFE / plan | s / plan |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    # the data's own 684-step stretches (validation episodes), measured the same way
    val = load_scene_episodes(os.path.join(args.data, "scene-play-v0-val.npz"))[:, ::4]
    L = scene_layout().length  # plan points of a composed plan
    stats = [plan_stats(e[s:s + L], limits) for e in val[:50] for s in range(0, e.shape[0] - L, 40)]
    d = np.concatenate([x[3] for x in stats])
    m = np.array([x[4] for x in stats])
    print(f"| data ({len(stats)} stretches of {(L - 1) * 4} steps) | – | – | "
          f"{np.mean([x[0].any() for x in stats]):.0%} | {np.mean([x[0].sum() for x in stats]):.1f} | "
          f"{sum(x[1] for x in stats) / max(sum(x[2] for x in stats), 1):.0%} | {_grasp(d)} | "
          f"{_miss([x[5] for x in stats])} | "
          f"{m[:, 0].mean():.1f} | {m[:, 1].mean():.1f} | {m[:, 2].mean():.1f} | – | – |", flush=True)
    for method in args.methods:
        rows, dists, misses = [], [], []
        for seed in seeds:
            for task in args.tasks:
                obs, info = env.reset(seed=seed, options=dict(task_id=task))
                sampler, batch = sampler_for(method, prior, args)
                out = plan_scene(prior, obs, info["goal"], sampler, batch=batch,
                                 generator=torch.Generator().manual_seed(seed), select=args.select,
                                 constraint=args.constraint)
                p = out.xy
                jumped, unheld, moving, dist, manip, miss = plan_stats(p, limits)
                dists.append(dist)
                misses.append(miss)
                need = manipulation(np.stack([p[0], p[-1]]))
                rows.append((float(out.disagreement[out.best]), int(jumped.sum()), *manip, *need, out.nfe,
                             out.time_s, bool(jumped[-1]), unheld, moving))
        r = np.array(rows)
        print(f"| {method} | {len(r)} | {r[:, 0].mean():.3f} | {(r[:, 1] > 0).mean():.0%} ({r[:, 10].mean():.0%}) | "
              f"{r[:, 1].mean():.1f} | {r[:, 11].sum() / max(r[:, 12].sum(), 1):.0%} | {_grasp(np.concatenate(dists))} | "
              f"{_miss(misses)} | "
              f"{r[:, 2].mean():.1f} ({r[:, 5].mean():.1f}) | {r[:, 3].mean():.1f} ({r[:, 6].mean():.1f}) | "
              f"{r[:, 4].mean():.1f} ({r[:, 7].mean():.1f}) | {r[:, 8].mean():.0f} | {r[:, 9].mean():.1f} |", flush=True)
    env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", choices=("exact", "unet"), default="unet")
    ap.add_argument("--data", default="data", help="directory of scene-play-v0.npz (exact prior)")
    ap.add_argument("--every", type=int, default=16, help="exact prior: env steps between bank windows")
    ap.add_argument("--top-k", type=int, default=64, help="exact prior: bank windows kept per query")
    ap.add_argument("--consensus", type=float, default=5.0, help="exact prior: consensus κ of CoFi, CD, CDGS")
    ap.add_argument("--consensus-override", type=float, default=None, help="unet: override its planning_consensus")
    ap.add_argument("--checkpoint", default=None, help="unet: a checkpoint directory (default: shipped scene-play)")
    ap.add_argument("--methods", nargs="+", default=["cofi", "gsc", "cd", "cdgs"])
    ap.add_argument("--tasks", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    ap.add_argument("--seeds", nargs="+", default=["0"], help="ints or ranges, e.g. 0-19")
    ap.add_argument("--batch", type=int, default=None, help="candidates (preset: 16, CDGS 40)")
    ap.add_argument("--guidance", type=float, default=None, help="overlap guidance weight (default: the preset's)")
    ap.add_argument("--fusion", choices=("on", "off"), default=None,
                    help="fuse the windows' estimates at every step (Bethe averaging; default: the preset's, on "
                         "for CDGS only)")
    ap.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE",
                    help="sampler fields to override, e.g. --set inner=1 prune_at=0 (CDGS) or steps=40 (CoFi)")
    ap.add_argument("--prune", type=float, default=None, metavar="KEEP",
                    help="choose the plan among the KEEP fraction of candidates with the highest likelihood proxy "
                         "(cofi.Pruned, CDGS's pruning rule; CoFi's Scene preset: 0.1; 1: no pruning)")
    ap.add_argument("--max-replans", type=int, default=10)
    ap.add_argument("--count", default="auto", help="windows per plan, or 'auto' (the default: fewer as the task's "
                    "conditions are met)")
    ap.add_argument("--replan-deviation", type=float, default=None, help="default: SCENE_REPLAN")
    ap.add_argument("--replan-metric", choices=("std", "env", "objects"), default=None, help="default: SCENE_REPLAN")
    ap.add_argument("--replan-cube", type=float, default=None,
                    help="also replan when the cube is this far from the plan's (plan units; 0.4 = 4 cm)")
    ap.add_argument("--tracking", choices=("time", "nearest"), default="time")
    ap.add_argument("--select", choices=("overlap", "consistency", "effort"), default=None,
                    help="which candidate a plan executes (cofi.planning.scene_plan.plan_scene; default: the "
                         "prior's planning_select)")
    ap.add_argument("--constraint", choices=("carry", "none"), default="carry",
                    help="the plans' constraint (carry: the cube moves only while held; plan_scene)")
    ap.add_argument("--controller", default=None, help="inverse-dynamics checkpoint (default: shipped scene-play-invdyn)")
    ap.add_argument("--label", default=None, help="record label prefix (default: <prior>-<method>)")
    ap.add_argument("--json", default=None, help="append per-episode records here (resumable)")
    ap.add_argument("--from-json", nargs="+", default=None, metavar="FILE", help="print the table of saved records")
    ap.add_argument("--open-loop", action="store_true", help="plan quality only (needs --data for the step limits)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    args.constraint = None if args.constraint == "none" else args.constraint  # plan_scene's spelling
    if args.from_json:
        recs = [json.loads(line) for p in args.from_json for line in open(p) if line.strip()]
        print(table(recs))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from cofi.planning.scene_control import InverseDynamics
    from cofi.planning.scene_evaluate import SCENE_REPLAN, make_eval_env, run_scene_episode

    args.replan_metric = args.replan_metric or SCENE_REPLAN[0]
    args.replan_deviation = SCENE_REPLAN[1] if args.replan_deviation is None else args.replan_deviation

    if args.open_loop:
        open_loop(load_prior(args), args, parse_seeds(args.seeds))
        return
    model = InverseDynamics.from_pretrained(*([args.controller] if args.controller else []))
    prior, env = load_prior(args), make_eval_env()
    seeds, done, records = parse_seeds(args.seeds), done_keys(args.json), []
    for method in args.methods:
        label = f"{args.label or args.prior}-{method}"
        for seed in seeds:
            for task in args.tasks:
                if (label, task, seed) in done:
                    continue
                t0 = time.perf_counter()
                sampler, batch = sampler_for(method, prior, args)
                rec = run_scene_episode(env, prior, model, task, sampler, seed=seed,
                                        batch=batch, count=args.count if args.count == "auto" else int(args.count),
                                        max_replans=args.max_replans, replan_deviation=args.replan_deviation,
                                        replan_metric=args.replan_metric, tracking=args.tracking,
                                        replan_cube=args.replan_cube,
                                        select=args.select, constraint=args.constraint)
                d = {**rec.to_dict(), "label": label}
                records.append(d)
                print(f"{label:>14} task {task} seed {seed}: {'ok  ' if rec.success else 'fail'} steps {rec.steps:4d} "
                      f"replans {rec.replans} subgoals {rec.subgoals} (best {rec.best_subgoals}, "
                      f"missing {', '.join(rec.missing) or '-'}) nfe/plan {rec.nfe / (rec.replans + 1):.0f} "
                      f"plan {rec.plan_time_s:.0f}s ({time.perf_counter() - t0:.0f}s)", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(d) + "\n")
    env.close()
    if records:
        print(table(records))


if __name__ == "__main__":
    sys.exit(main())
