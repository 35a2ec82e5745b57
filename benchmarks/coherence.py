"""Coherence benchmark on the exact Gaussian-process-mixture prior (ground truth known).

    python benchmarks/coherence.py                 # main table + figure + ablations
    python benchmarks/coherence.py --quick         # a smaller run for a smoke test

Every method composes `--windows` windows of the same local prior; we report, over all
composed canvases: global coherence (all windows assigned to one component), overlap
error, exact NLL per dimension under the global law, NFE per composition and wall time.
Ground truth = canvases drawn directly from the global distribution.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import cofi
from cofi.metrics import coherence as C


def run_method(prior, layout, sampler, n: int, chunk: int, seed: int):
    """``n`` canvases in populations of ``chunk`` candidates; returns canvases, NFE/composition, seconds."""
    canvases, errors, nfe, t0 = [], [], 0, time.perf_counter()
    for j in range(math.ceil(n / chunk)):
        g = torch.Generator().manual_seed(seed * 1000 + j)
        out = cofi.compose(prior, layout, sampler, batch=chunk, generator=g, progress=False)
        canvases.append(out.canvas)
        errors.append(out.overlap_error)  # of the final plans, before merging
        nfe += out.nfe
    dt = time.perf_counter() - t0
    n_done = sum(c.shape[0] for c in canvases)
    return torch.cat(canvases)[:n], torch.cat(errors)[:n], nfe / n_done, dt / n_done


def summarise(prior, layout, canvas, overlap=None):
    overlap = C.overlap_error(layout, layout.split(canvas)) if overlap is None else overlap
    return dict(
        coherence=C.coherence(prior, layout, canvas).double().mean().item(),
        overlap=overlap.mean().item(),
        nll=C.nll(prior, canvas).mean().item(),
    )


def mean_std(xs):
    t = torch.tensor(xs, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(xs) > 1 else 0.0)


def table(rows, header):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def methods(steps: int):
    return {
        "GSC": (cofi.GSC(steps=steps), None),
        "CDGS (P=40, U=10)": (cofi.CDGS(steps=steps), 40),
        f"CoFi (λ0=0.8 linear, refine_at=0.3: r={math.floor(0.3 * steps)})": (cofi.CoFi(steps=steps, refine_at=0.3), None),
        f"CoFi (λ0=0.2 const, refine_at=0.6: r={math.floor(0.6 * steps)})": (cofi.CoFi(steps=steps, lam0=0.2, schedule="constant",
                                              refine_at=0.6), None),
    }


def main_table(prior, layout, args):
    rows, samples = [], {}
    results = {}
    for s in range(args.seeds):
        gt = C.ground_truth(prior, layout, args.n, torch.Generator().manual_seed(10_000 + s))
        results.setdefault("Ground truth", []).append((summarise(prior, layout, gt), 0.0, 0.0))
        samples["Ground truth"] = gt[:4]
    for name, (sampler, pop) in methods(args.steps).items():
        for s in range(args.seeds):
            canv, err, nfe, sec = run_method(prior, layout, sampler, args.n, pop or args.n, seed=s)
            results.setdefault(name, []).append((summarise(prior, layout, canv, err), nfe, sec))
            samples[name] = canv[:4]
            print(f"  {name} seed {s}: {results[name][-1]}", flush=True)
    for name, res in results.items():
        coh = mean_std([r[0]["coherence"] for r in res])
        ov = mean_std([r[0]["overlap"] for r in res])
        nl = mean_std([r[0]["nll"] for r in res])
        nfe, sec = res[0][1], mean_std([r[2] for r in res])[0]
        rows.append([name, f"{coh[0]:.3f} ± {coh[1]:.3f}", f"{ov[0]:.2e}", f"{nl[0]:.3f} ± {nl[1]:.3f}",
                     f"{nfe:.0f}" if nfe else "–", f"{1000 * sec:.1f}" if sec else "–"])
    header = ["method", "coherence ↑", "overlap MSE ↓", "NLL/dim (≈ ground truth is best)", "NFE / composition", "ms / composition"]
    return table(rows, header), samples


def ablation(prior, layout, args):
    rows = []
    for lam0 in (0.0, 0.2, 0.5, 0.8, 1.0):
        row = [f"{lam0:.1f}"]
        for frac in (None, 0.3, 0.6, 0.8):
            sampler = cofi.CoFi(steps=args.steps, lam0=lam0, schedule="constant", refine_at=frac)
            canv, _, _, _ = run_method(prior, layout, sampler, args.n_ablation, args.n_ablation, seed=0)
            m = summarise(prior, layout, canv)
            row.append(f"{m['coherence']:.2f} / {m['nll']:.2f}")
        rows.append(row)
        print("  ablation", row, flush=True)
    header = ["λ0 (constant)", "no refinement", "refine_at=0.3", "refine_at=0.6", "refine_at=0.8"]
    return table(rows, header)


def figure(prior, layout, samples, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(len(samples), 4, figsize=(14, 2.0 * len(samples)), sharex=True, sharey=True)
    for r, (name, canv) in enumerate(samples.items()):
        comp = C.window_components(prior, layout.split(canv))
        for c in range(4):
            ax = axes[r, c]
            for i, s in enumerate(layout.starts):
                xs = torch.arange(s, s + layout.window)
                ax.plot(xs, canv[c, s : s + layout.window, 0], color=colors(int(comp[c, i])), lw=1.2)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("channel 0 of composed canvases; each window coloured by its component")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=8)
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=256, help="compositions per method and seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-ablation", type=int, default=128)
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--quick", action="store_true", help="n=64, 1 seed, 20 steps, no ablation")
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = p.parse_args()
    if args.quick:
        args.n, args.seeds, args.steps, args.no_ablation = 64, 1, 20, True
    torch.set_grad_enabled(False)
    prior = cofi.priors.GaussianMixturePrior.chain_benchmark(window=32, components=args.components)
    layout = cofi.Chain(window=32, overlap=8, count=args.windows, blend="ramp")
    print(f"# Coherence benchmark: {args.windows} windows of 32 (overlap 8), {args.components} components, "
          f"{args.steps} DDIM steps, {args.n} compositions x {args.seeds} seeds, torch threads={torch.get_num_threads()}")
    tab, samples = main_table(prior, layout, args)
    print(tab)
    args.out.mkdir(parents=True, exist_ok=True)
    figure(prior, layout, samples, args.out / "coherence.png")
    if not args.no_ablation:
        print("\n## Ablation: coherence / NLL per dim for λ0 (constant schedule) x refinement start r")
        print(ablation(prior, layout, args))


if __name__ == "__main__":
    main()
