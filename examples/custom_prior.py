"""Write a LocalPrior adapter for your own small model and compose with it.

    python examples/custom_prior.py            # trains a tiny net (~1 min on CPU), composes, plots

The walkthrough:
1. a small 1D conv denoiser trained for a few hundred steps on short windows of smooth
   random signals whose level is one of a few values per signal (a multimodal prior);
2. an adapter: `alphas_cumprod`, `sample_shape`, `denoise(x_t, t, **cond) -> x0`;
3. the contract suite (`cofi.testing.check_prior`) on the adapter;
4. `cofi.compose` with GSC and CoFi over 6 windows, and a plot of both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import cofi
from cofi.prior import to_x0
from cofi.testing import check_prior

WINDOW, LEVELS = 32, torch.tensor([-1.5, 0.0, 1.5])


def data(n: int, g: torch.Generator) -> torch.Tensor:
    """Windows ``(n, 32, 1)``: a level drawn from LEVELS plus a smooth random wiggle."""
    level = LEVELS[torch.randint(0, len(LEVELS), (n,), generator=g)]
    freq = torch.rand(n, 1, generator=g) * 0.3 + 0.1
    phase = torch.rand(n, 1, generator=g) * 6.28
    x = level[:, None] + 0.4 * torch.sin(freq * torch.arange(WINDOW) + phase)
    return x[..., None]


class TinyDenoiser(nn.Module):
    """ε-prediction conv net over ``(B, 32, 1)`` with a learned timestep embedding."""

    def __init__(self, T: int, width: int = 64) -> None:
        super().__init__()
        self.temb = nn.Embedding(T, width)
        self.inp = nn.Conv1d(1, width, 5, padding=2)
        self.body = nn.Sequential(*[nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv1d(width, width, 5, padding=2))
                                    for _ in range(4)])
        self.pool = nn.Linear(width, width)  # a global summary lets the net see the window level
        self.out = nn.Conv1d(width, 1, 5, padding=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.transpose(1, 2)) + self.temb(t)[:, :, None]
        h = h + self.pool(h.mean(2))[:, :, None]
        for block in self.body:
            h = h + block(h)
        return self.out(h).transpose(1, 2)


class MyPrior:
    """The adapter: everything cofi needs, nothing else."""

    supports_grad = True  # denoise is differentiable (enables overlap guidance)

    def __init__(self, net: TinyDenoiser, alphas_cumprod: torch.Tensor) -> None:
        self.net, self.alphas_cumprod, self.sample_shape = net, alphas_cumprod, (WINDOW, 1)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must be (M, {WINDOW}, 1), got {tuple(x_t.shape)}")
        return to_x0(self.net(x_t, t), x_t, self.alphas_cumprod[t], "epsilon")


def train(steps: int, seed: int = 0) -> MyPrior:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    T = 200
    ac = torch.cumprod(1 - torch.linspace(1e-4, 0.05, T), 0)
    net = TinyDenoiser(T)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for step in range(steps):
        x0 = data(256, g)
        t = torch.randint(0, T, (256,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = ac[t][:, None, None]
        loss = (net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    net.eval().requires_grad_(False)
    return MyPrior(net, ac)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--out", type=Path, default=Path("custom_prior.png"))
    args = p.parse_args()
    prior = train(args.train_steps)
    check_prior(prior)
    print("contract suite: passed")
    layout = cofi.Chain(window=WINDOW, overlap=8, count=6, blend="ramp")
    runs = {}
    for name, sampler in {"GSC": cofi.GSC(steps=40),
                          "CoFi": cofi.CoFi(steps=40, lam0=0.2, schedule="constant", refine_at=0.6)}.items():
        out = cofi.compose(prior, layout, sampler, batch=8, generator=torch.Generator().manual_seed(0))
        runs[name] = out
        spread = (out.plans.mean(2).squeeze(-1).std(1)).mean().item()  # level disagreement between windows
        print(f"{name}: NFE {out.nfe}, mean spread of window levels {spread:.3f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
    for ax, (name, out) in zip(axes, runs.items()):
        ax.plot(out.canvas[..., 0].T, lw=1)
        ax.set_title(f"{name}: 8 compositions of 6 windows")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
