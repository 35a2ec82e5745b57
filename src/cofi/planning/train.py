"""Train a `TrajectoryPrior` (1D temporal U-Net) on a PointMaze stitch dataset, on CPU.

The data protocol is the planner's: episodes padded with 64 copies of their first state
(`pad_episodes`), 160-env-step windows at a temporal stride (default 4: 40 points).

Targets (``--target``):
  - ``stf`` (default): low-variance targets (Stable Target Field, Xu et al. 2023). The
    network regresses the *exact* posterior mean x̂*(x_t, t) of the empirical distribution of
    the training windows (`EmpiricalPrior` over a bank of them), instead of the one clean
    window x_0 that produced x_t; with ``--bank-sample n``, over STF's reference batch (n
    random bank windows plus the batch's own windows), n/M of the cost. Same minimiser, far less variance: at high noise x_0 is
    almost independent of x_t, while x̂* is a smooth function of it.
  - ``plain``: the usual regression on x_0.
Whatever the target, the network outputs ε, x̂ or v (``--prediction``, default v) of it.
With ``--cond-prob p`` (default 0.5 each) the first and the last point of a window are
given to the network as clean observations (an extra mask channel), and the target is
conditioned on them exactly, so at planning time a pinned start or goal is read, not
guessed (the inpainting-aware training of CompDiffuser's planners).
With ``--evidence-prob q`` a window gets, with probability q, Gaussian evidence
``y = x_0 + ε/√π`` about its first and/or last overlap (56 env steps), at the precision
consensus coupling uses, ``π = κ·min(ᾱ/(1−ᾱ), 10)`` with κ log-uniform in
``--evidence-kappa``; the target is the bank's posterior mean under that evidence
(`EmpiricalPrior.denoise(evidence=...)`), so the network learns the closed-form prior's
consensus conditioning and planners can couple its windows (``consensus=κ``).

Resumable: ``<out>/state.safetensors`` (weights, EMA, optimiser, RNG) + ``<out>/state.json``
(step, history, wall time); rerunning the same command continues bit-identically. The
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

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..prior import append_dims
from ..priors.empirical import EmpiricalPrior
from ..priors.trajectory import TrajectoryPrior, XYNormalizer, cosine_alphas_cumprod
from ..priors.unet1d import TemporalUNet, UNet1DConfig, expand_input_weights
from .data import HORIZON_STEPS, OVERLAP_STEPS, cut_windows, load_episodes, pad_episodes

__all__ = ["add_train_args", "train_from_args", "train", "sample_windows", "sample_evidence", "save_state",
           "load_state"]


def sample_windows(eps: Tensor, n: int, horizon: int, g: torch.Generator, stride: int = 1) -> Tensor:
    """``n`` random within-episode windows of ``horizon`` env steps, one point per ``stride``
    steps: ``(n, horizon // stride, D)``. Any start, not only multiples of the stride."""
    e = torch.randint(0, eps.shape[0], (n,), generator=g)
    s = torch.randint(0, eps.shape[1] - horizon + 1, (n,), generator=g)
    idx = s[:, None] + torch.arange(0, horizon, stride)[None]
    return eps[e[:, None], idx]


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="training npz (the -val file beside it is used for validation)")
    p.add_argument("--out", required=True)
    p.add_argument("--env", default=None, help="environment name stored in the config (default: from --data)")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--dim-mults", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--stride", type=int, default=4, help="env steps per plan point (160 // stride points)")
    p.add_argument("--pad", type=int, default=64, help="copies of the first state prepended to each episode")
    p.add_argument("--target", choices=("stf", "plain"), default="stf", help="exact posterior mean or x_0")
    p.add_argument("--bank-every", type=int, default=4, help="window starts of the STF bank (env steps)")
    p.add_argument("--bank-sample", type=int, default=0,
                   help="STF reference batch: this many random bank windows plus the batch (0: the whole bank)")
    p.add_argument("--cond-prob", type=float, default=0.5, help="probability that each end point is observed")
    p.add_argument("--evidence-prob", type=float, default=0.0,
                   help="probability that a window gets consensus evidence on its prefix and/or suffix "
                        "(> 0: a network that reads evidence, UNet1DConfig.evidence)")
    p.add_argument("--evidence-kappa", type=float, nargs=2, default=(0.5, 20.0), metavar=("LO", "HI"),
                   help="evidence precision κ·min(ᾱ/(1−ᾱ), 10), κ log-uniform in [LO, HI]")
    p.add_argument("--fourier", type=int, default=0, help="Fourier input features per coordinate (0: raw xy only)")
    p.add_argument("--grid", type=int, default=64, help="resolution of the learned xy feature grid (0: none)")
    p.add_argument("--grid-dim", type=int, default=8, help="channels of the feature grid")
    p.add_argument("--grid-smooth", type=int, nargs="*", default=[],
                   help="also read the grid at moving averages of these odd widths (e.g. 9 33 161)")
    p.add_argument("--grid-wiener", action="store_true",
                   help="read the grid at the Wiener estimate of x_0 (noise-level aware), not at x_t")
    p.add_argument("--scale", type=float, default=1.0, help="normalised data lies in [-scale, scale]")
    p.add_argument("--prediction", choices=("epsilon", "sample", "v_prediction"), default="v_prediction")
    p.add_argument("--T", type=int, default=200, help="diffusion steps of the cosine schedule")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--every", type=int, default=500, help="checkpoint / validation interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stop-at", type=int, default=None,
                   help="end this run at this step (checkpointed; the schedule still spans --steps), "
                        "e.g. to split training across sessions")
    p.add_argument("--init", default=None,
                   help="warm start: a previous run's directory (its weights and EMA, state.safetensors) or a "
                        "checkpoint directory (model.safetensors: the EMA weights start both); a fresh optimiser "
                        "and a new schedule of --steps")


def _net_target(x0_star: Tensor, x_in: Tensor, a: Tensor, prediction: str) -> Tensor:
    """What the network must output so that `to_x0` of it, at input ``x_in``, is ``x0_star``."""
    a = append_dims(a, x_in.ndim)
    if prediction == "sample":
        return x0_star
    eps = (x_in - a.sqrt() * x0_star) / (1 - a).sqrt()
    return eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0_star


def sample_evidence(x0: Tensor, a: Tensor, args, g: torch.Generator) -> dict[str, Tensor]:
    """Consensus-like evidence for a batch of clean windows ``x0 (n, H, C)`` at ᾱ ``a (n,)``:
    with probability ``args.evidence_prob`` a window's first and/or last ``OVERLAP_STEPS //
    stride`` points (each half the time, at least one) get ``y = x_0 + ε/√π``,
    ``π = κ·min(ᾱ/(1−ᾱ), 10)``, κ log-uniform in ``args.evidence_kappa``; elsewhere π = 0."""
    n, H = x0.shape[:2]
    k = OVERLAP_STEPS // args.stride
    on = torch.rand(n, generator=g) < args.evidence_prob
    side = torch.randint(0, 3, (n,), generator=g)  # 0: prefix, 1: suffix, 2: both
    where = torch.zeros(n, H, dtype=torch.bool)
    where[:, :k] = (on & (side != 1))[:, None]
    where[:, H - k:] = (on & (side != 0))[:, None]
    lo, hi = (math.log(v) for v in args.evidence_kappa)
    kappa = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
    prec = append_dims(kappa * (a / (1 - a)).clamp(max=10.0), 3) * where[..., None].to(x0)
    prec = prec.expand_as(x0).contiguous()
    noise = torch.randn(x0.shape, generator=g)
    y = torch.where(prec > 0, x0 + noise / prec.clamp(min=1e-12).sqrt(), torch.zeros_like(x0))
    return {"evidence": y, "evidence_precision": prec}


class Batcher:
    """Noised training batches with their targets: ``(x_in, t, mask, target, evidence)``
    (``evidence``: keyword tensors for the network, empty unless ``--evidence-prob``)."""

    def __init__(self, eps: Tensor, ac: Tensor, args, bank: EmpiricalPrior | None, cond: bool) -> None:
        self.eps, self.ac, self.args, self.bank, self.cond = eps, ac, args, bank, cond

    def __call__(self, n: int, g: torch.Generator):
        a_ = self.args
        x0 = sample_windows(self.eps, n, HORIZON_STEPS, g, a_.stride)
        t = torch.randint(0, self.ac.shape[0], (n,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = self.ac[t]
        x_t = append_dims(a, 3).sqrt() * x0 + append_dims(1 - a, 3).sqrt() * noise
        mask = torch.zeros(x0.shape[:2], dtype=torch.bool)
        if self.cond:
            ends = torch.rand(n, 2, generator=g) < a_.cond_prob
            mask[:, 0], mask[:, -1] = ends[:, 0], ends[:, 1]
        full = mask[..., None].expand_as(x0)
        x_in = torch.where(full, x0, x_t)
        ev = sample_evidence(x0, a, a_, g) if a_.evidence_prob > 0 else {}
        if self.bank is None:
            x0_star = x0
        else:
            obs = dict(observed=x0, observed_mask=full) if self.cond else {}
            obs.update(ev)
            bank = self.bank
            if a_.bank_sample:  # STF's reference batch: a random part of the bank + the batch itself
                rows = torch.randint(0, bank.size, (a_.bank_sample,), generator=g)
                ref = torch.cat([x0.reshape(n, -1), bank.bank[rows]]).reshape(-1, *x0.shape[1:])
                bank = EmpiricalPrior(ref, self.ac, obs_std=bank.obs_std)
            with torch.no_grad():
                x0_star = bank.denoise(x_t, t, **obs)
        return x_in, t, mask, _net_target(x0_star, x_in, a, a_.prediction), ev


def _loss(net, batch, cond: bool, ac: Tensor) -> Tensor:
    x_in, t, mask, target, ev = batch
    out = net(x_in, t, mask if cond else None, alpha=ac[t], **ev)
    return (out - target).pow(2).mean()


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
    ax.set_ylabel("MSE of the network's target")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- state
def save_state(path: Path, net, ema, opt, g: torch.Generator, info: dict) -> None:
    """Training state as ``<path>.safetensors`` (tensors) + ``<path>.json`` (the rest); no pickle."""
    from safetensors.torch import save_file

    tensors = {f"net.{k}": v for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v)
    tensors["rng"] = g.get_state()
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path) + ".safetensors")
    meta = dict(info, param_groups=osd["param_groups"])
    Path(str(path) + ".json").write_text(json.dumps(meta))


def load_state(path: Path, net, ema, opt, g: torch.Generator) -> dict:
    """Inverse of `save_state`; returns the JSON part."""
    from safetensors.torch import load_file

    tensors = load_file(str(path) + ".safetensors")
    meta = json.loads(Path(str(path) + ".json").read_text())
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    g.set_state(tensors["rng"])
    return meta


# ----------------------------------------------------------------------------- training
def train(args: argparse.Namespace, command: str) -> Path:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = args.env or Path(args.data).name.replace(".npz", "")
    train_eps, val_eps = load_episodes(args.data), load_episodes(str(args.data).replace(".npz", "-val.npz"))
    lo, hi = train_eps.reshape(-1, 2).min(0), train_eps.reshape(-1, 2).max(0)
    norm = XYNormalizer(lo, hi, scale=args.scale, env_name=env, stride=args.stride)
    tr = norm.normalize(pad_episodes(train_eps, args.pad))
    va = norm.normalize(pad_episodes(val_eps, args.pad))
    cond = args.cond_prob > 0
    cfg = UNet1DConfig(horizon=HORIZON_STEPS // args.stride, dim=args.dim, dim_mults=tuple(args.dim_mults),
                       fourier=args.fourier, grid=args.grid, grid_dim=args.grid_dim,
                       grid_smooth=tuple(args.grid_smooth), grid_extent=args.scale,
                       grid_wiener=args.grid_wiener, cond=cond, evidence=args.evidence_prob > 0)
    ac = cosine_alphas_cumprod(args.T)
    bank = None
    if args.target == "stf":
        windows = cut_windows(tr.numpy(), HORIZON_STEPS, args.stride, args.bank_every)
        bank = EmpiricalPrior(torch.from_numpy(windows), ac, obs_std=0.02)
    torch.manual_seed(args.seed)
    net = TemporalUNet(cfg)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    step, history, wall_before = 0, {"train": [], "val": []}, 0.0
    ema_age = 0  # steps the EMA has already averaged (a warm start's)
    state_path = out / "state"
    if Path(str(state_path) + ".json").exists():  # resume
        info = load_state(state_path, net, ema, opt, g)
        step, history, wall_before = info["step"], info["history"], info["wall_s"]
        ema_age = info.get("ema_age", 0)
        print(f"resumed from step {step}")
    elif args.init is not None:  # warm start: weights + EMA, fresh optimiser and schedule
        init = Path(args.init)
        if (init / "state.safetensors").exists():  # a training run: its weights and its EMA
            from safetensors.torch import load_file

            tensors = load_file(init / "state.safetensors")
            for prefix, module in (("net.", net), ("ema.", ema)):
                part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                module.load_state_dict(expand_input_weights(part, module))
            ema_age = json.loads((init / "state.json").read_text())["step"]
        else:  # a shipped checkpoint: its EMA weights start both
            shipped = TrajectoryPrior.from_pretrained(init)
            weights = expand_input_weights(shipped.net.state_dict(), net)  # e.g. adding evidence inputs
            net.load_state_dict(weights)
            ema.load_state_dict(weights)
            ema_age = int(json.loads((init / "config.json").read_text()).get("step", 0))
        print(f"initialised from {args.init} (step {ema_age})")
    batches = Batcher(tr, ac, args, bank, cond)
    val_batch = Batcher(va, ac, args, bank, cond)(512, torch.Generator().manual_seed(1234))
    meta = dict(env_name=env, T=args.T, schedule="cosine", command=command, seed=args.seed, steps=args.steps,
                batch=args.batch, lr=args.lr, target=args.target, pad=args.pad, bank_every=args.bank_every,
                cond_prob=args.cond_prob, bank_windows=None if bank is None else bank.size,
                evidence_prob=args.evidence_prob, evidence_kappa=list(args.evidence_kappa),
                bank_sample=args.bank_sample)
    planning = {}  # a warm start keeps the planning settings its checkpoint was tuned with
    if args.init is not None:
        init_cfg = json.loads((Path(args.init) / "config.json").read_text())
        meta.update(init=dict(path=str(args.init), command=init_cfg.get("command"), steps=init_cfg.get("step"),
                              wall_s=init_cfg.get("wall_s")))
        planning = {k: init_cfg[k] for k in ("planning_guidance", "planning_guidance_schedule") if init_cfg.get(k)}
    running = history["train"][-1][1] if history["train"] else None
    bar = tqdm(total=args.steps, initial=step, desc=f"train {env}")
    t0 = time.time()
    end = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
    while step < end:
        batch = batches(args.batch, g)
        lr = args.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = _loss(net, batch, cond, ac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step + ema_age) / (10 + step + ema_age))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if step % 50 == 0:
            history["train"].append((step, running))
        if step % args.every == 0 or step == end:
            with torch.no_grad():
                val = _loss(ema, val_batch, cond, ac).item()
            history["val"].append((step, val))
            wall = round(wall_before + time.time() - t0, 1)
            meta.update(step=step, val_loss=val, train_loss=running, wall_s=wall)
            TrajectoryPrior(ema, ac, lo, hi, env_name=env, prediction=args.prediction, scale=args.scale,
                            stride=args.stride, **planning).save_pretrained(out, extra=meta)
            save_state(state_path, net, ema, opt, g, dict(step=step, history=history, wall_s=wall, ema_age=ema_age))
            _plot(history, out / "loss.png")
            bar.write(f"step {step}: train {running:.4f}  val {val:.4f}")
    bar.close()
    return out


def train_from_args(args: argparse.Namespace, argv: list[str]) -> Path:
    return train(args, "python -m cofi.planning " + " ".join(argv[1:]))
