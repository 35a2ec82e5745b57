"""Sampler overhead: the share of wall time spent outside prior calls.

    python benchmarks/overhead.py [--plans 1024] [--steps 20] [--device cpu|cuda] [--prior conv|zero]

A random-weight 1D conv net of realistic cost stands in for a trained prior (cost does
not depend on the weights). Each method composes `--plans` = batch x count local plans;
we time every `denoise` call and report the rest as the sampler's own work.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import cofi
from cofi.prior import to_x0


class ConvPrior:
    """ε-prediction ResNet-style 1D conv net over (horizon, channels) windows."""

    supports_grad = True

    def __init__(self, horizon=64, channels=4, width=128, depth=6, device="cpu"):
        self.sample_shape = (horizon, channels)
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0).to(device)
        self.temb = nn.Embedding(1000, width).to(device)
        self.inp = nn.Conv1d(channels, width, 3, padding=1).to(device)
        self.blocks = nn.ModuleList(nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv1d(width, width, 3, padding=1))
                                    for _ in range(depth)).to(device)
        self.out = nn.Conv1d(width, channels, 3, padding=1).to(device)
        self.seconds = 0.0

    def denoise(self, x_t, t, **cond):
        sync = torch.cuda.synchronize if x_t.is_cuda else (lambda: None)
        sync()
        t0 = time.perf_counter()
        h = self.inp(x_t.transpose(1, 2)) + self.temb(t)[:, :, None]
        for b in self.blocks:
            h = h + b(h)
        x0 = to_x0(self.out(h).transpose(1, 2), x_t, self.alphas_cumprod[t], "epsilon")
        sync()
        self.seconds += time.perf_counter() - t0
        return x0


class ZeroCostPrior:
    """A prior that costs nothing (x̂ = x_t / 2): the wall time is the sampler's own work."""

    supports_grad = True

    def __init__(self, horizon=64, channels=4, device="cpu"):
        self.sample_shape = (horizon, channels)
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0).to(device)
        self.seconds = 0.0

    def denoise(self, x_t, t, **cond):
        return x_t * 0.5


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plans", type=int, default=1024)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prior", choices=("conv", "zero"), default="conv",
                   help="conv: a neural-cost prior; zero: a free one, so all time is the sampler's")
    p.add_argument("--repeats", type=int, default=5, help="the least overhead of this many runs (robust to a busy machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    prior = ConvPrior(device=args.device) if args.prior == "conv" else ZeroCostPrior(device=args.device)
    layout = cofi.Chain(64, 16, args.count, blend="ramp")
    batch = args.plans // args.count
    methods = {
        "GSC": cofi.GSC(steps=args.steps),
        "CoFi": cofi.CoFi(steps=args.steps, refine_at=1 / 3),
        "GSC + guidance (backward counted as overhead)": cofi.GSC(steps=args.steps, fusion=False, guidance=0.1),
        "CDGS (U=2)": cofi.CDGS(steps=args.steps, inner=2),
    }
    print(f"# Sampler overhead: {batch} x {args.count} = {batch * args.count} plans of (64, 4), {args.steps} steps, "
          f"{args.prior} prior, device={args.device}, torch threads={torch.get_num_threads()}")
    print("| method | NFE | wall s | prior s | overhead % | overhead ms / step |\n|---|---|---|---|---|---|")
    for name, s in methods.items():
        cofi.compose(prior, layout, cofi.GSC(steps=2), batch=batch, progress=False)  # warm-up
        runs = []
        for _ in range(args.repeats):
            prior.seconds = 0.0
            t0 = time.perf_counter()
            with torch.set_grad_enabled(s.guidance > 0):
                out = cofi.compose(prior, layout, s, batch=batch, generator=torch.Generator().manual_seed(0),
                                   progress=False)
            runs.append((time.perf_counter() - t0, prior.seconds))
        wall, prior_s = min(runs, key=lambda r: r[0] - r[1])  # the least-disturbed run
        rounds = out.nfe // (batch * args.count)  # prior calls per plan: the sampler's steps
        print(f"| {name} | {out.nfe} | {wall:.2f} | {prior_s:.2f} | {100 * (1 - prior_s / wall):.1f} | "
              f"{1e3 * (wall - prior_s) / rounds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
