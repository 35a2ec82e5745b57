"""Speed and memory of one panorama per method with full-size SD 2.0 base components, vs
diffusers' `StableDiffusionPanoramaPipeline` (MultiDiffusion) on the same components.

    python benchmarks/panorama_speed.py                     # GPU: 512×2048 and 512×4608, 50 steps
    python benchmarks/panorama_speed.py --steps 10 --methods cofi,multidiffusion
    python benchmarks/panorama_speed.py --tiny              # CPU smoke run: tiny random SD

The UNet, VAE and CLIP text encoder are built from the stable-diffusion-2-base configs
(shared/reference/model-configs.json, copied below) with random weights in fp16: no
download, and the cost of a step does not depend on the weights. The tokenizer is a
word-level stand-in (77 tokens). SyncDiffusion uses `cofi.metrics.image.LPIPS` with random
weights (same cost as the real one). Per method and size it reports sampling wall time,
NFE (window evaluations, each with both CFG branches), UNet calls, the VAE decode time
(cofi: width tiles; diffusers: one call over the whole canvas) and peak GPU memory of
each. Needs a CUDA GPU (about 20 GB for 512×4608 with all 17 CoFi windows in one UNet call).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from cofi import panorama as pano

UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
            use_linear_projection=True, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32, norm_eps=1e-5,
            act_fn="silu", flip_sin_to_cos=True, freq_shift=0)
VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           scaling_factor=0.18215, sample_size=512)
TEXT = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
            max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=512)
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 prediction_type="epsilon", set_alpha_to_one=False, clip_sample=False, steps_offset=1)


def build_pipe(tiny: bool, device: str, dtype: torch.dtype):
    """A `StableDiffusionPanoramaPipeline` over random-weight components."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPanoramaPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _tiny_sd import tiny_components, tiny_tokenizer

    if tiny:
        comp = tiny_components(sample_size=64)
    else:
        tok = tiny_tokenizer()
        tok.model_max_length = 77
        with torch.device(device):
            comp = dict(unet=UNet2DConditionModel(**UNET), vae=AutoencoderKL(**VAE),
                        text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)), tokenizer=tok,
                        scheduler=DDIMScheduler(**SCHEDULER))
    for k in ("unet", "vae", "text_encoder"):
        comp[k] = comp[k].to(device, dtype).eval()
    pipe = StableDiffusionPanoramaPipeline(**comp, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Meter:
    """Wall time and peak GPU memory of a block."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.s = time.perf_counter() - self.t0
        self.gib = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")


def count_calls(unet) -> list[int]:
    calls: list[int] = []
    unet.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random SD on CPU (smoke run, one 512×768 panorama)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--widths", default="2048,4608")
    ap.add_argument("--methods", default=",".join(pano.METHODS) + ",diffusers")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if device == "cpu" and not args.tiny:
        sys.exit("no CUDA GPU: the full-size SD 2 UNet needs one; use --tiny for a CPU smoke run")
    if args.tiny:
        torch.set_num_threads(1)
    steps = 2 if args.tiny else args.steps
    widths = [768] if args.tiny else [int(w) for w in args.widths.split(",")]
    pipe = build_pipe(args.tiny, device, torch.float16 if device == "cuda" else torch.float32)
    from cofi.metrics.image import LPIPS

    lpips = LPIPS().to(device)
    calls = count_calls(pipe.unet)
    prompt = "a photo of the mountains"
    print(f"device {device}, {steps} DDIM steps, CFG 7.5, {'tiny' if args.tiny else 'SD 2.0 base'} random weights\n")
    print("| size | method | windows | NFE | UNet calls | sample s | s/step | sample GiB | decode s | decode GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for width in widths:
        for method in args.methods.split(","):
            g = torch.Generator().manual_seed(0)
            calls.clear()
            with torch.no_grad():
                if method == "diffusers":  # MultiDiffusion as diffusers runs it: one view per call
                    n = pano.windows_for_width(width, 8)
                    with Meter(device) as ms:
                        z = pipe(prompt, height=512, width=width, num_inference_steps=steps, generator=g,
                                 output_type="latent").images
                    nfe = steps * n
                    with Meter(device) as md:
                        pipe.vae.decode(z / pipe.vae.config.scaling_factor)
                else:
                    sampler = pano.reference_sampler(method, steps, lpips=lpips)
                    with Meter(device) as ms:  # (SyncDiffusion turns autograd on where it needs it)
                        out = pano.compose_panorama(pipe, prompt, width=width, sampler=sampler, generator=g,
                                                    progress=False)
                    n, nfe = out.plans.shape[1], out.nfe
                    with Meter(device) as md:
                        pano.decode(pipe.vae, out.canvas)
            gib = lambda m: "–" if m.gib != m.gib else f"{m.gib:.1f}"  # noqa: E731
            print(f"| 512×{width} | {method} | {n} | {nfe} | {len(calls)} | {ms.s:.2f} | {ms.s / steps:.3f} | "
                  f"{gib(ms)} | {md.s:.2f} | {gib(md)} |")


if __name__ == "__main__":
    main()
