"""Style coherence on an exact image prior: the CPU stand-in for the paper's panorama table.

    python benchmarks/image_coherence.py                 # both canvases, all methods, ablation, figure
    python benchmarks/image_coherence.py --quick         # a smoke run

The local prior is `GaussianFieldMixturePrior.styles_benchmark()`: RGB 16 × 16 windows from a
mixture of 4 stationary Gaussian random fields (one colour and one texture scale per "style").
Its windows are exact marginals of a known global law in which a canvas has one style, so
ground truth is exact. Canvases: a wide 16 × 76 strip (1 × 6 windows) and a 2-D 52 × 52 canvas
(4 × 4 windows), overlap 4 (stride 12) on both axes, ramp blending, 50 DDIM steps. Per method:

- style coherence: the fraction of canvases whose windows all take the same component (the
  most likely component of each clean window under the local prior); ground truth is ~1;
- NLL per dimension under the global law (matching ground truth's is best);
- Intra-LPIPS and Intra-Style (`cofi.metrics.image`) between the canvas' non-overlapping 16 × 16
  crops, with *random-weight* VGG16 features (no weights can be downloaded here): they rank
  canvases but are not the paper's calibrated numbers;
- NFE and wall time per canvas (this machine's CPU).

What it can show: whether a sampler keeps one style across windows that the prior alone would
let drift, with exact likelihoods. What it cannot: anything about SD's perceptual quality.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import cofi
from cofi.priors import GaussianFieldMixturePrior

WINDOW, OVERLAP = 16, 4


def layouts():
    ramp = dict(blend="ramp")
    return {
        "wide 16×76 (1×6)": cofi.Chain(WINDOW, OVERLAP, 6, axis=2, **ramp),
        "2-D 52×52 (4×4)": cofi.Grid((cofi.Chain(WINDOW, OVERLAP, 4, axis=1, **ramp),
                                      cofi.Chain(WINDOW, OVERLAP, 4, axis=2, **ramp))),
    }


def gram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A differentiable style distance on windows in [0, 1]: squared difference of the
    channel Gram matrices and means (SyncDiffusion's perceptual term on this prior)."""
    def stats(x):
        f = x.flatten(2)
        return torch.cat([(f @ f.transpose(1, 2) / f.shape[2]).flatten(1), f.mean(2)], 1)
    return (stats(a) - stats(b)).pow(2).sum(1)


def to_image(x: torch.Tensor) -> torch.Tensor:
    """Field values (about N(±1.5, 1)) to [0, 1] pixels."""
    return (x / 6 + 0.5).clamp(0, 1)


def methods(steps: int) -> dict:
    sync = cofi.SyncDiffusion(steps=steps, sync_steps=max(1, steps // 5), weight=20.0, lpips=gram_distance,
                              decode=to_image)
    cofi_preset = cofi.presets.resolve(cofi.panorama.PRESETS, "cofi", steps=steps).sampler
    return {
        "MultiDiffusion / GSC": (cofi.GSC(steps=steps), 1),
        "GSC at CoFi's NFE": (cofi.GSC(steps=2 * steps - cofi_preset.refine_step), 1),
        "SyncDiffusion": (sync, 1),
        "CDGS (P=8, U=4)": (cofi.CDGS(steps=steps, inner=4), 8),
        "CoFi (panorama preset)": (cofi_preset, 1),
        "CoFi (λ0=0.2 const, refine_at=0.6)": (cofi.CoFi(steps=steps, lam0=0.2, schedule="constant",
                                                         refine_at=0.6, coarse_update="renoise", noise="blend",
                                                         refine_noise="shared"), 1),
    }


def window_styles(prior, layout, canvas: torch.Tensor) -> torch.Tensor:
    plans = layout.split(canvas)
    B, N = plans.shape[:2]
    return prior.component_logprob(plans.reshape(B * N, *prior.sample_shape)).argmax(1).reshape(B, N)


def summarise(prior, layout, canvas: torch.Tensor, vgg=None, lpips=None) -> dict:
    styles = window_styles(prior, layout, canvas)
    out = dict(coherence=(styles == styles[:, :1]).all(1).double().mean().item(),
               nll=(-prior.global_logpdf(canvas) / canvas[0].numel()).mean().item())
    if vgg is not None:
        from cofi.metrics import image as mi

        imgs = to_image(canvas).float()
        out["intra_style"] = sum(mi.intra_style(im, vgg, crop_size=WINDOW) for im in imgs) / len(imgs)
        out["intra_lpips"] = sum(mi.intra_lpips(im, lpips, crop_size=WINDOW) for im in imgs) / len(imgs)
    return out


def run(prior, layout, sampler, pop: int, n: int, seed: int):
    """``n`` canvases (each the best of ``pop`` candidates); canvases, NFE / canvas, s / canvas."""
    canv, nfe, t0 = [], 0, time.perf_counter()
    for j in range(n):
        out = cofi.compose(prior, layout, sampler, batch=pop, generator=torch.Generator().manual_seed(seed * 10_000 + j),
                           progress=False)
        canv.append(out.best_canvas)
        nfe += out.nfe
    return torch.stack(canv), nfe / n, (time.perf_counter() - t0) / n


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="canvases per method and layout")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="8 canvases, 20 steps, no ablation")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--no-perceptual", action="store_true", help="skip Intra-LPIPS / Intra-Style")
    ap.add_argument("--figure", default="docs/figures/image_coherence.png")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.steps, args.no_ablation = 8, 20, True
    prior = GaussianFieldMixturePrior.styles_benchmark(window=WINDOW)
    vgg = lpips = None
    if not args.no_perceptual:
        from cofi.metrics import image as mi

        torch.manual_seed(0)
        vgg, lpips = mi.VGG16Features(), mi.LPIPS()
    print(f"# image coherence: {prior.sample_shape} windows, {len(prior.means)} styles, {args.n} canvases, "
          f"{args.steps} steps, torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    samples = {}
    for lname, layout in layouts().items():
        size = layout.global_shape(prior.sample_shape)[1:]
        rows = []
        gt, _ = prior.sample_global(args.n, size, generator=torch.Generator().manual_seed(123))
        m = summarise(prior, layout, gt, vgg, lpips)
        rows.append(["Ground truth", f"{m['coherence']:.3f}", f"{m['nll']:.3f}", *_perc(m), "–", "–"])
        samples[(lname, "Ground truth")] = gt[:4]
        for name, (sampler, pop) in methods(args.steps).items():
            canv, nfe, sec = run(prior, layout, sampler, pop, args.n, args.seed)
            m = summarise(prior, layout, canv, vgg, lpips)
            rows.append([name, f"{m['coherence']:.3f}", f"{m['nll']:.3f}", *_perc(m), f"{nfe:.0f}", f"{1000 * sec:.0f}"])
            samples[(lname, name)] = canv[:4]
            print(f"  {lname} {name}: {m} NFE {nfe:.0f}", flush=True)
        print(f"\n### {lname}\n")
        print(fmt_table(rows, ["method", "style coherence ↑", "NLL/dim (≈ ground truth)", "Intra-LPIPS ↓",
                               "Intra-Style ↓", "NFE / canvas", "ms / canvas"]), flush=True)
    if not args.no_ablation:
        layout = layouts()["2-D 52×52 (4×4)"]
        print("\n### Ablation on the 2-D canvas: λ0 (constant) × refine_at (style coherence / NLL per dim)\n")
        depths = (None, 0.3, 0.6, 0.8)
        rows = []
        for lam0 in (0.0, 0.2, 0.5, 0.8, 1.0):
            row = [f"{lam0:.1f}"]
            for r in depths:
                s = cofi.presets.resolve(cofi.panorama.PRESETS, "cofi", steps=args.steps, lam0=lam0, schedule="constant",
                                                 refine_at=r).sampler
                canv, _, _ = run(prior, layout, s, 1, max(8, args.n // 2), args.seed)
                m = summarise(prior, layout, canv)
                row.append(f"{m['coherence']:.2f} / {m['nll']:.2f}")
            rows.append(row)
            print("  ablation", row, flush=True)
        print(fmt_table(rows, ["λ0 (constant)"] + ["no refinement" if r is None else f"refine_at={r}"
                                                    for r in depths]))
    if args.figure:
        figure(samples, Path(args.figure))


def _perc(m: dict) -> list[str]:
    return [f"{m['intra_lpips']:.4f}", f"{m['intra_style']:.2e}"] if "intra_lpips" in m else ["–", "–"]


def figure(samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in samples if k[0].startswith("2-D")]
    fig, axes = plt.subplots(len(keys), 4, figsize=(8, 2.1 * len(keys)), squeeze=False)
    for r, key in enumerate(keys):
        for c in range(4):
            ax = axes[r][c]
            ax.imshow(to_image(samples[key][c]).permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(key[1], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("2-D 52×52 canvases (4×4 windows of 16×16, overlap 4): four per method", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


if __name__ == "__main__":
    main()
