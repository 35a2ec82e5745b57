"""CogVideoXPrior and cofi.video on tiny random-weight CogVideoX components (CPU, offline)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import cofi  # noqa: E402
from cofi import video  # noqa: E402
from cofi.testing import check_prior  # noqa: E402

from _tiny_cogvideox import tiny_pipe  # noqa: E402

PROMPT = "a red panda eats bamboo in the forest"
H = W = 32  # latent 4×4, 2×2 patches
F = 3  # tiny transformer: sample_frames 9 -> 3 latent frames per chunk


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe(seed=0)


@pytest.fixture(scope="module")
def prior(pipe):
    return cofi.priors.CogVideoXPrior.from_pipe(pipe, PROMPT, guidance_scale=6.0, height=H, width=W)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_prior_contract_and_config(pipe, prior):
    check_prior(prior)
    assert prior.sample_shape == (F, 4, H // 8, W // 8)
    assert prior.prediction_type == "v_prediction"
    assert prior.timestep_spacing == "trailing" and prior.steps_offset == 0
    # the SNR-shifted, zero-terminal-SNR schedule exactly as the scheduler builds it
    ac = pipe.scheduler.alphas_cumprod.double()
    torch.testing.assert_close(prior.alphas_cumprod[:-1], ac[:-1], atol=0, rtol=0)
    assert ac[-1] == 0 and 0 < prior.alphas_cumprod[-1] < 1e-37  # ᾱ_T = 0 kept positive


def test_prompts_are_encoded_by_the_pipelines_encode_prompt(pipe, prior):
    """The prior's embeddings are exactly ``pipe.encode_prompt``'s (and the module's `encode_prompt`);
    without CFG no negative prompt is encoded."""
    from cofi.priors.cogvideox import encode_prompt

    with torch.no_grad():
        pos, neg = pipe.encode_prompt(PROMPT, "", True, max_sequence_length=16, device=torch.device("cpu"))
    torch.testing.assert_close(prior.prompt_embeds, pos, atol=0, rtol=0)
    torch.testing.assert_close(prior.negative_prompt_embeds, neg, atol=0, rtol=0)
    assert not prior.prompt_embeds.requires_grad and not prior.negative_prompt_embeds.requires_grad
    torch.testing.assert_close(encode_prompt(pipe.tokenizer, pipe.text_encoder, PROMPT, 16), pos, atol=0, rtol=0)
    other = cofi.priors.CogVideoXPrior.from_pipe(pipe, PROMPT, "a white jeep", guidance_scale=3.0, height=H, width=W)
    with torch.no_grad():
        neg = pipe.encode_prompt(PROMPT, "a white jeep", True, max_sequence_length=16, device=torch.device("cpu"))[1]
    torch.testing.assert_close(other.negative_prompt_embeds, neg, atol=0, rtol=0)
    plain = cofi.priors.CogVideoXPrior.from_pipe(pipe, PROMPT, guidance_scale=1.0, height=H, width=W)
    assert plain.negative_prompt_embeds is None and not plain.do_cfg


@pytest.mark.parametrize("rotary", [False, True])
def test_one_chunk_equals_pipeline(rotary):
    """λ = 1, no refinement, one chunk: exactly CogVideoXPipeline's latents (same x_T)."""
    p = tiny_pipe(seed=1, rotary=rotary)
    pr = cofi.priors.CogVideoXPrior.from_pipe(p, PROMPT, guidance_scale=6.0, height=H, width=W)
    x_T = torch.randn(1, *pr.sample_shape, generator=gen(3))  # pipeline layout (B, F, C, h, w)
    ref = p(PROMPT, height=H, width=W, num_frames=4 * F - 3, num_inference_steps=4, guidance_scale=6.0,
            output_type="latent", latents=x_T.clone(), max_sequence_length=16).frames
    layout = cofi.Chain(F, 0, 1)
    for sampler in (cofi.GSC(steps=4), cofi.CoFi(steps=4, eta=0.0, lam0=1.0, refine_at=None)):
        out = cofi.compose(pr, layout, sampler, x_T=x_T, progress=False)
        torch.testing.assert_close(out.canvas, ref, atol=1e-5, rtol=1e-5)


def test_decoded_frames_follow_4L_minus_3(pipe):
    for L in (1, 3, 5):
        frames = video.decode(pipe.vae, torch.randn(L, 4, 4, 4, generator=gen(L)))
        assert frames.shape == (4 * L - 3, H, W, 3) and frames.dtype == np.uint8
    vae, sizes = pipe.vae, (pipe.vae.tile_sample_min_height, pipe.vae.tile_sample_min_width)
    vae.tile_sample_min_height = vae.tile_sample_min_width = 16  # force the tiled path at 32×32
    vae.tile_latent_min_height = vae.tile_latent_min_width = 2
    try:
        # frame count only: diffusers' tiles assume 480×720 and do not reassemble 32×32 exactly
        assert video.decode(vae, torch.randn(5, 4, 4, 4), tiling=True).shape[0] == 17
    finally:
        vae.tile_sample_min_height, vae.tile_sample_min_width = sizes
        vae.tile_latent_min_height, vae.tile_latent_min_width = sizes[0] // 8, sizes[1] // 8
    with pytest.raises(ValueError, match="L must be odd"):
        video.decode(pipe.vae, torch.randn(4, 4, 4, 4))
    with pytest.raises(ValueError, match="channels"):
        video.decode(pipe.vae, torch.randn(3, 5, 4, 4))
    assert video.frames_for_latents(video.latent_frames(9)) == 273
    assert video.chunks_for_frames(273) == 9


def test_decode_and_export_are_the_pipelines(pipe, tmp_path):
    """`decode` gives the pipeline's own frames (``decode_latents`` + ``postprocess_video``) for
    the same latents, quantised as diffusers' ``numpy_to_pil``; `export_mp4` writes them with
    ``export_to_video`` at the requested fps."""
    import imageio.v2 as imageio

    kw = dict(height=H, width=W, num_frames=4 * F - 3, num_inference_steps=2, guidance_scale=6.0,
              max_sequence_length=16)
    x_T = torch.randn(1, F, 4, H // 8, W // 8, generator=gen(4))
    lat = pipe(PROMPT, latents=x_T.clone(), output_type="latent", **kw).frames
    ref = pipe(PROMPT, latents=x_T.clone(), output_type="np", **kw).frames[0]  # (4F - 3, H, W, 3) in [0, 1]
    frames = video.decode(pipe.vae, lat[0])
    assert frames.shape == ref.shape == (4 * F - 3, H, W, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, (ref * 255).round().astype(np.uint8))
    np.testing.assert_array_equal(video.decode(pipe.vae, lat), frames)  # (1, L, C, h, w) as well
    mp4 = video.export_mp4(frames, tmp_path / "sub" / "clip.mp4", fps=5)
    with imageio.get_reader(mp4) as r:
        assert r.get_meta_data()["fps"] == 5
        back = np.stack([f for f in r.iter_data()])
    assert back.shape == frames.shape  # H.264 is lossy: shape and count only


def test_determinism_max_batch_and_transformer_calls(pipe, prior):
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["hidden_states"].shape[0]),
                                                      with_kwargs=True)
    try:
        sampler = cofi.CoFi(steps=4, lam0=0.8, schedule="cosine", refine_at=0.25, noise="shared")
        kw = dict(chunks=3, overlap=1, sampler=sampler, height=H, width=W, progress=False)
        a = video.compose_video(pipe, PROMPT, generator=gen(0), max_batch=None, **kw)
        assert calls == [2 * 3] * (4 + 3)  # max_batch=None, every step: 3 chunks × 2 CFG branches in one call
        calls.clear()
        video.compose_video(pipe, PROMPT, generator=gen(0), **kw)
        assert calls == [2 * 2, 2 * 1] * (4 + 3)  # the default max_batch=2 bounds the transformer's batch
        b = video.compose_video(pipe, PROMPT, generator=gen(0), max_batch=None, **kw)
        c = video.compose_video(pipe, PROMPT, generator=gen(0), max_batch=1, **kw)
    finally:
        hook.remove()
    assert a.canvas.shape == (1, 3 + 2 * 2, 4, 4, 4)
    assert torch.equal(a.canvas, b.canvas)
    torch.testing.assert_close(c.canvas, a.canvas, atol=1e-5, rtol=1e-5)
    assert a.scaffold is not None


def test_cofi_preset_is_the_authors_video_loop(pipe, prior):
    """DESIGN §2 "Long video", written out here from the text (x̂ from the adapter, checked
    against the pipeline above; everything else by hand), with the same draws: x_T on the
    canvas; a deterministic coarse stage; one canvas draw for the renoise and per refinement step."""
    from _reference import merge, ramp_weights, split

    K, chunks, o = 5, 3, 1
    out = video.compose_video(pipe, PROMPT, chunks=chunks, overlap=o, sampler="cofi", steps=K, height=H, width=W,
                              generator=gen(31), progress=False)
    ts = list(range(999, -1, -1000 // K))  # trailing spacing: 999, 799, …, 199
    ac = prior.alphas_cumprod.float()

    def alpha(t):
        return ac[t] if t >= 0 else torch.tensor(1.0)

    L, starts = F + (chunks - 1) * (F - o), [0, 2, 4]
    w = ramp_weights(chunks, F, o)
    merge_ = functools.partial(merge, weights=w, starts=starts, window=F, dim=1, length=L)
    fuse = lambda parts: split(merge_(parts), starts, F, 1)  # noqa: E731

    def x0_hat(parts, t):
        with torch.no_grad():
            return list(prior.denoise(torch.cat(parts), torch.full((len(parts),), t)).split(1))

    g = gen(31)
    x = split(torch.randn(1, L, 4, H // 8, W // 8, generator=g), starts, F, 1)
    for k, t in enumerate(ts):  # coarse stage: η = 0, the fused ε̂ kept as the direction
        a_t, a_s = alpha(t), alpha(t - 1000 // K)
        x0 = x0_hat(x, t)
        eps = [(xi - a_t.sqrt() * x0i) / (1 - a_t).sqrt() for xi, x0i in zip(x, x0)]
        x0, eps = fuse(x0), fuse(eps)
        lam = 1 - 0.2 * (1 - k / (K - 1))
        mean = sum(x0) / chunks
        x = [a_s.sqrt() * (lam * x0i + (1 - lam) * mean) + (1 - a_s).sqrt() * ei for x0i, ei in zip(x0, eps)]
    r = int(0.2 * K)
    a_r = alpha(ts[r])
    x = split(a_r.sqrt() * merge_(x) + (1 - a_r).sqrt() * torch.randn(1, L, 4, H // 8, W // 8, generator=g),
              starts, F, 1)
    for t in ts[r:]:  # refinement: DDIM η = 1, fused x̂, direction recomputed, noise on the canvas
        a_t, a_s = alpha(t), alpha(t - 1000 // K)
        x0 = fuse(x0_hat(x, t))
        eps = [(xi - a_t.sqrt() * x0i) / (1 - a_t).sqrt() for xi, x0i in zip(x, x0)]
        sigma = ((1 - a_s) / (1 - a_t)).sqrt() * (1 - a_t / a_s).sqrt()
        z = split(torch.randn(1, L, 4, H // 8, W // 8, generator=g), starts, F, 1)
        x = [a_s.sqrt() * x0i + (1 - a_s - sigma**2).clamp(min=0).sqrt() * ei + sigma * zi
             for x0i, ei, zi in zip(x0, eps, z)]
    torch.testing.assert_close(out.canvas, merge_(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method,nfe", [("native", 5), ("gen-l-video", 5 * 3), ("cdgs", 5 * 4 * 3),
                                        ("cofi", (5 + 4) * 3)])
def test_nfe_per_method(pipe, method, nfe):
    chunks = 1 if method == "native" else 3
    sampler = video.reference_sampler(method, steps=5)
    out = video.compose_video(pipe, PROMPT, chunks=chunks, overlap=1, sampler=sampler,
                              blend=video.reference_blend(method), height=H, width=W,
                              generator=gen(1), progress=False)
    assert out.nfe == nfe == sampler.nfe(cofi.Chain(F, 1, chunks), 1)
    assert torch.isfinite(out.canvas).all()


def test_long_video_end_to_end(pipe, tmp_path):
    out = video.long_video(pipe, PROMPT, chunks=2, sampler=cofi.GSC(steps=2), generator=gen(2),
                           height=H, width=W, progress=False, overlap=1, batch=2)
    assert isinstance(out, video.VideoOutput) and out.frames.shape == (2, 4 * 5 - 3, H, W, 3)
    assert out.best == int(out.disagreement.argmin())
    frames = out.best_frames
    assert frames.shape == (4 * 5 - 3, H, W, 3) and frames.dtype == np.uint8
    lat = video.long_video(pipe, PROMPT, chunks=2, sampler="gen-l-video", steps=2, generator=gen(2), height=H,
                           width=W, progress=False, overlap=1, batch=2, output_type="latent")
    # the name and the config agree: at overlap 1 the ramp's two weights are equal, as uniform's
    torch.testing.assert_close(lat.frames, out.canvas)
    mp4 = video.export_mp4(frames, tmp_path / "v.mp4")
    png = video.save_frame_grid(frames, tmp_path / "v.png")
    assert mp4.stat().st_size > 0 and png.stat().st_size > 0
    import imageio.v2 as imageio

    assert imageio.imread(png).shape == (H, 5 * W + 4 * 4, 3)
    assert video.grid_indices(273) == [0, 68, 136, 204, 272]  # frames 1, 69, 137, 205, 273


def test_clear_errors(pipe):
    kw = dict(sampler=cofi.GSC(steps=1), height=H, width=W, progress=False)
    with pytest.raises(ValueError, match="chunks"):
        video.long_video(pipe, PROMPT, chunks=0, **kw)
    with pytest.raises(ValueError, match="overlap"):
        video.long_video(pipe, PROMPT, chunks=2, overlap=3, **kw)
    with pytest.raises(ValueError, match="L must be odd"):  # stride 1: 2 chunks = 4 latent frames
        video.long_video(pipe, PROMPT, chunks=2, overlap=2, **kw)
    with pytest.raises(ValueError, match="4L - 3"):
        video.chunks_for_frames(100)
    with pytest.raises(ValueError, match="not 13"):
        video.chunks_for_frames(4 * 15 - 3)
    with pytest.raises(ValueError, match="chunks must be 1"):
        video.long_video(pipe, PROMPT, chunks=3, **{**kw, "sampler": "native"})
    with pytest.raises(ValueError, match="method"):
        video.reference_sampler("sora")
    with pytest.raises(ValueError, match="multiples"):
        cofi.priors.CogVideoXPrior.from_pipe(pipe, PROMPT, height=36, width=W)
    assert cofi.long_video is video.long_video
