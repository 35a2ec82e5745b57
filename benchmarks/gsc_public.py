"""Sensitivity check: GSC as the public CDGS_ogbench baseline runs it (`comp_pred_p_loop_n_GSC`).

There every interior segment's score is unconditional, and only the two end segments (which also
carry the start and the goal) are conditioned on their one neighbour. Here: the `cd` preset
(consensus κ = the prior's, 5) with the consensus precision of every interior window set to zero,
on the closed-form prior, 48 candidates, giant tasks 1–5. Appends one JSON line per episode.

    python benchmarks/gsc_public.py --seeds 0 1 2 3 --json benchmarks/records/gsc_public48_s0-3.jsonl

Result (2 CPU cores, one thread): 10/20, no first plan valid (the `gsc` preset: 12/20).
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from einops import rearrange

from cofi.planning.evaluate import evaluate, markdown_table, summarize
from cofi.priors import EmpiricalPrior
from cofi.samplers import gsc


def end_windows_only(consensus):
    """Wrap `cofi.steps.consensus` so that only the first and the last window receive evidence."""
    def wrapped(run, x0, t, kappa, snr_max=math.inf):
        out = consensus(run, x0, t, kappa, snr_max)
        if out is None:
            return None
        B, N = x0.shape[:2]
        prec = rearrange(out["evidence_precision"], "(b n) ... -> b n ...", b=B).clone()
        prec[:, 1:N - 1] = 0
        return {**out, "evidence_precision": rearrange(prec, "b n ... -> (b n) ...")}
    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/pointmaze-giant-stitch-v0.npz")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    gsc.consensus = end_windows_only(gsc.consensus)  # the name GSC's loop calls
    prior = EmpiricalPrior.from_stitch_data(args.data, top_k=64)
    label = "gsc (public: end windows conditioned)"

    def log(rec, secs):
        print(f"task {rec.task} seed {rec.seed}: {'ok' if rec.success else 'fail'} steps {rec.steps} "
              f"replans {rec.replans} valid {int(rec.plan_valid)} ({secs:.0f}s)", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({**rec.to_dict(), "label": label}) + "\n")

    recs = evaluate("pointmaze-giant-stitch-v0", prior, "cd", tasks=(1, 2, 3, 4, 5), episodes=1, seeds=args.seeds,
                    batch=args.batch, max_replans=10, log=log)
    for r in recs:
        r.method = label
    print(markdown_table(summarize(recs)))


if __name__ == "__main__":
    main()
