"""How a PointMaze prior plans as it trains: first-plan validity and wall rate per snapshot.

    python benchmarks/learning_curve.py training/giant-neighbour --baseline pointmaze-giant-stitch \
        --consensus 0 5 --seeds 0 1 --json benchmarks/records/learning_curve/giant_neighbour.jsonl \
        --figure docs/figures/giant_neighbour_curve.png

For every snapshot of a training run (``<run>/snapshots/step-*``, written by ``python -m
cofi.planning train --snapshot-every N``) and every ``--baseline``
checkpoint (a shipped name or a directory), measures:
  - **first plans valid open loop**: the first plan of the evaluation episode of every OGBench
    task × seed (the start, goal and generator of `benchmarks/planning.py`, no execution),
    planned with each ``--methods`` preset and the checkpoint's stored planning settings, with
    consensus coupling κ for every ``--consensus`` value (κ > 0 only for a prior that reads
    evidence); valid = reaches the goal without crossing a wall (`Maze.check_plan`), and the
    fraction of plan points inside walls;
  - **windows crossing a wall**: unconditional single-window samples (DDIM ``--sample-steps``,
    η = 1), the fraction whose polyline enters a wall (the data: 0).
``--json`` appends one record per (checkpoint, method, κ) and is resumable (done records are
skipped); ``--from-json`` only prints and plots saved records. ``--figure`` plots both
measures against the training step, baselines as dashed lines.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cofi.steps import SWEEPS


def checkpoints(run: str | None, baselines: list[str]) -> list[tuple[str, str, int | None]]:
    """``(label, path or name, training step or None)``: the run's snapshots by step, then the
    baselines. The run's own checkpoint is not measured: it is rewritten while the run trains
    (give the run a ``--snapshot-every`` that divides its ``--steps``)."""
    out = []
    if run:
        root = Path(run)
        snaps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("snapshots/step-*"))
        out += [(f"{root.name}@{step}", str(p), step) for step, p in snaps]
    return out + [(b, b, None) for b in baselines]


def windows_crossing(prior, maze, samples: int, steps: int, seed: int) -> float:
    import cofi

    comp = cofi.compose(prior, cofi.Chain(prior.sample_shape[0], 0, 1), cofi.GSC(steps=steps, eta=1.0),
                        batch=samples, generator=torch.Generator().manual_seed(seed), progress=False)
    xy = prior.unnormalize(comp.plans[:, 0]).double().numpy()
    return float(np.mean([maze.crosses_wall(w) for w in xy]))


def evidence_guidance(prior, w: float) -> list[int]:
    """Wrap ``prior.denoise`` with classifier-free guidance on the evidence, weight ``w`` (1: the
    plain conditional estimate). Returns a one-element list counting the network calls (windows),
    two for each window that has evidence when ``w != 1``."""
    calls, denoise = [0], prior.denoise

    def guided(x_t, t, *, evidence=None, evidence_precision=None, **kw):
        if evidence is None or w == 1.0:
            calls[0] += len(x_t)
            return denoise(x_t, t, evidence=evidence, evidence_precision=evidence_precision, **kw)
        calls[0] += 2 * len(x_t)
        plain = denoise(x_t, t, **kw)
        return plain + w * (denoise(x_t, t, evidence=evidence, evidence_precision=evidence_precision, **kw) - plain)

    prior.denoise = guided
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default=None, help="a training run directory (its snapshots and checkpoint)")
    ap.add_argument("--baseline", nargs="*", default=[], help="checkpoints to compare with (names or directories)")
    ap.add_argument("--snapshots", type=int, nargs="*", default=None, help="only the snapshots of these steps")
    ap.add_argument("--methods", nargs="+", default=["cofi"])
    ap.add_argument("--consensus", type=float, nargs="+", default=[0.0, 5.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--consensus-from", choices=("estimate", "state"), default="estimate",
                    help="consensus messages: the neighbours' x̂ or their noisy states (CompDiffuser's)")
    ap.add_argument("--evidence-guidance", type=float, default=1.0, metavar="W",
                    help="classifier-free guidance on the evidence (CompDiffuser's w): x̂(∅) + W·(x̂(evidence) − "
                         "x̂(∅)), two network calls per window with evidence (1: off)")
    ap.add_argument("--consensus-sweep", choices=SWEEPS, default="jacobi",
                    help="all windows read their neighbours' previous x̂ at once, or a Gauss-Seidel sweep: the odd "
                         "windows read the even windows' fresh x̂ (red-black), or each window its predecessor's "
                         "(forward)")
    ap.add_argument("--samples", type=int, default=256, help="unconditional windows per checkpoint")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--json", default=None, help="append records here (resumable)")
    ap.add_argument("--from-json", nargs="*", default=None, help="print and plot these records only")
    ap.add_argument("--figure", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    records = []
    if args.from_json is not None:
        for f in args.from_json:
            records += [json.loads(line) for line in open(f) if line.strip()]
    else:
        records = run(args)
    table(records)
    if args.figure:
        plot(records, args.figure)


def run(args) -> list[dict]:
    from cofi.planning.evaluate import episode_problem, make_env
    from cofi.planning.maze import Maze
    from cofi.planning.planner import plan, planning_sampler
    from cofi.priors import TrajectoryPrior

    done = []
    if args.json and os.path.exists(args.json):
        done = [json.loads(line) for line in open(args.json) if line.strip()]
    key = lambda r: (r["label"], r["method"], r["consensus"], r.get("consensus_from", "estimate"),  # noqa: E731
                     r.get("evidence_guidance", 1.0), r.get("consensus_sweep", "jacobi"))
    have = {key(r) for r in done}
    records = list(done)
    envs: dict = {}
    for label, path, step in checkpoints(args.run, args.baseline):
        if step is not None and args.snapshots is not None and step not in args.snapshots:
            continue
        prior = TrajectoryPrior.from_pretrained(path)
        calls = evidence_guidance(prior, args.evidence_guidance)
        env_name = prior.env_name
        if env_name not in envs:
            env = make_env(env_name)
            envs[env_name] = (env, Maze.from_env(env))
        env, maze = envs[env_name]
        crossing = None
        problems = [episode_problem(env, task, seed) for seed in args.seeds for task in args.tasks]
        for method in args.methods:
            for kappa in args.consensus:
                if kappa > 0 and (method == "gsc" or not prior.accepts_evidence):
                    continue  # GSC composes unconditional scores; a prior without evidence inputs has no κ
                if kappa == 0 and method == "cd":
                    continue  # CD is GSC with neighbour-conditioned scores: it needs κ > 0
                if (label, method, kappa, args.consensus_from, args.evidence_guidance, args.consensus_sweep) in have:
                    continue
                if crossing is None:
                    crossing = windows_crossing(prior, maze, args.samples, args.sample_steps, seed=0)
                prior.planning_consensus = kappa if kappa > 0 else None
                sampler = planning_sampler(method, prior=prior, **({"consensus_from": args.consensus_from,
                                                                      "consensus_sweep": args.consensus_sweep}
                                                                     if method != "gsc" else {}))
                ok, walls, t0, calls[0] = 0, [], time.perf_counter(), 0
                for start, goal, gen in problems:
                    out = plan(prior, start, goal, sampler, generator=gen, maze=maze)
                    ok += bool(maze.check_plan(out.xy, goal).valid)
                    walls.append(float((~maze.is_free(out.xy)).mean()))
                rec = dict(label=label, path=path, step=step, env=env_name, method=method, consensus=kappa,
                           consensus_from=args.consensus_from, evidence_guidance=args.evidence_guidance,
                           consensus_sweep=args.consensus_sweep,
                           network_calls_per_plan=calls[0] // len(problems),
                           problems=len(problems), valid=ok, plan_walls=float(np.mean(walls)),
                           windows_crossing=crossing, samples=args.samples, nfe_per_plan=int(out.nfe),
                           s_per_plan=(time.perf_counter() - t0) / len(problems), seeds=args.seeds, tasks=args.tasks)
                print(f"{label} {method} κ={kappa:g} ({args.consensus_from}, w={args.evidence_guidance:g}): valid {ok}/{len(problems)}, plan points in walls "
                      f"{100 * rec['plan_walls']:.1f} %, unconditional windows crossing {100 * crossing:.1f} %, "
                      f"{rec['s_per_plan']:.1f} s / plan", flush=True)
                records.append(rec)
                if args.json:
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    with open(args.json, "a") as f:
                        f.write(json.dumps(rec) + "\n")
    for env, _ in envs.values():
        env.close()
    return records


def table(records: list[dict]) -> None:
    print("\n| checkpoint | step | method | κ (messages) | seeds | first plans valid | plan points in walls | "
          "unconditional windows crossing a wall | NFE / plan |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        step = "–" if r["step"] is None else r["step"]
        w = r.get("evidence_guidance", 1.0)
        sweep = r.get("consensus_sweep", "jacobi")
        cfg = (f" ({r.get('consensus_from', 'estimate')}{'' if w == 1 else f', CFG w = {w:g}'}"
               f"{'' if sweep == 'jacobi' else f', {sweep}'})")
        seeds = " ".join(map(str, r.get("seeds", [])))
        print(f"| {r['label']} | {step} | {r['method']} | {r['consensus']:g}{cfg} | {seeds} | {r['valid']}/{r['problems']} | "
              f"{100 * r['plan_walls']:.1f} % | {100 * r['windows_crossing']:.1f} % | {r['nfe_per_plan']} |")


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    curves: dict = {}
    for r in records:
        if r["step"] is not None:
            curves.setdefault((r["method"], r["consensus"], r.get("consensus_from", "estimate"),
                               r.get("evidence_guidance", 1.0), r.get("consensus_sweep", "jacobi")), []).append(r)
    for i, ((method, kappa, source, w, sweep), rs) in enumerate(sorted(curves.items())):
        rs = sorted(rs, key=lambda r: r["step"])
        steps = [r["step"] for r in rs]
        ax1.plot(steps, [100 * r["valid"] / r["problems"] for r in rs], "o-", color=f"C{i}",
                 label=f"{method}, κ = {kappa:g}" + (f" ({source})" if kappa > 0 else "")
                 + ("" if w == 1 else f", w = {w:g}") + ("" if sweep == "jacobi" else f", {sweep}"))
    run_steps = sorted({r["step"] for r in records if r["step"] is not None})
    if run_steps:
        first = {}
        for r in records:
            if r["step"] is not None:
                first.setdefault(r["step"], r["windows_crossing"])
        ax2.plot(run_steps, [100 * first[s] for s in run_steps], "o-", color="k", label="run")
    base = [r for r in records if r["step"] is None]
    drawn = set()
    for j, r in enumerate(base):
        c = f"C{len(curves) + j}"
        ax1.axhline(100 * r["valid"] / r["problems"], ls="--", color=c, label=f"{r['label']} ({r['method']})")
        if r["label"] not in drawn:  # one line per checkpoint
            drawn.add(r["label"])
            ax2.axhline(100 * r["windows_crossing"], ls="--", color=c, label=r["label"])
    ax1.set_xlabel("training step")
    ax1.set_ylabel("first plans valid open loop (%)")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("unconditional windows crossing a wall (%)")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    n = records[0]["problems"] if records else 0
    fig.suptitle(f"{records[0]['env'] if records else ''}: {n} first plans per point")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
