"""Train a `TrajectoryPrior` (1D temporal U-Net, ε- or x̂-prediction) on a PointMaze stitch dataset.

Resumable: ``<out>/state.pt`` holds the optimiser, raw and EMA weights and the step; the
shipped artefact is ``<out>/model.safetensors`` (EMA weights) + ``<out>/config.json``.

    python -m cofi.planning train --data data/pointmaze-giant-stitch-v0.npz --out runs/giant --steps 12000
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..priors.trajectory import TrajectoryPrior, cosine_alphas_cumprod
from ..priors.unet1d import TemporalUNet, UNet1DConfig

__all__ = ["add_train_args", "train_from_args", "load_segments", "train"]

EPISODE_STEPS = 201


def load_segments(path: str | Path) -> np.ndarray:
    """Episodes of xy positions ``(E, 201, 2)`` from an OGBench-layout npz."""
    obs = np.load(path)["observations"][:, :2].astype(np.float32)
    if obs.shape[0] % EPISODE_STEPS:
        raise ValueError(f"{path}: {obs.shape[0]} rows is not a multiple of the episode length {EPISODE_STEPS}")
    return obs.reshape(-1, EPISODE_STEPS, 2)


def sample_windows(eps: torch.Tensor, n: int, horizon: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random within-episode windows ``(n, horizon, 2)``."""
    e = torch.randint(0, eps.shape[0], (n,), generator=g)
    s = torch.randint(0, eps.shape[1] - horizon + 1, (n,), generator=g)
    idx = s[:, None] + torch.arange(horizon)[None]
    return eps[e[:, None], idx]


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="training npz (the -val file beside it is used for validation)")
    p.add_argument("--out", required=True)
    p.add_argument("--env", default=None, help="environment name stored in the config (default: from --data)")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--dim-mults", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--fourier", type=int, default=0, help="Fourier input features per coordinate (0: raw xy only)")
    p.add_argument("--grid", type=int, default=0, help="resolution of the learned xy feature grid (0: none)")
    p.add_argument("--grid-dim", type=int, default=8, help="channels of the feature grid")
    p.add_argument("--grid-smooth", type=int, nargs="*", default=[],
                   help="also read the grid at moving averages of these odd widths (e.g. 9 33 161)")
    p.add_argument("--scale", type=float, default=1.0, help="normalised data lies in [-scale, scale]")
    p.add_argument("--prediction", choices=("epsilon", "sample"), default="epsilon", help="network target: ε or x̂")
    p.add_argument("--T", type=int, default=200, help="diffusion steps of the cosine schedule")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--every", type=int, default=500, help="checkpoint / validation interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)


def _loss(net, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, ac: torch.Tensor, prediction: str) -> torch.Tensor:
    """MSE of the network's target (ε or x̂) on ``x_t = √ᾱ x0 + √(1−ᾱ) ε``."""
    a = ac[t][:, None, None]
    out = net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t)
    return (out - (eps if prediction == "epsilon" else x0)).pow(2).mean()


def _val_loss(net, val: torch.Tensor, ac: torch.Tensor, seed: int, prediction: str) -> float:
    g = torch.Generator().manual_seed(seed)
    x0 = sample_windows(val, 512, net.config.horizon, g)
    t = torch.randint(0, ac.shape[0], (512,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return _loss(net, x0, t, eps, ac, prediction).item()


def _plot(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history["train"]:
        s, l = zip(*history["train"])
        ax.plot(s, l, lw=0.8, label="train (EMA of batch loss)")
    if history["val"]:
        s, l = zip(*history["val"])
        ax.plot(s, l, "o-", label="validation (EMA weights)")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE of the target (ε or x̂)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(args: argparse.Namespace, command: str) -> Path:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = args.env or Path(args.data).name.replace(".npz", "")
    train_eps = load_segments(args.data)
    val_eps = load_segments(str(args.data).replace(".npz", "-val.npz"))
    lo, hi = train_eps.reshape(-1, 2).min(0), train_eps.reshape(-1, 2).max(0)
    cfg = UNet1DConfig(dim=args.dim, dim_mults=tuple(args.dim_mults), fourier=args.fourier,
                       grid=args.grid, grid_dim=args.grid_dim, grid_smooth=tuple(args.grid_smooth))
    norm = lambda e: torch.from_numpy(args.scale * (2 * (e - lo) / (hi - lo) - 1))  # noqa: E731
    tr, va = norm(train_eps), norm(val_eps)
    ac = cosine_alphas_cumprod(args.T)
    torch.manual_seed(args.seed)
    net = TemporalUNet(cfg)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    step, history, wall_before = 0, {"train": [], "val": []}, 0.0
    state_path = out / "state.pt"
    if state_path.exists():  # resume
        st = torch.load(state_path, weights_only=False)
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        g.set_state(st["rng"])
        step, history = st["step"], st["history"]
        wall_before = st.get("wall_s", 0.0)  # training time of the earlier runs
        print(f"resumed from step {step}")
    meta = dict(env_name=env, lo=lo.tolist(), hi=hi.tolist(), T=args.T, schedule="cosine",
                command=command, seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr)
    running = None
    bar = tqdm(total=args.steps, initial=step, desc=f"train {env}")
    t0 = time.time()
    while step < args.steps:
        x0 = sample_windows(tr, args.batch, cfg.horizon, g)
        t = torch.randint(0, args.T, (args.batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = _loss(net, x0, t, eps, ac, args.prediction)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if step % 50 == 0:
            history["train"].append((step, running))
        if step % args.every == 0 or step == args.steps:
            val = _val_loss(ema, va, ac, seed=1234, prediction=args.prediction)
            history["val"].append((step, val))
            meta.update(step=step, val_loss=val, train_loss=running, wall_s=round(wall_before + time.time() - t0, 1))
            TrajectoryPrior(ema, ac, lo, hi, env_name=env, prediction=args.prediction,
                            scale=args.scale).save_pretrained(out, extra=meta)
            torch.save(dict(net=net.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), rng=g.get_state(),
                            step=step, history=history, wall_s=meta["wall_s"]), state_path)
            _plot(history, out / "loss.png")
            bar.write(f"step {step}: train {running:.4f}  val {val:.4f}")
    bar.close()
    return out


def train_from_args(args: argparse.Namespace, argv: list[str]) -> Path:
    return train(args, "python -m cofi.planning " + " ".join(argv[1:]))
