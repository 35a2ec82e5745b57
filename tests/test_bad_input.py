"""Bad input across the public API fails at the call that made it, with an error that names the
argument. One row per case: (id, call, exception type, a regex the message must match)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cofi
from cofi.planning.planner import plan, planning_layout

GMM = cofi.priors.GaussianMixturePrior.chain_benchmark(window=16, components=3, channels=2)
CHAIN = cofi.Chain(16, 4, 3)
G = cofi.GSC(steps=2)


class Prior:
    """GMM windows under a replaceable schedule / output."""

    supports_grad = False

    def __init__(self, alphas=GMM.alphas_cumprod, out=None, shape=(16, 2)):
        self.alphas_cumprod, self.sample_shape, self.out = alphas, shape, out

    def denoise(self, x_t, t, **cond):
        if self.out == "nan":
            return torch.full_like(x_t, float("nan"))
        if self.out == "shape":
            return x_t[:, :-1]
        return GMM.denoise(x_t, t)


class NoDenoise:
    alphas_cumprod, sample_shape = GMM.alphas_cumprod, (16, 2)


def compose(*, prior=GMM, layout=CHAIN, sampler=G, **kw):
    return cofi.compose(prior, layout, sampler, progress=False, **kw)


ac = GMM.alphas_cumprod
PINS = cofi.Pins([0, -1], torch.zeros(2, 2))
CASES = [
    # ---- compose
    ("batch=0", lambda: compose(batch=0), ValueError, "batch must be an int >= 1"),
    ("batch=True", lambda: compose(batch=True), ValueError, "batch must be an int"),
    ("batch=2.0", lambda: compose(batch=2.0), ValueError, "batch must be an int"),
    ("max_batch=0", lambda: compose(max_batch=0), ValueError, "max_batch must be None or an int"),
    ("generator str", lambda: compose(generator="seed"), TypeError, "generator must be a torch.Generator"),
    ("generator bool", lambda: compose(generator=True), TypeError, "generator must be"),
    ("generator list length", lambda: compose(batch=2, generator=[torch.Generator()]), ValueError,
     "one generator per candidate"),
    ("cond not a mapping", lambda: compose(cond=[("a", 1)]), TypeError, "cond must be a mapping"),
    ("misspelt keyword", lambda: compose(bacth=4), TypeError, "bacth"),
    ("callback not callable", lambda: compose(callback=3), TypeError, "callback must be callable"),
    ("dtype float16", lambda: compose(dtype=torch.float16), ValueError, "dtype .* must be torch.float32"),
    ("dtype bfloat16", lambda: compose(dtype=torch.bfloat16), ValueError, "dtype"),
    ("dtype 'int32'", lambda: compose(dtype="int32"), ValueError, "dtype"),
    ("sampler int", lambda: compose(sampler=3), TypeError, "sampler must be a sampler config"),
    ("sampler unknown name", lambda: compose(sampler="ddpm"), ValueError, "unknown sampler 'ddpm'"),
    ("layout str", lambda: compose(layout="chain"), TypeError, "layout must be a cofi.Chain"),
    ("layout window", lambda: compose(layout=cofi.Chain(12, 4, 3)), ValueError, "window is 12"),
    ("x_T shape", lambda: compose(x_T=torch.zeros(1, 5, 2)), ValueError, "x_T must be plans of shape"),
    ("x_T NaN", lambda: compose(x_T=torch.full((1, 40, 2), math.nan)), ValueError, "x_T contains NaN"),
    ("x_T not array", lambda: compose(x_T=object()), TypeError, "x_T must be a tensor"),
    ("prior without denoise", lambda: compose(prior=NoDenoise()), TypeError, "missing 'denoise'"),
    ("schedule increasing", lambda: compose(prior=Prior(ac.flip(0))), ValueError, "strictly decreasing"),
    ("schedule > 1", lambda: compose(prior=Prior(ac + 0.5)), ValueError, r"alphas_cumprod must lie in \(0, 1\]"),
    ("schedule integer", lambda: compose(prior=Prior(torch.ones(10, dtype=torch.long))), ValueError,
     "floating point"),
    ("schedule 2-D", lambda: compose(prior=Prior(ac[None])), ValueError, "must be 1-D"),
    ("schedule NaN", lambda: compose(prior=Prior(torch.where(torch.arange(1000) == 5, math.nan, ac))), ValueError,
     "NaN or inf"),
    ("schedule zero", lambda: compose(prior=Prior(torch.cat([ac[:-1], torch.zeros(1, dtype=ac.dtype)]))),
     ValueError, "tiny positive"),
    ("schedule str", lambda: compose(prior=Prior("cosine")), ValueError, "alphas_cumprod must be"),
    ("prior output shape", lambda: compose(prior=Prior(out="shape")), ValueError, "prior.denoise must return shape"),
    ("prior output NaN", lambda: compose(prior=Prior(out="nan")), FloatingPointError, "prior.denoise returned NaN"),
    ("guidance without autograd", lambda: compose(prior=Prior(), sampler=cofi.GSC(steps=2, guidance=1.0)), ValueError,
     "supports_grad"),
    ("consensus without evidence", lambda: compose(sampler=cofi.GSC(steps=2, consensus=1.0)), ValueError,
     "accepts_evidence"),
    ("CoFi weights length", lambda: compose(sampler=cofi.CoFi(steps=2, weights=(1.0, 2.0))), ValueError,
     r"weights must have one entry per window \(3\)"),
    # ---- pins
    ("pin outside canvas", lambda: compose(pins=cofi.Pins([99], torch.zeros(1, 2))), ValueError, "pin position 99"),
    ("pin position 3.7", lambda: cofi.Pins([3.7], torch.zeros(1, 2)), ValueError, "integer canvas indices"),
    ("pin positions str", lambda: cofi.Pins("01", torch.zeros(2, 2)), ValueError, "positions must be"),
    ("pin values NaN", lambda: cofi.Pins([0], torch.full((1, 2), math.nan)), ValueError, "values .* NaN"),
    ("pin values type", lambda: cofi.Pins([0], object()), TypeError, "values must be a tensor"),
    ("pin values shape", lambda: compose(pins=cofi.Pins([0, -1], torch.zeros(2, 3))), ValueError,
     r"pins.values must have shape \(2, 2\)"),
    ("pin tuple on a chain", lambda: compose(pins=cofi.Pins([(0, 1)], torch.zeros(1, 2))), ValueError,
     "one index per tiled axis"),
    # ---- sampler configs
    ("GSC eta NaN", lambda: cofi.GSC(eta=math.nan), ValueError, "eta must be a finite number"),
    ("GSC eta < 0", lambda: cofi.GSC(eta=-1.0), ValueError, "eta must be a finite number >= 0"),
    ("GSC steps 0", lambda: cofi.GSC(steps=0), ValueError, "steps must be an int >= 1"),
    ("GSC steps 2.5", lambda: cofi.GSC(steps=2.5), ValueError, "steps must be an int"),
    ("GSC guidance inf", lambda: cofi.GSC(guidance=math.inf), ValueError, "guidance must be a finite number"),
    ("CoFi guidance NaN", lambda: cofi.CoFi(guidance=math.nan), ValueError, "guidance must be a finite number"),
    ("GSC noise", lambda: cofi.GSC(noise="gaussian"), ValueError, "noise must be one of"),
    ("GSC init_noise", lambda: cofi.GSC(init_noise="zeros"), ValueError, "init_noise must be one of"),
    ("GSC guidance_schedule", lambda: cofi.GSC(guidance_schedule="cosine"), ValueError, "guidance_schedule must be"),
    ("GSC consensus < 0", lambda: cofi.GSC(consensus=-1.0), ValueError, "consensus must be a finite number >= 0"),
    ("GSC consensus_snr_max 0", lambda: cofi.GSC(consensus_snr_max=0.0), ValueError, "consensus_snr_max must be"),
    ("CoFi lam0 1.5", lambda: cofi.CoFi(lam0=1.5), ValueError, r"lam0 must be a finite number in \[0, 1\]"),
    ("CoFi lam0 NaN", lambda: cofi.CoFi(lam0=math.nan), ValueError, "lam0 must be"),
    ("CoFi schedule", lambda: cofi.CoFi(schedule="exp"), ValueError, "schedule must be one of"),
    ("CoFi refine_at 1", lambda: cofi.CoFi(refine_at=1.0), ValueError, r"refine_at must be None or a fraction"),
    ("CoFi refine_at bool", lambda: cofi.CoFi(refine_at=True), ValueError, "refine_at must be"),
    ("CoFi refine_eta NaN", lambda: cofi.CoFi(refine_eta=math.nan), ValueError, "refine_eta must be"),
    ("CoFi refine_noise", lambda: cofi.CoFi(refine_noise="x"), ValueError, "refine_noise must be one of"),
    ("CoFi coarse_update", lambda: cofi.CoFi(coarse_update="euler"), ValueError, "coarse_update must be one of"),
    ("CoFi direction", lambda: cofi.CoFi(direction="x0"), ValueError, "direction must be one of"),
    ("CoFi fused renoise", lambda: cofi.CoFi(direction="fused", coarse_update="renoise"), ValueError,
     "direction='fused' needs coarse_update='ddim'"),
    ("CoFi weights < 0", lambda: cofi.CoFi(weights=(1.0, -1.0)), ValueError, "weights must be finite, >= 0"),
    ("CDGS inner 0", lambda: cofi.CDGS(inner=0), ValueError, "inner must be an int >= 1"),
    ("Pruned of a name", lambda: cofi.Pruned("cofi"), TypeError, "Pruned needs a sampler config"),
    ("Pruned keep 2", lambda: cofi.Pruned(cofi.CoFi(), keep=2.0), ValueError, r"keep must be a finite number in \[0, 1\]"),
    ("CoFi refine_inner 0", lambda: cofi.CoFi(refine_inner=0), ValueError, "refine_inner must be an int >= 1"),
    ("CDGS keep 2", lambda: cofi.CDGS(keep=2.0), ValueError, r"keep must be a finite number in \[0, 1\]"),
    ("CDGS prune_at NaN", lambda: cofi.CDGS(prune_at=math.nan), ValueError, "prune_at must be"),
    ("Sync decay 0", lambda: cofi.SyncDiffusion(decay=0.0), ValueError, r"decay must be a finite number in \(0, 1\]"),
    ("Sync every 0", lambda: cofi.SyncDiffusion(every=0), ValueError, "every must be an int >= 1"),
    ("Sync weight NaN", lambda: cofi.SyncDiffusion(weight=math.nan), ValueError, "weight must be"),
    ("Sync anchor", lambda: compose(sampler=cofi.SyncDiffusion(steps=2, anchor=7, lpips=lambda a, b: a.sum())),
     ValueError, r"anchor must be a window index in \[0, 2\]"),
    ("Sync without lpips", lambda: compose(sampler=cofi.SyncDiffusion(steps=2)), ValueError, "lpips="),
    # ---- layouts
    ("Chain window 0", lambda: cofi.Chain(0, 0, 2), ValueError, "window must be an int >= 1"),
    ("Chain overlap = window", lambda: cofi.Chain(16, 16, 2), ValueError, "overlap must be an int in"),
    ("Chain count 0", lambda: cofi.Chain(16, 4, 0), ValueError, "count must be an int >= 1"),
    ("Chain blend", lambda: cofi.Chain(16, 4, 2, blend="linear"), ValueError, "blend must be"),
    ("Chain beta 0", lambda: cofi.Chain(16, 4, 2, beta=0), ValueError, "beta must be > 0"),
    ("Chain axis -1", lambda: cofi.Chain(16, 4, 2, axis=-1), ValueError, "axis must be an int >= 0"),
    ("Grid empty", lambda: cofi.Grid(()), ValueError, "chains must be a non-empty sequence"),
    ("Grid same axis", lambda: cofi.Grid((cofi.Chain(4, 1, 2), cofi.Chain(4, 1, 2))), ValueError, "distinct axes"),
    ("split canvas", lambda: CHAIN.split(torch.zeros(1, 39, 2)), ValueError, "canvas must have 40 positions"),
    ("merge count", lambda: CHAIN.merge(torch.zeros(1, 2, 16, 2)), ValueError, "count=3 windows"),
    # ---- shrink and schedules
    ("shrink lam 1.5", lambda: cofi.shrink(torch.zeros(1, 3, 2), 1.5), ValueError, r"lam must be a number in \[0, 1\]"),
    ("shrink lam NaN", lambda: cofi.shrink(torch.zeros(1, 3, 2), torch.tensor(math.nan)), ValueError,
     r"lam must lie in \[0, 1\]"),
    ("shrink weights", lambda: cofi.shrink(torch.zeros(1, 3, 2), 0.5, weights=torch.ones(2)), ValueError,
     r"weights must have shape \(3,\)"),
    ("lam_schedule lam0", lambda: cofi.lam_schedule(2.0, 5), ValueError, r"lam0 must be in \[0, 1\]"),
    ("timestep_grid steps", lambda: cofi.timestep_grid(1000, 0), ValueError, r"steps must be in \[1, 1000\]"),
    ("to_x0 epsilon at zero SNR", lambda: cofi.to_x0(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1e-38]),
                                                     "epsilon"), ValueError, "epsilon-prediction .* ᾱ_t = 0"),
    ("to_x0 prediction_type", lambda: cofi.to_x0(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0.5]), "score"),
     ValueError, "prediction_type must be"),
    # ---- planning
    ("planning_layout stride", lambda: planning_layout(3, stride=3), ValueError, "stride must be an int >= 1 dividing"),
    ("planning method", lambda: cofi.planning.planning_sampler("beam"), ValueError, "unknown method 'beam'"),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_early_and_names_it(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_there_are_at_least_sixty_cases():
    assert len(CASES) + len(PIPELINE_CASES) >= 60


# ---- the domain front-ends on a tiny SD pipeline and a trajectory prior
PIPELINE_CASES = [
    ("guidance_scale NaN", dict(guidance_scale=math.nan), ValueError, "guidance_scale must be a finite number"),
    ("guidance_scale < 0", dict(guidance_scale=-1.0), ValueError, "guidance_scale must be"),
    ("width not on the stride", dict(width=100), ValueError, "width"),
    ("output_type", dict(output_type="jpg"), ValueError, "output_type must be"),
    ("prompts per window", dict(prompt=["a", "b", "c"]), ValueError, "got 3 prompts"),
]


@pytest.mark.parametrize("kw,exc,match", [c[1:] for c in PIPELINE_CASES], ids=[c[0] for c in PIPELINE_CASES])
def test_panorama_bad_input(kw, exc, match):
    from _tiny_sd import tiny_pipe

    kw = {"prompt": "a photo of the mountains", "height": 64, "width": 96, "sampler": cofi.GSC(steps=1),
          "stride": 4, "progress": False, **kw}
    with pytest.raises(exc, match=match):
        cofi.panorama(tiny_pipe(), **kw)


def test_plan_bad_input():
    from cofi.priors import EmpiricalPrior
    from cofi.priors.trajectory import cosine_alphas_cumprod

    bank = torch.randn(8, 40, 2, generator=torch.Generator().manual_seed(0))
    prior = EmpiricalPrior(bank, cosine_alphas_cumprod(50), stride=4, lo=(0.0, 0.0), hi=(24.0, 24.0),
                           env_name="pointmaze-medium-stitch-v0")
    with pytest.raises(ValueError, match="start_xy=.* inside a wall"):
        plan(prior, (-4.0, -4.0), (20.0, 20.0), "gsc")
    with pytest.raises(ValueError, match="goal_xy"):
        plan(prior, (0.0, 0.0), (np.nan, 1.0), "gsc")
    with pytest.raises(ValueError, match="count must be an int >= 1"):
        plan(prior, (0.0, 0.0), (20.0, 20.0), "gsc", count=0)


@pytest.mark.parametrize("sampler", [cofi.GSC(steps=10, eta=1.0), cofi.CoFi(steps=10, direction="fused", eta=0.0)])
def test_a_clean_first_level_gives_a_finite_correct_result(sampler):
    """ᾱ_0 = 1 is a valid schedule (the grid's last step starts from clean data): the result is
    finite and what a schedule with ᾱ_0 just below 1 gives."""
    kw = dict(batch=2, progress=False, dtype=torch.float64)
    one = Prior(torch.cat([torch.ones(1, dtype=ac.dtype), ac[1:]]))
    near = Prior(torch.cat([torch.full((1,), 1 - 1e-12, dtype=ac.dtype), ac[1:]]))
    assert int(cofi.timestep_grid(1000, 10)[-1]) == 0  # the grid visits t = 0
    a = cofi.compose(one, CHAIN, sampler, generator=torch.Generator().manual_seed(0), **kw)
    b = cofi.compose(near, CHAIN, sampler, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.isfinite(a.canvas).all()
    torch.testing.assert_close(a.canvas, b.canvas, atol=1e-5, rtol=1e-5)


def test_schedule_as_a_list_or_array_converts():
    kw = dict(batch=1, generator=torch.Generator().manual_seed(0), progress=False, dtype=torch.float64)
    want = cofi.compose(GMM, CHAIN, G, **kw).canvas
    for alphas in (ac.tolist(), ac.numpy()):
        kw["generator"] = torch.Generator().manual_seed(0)
        torch.testing.assert_close(cofi.compose(Prior(alphas), CHAIN, G, **kw).canvas, want)
    kw.pop("generator")
    torch.testing.assert_close(cofi.compose(GMM, CHAIN, G, generator=0, **kw).canvas, want)  # an int seed
    torch.testing.assert_close(cofi.compose(GMM, CHAIN, G, generator=0, **{**kw, "dtype": "float64"}).canvas, want)


@pytest.mark.parametrize("sample_size", [64, 96])
def test_panorama_defaults_to_the_model_native_size(sample_size):
    """SD 2-base (64-latent windows, 512 px) and SD 2 (96, 768 px): the default panorama is the
    model's native height and 4× as wide, windows at the preset's fraction of the window."""
    from _tiny_sd import tiny_pipe

    out = cofi.panorama(tiny_pipe(sample_size=sample_size), "a photo of the mountains", sampler="cofi", steps=1,
                        output_type="latent", progress=False, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 4, sample_size, 4 * sample_size)
    assert out.plans.shape[1:] == (7, 4, sample_size, sample_size)  # stride window/2: 7 windows
    assert cofi.panorama.reference_stride("multidiffusion", sample_size) == sample_size // 8
