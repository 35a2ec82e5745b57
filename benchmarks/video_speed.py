"""Speed of one long-video composition per method with the CogVideoX-2B transformer.

    python benchmarks/video_speed.py                  # GPU: full-size 2B transformer, random weights
    python benchmarks/video_speed.py --steps 5        # same, 5 steps (per-step time extrapolates)
    python benchmarks/video_speed.py --tiny           # CPU smoke run: tiny random CogVideoX

The transformer is built from the CogVideoX-2b config (shared/reference/model-configs.json,
copied below) with random weights in fp16: no download, and the cost of a step does not
depend on the weights. The text embeddings are random (1, 226, 4096) tensors, so T5 and the
VAE are not needed. Per method it reports wall time, NFE (chunk evaluations, each running
both CFG branches), peak GPU memory, and the speed-up of batching all chunks × CFG into one
transformer call over chunk-by-chunk calls (``max_batch=1``: one chunk × 2 CFG per call).
Needs a CUDA GPU with ~40 GB for 9 chunks (18 sequences of 17,776 tokens per call).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import cofi
from cofi import video
from cofi.priors.cogvideox import CogVideoXPrior

TRANSFORMER_2B = dict(
    num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16, patch_size=2,
    time_embed_dim=512, text_embed_dim=4096, num_layers=30, max_text_seq_length=226, sample_frames=49,
    sample_height=60, sample_width=90, temporal_compression_ratio=4, activation_fn="gelu-approximate",
    timestep_activation_fn="silu", attention_bias=True, norm_elementwise_affine=True, norm_eps=1e-5,
    flip_sin_to_cos=True, freq_shift=0, spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=False,
)
SCHEDULER_2B = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=3.0,
    timestep_spacing="trailing", clip_sample=False, steps_offset=0,
)


def build_prior(tiny: bool, device: str, dtype: torch.dtype) -> tuple[CogVideoXPrior, int]:
    """A prior over random weights and random text embeddings; returns it and its overlap."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    g = torch.Generator().manual_seed(0)
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from _tiny_cogvideox import tiny_components

        comp = tiny_components()
        tr, sched, size, overlap = comp["transformer"], comp["scheduler"], (32, 32), 1
    else:
        with torch.device(device):
            tr = CogVideoXTransformer3DModel(**TRANSFORMER_2B)
        tr = tr.to(dtype).eval()
        sched, size, overlap = CogVideoXDDIMScheduler(**SCHEDULER_2B), (480, 720), video.OVERLAP
    cfg = tr.config
    emb = [torch.randn(1, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g) for _ in range(2)]
    frames = (cfg.sample_frames - 1) // 4 + 1
    prior = CogVideoXPrior(tr, sched, emb[0], emb[1], guidance_scale=6.0, frames=frames,
                           height=size[0], width=size[1], device=device)
    return prior, overlap


def run(prior, layout, sampler, max_batch, device) -> tuple[float, int, float]:
    """Wall seconds, NFE and peak memory (GiB) of one composition."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = cofi.compose(prior, layout, sampler, generator=torch.Generator().manual_seed(0),
                           max_batch=max_batch, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return time.perf_counter() - t0, out.nfe, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random CogVideoX on CPU (smoke run)")
    ap.add_argument("--chunks", type=int, default=9)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--methods", default="native,gen-l-video,cdgs,cofi")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if device == "cpu" and not args.tiny:
        sys.exit("no CUDA GPU: the full-size 2B transformer needs one; use --tiny for a CPU smoke run")
    prior, overlap = build_prior(args.tiny, device, torch.float16 if device == "cuda" else torch.float32)
    window = prior.sample_shape[0]
    print(f"device {device}, {prior}, chunks {args.chunks}, steps {args.steps}\n")
    print("| method | chunks | frames | NFE | wall s | s/step | peak GiB | batched speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        n = 1 if method == "native" else args.chunks
        layout = video.video_layout(n, window, overlap, video.reference_blend(method))
        sampler = video.reference_sampler(method, steps=args.steps)
        calls = sampler.nfe(layout, 1) / n  # denoising steps (transformer calls when batched)
        wall, nfe, peak = run(prior, layout, sampler, None, device)
        speedup = "–"
        if n > 1:  # chunk by chunk on a short slice of the same schedule, compared per step
            short = video.reference_sampler("gen-l-video", steps=max(2, min(args.steps, 4)))
            w_all = run(prior, layout, short, None, device)[0]
            w_one = run(prior, layout, short, 1, device)[0]
            speedup = f"{w_one / w_all:.2f}×"
        frames = video.frames_for_latents(layout.length)
        print(f"| {method} | {n} | {frames} | {nfe} | {wall:.2f} | {wall / calls:.3f} | {'–' if peak != peak else f'{peak:.1f}'} | {speedup} |")


if __name__ == "__main__":
    main()
