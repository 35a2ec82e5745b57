import dataclasses

import pytest
import torch

import cofi
from cofi.metrics import coherence as C
from conftest import gen


class EpsWrapper:
    """Expose a LocalPrior as an ε-model for diffusers' scheduler."""

    def __init__(self, prior):
        self.prior = prior

    def __call__(self, x_t, t):
        a = self.prior.alphas_cumprod[t]
        x0 = self.prior.denoise(x_t, torch.full((x_t.shape[0],), int(t)))
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_single_window_reproduces_diffusers_ddim(gmm, eta):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")
    gmm.alphas_cumprod = sched.alphas_cumprod.double()
    K, B = 20, 3
    layout = cofi.Chain(window=16, overlap=0, count=1)
    out = cofi.compose(gmm, layout, cofi.CoFi(steps=K, eta=eta, lam0=1.0, refine_at=None), batch=B,
                       generator=gen(5), progress=False, dtype=torch.float64)
    # reference loop: the same draws in the same order (x_T, then one z per step)
    g = gen(5)
    x = torch.randn(B, 16, 2, generator=g, dtype=torch.float64)
    sched.set_timesteps(K)
    model = EpsWrapper(gmm)
    for t in sched.timesteps:
        z = torch.randn(B, 1, 16, 2, generator=g, dtype=torch.float64)[:, 0] if eta > 0 else None
        x = sched.step(model(x, t), t, x, eta=eta, variance_noise=z).prev_sample
    torch.testing.assert_close(out.canvas, x, atol=1e-6, rtol=1e-6)  # diffusers keeps ᾱ in float32
    assert out.nfe == K * B


def test_final_alpha_cumprod_reproduces_set_alpha_to_one_false(gmm):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    gmm.alphas_cumprod = sched.alphas_cumprod.double()
    gmm.steps_offset = 1
    gmm.final_alpha_cumprod = float(sched.alphas_cumprod[0])
    out = cofi.compose(gmm, cofi.Chain(16, 0, 1), cofi.GSC(steps=10), batch=2, generator=gen(2),
                       progress=False, dtype=torch.float64)
    x = torch.randn(2, 16, 2, generator=gen(2), dtype=torch.float64)
    sched.set_timesteps(10)
    for t in sched.timesteps:
        x = sched.step(EpsWrapper(gmm)(x, t), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(out.canvas, x, atol=1e-6, rtol=1e-6)


def test_cofi_without_shrink_or_refinement_equals_gsc(gmm):
    layout = cofi.Chain(16, 4, 4, blend="ramp")
    for kw in (dict(eta=0.0), dict(eta=1.0, noise="shared")):
        a = cofi.compose(gmm, layout, cofi.GSC(steps=15, **kw), batch=2, generator=gen(1), progress=False)
        b = cofi.compose(gmm, layout, cofi.CoFi(steps=15, lam0=1.0, refine_at=None, **kw), batch=2,
                         generator=gen(1), progress=False)
        assert torch.equal(a.canvas, b.canvas)


def test_refine_at_is_a_fraction_of_any_grid(gmm):
    """r = ⌊refine_at·K⌋: 0.3 is step 15 of 50 and 3 of 10 (the image preset), 0.2 is 10 of 50
    (video); valid for every K, unlike a fixed grid index."""
    assert [cofi.CoFi(steps=k).refine_step for k in (1, 2, 10, 20, 50)] == [0, 0, 3, 6, 15]
    assert [cofi.CoFi(steps=k, refine_at=0.2).refine_step for k in (5, 10, 50)] == [1, 2, 10]
    assert cofi.CoFi(steps=7, refine_at=0.99).refine_step == 6 and cofi.CoFi(refine_at=None).refine_step is None
    seen = []
    out = cofi.compose(gmm, cofi.Chain(16, 4, 2), cofi.CoFi(steps=10), generator=gen(0), progress=False,
                       callback=lambda d: seen.append((d["stage"], d["step"])))
    assert out.nfe == (10 + 7) * 2
    assert [s for st, s in seen if st == "refine"] == list(range(3, 10))  # steps numbered on the shared grid


def test_refine_fusion_fuses_the_refinement_stage_only(gmm):
    """``refine_fusion`` switches Bethe averaging in the refinement stage alone: None follows
    ``fusion``; fused refinement ends with plans that agree exactly on their overlaps (the last
    step returns the fused x̂), and the coarse stage is untouched (same scaffold)."""
    layout = cofi.Chain(16, 4, 4, blend="ramp")

    def run(**kw):
        return cofi.compose(gmm, layout, cofi.CoFi(steps=10, **kw), batch=2, generator=gen(3), progress=False,
                            dtype=torch.float64)

    both, same = run(fusion=True), run(fusion=True, refine_fusion=True)
    assert torch.equal(both.canvas, same.canvas)
    coarse_only = run(fusion=True, refine_fusion=False)
    assert not torch.equal(both.canvas, coarse_only.canvas)
    plain, fine = run(fusion=False), run(fusion=False, refine_fusion=True)
    assert torch.equal(plain.scaffold, fine.scaffold) and not torch.equal(plain.canvas, fine.canvas)
    assert float(fine.overlap_error.max()) < 1e-20 < float(plain.overlap_error.min())


def test_nfe_matches_design_formulas(gmm):
    layout = cofi.Chain(16, 4, 3)
    K, B, N = 10, 4, 3
    cases = [
        (cofi.GSC(steps=K), K * N * B),
        (cofi.CoFi(steps=K, refine_at=0.4), (K + K - 4) * N * B),
        (cofi.CoFi(steps=K, refine_at=None), K * N * B),
        (cofi.CoFi(steps=K, refine_at=0.4, refine_inner=3), (K + 3 * (K - 4)) * N * B),
        (cofi.CDGS(steps=K, inner=3, prune_at=0.2, keep=0.5, inversion=0.2), K * 3 * N * B + 2 * N * B),
        (cofi.CDGS(steps=K, inner=2, prune_at=0.0), K * 2 * N * B),
    ]
    for sampler, expected in cases:
        out = cofi.compose(gmm, layout, sampler, batch=B, generator=gen(0), progress=False)
        assert out.nfe == expected == sampler.nfe(layout, B), type(sampler).__name__


def test_refine_inner_rounds_change_only_the_refinement(gmm):
    layout = cofi.Chain(16, 4, 3)
    one = cofi.compose(gmm, layout, cofi.CoFi(steps=8, refine_at=0.5), batch=2, generator=gen(3), progress=False)
    three = cofi.compose(gmm, layout, cofi.CoFi(steps=8, refine_at=0.5, refine_inner=3), batch=2, generator=gen(3),
                         progress=False)
    assert torch.equal(one.scaffold, three.scaffold)  # the coarse stage is the same draw
    assert not torch.equal(one.canvas, three.canvas)
    assert three.nfe == (8 + 3 * 4) * 3 * 2


def test_pruned_chooses_among_the_likeliest_candidates(gmm, monkeypatch):
    import cofi.samplers.pruned as P

    layout = cofi.Chain(16, 4, 3)
    base = cofi.CoFi(steps=6, refine_at=0.5)
    plain = cofi.compose(gmm, layout, base, batch=6, generator=gen(1), progress=False)
    full = cofi.compose(gmm, layout, cofi.Pruned(base, keep=1.0), batch=6, generator=gen(1), progress=False)
    assert torch.equal(plain.plans, full.plans) and full.best == plain.best  # nothing pruned, same draw
    assert full.nfe == plain.nfe + 1 * 3 * 6 == cofi.Pruned(base, keep=1.0).nfe(layout, 6)  # round(0.2·6) = 1 step
    # with a known score: keep 1 of 6 -> the likeliest; keep 1/2 -> the lowest disagreement of the best three
    score = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.7])
    monkeypatch.setattr(P, "inversion_score", lambda run, x0, ts: score.to(x0.dtype))
    one = cofi.compose(gmm, layout, cofi.Pruned(base, keep=0.1), batch=6, generator=gen(1), progress=False)
    assert one.best == 1
    half = cofi.compose(gmm, layout, cofi.Pruned(base, keep=0.5), batch=6, generator=gen(1), progress=False)
    top = [1, 3, 5]
    assert half.best == top[int(torch.argmin(plain.disagreement[top]))]
    assert torch.isinf(half.disagreement[[0, 2, 4]]).all()


def test_same_seed_bit_identical_and_max_batch_invariant(gmm):
    layout = cofi.Chain(16, 4, 4)
    s = cofi.CoFi(steps=12, eta=0.5, refine_at=5 / 12, guidance=0.05)
    a = cofi.compose(gmm, layout, s, batch=3, generator=gen(7), progress=False)
    b = cofi.compose(gmm, layout, s, batch=3, generator=gen(7), progress=False)
    assert torch.equal(a.canvas, b.canvas)
    for mb in (1, 5):
        c = cofi.compose(gmm, layout, s, batch=3, generator=gen(7), max_batch=mb, progress=False)
        torch.testing.assert_close(c.canvas, a.canvas, atol=1e-5, rtol=1e-5)


def test_per_candidate_generators_make_candidates_independent_of_batch(gmm):
    layout = cofi.Chain(16, 4, 3)
    s = cofi.GSC(steps=8, eta=1.0)
    two = cofi.compose(gmm, layout, s, batch=2, generator=[gen(10), gen(11)], progress=False)
    one = cofi.compose(gmm, layout, s, batch=1, generator=[gen(11)], progress=False)
    torch.testing.assert_close(two.canvas[1], one.canvas[0])


def test_pins_hold_exactly_with_guidance(gmm):
    layout = cofi.Chain(16, 4, 3)
    vals = torch.tensor([[1.0, -2.0], [0.5, 0.25]], dtype=torch.float64)
    pins = cofi.Pins([0, -1], vals)
    for s in (cofi.GSC(steps=10, fusion=False, guidance=0.1), cofi.CoFi(steps=10, refine_at=0.4, guidance=0.1)):
        out = cofi.compose(gmm, layout, s, batch=2, generator=gen(3), pins=pins, progress=False)
        torch.testing.assert_close(out.canvas[:, 0], vals[0].float().expand(2, 2), atol=0, rtol=0)
        torch.testing.assert_close(out.canvas[:, -1], vals[1].float().expand(2, 2), atol=0, rtol=0)
        assert out.grad_evals > 0


def test_guidance_reduces_overlap_error(gmm):
    layout = cofi.Chain(16, 4, 4)
    plain = cofi.compose(gmm, layout, cofi.GSC(steps=20, fusion=False), batch=16, generator=gen(4), progress=False)
    guided = cofi.compose(gmm, layout, cofi.GSC(steps=20, fusion=False, guidance=0.5), batch=16,
                          generator=gen(4), progress=False)
    assert guided.overlap_error.mean() < 0.5 * plain.overlap_error.mean()
    assert plain.best == int(plain.disagreement.argmin())


def test_cofi_is_more_coherent_than_gsc():
    prior = cofi.priors.GaussianMixturePrior.chain_benchmark()
    layout = cofi.Chain(32, 8, 6)
    kw = dict(batch=64, generator=gen(0), progress=False)
    gsc = cofi.compose(prior, layout, cofi.GSC(steps=25), **kw)
    cf = cofi.compose(prior, layout, cofi.CoFi(steps=25, lam0=0.2, schedule="constant", refine_at=0.6), **kw)
    coh_gsc = C.coherence(prior, layout, gsc.canvas).float().mean()
    coh_cofi = C.coherence(prior, layout, cf.canvas).float().mean()
    assert coh_cofi > coh_gsc + 0.4, (coh_gsc, coh_cofi)


def test_callback_sees_every_step_read_only(gmm):
    seen = []
    cofi.compose(gmm, cofi.Chain(16, 4, 2), cofi.CoFi(steps=6, refine_at=1 / 3), generator=gen(0),
                 progress=False, callback=lambda d: seen.append((d["stage"], d["step"], d["t"], d["x"].shape, d["x0"].shape)))
    assert [s[0] for s in seen] == ["coarse"] * 6 + ["refine"] * 4
    assert all(set(map(type, s[3:])) == {torch.Size} for s in seen)


def test_x_T_as_plans_or_canvas(gmm):
    layout = cofi.Chain(16, 4, 3)
    canvas = torch.randn(2, layout.length, 2, generator=gen(0))
    a = cofi.compose(gmm, layout, cofi.GSC(steps=5), batch=2, x_T=canvas, progress=False)
    b = cofi.compose(gmm, layout, cofi.GSC(steps=5), batch=2, x_T=layout.split(canvas), progress=False)
    assert torch.equal(a.canvas, b.canvas)
    with pytest.raises(ValueError, match="x_T must be plans of shape"):
        cofi.compose(gmm, layout, cofi.GSC(steps=5), batch=2, x_T=canvas[:, :-1], progress=False)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda: cofi.CoFi(lam0=1.5), r"lam0 must be a finite number in \[0, 1\]"),
        (lambda: cofi.CoFi(lam0=-0.1), r"lam0 must be a finite number in \[0, 1\]"),
        (lambda: cofi.CoFi(refine_at=1.0), r"refine_at must be None or a fraction of the schedule in \[0, 1\), got 1.0"),
        (lambda: cofi.CoFi(refine_at=-0.1), r"refine_at must be None or a fraction"),
        (lambda: cofi.CoFi(refine_at=True), r"refine_at must be None or a fraction"),
        (lambda: cofi.CoFi(coarse_update="euler"), r"coarse_update must be one of 'ddim', 'renoise'"),
        (lambda: cofi.CoFi(direction="x0"), r"direction must be one of 'recompute', 'fused'"),
        (lambda: cofi.CoFi(coarse_update="renoise", direction="fused"), r"direction='fused' needs coarse_update='ddim'"),
        (lambda: cofi.CoFi(refine_noise="canvas"), r"noise must be one of 'independent', 'shared', 'blend'"),
        (lambda: cofi.GSC(eta=-1.0), r"eta must be a finite number >= 0"),
        (lambda: cofi.GSC(noise="global"), r"noise must be one of 'independent', 'shared', 'blend', got 'global'"),
        (lambda: cofi.CDGS(keep=2.0), r"keep must be a finite number in \[0, 1\]"),
        (lambda: cofi.CDGS(inner=0), r"inner must be an int >= 1"),
    ],
)
def test_sampler_configs_reject_bad_values(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


class BadShape:
    alphas_cumprod = torch.linspace(0.99, 0.01, 100)
    sample_shape = (8, 2)

    def denoise(self, x_t, t, **cond):
        return x_t[:, :-1]


class NaNAt:
    alphas_cumprod = torch.linspace(0.99, 0.01, 100)
    sample_shape = (8, 2)

    def __init__(self, bad_t):
        self.bad_t = bad_t

    def denoise(self, x_t, t, **cond):
        return torch.full_like(x_t, float("nan")) if int(t[0]) == self.bad_t else x_t * 0


def test_prior_returning_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"prior.denoise must return shape \(2, 8, 2\)"):
        cofi.compose(BadShape(), cofi.Chain(8, 2, 1), cofi.GSC(steps=3), batch=2, progress=False)


def test_nan_names_the_step():
    ts = cofi.timestep_grid(100, 5)
    with pytest.raises(FloatingPointError, match=rf"returned NaN or inf at t={int(ts[2])}$"):
        cofi.compose(NaNAt(int(ts[2])), cofi.Chain(8, 2, 2), cofi.GSC(steps=5), progress=False)


def test_compose_rejects_bad_arguments(gmm):
    layout = cofi.Chain(16, 4, 2)
    with pytest.raises(ValueError, match="batch must be an int >= 1"):
        cofi.compose(gmm, layout, cofi.GSC(steps=2), batch=0)
    with pytest.raises(ValueError, match="max_batch must be None or an int >= 1"):
        cofi.compose(gmm, layout, cofi.GSC(steps=2), max_batch=0)
    with pytest.raises(ValueError, match="window is 12"):
        cofi.compose(gmm, cofi.Chain(12, 4, 2), cofi.GSC(steps=2))
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\]"):
        cofi.compose(gmm, layout, cofi.GSC(steps=2000), progress=False)
    with pytest.raises(ValueError, match="supports_grad"):
        cofi.compose(BadShape(), cofi.Chain(8, 2, 2), cofi.GSC(steps=2, guidance=1.0), progress=False)
    with pytest.raises(ValueError, match="pin position 99"):
        cofi.compose(gmm, layout, cofi.GSC(steps=2), pins=cofi.Pins([99], torch.zeros(1, 2)), progress=False)


def test_timestep_grids_match_diffusers():
    from diffusers import DDIMScheduler

    for spacing, offset in (("leading", 1), ("trailing", 0), ("leading", 0), ("linspace", 0)):
        s = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset)
        s.set_timesteps(50)
        assert torch.equal(cofi.timestep_grid(1000, 50, spacing, offset), s.timesteps.long()), spacing


def test_pins_enter_the_guidance_reward(gmm):
    """Reconstruction guidance: with pins, guidance pulls the pinned window's neighbours toward the pin."""
    layout = cofi.Chain(16, 4, 2)
    pins = cofi.Pins([0], torch.tensor([[4.0, 4.0]], dtype=torch.float64))
    jump = {}
    for w in (0.0, 2.0):
        out = cofi.compose(gmm, layout, cofi.GSC(steps=20, fusion=False, guidance=w), batch=16, pins=pins,
                           generator=gen(0), progress=False)
        assert torch.equal(out.canvas[:, 0], torch.full((16, 2), 4.0))
        jump[w] = (out.canvas[:, 1] - out.canvas[:, 0]).norm(dim=-1).mean()
    assert jump[2.0] < 0.5 * jump[0.0], jump


class Recorder:
    """Wrap a prior and keep every state x_t it is called with."""

    def __init__(self, prior):
        self.prior, self.seen = prior, []
        self.alphas_cumprod, self.sample_shape = prior.alphas_cumprod, prior.sample_shape

    def denoise(self, x_t, t, **cond):
        self.seen.append(x_t.detach().clone())
        return self.prior.denoise(x_t, t, **cond)


@pytest.mark.parametrize("hard", [False, True])
def test_hard_pins_overwrite_the_state_every_step(gmm, hard):
    layout = cofi.Chain(16, 4, 2)
    vals = torch.tensor([[1.5, -2.0], [0.5, 0.25]], dtype=torch.float64)
    rec = Recorder(gmm)
    cofi.compose(rec, layout, cofi.GSC(steps=6, fusion=False), batch=2, generator=gen(1),
                 pins=cofi.Pins([0, -1], vals, hard=hard), progress=False)
    assert len(rec.seen) == 6
    for x in rec.seen[1:]:  # after the first step the network sees the clean pinned values iff hard
        x = x.reshape(2, 2, 16, 2)  # (B, N, M, 2)
        held = torch.equal(x[:, 0, 0].double(), vals[0].expand(2, 2)) and torch.equal(x[:, 1, -1].double(), vals[1].expand(2, 2))
        assert held == hard


def test_public_surface_is_lazy_and_complete():
    import subprocess
    import sys

    code = ("import sys, cofi; heavy = [m for m in ('ogbench', 'diffusers', 'transformers', 'matplotlib') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "[getattr(cofi, n) for n in ('planning', 'metrics', 'testing', 'viz', 'video', 'panorama')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compose_accepts_sampler_names_and_rejects_others():
    prior = cofi.priors.GaussianMixturePrior.chain_benchmark()
    layout = cofi.Chain(32, 8, 3)
    a = cofi.compose(prior, layout, "gsc", generator=torch.Generator().manual_seed(0), progress=False)
    b = cofi.compose(prior, layout, cofi.GSC(), generator=torch.Generator().manual_seed(0), progress=False)
    torch.testing.assert_close(a.canvas, b.canvas)
    with pytest.raises(ValueError, match="unknown sampler 'ddpm'; by name compose takes gsc, cofi, cdgs, syncdiffusion"):
        cofi.compose(prior, layout, "ddpm")
    with pytest.raises(TypeError, match="sampler must be a sampler config"):
        cofi.compose(prior, layout, 3)
    with pytest.raises(ValueError, match="x_T contains NaN"):
        x_T = torch.full((1, *layout.global_shape(prior.sample_shape)), float("nan"))
        cofi.compose(prior, layout, "gsc", x_T=x_T, progress=False)
    with pytest.raises(ValueError, match="weights must be finite, >= 0"):
        cofi.CoFi(weights=(1.0, -1.0, 1.0, 1.0))


def test_no_guidance_step_onto_clean_data():
    """The last step lands on ᾱ = 1: the result is the last x̂ itself, not x̂ + w∇R (a sharp
    prior's gradient at t = 0 is orders of magnitude larger than at any noise level)."""
    prior = cofi.priors.GaussianMixturePrior.chain_benchmark()
    layout = cofi.Chain(32, 8, 3)
    last = {}
    out = cofi.compose(prior, layout, cofi.GSC(steps=5, guidance=50.0, fusion=False), batch=2, progress=False,
                       generator=torch.Generator().manual_seed(0), callback=lambda d: last.update(d))
    assert out.grad_evals == 4 * 2 * 3  # 4 of the 5 steps were guided
    torch.testing.assert_close(out.plans, last["x0"])


def test_variance_guidance_schedule_matches_a_hand_written_loop():
    """``guidance_schedule="variance"``: each DDIM step (η = 0) adds w·(1 − ᾱ_s)·∇_{x_t} R, R the
    overlap reward of x̂; checked against a loop written here from the formula, in float64."""
    from cofi.coupling import overlap_reward

    prior = cofi.priors.GaussianMixturePrior.chain_benchmark()
    layout = cofi.Chain(32, 8, 3)
    x_T = torch.randn(2, layout.length, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ts = []
    sampler = cofi.GSC(steps=6, guidance=0.3, guidance_schedule="variance", fusion=False)
    out = cofi.compose(prior, layout, sampler, x_T=x_T, batch=2, progress=False, dtype=torch.float64,
                       callback=lambda d: ts.append(d["t"]))
    ac = prior.alphas_cumprod.double()
    x = layout.split(x_T)
    for k, t in enumerate(ts):
        a_t = ac[t]
        a_s = ac[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        xg = x.detach().requires_grad_(True)
        x0 = prior.denoise(xg.flatten(0, 1), torch.full((6,), t)).view_as(x)
        (g,) = torch.autograd.grad(overlap_reward(x0, layout).sum(), xg)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        x = (a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps + 0.3 * (1 - a_s) * g).detach()
    torch.testing.assert_close(out.plans, x, atol=1e-10, rtol=1e-10)
    constant = cofi.compose(prior, layout, dataclasses.replace(sampler, guidance_schedule="constant"), x_T=x_T, batch=2,
                            progress=False, dtype=torch.float64)
    assert not torch.allclose(constant.plans, out.plans)
    with pytest.raises(ValueError, match="guidance_schedule must be one of 'constant', 'variance'"):
        cofi.CoFi(guidance_schedule="cosine")


class Recording:
    """Wraps a prior and keeps the x̂ of its last call (the estimates before any coupling)."""

    def __init__(self, prior):
        self.prior, self.last = prior, None
        self.alphas_cumprod, self.sample_shape = prior.alphas_cumprod, prior.sample_shape

    def denoise(self, x_t, t, **cond):
        self.last = self.prior.denoise(x_t, t, **cond)
        return self.last


@pytest.mark.parametrize("sampler", [cofi.CoFi(steps=10), cofi.GSC(steps=10), cofi.CDGS(steps=6, inner=2, prune_at=0.0)])
def test_best_is_the_candidate_whose_estimates_disagreed_least_before_fusion(gmm, sampler):
    """Fused plans agree on their overlaps, so their own overlap error ranks nothing; the
    candidates are ranked by the disagreement of the last step's local x̂ before fusion (eq. 22)."""
    B, layout = 8, cofi.Chain(16, 6, 4, blend="ramp")
    rec = Recording(gmm)
    out = cofi.compose(rec, layout, sampler, batch=B, generator=gen(3), progress=False, dtype=torch.float64)
    assert out.overlap_error.abs().max() < 1e-20  # fused: every candidate scores 0 on its final plans
    x0 = rec.last.reshape(B, 4, 16, 2)  # the last call: B·N plans, candidate-major
    by_hand = (x0[:, :-1, 10:] - x0[:, 1:, :6]).pow(2).mean((1, 2, 3))
    torch.testing.assert_close(out.disagreement, by_hand, atol=1e-12, rtol=1e-9)
    assert out.best == int(by_hand.argmin())
    bests = {cofi.compose(gmm, layout, sampler, batch=B, generator=gen(s), progress=False).best for s in range(6)}
    assert len(bests) > 1  # different seeds, different winners (the old rule always said 0)


def test_compose_rejects_unknown_keywords_and_takes_cond_explicitly(gmm):
    layout = cofi.Chain(16, 4, 2)
    with pytest.raises(TypeError, match="bacth"):
        cofi.compose(gmm, layout, cofi.GSC(steps=2), bacth=4)
    seen = []

    class Conditioned:
        alphas_cumprod, sample_shape = gmm.alphas_cumprod, gmm.sample_shape

        def denoise(self, x_t, t, *, window, scale):
            seen.append(scale)
            return gmm.denoise(x_t, t) * scale

    cofi.compose(Conditioned(), layout, cofi.GSC(steps=2), cond={"scale": 1.0}, progress=False)
    assert seen == [1.0, 1.0]
    with pytest.raises(TypeError, match="cond must be a mapping"):
        cofi.compose(gmm, layout, cofi.GSC(steps=2), cond=[("scale", 1.0)])


@pytest.mark.parametrize("sampler", [cofi.CoFi(steps=6), cofi.CDGS(steps=4, inner=2, prune_at=0.25, keep=0.5)])
def test_a_mutating_callback_cannot_change_the_result(gmm, sampler):
    layout = cofi.Chain(16, 6, 3, blend="ramp")
    kw = dict(batch=2, progress=False, dtype=torch.float64)
    plain = cofi.compose(gmm, layout, sampler, generator=gen(5), **kw)

    def vandal(d):
        d["x"].mul_(0)
        d["x0"].add_(1e3)

    mutated = cofi.compose(gmm, layout, sampler, generator=gen(5), callback=vandal, **kw)
    assert torch.equal(plain.canvas, mutated.canvas)


def test_pins_with_a_mask_fix_only_the_known_entries(gmm):
    """A goal that fixes some channels (a manipulation goal's objects, not the arm): the masked
    entries are written, the others stay the prior's; with hard pins and guidance too."""
    layout = cofi.Chain(16, 4, 3)
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    pins = cofi.Pins([0, -1], values, hard=True, mask=torch.tensor([[True, True], [False, True]]))
    free = cofi.compose(gmm, layout, cofi.GSC(steps=6, fusion=False), batch=3, generator=gen(1), progress=False,
                        dtype=torch.float64)
    out = cofi.compose(gmm, layout, cofi.GSC(steps=6, fusion=False), batch=3, generator=gen(1), progress=False,
                       dtype=torch.float64, pins=pins)
    assert torch.equal(out.canvas[:, 0], values[0].expand(3, 2)) and torch.equal(out.canvas[:, -1, 1], values[1, 1].expand(3))
    assert not torch.allclose(out.canvas[:, -1, 0], torch.full((3,), 3.0, dtype=torch.float64))
    assert not torch.equal(out.canvas, free.canvas)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, \*rest\)"):
        cofi.Pins([0, -1], values, mask=torch.tensor([True, False, True]))
    with pytest.raises(TypeError, match="mask must hold booleans"):
        cofi.Pins([0, -1], values, mask=torch.ones(2, 2))


@pytest.mark.parametrize("sampler", ["gsc", "cofi", "cdgs"])
def test_constraint_projects_every_estimate_before_the_pins(gmm, sampler):
    """``constraint`` is applied to x̂ wherever a sampler pins: a projection that zeroes channel 1
    leaves it zero in the result except at the pins, which are written after it."""
    layout = cofi.Chain(16, 4, 3)
    seen = []

    def zero_channel_1(plans, lay):
        seen.append((tuple(plans.shape), lay))
        return torch.stack([plans[..., 0], torch.zeros_like(plans[..., 1])], dim=-1)

    pins = cofi.Pins([0], torch.tensor([[0.5, 2.0]]))
    out = cofi.compose(gmm, layout, sampler, batch=2, generator=gen(4), pins=pins, constraint=zero_channel_1,
                       progress=False)
    assert seen and all(s == (2, 3, 16, 2) and lay is layout for s, lay in seen)
    assert torch.equal(out.canvas[:, 1:, 1], torch.zeros(2, layout.length - 1))
    assert torch.equal(out.canvas[:, 0], torch.tensor([[0.5, 2.0]]).expand(2, 2))
    free = cofi.compose(gmm, layout, sampler, batch=2, generator=gen(4), pins=pins, progress=False)
    assert free.canvas[:, 1:, 1].abs().min() > 0


def test_constraint_is_checked(gmm):
    layout = cofi.Chain(16, 4, 2)
    with pytest.raises(TypeError, match="constraint must be callable"):
        cofi.compose(gmm, layout, "gsc", constraint="carry", progress=False)
    with pytest.raises(ValueError, match="constraint must return plans of shape"):
        cofi.compose(gmm, layout, "gsc", constraint=lambda p, lay: p[:, :1], progress=False)
    with pytest.raises(ValueError, match="cannot be combined with group"):
        cofi.compose(gmm, layout, "gsc", constraint=lambda p, lay: p, group=object(), progress=False)
