"""The golden-output cases: every sampler and preset the project has, small, float64 where the
prior allows, fixed seeds. `record.py` writes their outputs once (from a reviewed version of the
code); `tests/test_golden.py` recomputes them and compares.

Each case is a function returning a `Composition`-like dict of tensors (``canvas``, ``plans``,
``overlap_error``, optional ``scaffold``) and integers (``nfe``, ``grad_evals``, ``best``).
"""

from __future__ import annotations

import torch

import cofi

B = 3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gmm():
    return cofi.priors.GaussianMixturePrior.chain_benchmark(window=16, components=3, channels=2)


def _field():
    return cofi.priors.GaussianFieldMixturePrior.styles_benchmark(window=6, components=2)


def _bank(shape=(16, 2), n=40, seed=3, **kw):
    from cofi.priors.trajectory import cosine_alphas_cumprod

    bank = torch.randn(n, *shape, generator=gen(seed), dtype=torch.float64)
    return cofi.priors.EmpiricalPrior(bank, cosine_alphas_cumprod(200).double(), **kw)


def _pins(dtype=torch.float64, hard=False):
    return cofi.Pins([0, -1], torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=dtype), hard=hard)


def _out(comp) -> dict:
    return {"canvas": comp.canvas, "plans": comp.plans, "overlap_error": comp.overlap_error,
            "scaffold": comp.scaffold, "nfe": comp.nfe, "grad_evals": comp.grad_evals, "best": comp.best}


def _run(prior, layout, sampler, seed=0, batch=B, **kw):
    comp = cofi.compose(prior, layout, sampler, batch=batch, generator=gen(seed), progress=False,
                        dtype=torch.float64, **kw)
    return _out(comp)


CHAIN = cofi.Chain(16, 6, 4, blend="ramp")
CHAIN_EXP = cofi.Chain(16, 6, 4, blend="exp")
CHAIN_UNI = cofi.Chain(16, 6, 4)
GRID = cofi.Grid((cofi.Chain(6, 2, 3, axis=1, blend="ramp"), cofi.Chain(6, 2, 2, axis=2)))


def _sync_distance(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def _sync_decode(x):  # (n, 16, 2) plans -> (n, 3, 16, 2) "images"
    return torch.sigmoid(x).unsqueeze(1).expand(-1, 3, -1, -1)


CASES = {
    # ---- GSC on a chain
    "gsc": lambda: _run(_gmm(), CHAIN, cofi.GSC(steps=6)),
    "gsc-eta1-guided-nofusion": lambda: _run(_gmm(), CHAIN_UNI, cofi.GSC(steps=6, eta=1.0, fusion=False,
                                                                          guidance=0.3), seed=1),
    "gsc-variance-shared": lambda: _run(_gmm(), CHAIN_EXP, cofi.GSC(steps=6, eta=1.0, guidance=0.5,
                                                                     guidance_schedule="variance",
                                                                     noise="shared"), seed=2),
    "gsc-plans-blend": lambda: _run(_gmm(), CHAIN, cofi.GSC(steps=6, eta=0.5, noise="blend",
                                                             init_noise="plans"), seed=3),
    "gsc-generator-list": lambda: _out(cofi.compose(_gmm(), CHAIN, cofi.GSC(steps=5, eta=1.0), batch=2,
                                                    generator=[gen(10), gen(11)], progress=False,
                                                    dtype=torch.float64)),
    "gsc-x_T-canvas": lambda: _run(_gmm(), CHAIN, cofi.GSC(steps=5, eta=1.0),
                                   x_T=torch.randn(B, CHAIN.length, 2, generator=gen(99), dtype=torch.float64)),
    "gsc-max-batch": lambda: _run(_gmm(), CHAIN, cofi.GSC(steps=5, eta=1.0, guidance=0.2), max_batch=5),
    # ---- CoFi on a chain: every coarse update / direction / noise mode, weights, guidance, pins
    "cofi": lambda: _run(_gmm(), CHAIN, cofi.CoFi(steps=6)),
    "cofi-panorama-loop": lambda: _run(_gmm(), CHAIN, cofi.CoFi(steps=6, coarse_update="renoise", noise="blend",
                                                                 refine_noise="shared"), seed=4),
    "cofi-video-loop": lambda: _run(_gmm(), CHAIN, cofi.CoFi(steps=6, eta=0.0, direction="fused", refine_at=0.2,
                                                              refine_noise="shared"), seed=5),
    "cofi-cosine-weights": lambda: _run(_gmm(), CHAIN_EXP, cofi.CoFi(steps=6, lam0=0.5, schedule="cosine",
                                                                      weights=(1.0, 2.0, 1.0, 3.0),
                                                                      noise="shared"), seed=6),
    "cofi-constant-norefine": lambda: _run(_gmm(), CHAIN, cofi.CoFi(steps=6, lam0=0.3, schedule="constant",
                                                                     refine_at=None), seed=7),
    "cofi-guided-pins": lambda: _run(_gmm(), CHAIN_UNI, cofi.CoFi(steps=6, guidance=0.5,
                                                                   guidance_schedule="variance"),
                                     seed=8, pins=_pins()),
    "cofi-hard-pins-nofusion": lambda: _run(_gmm(), CHAIN_EXP, cofi.CoFi(steps=6, fusion=False, refine_fusion=True,
                                                                          guidance=0.3, refine_eta=0.5),
                                            seed=9, pins=_pins(hard=True)),
    "cofi-refine-noise-blend": lambda: _run(_gmm(), CHAIN, cofi.CoFi(steps=5, refine_at=0.6, refine_noise="blend",
                                                                      refine_eta=0.7), seed=10),
    # ---- CDGS
    "cdgs-pruned": lambda: _run(_gmm(), CHAIN, cofi.CDGS(steps=6, inner=2, prune_at=0.34, keep=0.5), batch=4,
                                seed=11),
    "cdgs-prune-last": lambda: _run(_gmm(), CHAIN, cofi.CDGS(steps=4, inner=2, prune_at=0.25, keep=0.5,
                                                              eta=1.0), batch=4, seed=12),
    "cdgs-guided-noprune": lambda: _run(_gmm(), CHAIN_UNI, cofi.CDGS(steps=5, inner=2, prune_at=0.0, guidance=0.2,
                                                                      fusion=False), seed=13),
    # ---- consensus on the closed-form bank prior (with exact observations from pins)
    "gsc-consensus": lambda: _run(_bank(), CHAIN_EXP, cofi.GSC(steps=6, eta=1.0, consensus=2.0), seed=14),
    "cofi-consensus-pins": lambda: _run(_bank(), CHAIN_UNI, cofi.CoFi(steps=6, guidance=0.5, consensus=5.0),
                                        seed=15, pins=_pins()),
    "cdgs-consensus": lambda: _run(_bank(), CHAIN, cofi.CDGS(steps=6, inner=2, prune_at=0.34, keep=0.5,
                                                             consensus=3.0), batch=4, seed=16),
    # ---- Grid (2-D lattice)
    "gsc-grid": lambda: _run(_field(), GRID, cofi.GSC(steps=5, eta=1.0, noise="shared"), seed=17),
    "cofi-grid-guided": lambda: _run(_field(), GRID, cofi.CoFi(steps=5, guidance=0.2), seed=18),
    "cofi-grid-panorama-loop": lambda: _run(_field(), GRID, cofi.CoFi(steps=5, coarse_update="renoise",
                                                                       noise="blend", refine_noise="shared"),
                                            seed=19),
    "cdgs-grid": lambda: _run(_field(), GRID, cofi.CDGS(steps=4, inner=2, prune_at=0.25, keep=0.5), batch=4,
                              seed=20),
    # ---- SyncDiffusion (a toy differentiable distance and decoder)
    "syncdiffusion": lambda: _run(_gmm(), CHAIN_UNI, cofi.SyncDiffusion(steps=5, sync_steps=3, weight=2.0,
                                                                         lpips=_sync_distance,
                                                                         decode=_sync_decode), seed=21),
    "syncdiffusion-eta-every": lambda: _run(_gmm(), CHAIN, cofi.SyncDiffusion(steps=5, sync_steps=4, every=2,
                                                                               anchor=0, eta=1.0, grad_batch=2,
                                                                               lpips=_sync_distance,
                                                                               decode=_sync_decode), seed=22),
}


# ---- planning presets: a small closed-form bank (float64) and the shipped giant U-Net (float32)
def _planning(prior, method: str, seed: int, dtype=torch.float64):
    from cofi.planning.planner import planning_layout, planning_sampler

    stride = getattr(prior, "stride", 1)
    sampler = planning_sampler(method, prior=prior, steps=5)
    layout = planning_layout(3, stride)
    ends = prior.normalize(torch.tensor([[2.0, 3.0], [20.0, 9.0]], dtype=torch.float32))
    pins = cofi.Pins((0, -1), torch.as_tensor(ends, dtype=dtype), hard=True)
    comp = cofi.compose(prior, layout, sampler, batch=4 if method == "cdgs" else 2, generator=gen(seed),
                        pins=pins, progress=False, dtype=dtype)
    return _out(comp)


def _planning_bank():
    return _bank(shape=(20, 2), n=60, seed=4, stride=8, lo=(0.0, 0.0), hi=(24.0, 12.0), planning_consensus=5.0)


def _giant():
    from cofi.priors.trajectory import TrajectoryPrior

    return TrajectoryPrior.from_pretrained("pointmaze-giant-stitch")


for _m in ("cofi", "gsc", "cd", "cdgs"):
    CASES[f"planning-bank-{_m}"] = (lambda m: lambda: _planning(_planning_bank(), m, 30))(_m)
for _m in ("cofi", "gsc"):
    CASES[f"planning-unet-{_m}"] = (lambda m: lambda: _planning(_giant(), m, 31, torch.float32))(_m)


# ---- domain presets on the tiny random-weight pipelines (float32 networks)
def _panorama(method: str):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from _tiny_sd import tiny_pipe

    from cofi import panorama as pano

    kw = {"lpips": _sync_distance} if method == "syncdiffusion" else {}
    comp = pano.compose_panorama(tiny_pipe(seed=0), "a photo of the mountains", height=64, width=128,
                                 sampler=method, steps=4, stride=4, generator=gen(40), progress=False, batch=2,
                                 **kw)
    return _out(comp)


def _video(method: str):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from _tiny_cogvideox import tiny_pipe

    from cofi import video

    comp = video.compose_video(tiny_pipe(seed=0), "a red panda eats bamboo in the forest", chunks=3, overlap=1,
                               sampler=method, steps=4, height=32, width=32, generator=gen(41), progress=False,
                               batch=2)
    return _out(comp)


for _m in ("cofi", "multidiffusion", "cdgs", "syncdiffusion"):
    CASES[f"panorama-{_m}"] = (lambda m: lambda: _panorama(m))(_m)
for _m in ("cofi", "gen-l-video", "cdgs"):
    CASES[f"video-{_m}"] = (lambda m: lambda: _video(m))(_m)

# which cases run float32 networks (compared at a float32 tolerance, see tests/test_golden.py)
FLOAT32 = {n for n in CASES if n.startswith(("planning-unet", "panorama", "video"))}


# ---- one 2-rank distributed run (spawned; compared with the recorded one-process result too)
def distributed_case():
    import torch.distributed as dist

    comp = cofi.compose(_gmm(), CHAIN_UNI, cofi.CoFi(steps=6, guidance=0.5, weights=(1.0, 2.0, 1.0, 3.0)),
                        batch=B, generator=gen(50), progress=False, dtype=torch.float64, pins=_pins(),
                        group=dist.group.WORLD)
    return _out(comp)
