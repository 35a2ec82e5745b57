"""Long videos from CogVideoX by composing overlapping latent chunks (DESIGN §2, "Long video").

    import cofi, torch
    from diffusers import CogVideoXPipeline
    pipe = CogVideoXPipeline.from_pretrained("THUDM/CogVideoX-2b", torch_dtype=torch.float16).to("cuda")
    frames = cofi.long_video(pipe, "A cute happy panda ...", chunks=9,
                             generator=torch.Generator().manual_seed(0))   # (273, 480, 720, 3) uint8
    cofi.video.export_mp4(frames, "panda.mp4"); cofi.video.save_frame_grid(frames, "panda.png")

The latent canvas has ``L = 13 + 7·(chunks − 1)`` latent frames (chunks of 13, overlap 6);
the causal VAE decodes it once into ``4L − 3`` frames (9 chunks: 69 → 273 frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .compose import Composition, compose
from .layout import Blend, Chain
from .presets import Preset, factory, resolve
from .samplers import CDGS, GSC, CoFi

__all__ = [
    "METHODS", "PRESETS", "reference_sampler", "reference_blend", "video_layout", "latent_frames",
    "frames_for_latents", "chunks_for_frames", "check_decodable", "decode", "export_mp4",
    "save_frame_grid", "grid_indices", "compose_video", "long_video", "VideoOutput",
]

WINDOW, OVERLAP = 13, 6  # CogVideoX-2B: 13 latent frames per chunk, stride 7
# ------------------------------------------------------------------ methods
#: The paper's long-video comparison (Table 3), the default first.
PRESETS: dict[str, Preset] = {
    "cofi": Preset(factory(CoFi, eta=0.0, lam0=0.8, schedule="linear", direction="fused", refine_at=0.2,
                           refine_eta=1.0, fusion=True, refine_noise="shared"), CoFi, None, "ramp",
                   "the authors' video loop (DESIGN §2): deterministic coarse DDIM keeping the fused ε̂ as its "
                   "direction, λ0 = 0.8 linear, ramp fusion; canvas renoise at ⌊0.2 K⌋ (10 of 50); DDIM η = 1 "
                   "refinement with shared noise"),
    "native": Preset(factory(GSC), GSC, None, "ramp", "CogVideoX on one chunk, plain DDIM (η = 0): the pipeline itself"),
    "gen-l-video": Preset(factory(GSC), GSC, None, "uniform", "GSC with uniform fusion of x̂ at every step (Wang et al. 2023)"),
    "cdgs": Preset(factory(CDGS, inner=4, prune_at=0.0), CDGS, None, "ramp",
                   "CDGS with U = 4 inner iterations, no pruning (a population of one)"),
}
METHODS = tuple(PRESETS)


def reference_sampler(method: str = "cofi", steps: int = 50) -> GSC | CoFi | CDGS:
    """The sampler of each method in the paper's long-video comparison (Table 3); see
    ``PRESETS[method].doc`` for where each value comes from.

    - ``cofi``: the authors' loop (DESIGN §2, "Long video"). Coarse stage over all K steps,
      deterministic (η = 0): fuse x̂ and ε̂ (ramp), shrink x̂ with λ0 = 0.8 on a linear ramp to
      1, step ``√ᾱ_s x̃ + √(1−ᾱ_s) ε̄`` with the fused ε̂ (``direction="fused"``). The merged
      scaffold is renoised at grid step ⌊0.2 K⌋ (10 of 50); refinement is DDIM η = 1 with
      noise drawn on the canvas (σ = 0 on the last step).
    - ``native``: CogVideoX on one chunk, plain DDIM (η = 0), exactly the pipeline.
    - ``gen-l-video``: GSC, fusion of x̂ on the shared canvas at every step (with uniform
      blending, Wang et al. 2023).
    - ``cdgs``: CDGS with U = 4 inner iterations, no pruning (a population of one).
    """
    return resolve(PRESETS, method, steps=steps).sampler


def reference_blend(method: str = "cofi") -> Blend:
    """Overlap blending of each method: uniform for Gen-L-Video, ramp (eq. 28) otherwise."""
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[method].blend


def video_layout(chunks: int = 9, window: int = WINDOW, overlap: int = OVERLAP, blend: Blend = "ramp") -> Chain:
    """The chain of ``chunks`` latent chunks along the frame axis (axis 0 of ``(F, C, h, w)``)."""
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be an int >= 1, got {chunks!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < window:
        raise ValueError(f"overlap must be an int in [0, {window - 1}] (less than the chunk's "
                         f"{window} latent frames), got {overlap!r}")
    return Chain(window=window, overlap=overlap, count=chunks, axis=0, blend=blend)


# ------------------------------------------------------------------ frame counts
def latent_frames(chunks: int, window: int = WINDOW, overlap: int = OVERLAP) -> int:
    """Latent frames L of the canvas: ``window + (chunks − 1)·(window − overlap)``."""
    return video_layout(chunks, window, overlap).length


def frames_for_latents(latents: int) -> int:
    """Video frames of L latent frames through the causal VAE (×4 in time): ``4L − 3``."""
    return 4 * latents - 3


def check_decodable(latents: int, vae=None) -> None:
    """Raise ValueError unless the causal VAE decodes ``latents`` frames into ``4L − 3``.

    The CogVideoX VAE decodes frame batches of ``num_latent_frames_batch_size`` (2); the
    first batch takes the remainder and keeps its first frame un-interpolated only when
    its length is odd, so ``4L − 3`` frames need ``2 + L mod 2`` odd, i.e. L odd.
    """
    b = getattr(vae, "num_latent_frames_batch_size", 2) if vae is not None else 2
    first = latents if latents < b else b + latents % b
    if not isinstance(latents, int) or latents < 1 or first % 2 == 0:
        raise ValueError(
            f"the causal VAE cannot decode {latents} latent frames into 4L-3 frames: L must be odd "
            f"(with stride 7 use an odd number of chunks, e.g. 9 chunks = 69 latent frames = 273 frames)")


def chunks_for_frames(frames: int, window: int = WINDOW, overlap: int = OVERLAP) -> int:
    """Chunks whose composition decodes to exactly ``frames`` video frames (273 → 9)."""
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 4L - 3 for a latent length L (1, 5, 9, ..., 273), got {frames!r}")
    L = (frames + 3) // 4
    stride = window - overlap
    if L < window or (L - window) % stride:
        raise ValueError(f"{frames} frames = {L} latent frames is not {window} + k*{stride} "
                         f"(chunks of {window} latent frames, overlap {overlap})")
    check_decodable(L)
    return 1 + (L - window) // stride


# ------------------------------------------------------------------ decoding and export
@torch.no_grad()
def decode(vae, latents: Tensor, *, scaling_factor: float | None = None, tiling: bool = True) -> np.ndarray:
    """Decode a latent video once with the causal VAE, as `CogVideoXPipeline` does: its
    ``decode_latents`` then ``video_processor.postprocess_video`` (a `CogVideoXPipeline` is
    built around ``vae`` alone for this), the frames quantised as diffusers'
    ``numpy_to_pil`` does.

    Frames stream through the VAE in small temporal batches with a causal conv cache, and
    ``tiling`` (``vae.enable_tiling()``, restored afterwards) bounds the spatial memory, so 273
    frames at 480×720 fit like 49 do. Post-processing runs in float32 whatever the VAE dtype.

    Args:
        vae: the pipeline's `AutoencoderKLCogVideoX`.
        latents: ``(L, C, h, w)`` or ``(1, L, C, h, w)``, diffusers' latents layout; L odd.
        scaling_factor: latent scaling (default ``vae.config.scaling_factor``).
        tiling: decode with diffusers' spatial tiling.
    Returns:
        uint8 frames ``(4L − 3, H, W, 3)``.
    """
    from diffusers import CogVideoXPipeline

    z = latents if latents.ndim == 5 else latents.unsqueeze(0)
    if z.ndim != 5 or z.shape[0] != 1:
        raise ValueError(f"latents must be (L, C, h, w) or (1, L, C, h, w), got {tuple(latents.shape)}")
    L, C = z.shape[1], z.shape[2]
    if C != vae.config.latent_channels:
        raise ValueError(f"latents have {C} channels on dim -3, the VAE expects {vae.config.latent_channels}")
    check_decodable(L, vae)
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=None, scheduler=None)
    if scaling_factor is not None:
        pipe.vae_scaling_factor_image = scaling_factor
    was_tiling = getattr(vae, "use_tiling", False)
    vae.enable_tiling() if tiling else vae.disable_tiling()
    try:
        video = pipe.decode_latents(z.to(vae.device, vae.dtype))  # (1, 3, F, H, W) in [-1, 1]
    finally:
        vae.enable_tiling() if was_tiling else vae.disable_tiling()
    if video.shape[2] != frames_for_latents(L):
        raise RuntimeError(f"the VAE returned {video.shape[2]} frames for {L} latents, expected {frames_for_latents(L)}")
    frames = pipe.video_processor.postprocess_video(video.float(), output_type="np")[0]  # (F, H, W, 3) in [0, 1]
    return (frames * 255).round().astype(np.uint8)


def export_mp4(frames: np.ndarray, path: str | Path, fps: int = 8, quality: int = 8) -> Path:
    """Write frames to an MP4 with diffusers' `export_to_video` (imageio-ffmpeg: H.264,
    yuv420p; CogVideoX: 8 fps). The frames are handed over as PIL images, so the uint8 values
    reach the encoder unchanged (its float path would rescale them).

    Args:
        frames: uint8 ``(F, H, W, 3)``, e.g. from `decode`.
        path: the ``.mp4`` to write (parent folders are created).
        fps: frames per second.
        quality: imageio's variable-bitrate quality, 0–10.
    Returns:
        ``path`` as a `Path`.
    """
    from diffusers.utils import export_to_video
    from PIL import Image

    _check_frames(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_to_video([Image.fromarray(f) for f in frames], str(path), fps=fps, quality=quality, macro_block_size=1)
    return path


def grid_indices(num_frames: int, count: int = 5) -> list[int]:
    """``count`` evenly spaced 0-based frame indices including the first and the last
    (273 frames, 5 → frames 1, 69, 137, 205, 273 in the paper's 1-based numbering)."""
    if count < 1 or num_frames < 1:
        raise ValueError(f"count and num_frames must be >= 1, got {count}, {num_frames}")
    if count == 1:
        return [0]
    return [round(i * (num_frames - 1) / (count - 1)) for i in range(count)]


def save_frame_grid(frames: np.ndarray, path: str | Path, indices: Sequence[int] | None = None,
                    count: int = 5, gap: int = 4) -> Path:
    """Save selected frames side by side as one PNG (the paper's Fig. 15 strip)."""
    from PIL import Image

    _check_frames(frames)
    idx = list(indices) if indices is not None else grid_indices(len(frames), count)
    if any(not 0 <= i < len(frames) for i in idx):
        raise ValueError(f"indices must lie in [0, {len(frames) - 1}], got {idx}")
    H, W = frames.shape[1:3]
    strip = np.full((H, len(idx) * W + (len(idx) - 1) * gap, 3), 255, dtype=np.uint8)
    for j, i in enumerate(idx):
        strip[:, j * (W + gap): j * (W + gap) + W] = frames[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).save(path)
    return path


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        got = (frames.dtype, frames.shape) if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 array (F, H, W, 3), got {got}")


# ------------------------------------------------------------------ one-liners
def compose_video(
    pipe,
    prompt: str,
    *,
    chunks: int = 9,
    sampler: GSC | CoFi | CDGS | str | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    negative_prompt: str = "",
    guidance_scale: float = 6.0,
    height: int = 480,
    width: int = 720,
    overlap: int = OVERLAP,
    blend: Blend | None = None,
    batch: int = 1,
    max_batch: int | None = 2,
    progress: bool = True,
    callback=None,
    x_T: Tensor | None = None,
    steps: int | None = None,
    group=None,
    **overrides,
) -> Composition:
    """Compose the latent video (no decoding): ``Composition.canvas`` is ``(B, L, C, h, w)``,
    diffusers' latents layout. Arguments as in `long_video`."""
    from .priors.cogvideox import CogVideoXPrior

    r = resolve(PRESETS, sampler, steps=steps, blend=blend, **overrides)
    if r.method == "native" and isinstance(sampler, str) and chunks != 1:
        raise ValueError(f"method 'native' is one CogVideoX clip: chunks must be 1, got {chunks}")
    cfg = pipe.transformer.config
    window = (cfg.sample_frames - 1) // pipe.vae_scale_factor_temporal + 1
    layout = video_layout(chunks, window, overlap, r.blend)
    check_decodable(layout.length, pipe.vae)  # fail before sampling, not after
    prior = CogVideoXPrior.from_pipe(pipe, prompt, negative_prompt, guidance_scale, frames=window,
                                     height=height, width=width)
    return compose(prior, layout, r.sampler, batch=batch, generator=generator, max_batch=max_batch,
                   progress=progress, callback=callback, x_T=x_T, group=group)


@dataclass
class VideoOutput(Composition):
    """What `long_video` returns: the `cofi.Composition` of the latent video (chunks, NFE,
    disagreement, ``best``, CoFi's scaffold) with the decoded candidates.

    Attributes:
        frames: the B candidates: uint8 ``(B, 4L − 3, H, W, 3)`` (``output_type="np"``) or the
            latent canvas ``(B, L, C, h, w)`` (``"latent"``).
    """

    frames: np.ndarray | Tensor | None = None

    @property
    def best_frames(self):
        """``frames[best]``: one video."""
        return self.frames[self.best]


def long_video(
    pipe,
    prompt: str,
    chunks: int = 9,
    sampler: GSC | CoFi | CDGS | str | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    negative_prompt: str = "",
    guidance_scale: float = 6.0,
    height: int = 480,
    width: int = 720,
    progress: bool = True,
    *,
    overlap: int = OVERLAP,
    blend: Blend | None = None,
    batch: int = 1,
    max_batch: int | None = 2,
    callback=None,
    x_T: Tensor | None = None,
    steps: int | None = None,
    group=None,
    output_type: str = "np",
    **overrides,
) -> VideoOutput:
    """A long video from a `CogVideoXPipeline`: compose ``chunks`` latent chunks, decode once.

    Args:
        pipe: a diffusers `CogVideoXPipeline` (CogVideoX-2B: fp16 on CUDA recommended).
        prompt: the text prompt; ``negative_prompt`` and ``guidance_scale`` as in the pipeline.
        chunks: latent chunks N (9 → 69 latent frames → 273 frames); must make L odd.
        sampler: a method name from `METHODS` (its preset and blend), a config (`cofi.CoFi`,
            `cofi.GSC`, `cofi.CDGS`, or any sampler object), or None for ``"cofi"``.
        generator: the only source of randomness; the video is a function of its seed.
        height, width: video size (multiples of 16).
        progress: tqdm bars per sampler stage.
        overlap: latent frames shared by adjacent chunks (6; stride 7).
        blend: overlap blending (default: ``uniform`` for ``"gen-l-video"``, else ``ramp``).
        batch: candidates B, composed together (each is decoded).
        max_batch: most chunks per transformer call (each runs both CFG branches, so 2 chunks
            are a batch of 4 sequences of ~17.8k tokens for CogVideoX-2B at 480×720); None: all
            at once (a 9-chunk composition: 18 sequences in one call). Does not change the result.
        callback: read-only ``callback(dict)`` after every step (see `cofi.compose`).
        x_T: initial latents, a canvas ``(B, L, C, h, w)`` or chunks.
        steps: sampling steps (None: the preset's 50, or the config's own).
        group: a ``torch.distributed`` process group: the windows are spread over its ranks
            (`cofi.compose`, docs/distributed.md); every rank gets the whole result.
        output_type: ``"np"`` (uint8 frames) or ``"latent"`` (the canvas, no decoding).
        **overrides: sampler fields to change, e.g. ``lam0=0.5``, ``refine_at=0.3``.
    Returns:
        `VideoOutput`: the composition with every candidate decoded (``.frames``) and the index
        of the best (``.best``, ``.best_frames``).
    """
    if output_type not in ("np", "latent"):
        raise ValueError(f"output_type must be 'np' or 'latent', got {output_type!r}")
    out = compose_video(pipe, prompt, chunks=chunks, sampler=sampler, generator=generator,
                        negative_prompt=negative_prompt, guidance_scale=guidance_scale, height=height,
                        width=width, overlap=overlap, blend=blend, batch=batch, max_batch=max_batch,
                        progress=progress, callback=callback, x_T=x_T, steps=steps, group=group, **overrides)
    frames = out.canvas if output_type == "latent" else np.stack([decode(pipe.vae, c) for c in out.canvas])
    return VideoOutput(**vars(out), frames=frames)
