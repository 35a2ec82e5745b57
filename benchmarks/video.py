"""Paper Table 3: long videos from CogVideoX-2B, 8 prompts, per method (needs GPU + weights).

    python benchmarks/video.py                           # all prompts, all methods, seed 0
    python benchmarks/video.py --prompts panda,suv --methods cofi,gen-l-video --seeds 0,1

Protocol (Appendix B.4): CogVideoX-2B in fp16 at 480×720, 9 chunks of 13 latent frames with
overlap 6 (273 frames), CFG 6, 50 DDIM steps; methods: the native 49-frame clip, the native
model asked for 273 frames in one piece, Gen-L-Video (GSC, uniform blending), CDGS, CoFi
(`cofi.video.reference_sampler`). Every video is saved as MP4 and as a 5-frame grid
(frames 1, 69, 137, 205, 273) under --out, and the table is printed as markdown.

Metrics (VBench dimensions) from `cofi.metrics.video`: subject consistency (DINO), temporal
flickering, CLIP prompt alignment; the aesthetic column stays "n/a" (no LAION predictor yet).

Needs a CUDA GPU (~40 GB; --max-batch lowers it) and the THUDM/CogVideoX-2b weights
(downloaded from the Hugging Face hub on first use). Not run by the tests.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cofi import video

PROMPTS = {  # Appendix B.4, verbatim
    'suv': (
        'The camera follows behind a white vintage SUV with a black roof rack as it speeds up a '
        'steep dirt road surrounded by pine trees on a steep mountain slope, dust kicks up from '
        'its tires, the sunlight shines on the SUV as it speeds along the dirt road, casting a '
        'warm glow over the scene. The dirt road curves gently into the distance, with no other '
        'cars or vehicles in sight. The trees on either side of the road are redwoods, with '
        'patches of greenery scattered throughout. The car is seen from the rear following the '
        'curve with ease, making it seem as if it is on a rugged drive through the rugged '
        'terrain. The dirt road itself is surrounded by steep hills and mountains, with a clear '
        'blue sky above with wispy clouds.'
    ),
    'panda': (
        'A cute happy panda, dressed in a small, red jacket and a tiny hat, sits on a wooden '
        'stool in a serene bamboo forest. The panda’s fluffy paws strum a miniature acoustic '
        'guitar, producing soft, melodic tunes, move hands, singings. Nearby, a few other pandas '
        'gather, watching curiously and some clapping in rhythm. Sunlight filters through the '
        'tall bamboo, casting a gentle glow on the scene. The panda’s face is expressive, showing'
        ' concentration and joy as it plays. The background includes a small, flowing stream and '
        'vibrant green foliage, enhancing the peaceful and magical atmosphere of this unique '
        'musical performance.'
    ),
    'balloons': (
        'A group of colorful hot air balloons take off at dawn in Cappadocia, Turkey. Dozens of '
        'balloons in various bright colors and patterns slowly rise into the pink and orange sky.'
        ' Below them, the unique landscape of Cappadocia unfolds, with its distinctive ‘fairy '
        'chimneys’ – tall, cone-shaped rock formations scattered across the valley. The rising '
        'sun casts long shadows across the terrain, highlighting the otherworldly topography.'
    ),
    'toy-ship': (
        'A detailed wooden toy ship with intricately carved masts and sails is seen gliding '
        'smoothly over a plush, blue carpet that mimics the waves of the sea. The ship’s hull is '
        'painted a rich brown, with tiny windows. The carpet, soft and textured, provides a '
        'perfect backdrop, resembling an oceanic expanse. Surrounding the ship are various other '
        'toys and children’s items, hinting at a playful environment. The scene captures the '
        'innocence and imagination of childhood, with the toy ship’s journey symbolizing endless '
        'adventures in a whimsical, indoor setting.'
    ),
    'young-woman': (
        'A young woman with beautiful and clear eyes and blonde hair standing and white dress in '
        'a forest wearing a crown. She seems to be lost in thought, and the camera focuses on her'
        ' face. The video is of high quality, and the view is very clear. High quality, '
        'masterpiece, best quality, highres, ultra-detailed, fantastic.'
    ),
    'white-jeep': (
        'A woman walks away from a white Jeep parked on a city street at night, then ascends a '
        'staircase and knocks on a door. The woman, wearing a dark jacket and jeans, walks away '
        'from the Jeep parked on the left side of the street, her back to the camera; she walks '
        'at a steady pace, her arms swinging slightly by her sides; the street is dimly lit, with'
        ' streetlights casting pools of light on the wet pavement; the camera follows the woman '
        'from behind as she walks up a set of stairs towards a building with a green door; she '
        'reaches the top of the stairs and turns left, continuing to walk towards the building; '
        'she reaches the door and knocks on it with her right hand.'
    ),
    'F-150': (
        'At sunset, a modified Ford F-150 Raptor roared past on the off-road track. The raised '
        'suspension allowed the huge explosion-proof tires to flip freely on the mud, and the mud'
        ' splashed on the roll cage.'
    ),
    'baking-cake': (
        'A cat and a dog baking a cake together in a kitchen. The cat is carefully measuring '
        'flour, while the dog is stirring the batter with a wooden spoon. The kitchen is cozy, '
        'with sunlight streaming through the window.'
    ),
}

METHODS = ("native", "native-273", "gen-l-video", "cdgs", "cofi")


_SCORERS: dict = {}


def _scorers(device):
    """DINO ViT-B/16 and CLIP ViT-B/32 from the hub, loaded once."""
    if not _SCORERS:
        from cofi.metrics.image import CLIPScorer
        from cofi.metrics.video import DINOEncoder

        _SCORERS["dino"] = DINOEncoder.from_pretrained("facebook/dino-vitb16", device=device)
        _SCORERS["clip"] = CLIPScorer.from_pretrained("openai/clip-vit-base-patch32", device=device)
    return _SCORERS


def metrics(frames: np.ndarray, prompt: str, device="cuda") -> dict[str, float]:
    """VBench subject consistency and temporal flickering, CLIP prompt alignment (aesthetic: n/a)."""
    from cofi.metrics import video as vm

    sc = _scorers(device)
    return {"subject": 100 * vm.subject_consistency(frames, sc["dino"]),
            "flicker": 100 * vm.temporal_flickering(frames),
            "aesthetic": float("nan"),  # the LAION aesthetic predictor is not implemented
            "prompt": vm.clip_alignment(frames, prompt, sc["clip"])}


def generate(pipe, method: str, prompt: str, seed: int, chunks: int, steps: int, max_batch) -> tuple[np.ndarray, int]:
    """Frames and NFE of one video."""
    g = torch.Generator().manual_seed(seed)
    if method == "native-273":  # the base model asked for the whole length in one chunk
        frames = pipe(prompt, num_frames=video.frames_for_latents(video.latent_frames(chunks)),
                      num_inference_steps=steps, guidance_scale=6.0, generator=g, output_type="np").frames[0]
        return (frames * 255).round().astype(np.uint8), steps
    n = 1 if method == "native" else chunks
    out = video.compose_video(pipe, prompt, chunks=n, sampler=video.reference_sampler(method, steps),
                              blend=video.reference_blend(method), generator=g, max_batch=max_batch)
    return video.decode(pipe.vae, out.best_canvas), out.nfe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", default=",".join(PROMPTS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--chunks", type=int, default=9)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-batch", type=int, default=None)
    ap.add_argument("--model", default="THUDM/CogVideoX-2b")
    ap.add_argument("--out", type=Path, default=Path("out/video"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/video.py needs a CUDA GPU and the CogVideoX-2b weights")
    from diffusers import CogVideoXPipeline

    pipe = CogVideoXPipeline.from_pretrained(args.model, torch_dtype=torch.float16).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    rows: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        for name in args.prompts.split(","):
            for seed in map(int, args.seeds.split(",")):
                t0 = time.perf_counter()
                frames, nfe = generate(pipe, method, PROMPTS[name], seed, args.chunks, args.steps, args.max_batch)
                m = metrics(frames, PROMPTS[name]) | {"nfe": nfe, "s": time.perf_counter() - t0}
                rows.setdefault(method, []).append(m)
                stem = args.out / method / f"{name}-seed{seed}"
                video.export_mp4(frames, stem.with_suffix(".mp4"))
                video.save_frame_grid(frames, stem.with_suffix(".png"))
                print(f"{method:12s} {name:12s} seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    print("\n| method | subject ↑ | flickering ↑ | aesthetic ↑ | prompt ↑ | NFE | s/video |")
    print("|---|---|---|---|---|---|---|")
    for method, rs in rows.items():
        mean = {k: float(np.nanmean([r[k] for r in rs])) if any(r[k] == r[k] for r in rs) else float("nan")
                for k in rs[0]}
        cells = ["n/a" if v != v else f"{v:.2f}" for v in (mean["subject"], mean["flicker"], mean["aesthetic"],
                                                            mean["prompt"])]
        print(f"| {method} | " + " | ".join(cells) + f" | {mean['nfe']:.0f} | {mean['s']:.0f} |")


if __name__ == "__main__":
    main()
