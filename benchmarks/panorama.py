"""Paper Table 2: 512×2048 panoramas from Stable Diffusion 2.0 base, 14 prompts, per method
(needs a GPU + the SD 2 base, VGG16, LPIPS and CLIP weights).

    python benchmarks/panorama.py --lpips-lin lpips_vgg_v0.1.safetensors
    python benchmarks/panorama.py --prompts castle,corgis --methods cofi,multidiffusion --seeds 0,1,2

Protocol (Appendix B.3/B.5): SD 2.0 base in fp16, DDIM 50 steps, CFG 7.5, 512×2048 (or
--width 4608); methods and their windows from `cofi.panorama.reference_sampler` /
`reference_stride` / `reference_blend`: MultiDiffusion (stride 8, uniform), SyncDiffusion
(stride 16, LPIPS weight 20 ×0.95, first 10 steps), CDGS, CoFi (the authors' loop: stride 32,
ramp, λ0 = 0.8, coarse re-noise with blended noise, refine from step 15 with η = 1).
Metrics from `cofi.metrics.image` over non-overlapping
512×512 crops: Intra-LPIPS ↓, Intra-Style ↓ (×10³), CLIP score ↑ (ViT-B/32, mean over
crops); plus NFE (window evaluations, each with both CFG branches) and wall time. Every
panorama is saved under --out; the table (mean ± std over prompts × seeds) is printed as markdown.

Weights: stabilityai/stable-diffusion-2-base, timm/vgg16.tv_in1k and
openai/clip-vit-base-patch32 download from the Hugging Face hub on first use; the LPIPS
linear heads must be given as a safetensors file (--lpips-lin, see docs/metrics.md). Not
run by the tests.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cofi import panorama as pano

PROMPTS = {  # Appendix B.8, verbatim
    "landscape": "A beautiful landscape with mountains and a river",
    "dolomites": "A photo of the dolomites with red lava flowing through the valley",
    "babbling-brook": "A photo of lush forest with a babbling brook",
    "misty-fog": "A photo of a forest with a misty fog",
    "cartoon": "Cartoon panorama of spring summer beautiful nature",
    "skiers": "A photo of a snowy mountain peak with skiers",
    "anime": "Natural landscape in anime style illustration",
    "futuristic": "Skyline of a futuristic city with flying cars",
    "silhouette": "Silhouette wallpaper of a dreamy scene with shooting stars",
    "palm-trees": "A beach with palm trees",
    "grassland": "A photo of a grassland with animals",
    "castle": "A cinematic view of a castle in the sunset",
    "coral-reef": "A photo of a beautiful ocean with coral reef",
    "corgis": "last supper with cute corgis",
}


def load_scorers(lpips_lin: Path, device: str) -> dict:
    """LPIPS (VGG + linear heads), VGG16 for the style loss, CLIP ViT-B/32."""
    from cofi.metrics.image import LPIPS, CLIPScorer, VGG16Features

    return {"lpips": LPIPS.from_pretrained(lin_path=lpips_lin).to(device),
            "vgg": VGG16Features.from_pretrained().to(device).eval(),
            "clip": CLIPScorer.from_pretrained("openai/clip-vit-base-patch32", device=device)}


def metrics(image, prompt: str, sc: dict) -> dict[str, float]:
    from cofi.metrics import image as im

    return {"lpips": im.intra_lpips(image, sc["lpips"]), "style": 1e3 * im.intra_style(image, sc["vgg"]),
            "clip": im.clip_score(image, prompt, sc["clip"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=",".join(PROMPTS))
    ap.add_argument("--methods", default=",".join(pano.METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-batch", type=int, default=None)
    ap.add_argument("--lpips-lin", type=Path, required=True, help="LPIPS VGG linear heads (safetensors)")
    ap.add_argument("--model", default="stabilityai/stable-diffusion-2-base")
    ap.add_argument("--out", type=Path, default=Path("out/panorama"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/panorama.py needs a CUDA GPU and the SD 2 base weights")
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float16, safety_checker=None,
                                                   requires_safety_checker=False).to("cuda")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    sc = load_scorers(args.lpips_lin, "cuda")
    rows: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        sampler = pano.reference_sampler(method, args.steps, lpips=sc["lpips"])
        for name in args.prompts.split(","):
            for seed in map(int, args.seeds.split(",")):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = pano.compose_panorama(pipe, PROMPTS[name], width=args.width, sampler=sampler,
                                            blend=pano.reference_blend(method), stride=pano.reference_stride(method),
                                            generator=torch.Generator().manual_seed(seed),
                                            max_batch=args.max_batch, progress=False)
                image = pano.to_pil(pano.decode(pipe.vae, out.canvas))[0]
                torch.cuda.synchronize()
                m = metrics(image, PROMPTS[name], sc) | {"nfe": out.nfe, "s": time.perf_counter() - t0}
                rows.setdefault(method, []).append(m)
                path = args.out / method / f"{name}-seed{seed}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                print(f"{method:14s} {name:14s} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    print(f"\n512×{args.width}, {args.steps} DDIM steps, CFG 7.5, SD 2.0 base fp16\n")
    print("| method | Intra-LPIPS ↓ | Intra-Style (×10³) ↓ | CLIP ↑ | NFE | s/panorama |")
    print("|---|---|---|---|---|---|")
    for method, rs in rows.items():
        cell = {k: f"{np.mean([r[k] for r in rs]):.3f} ± {np.std([r[k] for r in rs]):.3f}" for k in ("lpips", "style", "clip")}
        print(f"| {method} | {cell['lpips']} | {cell['style']} | {cell['clip']} | "
              f"{np.mean([r['nfe'] for r in rs]):.0f} | {np.mean([r['s'] for r in rs]):.1f} |")


if __name__ == "__main__":
    main()
