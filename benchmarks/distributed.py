"""Composition over 1 vs 2 processes (torch.distributed, gloo on CPU): wall time, bytes
exchanged per step, share of time communicating.

    python benchmarks/distributed.py              # U-Net (compute-bound) and GMM (cheap) priors
    python benchmarks/distributed.py --quick      # a smoke run

Every process runs one torch thread, in both the 1- and the 2-process runs, so the ratio is
the parallel speed-up of the composition itself. Priors:

- ``unet``: the shipped giant PointMaze `TrajectoryPrior` (1-D U-Net, 40 × 2 windows), the
  planning layout (N = 8 windows, overlap 14) with B = 16 candidates: compute-bound;
- ``unet-64``: the same U-Net at width 64 (random weights; timing only), 4× the FLOPs;
- ``gmm``: the exact Gaussian-process mixture of the coherence benchmark (windows 32 × 2):
  a prior call costs microseconds, so this shows the communication floor.

Per sampler (CoFi preset, GSC, CDGS at a CPU-sized P and U) it prints the median wall time of
one composition on 1 and 2 processes, measured in the same 2-process run and interleaved (the
1-process time is rank 0 composing alone while rank 1 waits), the speed-up, NFE, the bytes a rank
sends per denoising step and the fraction of the 2-process wall time spent in communication
calls (waiting for the other rank included). *Ceiling* is what the machine allows: two
independent compositions of B/2 candidates each (one rank's share of the prior calls, no
communication) run side by side, against the 1-process time; on shared cores two busy
processes slow each other down, so this is below 2×. All results are identical to the 1-process run (tests/test_distributed.py).
"""

from __future__ import annotations

import argparse
import time

import torch

import cofi
from cofi.testing import spawn


def _prior(name: str):
    if name in ("unet", "unet-64"):
        prior = cofi.priors.TrajectoryPrior.from_pretrained("pointmaze-giant-stitch")
        if name == "unet-64":  # the same network at width 64 (random weights: timing only)
            import dataclasses

            from cofi.priors.unet1d import TemporalUNet

            torch.manual_seed(0)
            net = TemporalUNet(dataclasses.replace(prior.net.config, dim=64))
            prior = cofi.priors.TrajectoryPrior(net, prior.alphas_cumprod, prior.lo, prior.hi, env_name=prior.env_name,
                                                prediction=prior.prediction_type, scale=prior.scale,
                                                stride=prior.stride, planning_guidance=prior.planning_guidance)
        return prior
    return cofi.priors.GaussianMixturePrior.chain_benchmark(window=32, components=4, channels=2,
                                                            dtype=torch.float32)


def _setup(prior_name: str, method: str, quick: bool):
    from cofi.planning.planner import planning_layout, planning_sampler

    prior = _prior(prior_name)
    if prior_name.startswith("unet"):
        layout = planning_layout(8, prior.stride)
        batch = 16
    else:
        layout = cofi.Chain(32, 16, 16, blend="ramp")
        batch = 8
    steps = 6 if quick else 20
    if method == "cofi":
        sampler = (planning_sampler("cofi", steps=steps, prior=prior) if prior_name.startswith("unet")
                   else cofi.CoFi(steps=steps))
    elif method == "gsc":
        sampler = cofi.GSC(steps=steps)
    else:  # CDGS at a CPU-sized population and inner iteration count
        sampler = cofi.CDGS(steps=steps // 2, inner=3, prune_at=0.2, keep=0.25)
    return prior, layout, sampler, batch


def _run(prior_name: str, method: str, quick: bool, repeats: int) -> dict:
    """One cell, on each of 2 ranks, interleaved ``repeats`` times: (1) the composition over
    both ranks; (2) the same composition on rank 0 alone while rank 1 waits at a barrier;
    (3) the ceiling: each rank composes B/2 candidates on its own, side by side."""
    import statistics

    import torch.distributed as dist

    from cofi.distributed import Shard

    prior, layout, sampler, batch = _setup(prior_name, method, quick)
    kw = dict(progress=False)
    if prior_name.startswith("unet"):
        start, goal = prior.normalize(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
        kw["pins"] = cofi.Pins([0, -1], torch.stack([start, goal]))
    part = Shard(layout, dist.group.WORLD)
    rank = dist.get_rank()

    def timed(**extra):
        t0 = time.perf_counter()
        comp = cofi.compose(prior, layout, sampler, generator=torch.Generator().manual_seed(1), **kw, **extra)
        return time.perf_counter() - t0, comp

    timed(batch=batch, group=part)  # warm-up
    if rank == 0:
        timed(batch=batch)
    dist.barrier()
    two, one, ceiling, comm_s, comm_b = [], [], [], [], []
    for _ in range(repeats):
        dist.barrier()
        s0, b0 = part.stats.total_seconds, part.stats.total_bytes
        wall, comp = timed(batch=batch, group=part)
        two.append(wall)
        comm_s.append((part.stats.total_seconds - s0) / wall)
        comm_b.append(part.stats.total_bytes - b0)
        dist.barrier()
        if rank == 0:
            one.append(timed(batch=batch)[0])
        dist.barrier()
        ceiling.append(timed(batch=batch // 2)[0])
    med = statistics.median
    return dict(two=med(two), one=med(one) if one else None, ceiling=med(ceiling), nfe=comp.nfe,
                comm_share=med(comm_s), bytes=med(comm_b), steps=_denoise_steps(sampler),
                stats=dict(bytes=dict(part.stats.bytes), seconds=dict(part.stats.seconds),
                           calls=dict(part.stats.calls)))


def _denoise_steps(sampler) -> int:
    """Prior calls per window in one composition (for bytes per step)."""
    if isinstance(sampler, cofi.CoFi):
        r = sampler.refine_step
        return sampler.steps + (0 if r is None else sampler.steps - r)
    if isinstance(sampler, cofi.CDGS):
        return sampler.steps * sampler.inner
    return sampler.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--priors", nargs="+", default=["unet", "unet-64", "gmm"], choices=["unet", "unet-64", "gmm"])
    ap.add_argument("--methods", nargs="+", default=["cofi", "gsc", "cdgs"], choices=["cofi", "gsc", "cdgs"])
    ap.add_argument("--repeats", type=int, default=5, help="timed compositions per cell (medians are kept)")
    ap.add_argument("--quick", action="store_true", help="6 steps, 1 repeat")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    print(f"# distributed composition, gloo on CPU, 1 torch thread per process (torch {torch.__version__})")
    print("| prior | method | NFE | 1 process (s) | 2 processes (s) | speed-up | ceiling | bytes sent / rank / step "
          "| time communicating |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in args.priors:
        for m in args.methods:
            r0, r1 = spawn(_run, 2, p, m, args.quick, repeats, timeout=3600)
            wall2 = max(r0["two"], r1["two"])
            ceiling = r0["one"] / max(r0["ceiling"], r1["ceiling"])
            per_step = max(r0["bytes"], r1["bytes"]) / r0["steps"]
            share = max(r0["comm_share"], r1["comm_share"])
            print(f"| {p} | {m} | {r0['nfe']} | {r0['one']:.2f} | {wall2:.2f} | {r0['one'] / wall2:.2f}× "
                  f"| {ceiling:.2f}× | {per_step / 1024:.1f} KiB | {100 * share:.1f} % |", flush=True)
            print(f"<!-- {p} {m} rank 0, all runs: {r0['stats']} -->", flush=True)


if __name__ == "__main__":
    main()
