"""A long video from CogVideoX-2B: compose latent chunks, decode once, save MP4 + frame grid.

    python examples/long_video.py "A cute happy panda ... playing a guitar" --method cofi --seed 0
    python examples/long_video.py "..." --method gen-l-video --chunks 5 --steps 50 --out out/

Needs a CUDA GPU (fp16; about 40 GB for 9 chunks with all chunks in one transformer call,
less with --max-batch) and network access the first time, to download THUDM/CogVideoX-2b
from the Hugging Face hub (or set HF_HUB_OFFLINE=1 with a local copy in the cache).
Methods: native (one 49-frame clip), gen-l-video, cdgs, cofi (default). 9 chunks = 273
frames (the chunk count must be odd: the causal VAE decodes only odd latent lengths).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import cofi
from cofi import video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt")
    ap.add_argument("--method", default="cofi", choices=video.METHODS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=9, help="latent chunks (odd); native uses 1")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance-scale", type=float, default=6.0)
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--max-batch", type=int, default=None, help="chunks per transformer call (default: all)")
    ap.add_argument("--model", default="THUDM/CogVideoX-2b")
    ap.add_argument("--out", type=Path, default=Path("out"))
    ap.add_argument("--fps", type=int, default=8)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("CogVideoX-2B needs a CUDA GPU (fp16); the tests cover the CPU path with a tiny model")

    from diffusers import CogVideoXPipeline

    pipe = CogVideoXPipeline.from_pretrained(args.model, torch_dtype=torch.float16).to("cuda")
    chunks = 1 if args.method == "native" else args.chunks
    frames = cofi.long_video(pipe, args.prompt, chunks=chunks, sampler=args.method, steps=args.steps,
                             generator=torch.Generator().manual_seed(args.seed),
                             negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale,
                             max_batch=args.max_batch, progress=True).best_frames
    stem = args.out / f"{args.method}-seed{args.seed}-{len(frames)}f"
    print("wrote", video.export_mp4(frames, stem.with_suffix(".mp4"), fps=args.fps))
    print("wrote", video.save_frame_grid(frames, stem.with_suffix(".png")))


if __name__ == "__main__":
    main()
