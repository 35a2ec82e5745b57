"""StableDiffusionPrior, SyncDiffusion and cofi.panorama on tiny random-weight SD components
(CPU, offline). Windows are 8 latent columns (64 px) unless a test needs SD's 64."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import cofi  # noqa: E402
from cofi import panorama as pano  # noqa: E402
from cofi.priors.stable_diffusion import StableDiffusionPrior  # noqa: E402
from cofi.samplers.syncdiffusion import SyncDiffusion, perceptual_distance  # noqa: E402
from cofi.testing import check_prior  # noqa: E402

from _tiny_sd import tiny_pipe  # noqa: E402

PROMPT = "a photo of the mountains"
H = 64  # px: latent height 8
WIN = 8  # latent columns per window (tiny UNet sample_size)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny convolutions are far faster single-threaded on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=0)


@pytest.fixture(scope="module")
def prior(pipe):
    return StableDiffusionPrior.from_pipe(pipe, PROMPT, guidance_scale=7.5)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def mse(a, b):
    return (a - b).pow(2).flatten(1).mean(1)


def with_views(pipe, window, stride):
    """diffusers' panorama pipeline with its own get_views at another window/stride
    (it hard-codes SD's 64-latent windows, stride 8)."""
    p = copy.copy(pipe)
    p.get_views = functools.partial(type(pipe).get_views, p, window_size=window, stride=stride)
    return p


# ------------------------------------------------------------------ the prior
def test_prior_contract_and_config(pipe, prior):
    check_prior(prior)
    assert prior.sample_shape == (4, H // 8, WIN)
    assert prior.prediction_type == "epsilon" and prior.timestep_spacing == "leading" and prior.steps_offset == 1
    torch.testing.assert_close(prior.alphas_cumprod, pipe.scheduler.alphas_cumprod.double(), atol=0, rtol=0)
    per_window = StableDiffusionPrior.from_pipe(pipe, [PROMPT, "a castle in the sunset", "a beach"])
    check_prior(per_window)
    assert per_window.num_prompts == 3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoise_is_cfg_then_tweedie(pipe, prediction_type):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    p = copy.copy(pipe)
    p.scheduler = sched
    pr = StableDiffusionPrior.from_pipe(p, PROMPT, "a city", guidance_scale=3.0)
    x, t = torch.randn(2, *pr.sample_shape, generator=gen(1)), torch.tensor([900, 20])
    with torch.no_grad():
        u = pipe.unet(x, t, encoder_hidden_states=pr.negative_prompt_embeds[[0, 0]]).sample
        c = pipe.unet(x, t, encoder_hidden_states=pr.prompt_embeds[[0, 0]]).sample
        out = u + 3.0 * (c - u)
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        ref = (x - (1 - a).sqrt() * out) / a.sqrt() if prediction_type == "epsilon" else a.sqrt() * x - (1 - a).sqrt() * out
        torch.testing.assert_close(pr.denoise(x, t), ref, atol=1e-4, rtol=1e-4)


def test_cfg_is_one_helper_with_the_pipelines_formula():
    """Both adapters combine CFG with `cfg_combine`: ``uncond + w (cond − uncond)`` bit for bit,
    as the pipelines (and diffusers' experimental `ClassifierFreeGuidance` guider) do."""
    from cofi.priors._cfg import cfg_combine

    u, c = torch.randn(2, 4, 8, 8, generator=gen(40)), torch.randn(2, 4, 8, 8, generator=gen(41))
    assert torch.equal(cfg_combine(u, c, 7.5), u + 7.5 * (c - u))
    assert torch.equal(cfg_combine(u, c, 1.0), u + 1.0 * (c - u))
    try:
        from diffusers.guiders import ClassifierFreeGuidance
    except ImportError:  # older diffusers: no guiders
        return
    assert torch.equal(cfg_combine(u, c, 7.5), ClassifierFreeGuidance(guidance_scale=7.5).forward(c, u).pred)


def test_prompts_are_encoded_by_the_pipelines_encode_prompt(pipe):
    """The prior's embeddings are exactly ``pipe.encode_prompt``'s (one prompt, per-window prompts,
    the module's `encode_prompt`), also when built from components, which leaves the caller's
    scheduler as it was (no pipeline is built over it)."""
    from diffusers import DDIMScheduler

    from cofi.priors.stable_diffusion import encode_prompt

    from _tiny_sd import tiny_components

    one = StableDiffusionPrior.from_pipe(pipe, PROMPT, "a city", guidance_scale=3.0)
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="a city")
    torch.testing.assert_close(one.prompt_embeds, pos, atol=0, rtol=0)
    torch.testing.assert_close(one.negative_prompt_embeds, neg, atol=0, rtol=0)
    assert not one.prompt_embeds.requires_grad and not one.negative_prompt_embeds.requires_grad
    prompts = [PROMPT, "a castle in the sunset", "a beach"]
    per_window = StableDiffusionPrior.from_pipe(pipe, prompts)
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(prompts, "cpu", 1, True, negative_prompt=[""] * 3)
    torch.testing.assert_close(per_window.prompt_embeds, pos, atol=0, rtol=0)
    # the one negative is encoded once (a batch of 1) and shared: exactly that encoding, and the
    # per-window encoding up to the float rounding a CPU's kernels give another batch size
    with torch.no_grad():
        _, neg1 = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")
    torch.testing.assert_close(per_window.negative_prompt_embeds, neg1.expand(3, -1, -1), atol=0, rtol=0)
    torch.testing.assert_close(per_window.negative_prompt_embeds, neg, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts), pos, atol=0, rtol=0)

    c = tiny_components(seed=0)  # the weights of the `pipe` fixture
    c["scheduler"] = DDIMScheduler.from_config(c["scheduler"].config, steps_offset=0)  # a config diffusers would "fix"
    config = dict(c["scheduler"].config)
    built = StableDiffusionPrior.from_components(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], c["scheduler"],
                                                 prompts)
    assert dict(c["scheduler"].config) == config and built.steps_offset == 0
    torch.testing.assert_close(built.prompt_embeds, per_window.prompt_embeds, atol=0, rtol=0)
    torch.testing.assert_close(built.negative_prompt_embeds, per_window.negative_prompt_embeds, atol=0, rtol=0)
    x, t, win = torch.randn(3, *built.sample_shape, generator=gen(9)), torch.tensor([800, 400, 50]), torch.arange(3)
    with torch.no_grad():
        torch.testing.assert_close(built.denoise(x, t, window=win), per_window.denoise(x, t, window=win),
                                   atol=0, rtol=0)


def test_low_precision_model_returns_state_dtype(pipe, prior):
    unet = copy.deepcopy(pipe.unet).to(torch.bfloat16)
    pr = StableDiffusionPrior(unet, pipe.scheduler, prior.prompt_embeds, prior.negative_prompt_embeds[:1])
    x, t = torch.randn(2, *pr.sample_shape, generator=gen(2)), torch.tensor([500, 100])
    with torch.no_grad():
        out = pr.denoise(x, t)
        assert out.dtype == torch.float32 and pr.prompt_embeds.dtype == torch.bfloat16
        torch.testing.assert_close(out, prior.denoise(x, t), atol=0.3, rtol=0.1)


def test_per_window_prompts_follow_the_window_index(pipe):
    prompts = [PROMPT, "a castle in the sunset", "a beach with palm trees"]
    pr = StableDiffusionPrior.from_pipe(pipe, prompts)
    x, t = torch.randn(3, *pr.sample_shape, generator=gen(3)), torch.tensor([700, 700, 700])
    win = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = pr.denoise(x, t, window=win)
        for i in range(3):
            one = StableDiffusionPrior.from_pipe(pipe, prompts[int(win[i])])
            torch.testing.assert_close(out[i : i + 1], one.denoise(x[i : i + 1], t[:1]), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="window"):
        pr.denoise(x, t)
    with pytest.raises(ValueError, match="out of range"):
        pr.denoise(x, t, window=torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="4 windows"):
        pr.check_layout(cofi.Chain(WIN, 4, 4, axis=2))
    img = pano.panorama(pipe, prompts, height=H, width=128, sampler=cofi.GSC(steps=2), stride=4,
                        generator=gen(0), progress=False).best_image
    assert img.size == (128, H)


# ------------------------------------------------------------------ the authors' loop
def test_cofi_preset_is_the_authors_panorama_loop(pipe, prior):
    """DESIGN §2 "Panorama", written out here from the text (UNet + CFG, not cofi's samplers),
    with the draws in the same order: x_T on the canvas; per coarse step one draw per window,
    blended; one canvas draw for the renoise; one canvas draw per refinement step."""
    from _reference import merge, ramp_weights, split, weighted_sum

    K, width, stride = 6, 128, 4
    out = pano.compose_panorama(pipe, PROMPT, height=H, width=width, sampler="cofi", steps=K, stride=stride,
                                generator=gen(21), progress=False)

    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(K)
    ts = [int(t) for t in sched.timesteps]
    ac = sched.alphas_cumprod.float()

    def alpha_prev(t):
        p = t - sched.config.num_train_timesteps // K
        return ac[p] if p >= 0 else torch.tensor(float(sched.final_alpha_cumprod))

    L, N, o = width // 8, 3, WIN - stride
    starts = [0, 4, 8]
    w = ramp_weights(N, WIN, o)
    merge_ = functools.partial(merge, weights=w, starts=starts, window=WIN, dim=3, length=L)
    fuse = lambda parts: split(merge_(parts), starts, WIN, 3)  # noqa: E731

    def eps_hat(parts, t):
        x = torch.cat(parts)
        tt = torch.full((len(parts),), t)
        with torch.no_grad():
            u = pipe.unet(x, tt, encoder_hidden_states=prior.negative_prompt_embeds.expand(len(parts), -1, -1)).sample
            c = pipe.unet(x, tt, encoder_hidden_states=prior.prompt_embeds.expand(len(parts), -1, -1)).sample
        return list((u + 7.5 * (c - u)).split(1))

    g = gen(21)
    x = split(torch.randn(1, 4, H // 8, L, generator=g), starts, WIN, 3)
    for k, t in enumerate(ts):  # coarse stage: all K steps
        a_t, a_s = ac[t], alpha_prev(t)
        x0 = [(xi - (1 - a_t).sqrt() * e) / a_t.sqrt() for xi, e in zip(x, eps_hat(x, t))]
        x0 = fuse(x0)
        lam = 1 - 0.2 * (1 - k / (K - 1))
        mean = sum(x0) / N
        x0 = [lam * xi + (1 - lam) * mean for xi in x0]
        z = torch.randn(1, N, 4, H // 8, WIN, generator=g)
        num, _ = weighted_sum([z[:, i] for i in range(N)], w, starts, WIN, 3, L)
        _, den2 = weighted_sum([z[:, i] for i in range(N)], w.pow(2), starts, WIN, 3, L)
        zt = split(num / den2.sqrt(), starts, WIN, 3)
        x = [a_s.sqrt() * xi + (1 - a_s).sqrt() * zi for xi, zi in zip(x0, zt)]
    r = int(0.3 * K)
    a_r = ac[ts[r]]
    x = split(a_r.sqrt() * merge_(x) + (1 - a_r).sqrt() * torch.randn(1, 4, H // 8, L, generator=g), starts, WIN, 3)
    for t in ts[r:]:  # refinement: DDIM η = 1, fused ε̂, noise drawn on the canvas
        a_t, a_s = ac[t], alpha_prev(t)
        e = fuse(eps_hat(x, t))
        x0 = [(xi - (1 - a_t).sqrt() * ei) / a_t.sqrt() for xi, ei in zip(x, e)]
        sigma = ((1 - a_s) / (1 - a_t)).sqrt() * (1 - a_t / a_s).sqrt()
        z = split(torch.randn(1, 4, H // 8, L, generator=g), starts, WIN, 3)
        x = [a_s.sqrt() * x0i + (1 - a_s - sigma**2).sqrt() * ei + sigma * zi for x0i, ei, zi in zip(x0, e, z)]
    torch.testing.assert_close(out.canvas, merge_(x), atol=1e-4, rtol=1e-4)
    assert out.scaffold is not None and out.scaffold.shape == (1, 4, H // 8, L)


# ------------------------------------------------------------------ reproducing diffusers
@pytest.mark.parametrize("width,stride,view_batch", [(64, 4, 1), (96, 4, 1), (128, 4, 3), (128, 8, 1)])
def test_multidiffusion_reproduces_diffusers_pipeline(pipe, width, stride, view_batch):
    """GSC + uniform fusion == StableDiffusionPanoramaPipeline (same seed, DDIM, CFG 7.5)."""
    ref = with_views(pipe, WIN, stride)(PROMPT, height=H, width=width, num_inference_steps=4, guidance_scale=7.5,
                                        generator=gen(5), view_batch_size=view_batch, output_type="latent").images
    out = pano.compose_panorama(pipe, PROMPT, height=H, width=width, sampler="multidiffusion", steps=4,
                                stride=stride, generator=gen(5), progress=False)
    assert out.canvas.shape == ref.shape == (1, 4, H // 8, width // 8)
    assert out.nfe == 4 * pano.windows_for_width(width, stride, WIN)
    torch.testing.assert_close(out.canvas, ref, atol=1e-4, rtol=1e-4)
    # x_T given as a canvas (diffusers' latents=) gives the same as the seed
    x_T = torch.randn(1, 4, H // 8, width // 8, generator=gen(5))
    again = pano.compose_panorama(pipe, PROMPT, height=H, width=width, sampler=cofi.GSC(steps=4), stride=stride,
                                  x_T=x_T, progress=False)
    torch.testing.assert_close(again.canvas, out.canvas, atol=0, rtol=0)


def test_multidiffusion_reproduces_diffusers_at_sd_window_size():
    """SD's own geometry: 64-latent windows, stride 8, the pipeline's unpatched views."""
    p = tiny_pipe(seed=1, sample_size=64)
    ref = p(PROMPT, height=512, width=576, num_inference_steps=2, generator=gen(6), output_type="latent").images
    out = pano.compose_panorama(p, PROMPT, height=512, width=576, sampler=cofi.GSC(steps=2),
                                generator=gen(6), progress=False)
    assert out.plans.shape == (1, 2, 4, 64, 64)
    torch.testing.assert_close(out.canvas, ref, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ batching and cost
def test_one_unet_call_per_step_determinism_and_max_batch(pipe):
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        kw = dict(height=H, width=128, stride=4, progress=False,
                  sampler=cofi.CoFi(steps=3, lam0=0.8, refine_at=0.34))
        a = pano.compose_panorama(pipe, PROMPT, generator=gen(0), **kw)
        assert calls == [2 * 3] * (3 + 2)  # every step: 3 windows × 2 CFG branches in one call
        b = pano.compose_panorama(pipe, PROMPT, generator=gen(0), **kw)
        c = pano.compose_panorama(pipe, PROMPT, generator=gen(0), max_batch=1, **kw)
        assert calls[10:] == [2] * 3 * 5
    finally:
        hook.remove()
    assert a.canvas.shape == (1, 4, H // 8, 16) and a.scaffold is not None
    assert torch.equal(a.canvas, b.canvas)
    torch.testing.assert_close(c.canvas, a.canvas, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", pano.METHODS)
def test_nfe_per_method(pipe, method):
    K, N = 5, 3
    sampler = pano.reference_sampler(method, steps=K, lpips=mse)
    nfe = {"multidiffusion": K * N, "syncdiffusion": (K + 1) * N, "cdgs": K * 4 * N,
           "cofi": (K + K - 1) * N}[method]  # refinement from ⌊0.3·5⌋ = 1
    out = pano.compose_panorama(pipe, PROMPT, height=H, width=128, sampler=sampler, stride=4, generator=gen(1),
                                progress=False, blend=pano.reference_blend(method))
    assert out.nfe == nfe == sampler.nfe(cofi.Chain(WIN, 4, N, axis=2), 1)
    assert out.grad_evals == (N - 1 if method == "syncdiffusion" else 0)
    assert torch.isfinite(out.canvas).all()


# ------------------------------------------------------------------ SyncDiffusion
def test_syncdiffusion_without_weight_is_multidiffusion_and_with_lpips_moves(pipe):
    kw = dict(height=H, width=128, stride=4, blend="uniform", progress=False)
    md = pano.compose_panorama(pipe, PROMPT, sampler=cofi.GSC(steps=3), generator=gen(2), **kw)
    off = pano.compose_panorama(pipe, PROMPT, sampler=SyncDiffusion(steps=3, weight=0.0, lpips=mse),
                                generator=gen(2), **kw)
    torch.testing.assert_close(off.canvas, md.canvas, atol=1e-5, rtol=1e-5)
    from cofi.metrics.image import LPIPS

    lp = LPIPS()  # random VGG: an uncalibrated but differentiable distance
    on = pano.compose_panorama(pipe, PROMPT, generator=gen(2), **kw,
                               sampler=SyncDiffusion(steps=3, weight=200.0, sync_steps=2, anchor=0, lpips=lp))
    assert on.grad_evals == 2 * 2 and on.nfe == (3 + 2) * 3
    rows = []  # the sync passes go through compose's prior calls too: max_batch holds for them
    hook = pipe.unet.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    try:
        small = pano.compose_panorama(pipe, PROMPT, generator=gen(2), max_batch=1, **kw,
                                      sampler=SyncDiffusion(steps=3, weight=200.0, sync_steps=2, anchor=0, lpips=lp))
    finally:
        hook.remove()
    assert set(rows) == {2} and len(rows) == small.nfe  # one window × (uncond, text) per call
    torch.testing.assert_close(small.canvas, on.canvas, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(on.canvas).all() and not torch.allclose(on.canvas, md.canvas, atol=1e-4)
    a = torch.rand(2, 3, 32, 32, requires_grad=True)
    perceptual_distance(lp)(a, torch.rand(2, 3, 32, 32)).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


# ------------------------------------------------------------------ geometry, decoding, one-liner
def test_window_counts_and_paper_sizes():
    assert [pano.windows_for_width(w, s) for (_, w) in pano.PAPER_SIZES for s in (8, 16, 32)] == [25, 13, 7, 65, 33, 17]
    layout = pano.panorama_layout(2048)  # CoFi: stride 32, ramp
    assert (layout.count, layout.overlap, layout.axis, layout.blend) == (7, 32, 2, "ramp")
    assert layout.global_shape((4, 64, 64)) == (4, 64, 256)
    assert pano.panorama_layout(4608, 8, blend="uniform").global_shape((4, 64, 64)) == (4, 64, 576)
    assert pano.windows_for_width(512) == 1
    assert {m: pano.reference_stride(m) for m in pano.METHODS} == {
        "cofi": 32, "multidiffusion": 8, "syncdiffusion": 16, "cdgs": 32}


def test_tiled_decode(pipe):
    z = torch.randn(2, 4, H // 8, 20, generator=gen(4))
    widths = []
    hook = pipe.vae.decoder.register_forward_pre_hook(lambda m, a: widths.append(a[0].shape[-1]))
    try:
        img = pano.decode(pipe.vae, z, tile=8, tile_overlap=2)
        whole = pano.decode(pipe.vae, z, tile=20)
    finally:
        hook.remove()
    assert img.shape == (2, 3, H, 160) and 0 <= img.min() and img.max() <= 1
    assert widths == [8, 8, 8] + [20]  # tiles of one window; then the whole canvas in one call
    with torch.no_grad():
        ref = (pipe.vae.decode(z / 0.18215).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(whole, ref, atol=1e-6, rtol=0)
    assert (img - ref).abs().mean() < 0.05  # the same picture up to the seams (the VAE's mid-block attends globally)


def test_decoding_is_the_pipelines_postprocessing(pipe, prior):
    """`decode` (a canvas that fits one tile), `to_pil` and the prior's differentiable `decode`
    give exactly what the panorama pipeline returns for the same latents (``vae.decode`` then
    ``image_processor.postprocess``)."""
    import numpy as np

    p = with_views(pipe, WIN, 4)
    kw = dict(height=H, width=96, num_inference_steps=2, guidance_scale=7.5)
    lat = p(PROMPT, generator=gen(13), output_type="latent", **kw).images
    pt = p(PROMPT, generator=gen(13), output_type="pt", **kw).images
    pil = p(PROMPT, generator=gen(13), output_type="pil", **kw).images
    img = pano.decode(pipe.vae, lat)
    torch.testing.assert_close(img, pt, atol=0, rtol=0)
    ours = pano.to_pil(img)
    assert [im.size for im in ours] == [im.size for im in pil] == [(96, H)] and ours[0].mode == "RGB"
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, pil))
    z = lat[..., :WIN].clone().requires_grad_(True)
    out = prior.decode(z)
    with torch.no_grad():
        ref = pipe.image_processor.postprocess(pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample,
                                               output_type="pt")
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    out.mean().backward()  # SyncDiffusion's perceptual gradient flows through the post-processing
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_panorama_one_liner(pipe):
    kw = dict(height=H, width=96, stride=4, generator=gen(7), progress=False)
    out = cofi.panorama(pipe, PROMPT, sampler=cofi.CoFi(steps=2, refine_at=0.5), **kw)
    assert isinstance(out, pano.PanoramaOutput) and len(out.images) == 1 and out.best == 0
    assert out.best_image.size == (96, H) and out.best_image.mode == "RGB"
    pt = pano.panorama(pipe, PROMPT, sampler="multidiffusion", steps=2, batch=2, output_type="pt", **kw)
    assert pt.images.shape == (2, 3, H, 96) and not torch.allclose(pt.images[0], pt.images[1])
    assert pt.best == int(pt.disagreement.argmin())
    assert cofi.panorama is pano and callable(cofi.panorama)  # the module forwards calls to the one-liner
    latents = cofi.panorama(pipe, PROMPT, sampler=cofi.GSC(steps=1), output_type="latent", **kw).images
    assert latents.shape == (1, 4, H // 8, 12)


def test_one_liner_forwards_like_compose(pipe):
    """steps, sampler overrides, x_T, callback and batch reach compose the same way; ``best`` is
    the candidate with the lowest overlap error."""
    kw = dict(height=H, width=96, stride=4, progress=False)
    x_T = torch.randn(3, 4, H // 8, 12, generator=gen(11))
    seen = []
    lat = pano.panorama(pipe, PROMPT, sampler="cofi", steps=3, lam0=0.5, refine_at=0.5, batch=3, x_T=x_T,
                        generator=gen(12), callback=lambda d: seen.append(d["stage"]), output_type="latent",
                        **kw)
    ref = pano.compose_panorama(pipe, PROMPT, sampler=pano.reference_sampler("cofi", steps=3).__class__(
        **{**vars(pano.reference_sampler("cofi", steps=3)), "lam0": 0.5, "refine_at": 0.5}), batch=3, x_T=x_T,
        generator=gen(12), blend="ramp", **kw)
    torch.testing.assert_close(lat.images, ref.canvas)
    assert lat.best == int(ref.disagreement.argmin())
    assert seen.count("coarse") == 3 and seen.count("refine") == 2  # refinement from ⌊0.5·3⌋ = 1
    with pytest.raises(TypeError, match="unexpected keyword argument 'lam1'"):
        pano.panorama(pipe, PROMPT, sampler="cofi", steps=1, lam1=0.5, **kw)


def test_clear_errors(pipe):
    kw = dict(height=H, sampler=cofi.GSC(steps=1), stride=4, progress=False)
    with pytest.raises(ValueError, match="multiple of 8"):
        pano.panorama(pipe, PROMPT, width=130, **kw)
    with pytest.raises(ValueError, match="multiple of 8"):
        pano.panorama(pipe, PROMPT, width=128, **{**kw, "height": 60})
    with pytest.raises(ValueError, match="smaller than one window"):
        pano.panorama(pipe, PROMPT, width=56, **kw)
    with pytest.raises(ValueError, match="nearest valid widths: 96 or 128"):
        pano.panorama(pipe, PROMPT, width=120, **kw)
    with pytest.raises(ValueError, match="2 prompts .* 3 windows"):
        pano.panorama(pipe, [PROMPT, PROMPT], width=128, **kw)
    with pytest.raises(ValueError, match="stride"):
        pano.windows_for_width(2048, stride=0)
    with pytest.raises(ValueError, match="method"):
        pano.reference_sampler("dall-e")
    with pytest.raises(ValueError, match="lpips"):
        pano.panorama(pipe, PROMPT, width=128, **{**kw, "sampler": SyncDiffusion(steps=1)})
    with pytest.raises(ValueError, match="output_type"):
        pano.panorama(pipe, PROMPT, width=128, output_type="np", **kw)
    with pytest.raises(ValueError, match="shape"):
        StableDiffusionPrior.from_pipe(pipe, PROMPT).denoise(torch.zeros(1, 4, 8, 9), torch.tensor([1]))


def test_tall_images_chain_windows_along_the_height_and_large_ones_use_a_grid(pipe):
    window_px = 8 * pipe.unet.config.sample_size
    out = pano.compose_panorama(pipe, PROMPT, height=2 * window_px, width=window_px, stride=4,
                                sampler=cofi.GSC(steps=2), generator=gen(0), progress=False)
    h = 2 * pipe.unet.config.sample_size
    assert out.canvas.shape == (1, 4, h, pipe.unet.config.sample_size)
    assert out.plans.shape[1] == 1 + (h - pipe.unet.config.sample_size) // 4
    img = pano.panorama(pipe, PROMPT, height=2 * window_px, width=window_px, stride=4,
                        sampler=cofi.GSC(steps=1), generator=gen(0), progress=False).best_image
    assert img.size == (window_px, 2 * window_px)
    # both sides larger than a window: a 2-D grid, the same stride both ways
    grid = pano.compose_panorama(pipe, PROMPT, height=2 * window_px, width=window_px + 32, stride=4,
                                 sampler="cofi", steps=2, generator=gen(0), progress=False)
    n = 1 + (h - pipe.unet.config.sample_size) // 4
    assert grid.canvas.shape == (1, 4, h, pipe.unet.config.sample_size + 4)
    assert grid.plans.shape[1] == n * 2 and grid.overlap_error.item() < 1e-8  # cofi fuses: overlaps agree
    with pytest.raises(ValueError, match=r"2 prompts but a 128 × 96 px panorama at stride 4 has 6 windows"):
        pano.compose_panorama(pipe, [PROMPT, PROMPT], height=2 * window_px, width=window_px + 32, stride=4,
                              sampler=cofi.GSC(steps=1), progress=False)
