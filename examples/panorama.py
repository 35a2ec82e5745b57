"""A panorama from Stable Diffusion 2.0 base: compose latent windows along the width, save a PNG.

    python examples/panorama.py "A photo of the dolomites" --method cofi --seed 0
    python examples/panorama.py "A beach with palm trees" --method multidiffusion --width 4608 --steps 50

Needs network access the first time, to download stabilityai/stable-diffusion-2-base from
the Hugging Face hub (or HF_HUB_OFFLINE=1 with a local copy in the cache), and in practice a
CUDA GPU (fp16; a 512×2048 CoFi panorama runs 7 windows × 2 CFG branches per UNet call).
On CPU it runs in float32, very slowly. Methods: multidiffusion, syncdiffusion (needs
--lpips-lin, the LPIPS linear heads as safetensors, see docs/metrics.md), cdgs, cofi (default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import cofi
from cofi import panorama as pano


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt")
    ap.add_argument("--method", default="cofi", choices=pano.METHODS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=2048, help="px; width/8 = 64 + k*stride")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--stride", type=int, default=None, help="latent columns between windows (default per method)")
    ap.add_argument("--guidance-scale", type=float, default=7.5)
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--max-batch", type=int, default=None, help="windows per UNet call (default: all)")
    ap.add_argument("--lpips-lin", type=Path, default=None, help="LPIPS linear heads (syncdiffusion)")
    ap.add_argument("--model", default="stabilityai/stable-diffusion-2-base")
    ap.add_argument("--out", type=Path, default=Path("out"))
    args = ap.parse_args()

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    cuda = torch.cuda.is_available()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float16 if cuda else torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # only its schedule is read
    pipe = pipe.to("cuda" if cuda else "cpu")
    lpips = None
    if args.method == "syncdiffusion":
        if args.lpips_lin is None:
            raise SystemExit("--method syncdiffusion needs --lpips-lin (LPIPS VGG linear heads, safetensors)")
        from cofi.metrics.image import LPIPS

        lpips = LPIPS.from_pretrained(lin_path=args.lpips_lin).to(pipe.device)
    out = cofi.panorama(pipe, args.prompt, height=args.height, width=args.width, sampler=args.method,
                           steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                           negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale,
                           stride=args.stride, max_batch=args.max_batch, progress=True,
                           **({"lpips": lpips} if lpips is not None else {}))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"panorama-{args.method}-seed{args.seed}-{args.height}x{args.width}.png"
    out.best_image.save(path)
    print("wrote", path)


if __name__ == "__main__":
    main()
