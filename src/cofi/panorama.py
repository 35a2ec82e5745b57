"""Panoramas from Stable Diffusion by composing overlapping latent windows (DESIGN §2, "Panorama").

    import cofi, torch
    from diffusers import StableDiffusionPanoramaPipeline, DDIMScheduler
    pipe = StableDiffusionPanoramaPipeline.from_pretrained(
        "stabilityai/stable-diffusion-2-base", torch_dtype=torch.float16).to("cuda")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    images = cofi.panorama(pipe, "A photo of the dolomites", width=2048, sampler="cofi",
                           generator=torch.Generator().manual_seed(0))   # [PIL.Image 2048×512]

The latent canvas ``(B, 4, H/8, W/8)`` is a chain of ``(4, H/8, 64)`` windows along the
width (``axis=2``), ``stride`` latent columns apart (``overlap = 64 − stride``); it is
decoded by the VAE in overlapping width tiles, so decoder memory does not grow with W.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .compose import Composition, compose
from .layout import Blend, Chain, Grid
from .presets import Preset, factory, resolve
from .samplers import CDGS, GSC, CoFi
from .samplers.syncdiffusion import SyncDiffusion

__all__ = [
    "METHODS", "PRESETS", "PAPER_SIZES", "WINDOW", "reference_sampler", "reference_stride", "reference_blend",
    "windows_for_width", "panorama_layout", "decode", "to_pil", "compose_panorama", "panorama", "PanoramaOutput",
]

WINDOW = 64  # SD 2.0 base: 512 px = 64 latent columns per window
PAPER_SIZES = ((512, 2048), (512, 4608))  # (height, width) of the paper's panoramas
Sampler = GSC | CoFi | CDGS | SyncDiffusion


# ------------------------------------------------------------------ methods
def _syncdiffusion(steps: int | None = None, **kw) -> SyncDiffusion:
    steps = 50 if steps is None else steps
    return SyncDiffusion(**{**dict(steps=steps, sync_steps=max(1, round(steps / 5))), **kw})


#: The paper's panorama comparison (Table 2), the default first. Strides are fractions of the
#: window (the UNet's ``sample_size``: 64 latents for SD 2-base, 96 for SD 2): 1/2 is 32 of 64.
PRESETS: dict[str, Preset] = {
    "cofi": Preset(factory(CoFi, lam0=0.8, schedule="linear", refine_at=0.3, refine_eta=1.0, fusion=True,
                           coarse_update="renoise", noise="blend", refine_noise="shared"), CoFi, 1 / 2, "ramp",
                   "the authors' panorama loop (DESIGN §2): coarse x̃ re-noised to the next level with blended "
                   "noise, λ0 = 0.8 linear, ramp fusion; canvas renoise at ⌊0.3 K⌋ (15 of 50); DDIM η = 1 "
                   "refinement with shared noise"),
    "multidiffusion": Preset(factory(GSC), GSC, 1 / 8, "uniform",
                             "GSC, DDIM η = 0, uniform fusion at stride 8 (diffusers' panorama pipeline)"),
    "syncdiffusion": Preset(_syncdiffusion, SyncDiffusion, 1 / 4, "uniform",
                            "MultiDiffusion + LPIPS gradient to the middle window, weight 20 ×0.95 per step, "
                            "first K/5 steps, stride 16 (public code); needs lpips="),
    "cdgs": Preset(factory(CDGS, inner=4, prune_at=0.0), CDGS, 1 / 2, "ramp",
                   "CDGS with U = 4 inner iterations, no pruning (a population of one)"),
}
METHODS = tuple(PRESETS)


def reference_sampler(method: str = "cofi", steps: int = 50, lpips=None) -> Sampler:
    """The sampler of each method in the paper's panorama comparison (Table 2); see `METHODS`
    and ``PRESETS[method].doc`` for where each value comes from.

    - ``cofi``: the authors' loop (DESIGN §2, "Panorama"). Coarse stage over all K steps:
      fuse x̂ (ramp), shrink with λ0 = 0.8 on a linear ramp to 1, re-noise x̃ straight to the
      next level with a blended unit-variance noise (``coarse_update="renoise"``,
      ``noise="blend"``). The merged scaffold is renoised at grid step ⌊0.3 K⌋ (15 of 50)
      with one canvas draw; refinement is DDIM η = 1 with noise drawn on the canvas.
    - ``multidiffusion``: GSC, DDIM η = 0, x̂ averaged uniformly over the windows at every
      step (Bar-Tal et al. 2023; diffusers' `StableDiffusionPanoramaPipeline`).
    - ``syncdiffusion``: MultiDiffusion + LPIPS gradient toward the middle window, weight
      20 decaying ×0.95 per step, the first 10 of 50 steps (public defaults); needs ``lpips``.
    - ``cdgs``: CDGS with U = 4 inner iterations and no pruning (a population of one).
    """
    return resolve(PRESETS, method, steps=steps, **({"lpips": lpips} if method == "syncdiffusion" else {})).sampler


def _preset(method: str) -> Preset:
    if method not in PRESETS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[method]


def reference_stride(method: str = "cofi", window: int = WINDOW) -> int:
    """Window stride in latent columns for a ``window``-latent UNet: MultiDiffusion 1/8 of the
    window (8 of SD 2-base's 64, as diffusers), SyncDiffusion 1/4 (16, its public code), CDGS and
    CoFi 1/2 (32: overlap 32, the CoFi authors' setting)."""
    return max(1, round(_preset(method).stride * window))


def reference_blend(method: str = "cofi") -> Blend:
    """Overlap blending: uniform for MultiDiffusion and SyncDiffusion, ramp (eq. 27) otherwise."""
    return _preset(method).blend


# ------------------------------------------------------------------ geometry
def _check_size(name: str, px: int, factor: int) -> int:
    if not isinstance(px, int) or px <= 0 or px % factor:
        raise ValueError(f"{name} must be a positive multiple of {factor} px (the VAE factor), got {px!r}")
    return px // factor


def windows_for_width(width: int, stride: int = 32, window: int = WINDOW, vae_scale_factor: int = 8,
                      name: str = "width") -> int:
    """Windows N covering a panorama ``width`` px wide: ``W/8 = window + (N − 1)·stride``
    (2048 px: 7 windows at stride 32, 25 at stride 8; 4608 px: 17 and 65). ``name`` says which
    side is measured (``"height"`` for tall images) in error messages."""
    w = _check_size(name, width, vae_scale_factor)
    if not isinstance(stride, int) or not 1 <= stride <= window:
        raise ValueError(f"stride must be an int in [1, {window}] latent columns (window {window}), got {stride!r}")
    if w < window:
        raise ValueError(f"{name} {width} px is smaller than one window ({window * vae_scale_factor} px)")
    if (w - window) % stride:
        lo = window + (w - window) // stride * stride
        raise ValueError(
            f"{name} {width} px = {w} latent positions is not {window} + k·{stride} (window + k·stride); "
            f"nearest valid {name}s: {lo * vae_scale_factor} or {(lo + stride) * vae_scale_factor} px")
    return 1 + (w - window) // stride


def panorama_layout(width: int, stride: int = 32, window: int = WINDOW, blend: Blend = "ramp",
                    vae_scale_factor: int = 8, axis: int = 2) -> Chain:
    """The chain of latent windows along the width (axis 2 of ``(C, h, w)``), or along the
    height for tall images (``axis=1``; ``width`` is then the height in px)."""
    count = windows_for_width(width, stride, window, vae_scale_factor, "width" if axis == 2 else "height")
    return Chain(window=window, overlap=window - stride, count=count, axis=axis, blend=blend)


# ------------------------------------------------------------------ decoding
def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    n = 1 + math.ceil((length - tile) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


@torch.no_grad()
def decode(vae, latents: Tensor, *, tile: int = WINDOW, tile_overlap: int | None = None,
           scaling_factor: float | None = None) -> Tensor:
    """Decode a latent panorama with the VAE in width tiles, each post-processed by diffusers'
    `VaeImageProcessor` (the pipelines' ``image_processor.postprocess``).

    The VAE sees one ``(C, h, tile)`` latent tile at a time; adjacent tiles share at least
    ``tile_overlap`` latent columns and are cross-faded with linear ramps in pixel space, so
    decoder memory is that of one window whatever the width. A canvas no wider than ``tile``
    is decoded in one call, exactly as the pipelines do (``vae.decode(latents / scaling_factor)``,
    then ``postprocess(..., output_type="pt")``).

    Why not ``vae.enable_tiling()``: its memory bound is the same (one tile), but its
    `AutoencoderKL.tiled_decode` tiles the height as well, starting a new tile row every
    ``0.75 · tile_latent_min_size`` rows even when the whole height already fits one tile (a
    64-row SD canvas with 64-row tiles gets a second row of 16-row slivers), ends each row with
    a partial tile of few columns, and takes its tile size from the VAE config rather than the
    panorama window. Width-only tiles of the full window keep every tile at the UNet's native
    size with the whole height in one pass, and fewer decoder calls.

    Args:
        vae: the pipeline's `AutoencoderKL`.
        latents: the canvas ``(B, C, h, W)``.
        tile: latent columns per tile (``cofi.panorama`` passes the UNet's ``sample_size``, 64).
        tile_overlap: least latent columns shared by adjacent tiles (default ``tile // 4``: 16 for SD).
        scaling_factor: latent scaling (default ``vae.config.scaling_factor``).
    Returns:
        Images ``(B, 3, 8h, 8W)`` in [0, 1], float32 on the CPU.
    """
    from diffusers.image_processor import VaeImageProcessor

    if latents.ndim != 4 or latents.shape[1] != vae.config.latent_channels:
        raise ValueError(f"latents must be (B, {vae.config.latent_channels}, h, w), got {tuple(latents.shape)}")
    tile_overlap = tile // 4 if tile_overlap is None else tile_overlap
    if not 0 <= tile_overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile - 1] = [0, {tile - 1}], got {tile_overlap}")
    sf = scaling_factor if scaling_factor is not None else vae.config.scaling_factor
    processor = VaeImageProcessor(vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))
    W = latents.shape[-1]
    starts = _tile_starts(W, tile, tile_overlap)
    num = den = None
    for i, s in enumerate(starts):
        z = latents[..., s : s + tile].to(vae.device, vae.dtype) / sf
        img = processor.postprocess(vae.decode(z, return_dict=False)[0].float().cpu(), output_type="pt")
        if len(starts) == 1:
            return img
        f = img.shape[-1] // z.shape[-1]  # pixels per latent column
        if num is None:
            num = img.new_zeros(*img.shape[:-1], W * f)
            den = img.new_zeros(W * f)
        # ramps over the overlap with each neighbour; flat at the canvas edges
        x = torch.arange(img.shape[-1], dtype=torch.float32)
        w = torch.ones_like(x)
        if i > 0:
            w = torch.minimum(w, (x + 1) / ((starts[i - 1] + tile - s) * f + 1))
        if i + 1 < len(starts):
            w = torch.minimum(w, (img.shape[-1] - x) / ((s + tile - starts[i + 1]) * f + 1))
        num[..., s * f : s * f + img.shape[-1]] += img * w
        den[s * f : s * f + img.shape[-1]] += w
    return num / den


def to_pil(images: Tensor) -> list:
    """Images in [0, 1] to PIL by diffusers' `VaeImageProcessor.postprocess(..., output_type="pil")`
    (the pipelines' last step; values are clamped to [0, 1] first and not denormalised again).

    Args:
        images: ``(B, 3, H, W)`` in [0, 1], e.g. from `decode`.
    Returns:
        A list of B RGB `PIL.Image`.
    """
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(do_normalize=False).postprocess(images.detach().float().clamp(0, 1), output_type="pil")


# ------------------------------------------------------------------ one-liners
def compose_panorama(
    pipe,
    prompt: str | Sequence[str],
    *,
    height: int | None = None,
    width: int | None = None,
    sampler: Sampler | str | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    negative_prompt: str | Sequence[str] = "",
    guidance_scale: float = 7.5,
    stride: int | None = None,
    blend: Blend | None = None,
    batch: int = 1,
    max_batch: int | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
    x_T: Tensor | None = None,
    steps: int | None = None,
    group=None,
    **overrides,
) -> Composition:
    """Compose the latent panorama (no decoding): ``Composition.canvas`` is ``(B, 4, H/8, W/8)``,
    diffusers' latents layout. Arguments as in `panorama`."""
    from .priors.stable_diffusion import StableDiffusionPrior

    if not (isinstance(guidance_scale, (int, float)) and not isinstance(guidance_scale, bool)
            and math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (classifier-free guidance), got {guidance_scale!r}")
    r = resolve(PRESETS, sampler, steps=steps, stride=stride, blend=blend, **overrides)
    vsf = pipe.vae_scale_factor
    window = pipe.unet.config.sample_size
    window = window[-1] if isinstance(window, (list, tuple)) else int(window)
    sampler, blend = r.sampler, r.blend
    stride = r.stride if isinstance(r.stride, int) else max(1, round(r.stride * window))  # a preset's fraction
    height = window * vsf if height is None else height  # the model's native resolution
    width = 4 * window * vsf if width is None else width  # the paper's 1:4 panoramas
    h = _check_size("height", height, vsf)
    tall = h > window  # more than one window along the height
    wide = _check_size("width", width, vsf) > window or not tall  # along the width (a short image: always)
    if tall and wide:  # a 2-D grid of windows, the same stride on both axes
        layout = Grid((panorama_layout(height, stride, window, blend, vsf, axis=1),
                       panorama_layout(width, stride, window, blend, vsf, axis=2)))
    elif tall:  # a vertical chain
        layout = panorama_layout(height, stride, window, blend, vsf, axis=1)
    else:
        layout = panorama_layout(width, stride, window, blend, vsf)
    n_prompts = 1 if isinstance(prompt, str) else len(list(prompt))
    if n_prompts != 1 and n_prompts != layout.count:  # fail before encoding anything
        raise ValueError(f"got {n_prompts} prompts but a {height} × {width} px panorama at stride {stride} has "
                         f"{layout.count} windows: pass one prompt, or exactly one per window")
    prior = StableDiffusionPrior.from_pipe(pipe, prompt, negative_prompt, guidance_scale,
                                           height=window * vsf if tall else height,
                                           width=window * vsf if wide else width)
    prior.check_layout(layout)
    return compose(prior, layout, sampler, batch=batch, generator=generator, max_batch=max_batch,
                   progress=progress, callback=callback, x_T=x_T, group=group)


@dataclass
class PanoramaOutput(Composition):
    """What `panorama` returns: the `cofi.Composition` of the latent canvas (plans, NFE,
    disagreement, ``best``, CoFi's scaffold) with the decoded candidates.

    Attributes:
        images: the B candidates: a list of `PIL.Image` (``output_type="pil"``), a tensor
            ``(B, 3, H, W)`` in [0, 1] (``"pt"``) or the latent canvas ``(B, 4, H/8, W/8)`` (``"latent"``).
    """

    images: list | Tensor | None = None

    @property
    def best_image(self):
        """``images[best]``."""
        return self.images[self.best]


def panorama(
    pipe,
    prompt: str | Sequence[str],
    height: int | None = None,
    width: int | None = None,
    sampler: Sampler | str | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    negative_prompt: str | Sequence[str] = "",
    guidance_scale: float = 7.5,
    stride: int | None = None,
    progress: bool = True,
    *,
    blend: Blend | None = None,
    batch: int = 1,
    max_batch: int | None = None,
    callback: Callable[[dict], None] | None = None,
    x_T: Tensor | None = None,
    steps: int | None = None,
    group=None,
    output_type: str = "pil",
    **overrides,
) -> PanoramaOutput:
    """A ``height × width`` panorama from a Stable Diffusion pipeline.

    Args:
        pipe: a diffusers SD pipeline (e.g. `StableDiffusionPanoramaPipeline` of
            stabilityai/stable-diffusion-2-base, fp16 on CUDA) or any object with ``unet``,
            ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` and ``vae_scale_factor``.
            Only ``scheduler.alphas_cumprod`` and its config are used: cofi runs its own DDIM.
        prompt: the text prompt, or a list with one prompt per window.
        height, width: panorama size in px, multiples of 8; ``width/8 = window + k·stride`` with
            the UNet's window (``unet.config.sample_size``: 64 latents for SD 2-base, 96 for SD 2).
            None: the model's native height (512 / 768 px) and four times it as width.
        sampler: a method name from `METHODS` (its preset), a config (`cofi.CoFi`, `cofi.GSC`,
            `cofi.CDGS`, `SyncDiffusion`, or any sampler object), or None for ``"cofi"``. A
            config takes the stride and blend of its class's first preset (CoFi → ``cofi``,
            GSC → ``multidiffusion``), an unknown sampler class those of ``cofi``.
        generator: the only source of randomness; the result is a function of its seed.
        negative_prompt, guidance_scale: as in the pipeline (CFG 7.5).
        stride: window stride in latent columns (overlap = window − stride); default per method,
            a fraction of the window (`reference_stride`: 32 of 64 for CoFi on SD 2-base, 48 of 96 on SD 2).
        progress: tqdm bars per sampler stage.
        blend: overlap blending (`reference_blend` by default).
        batch: candidates B (one x_T each, all composed together).
        max_batch: most windows per UNet call (each runs both CFG branches); None: all.
        callback: read-only ``callback(dict)`` after every step (see `cofi.compose`).
        x_T: initial latents, a canvas ``(B, 4, H/8, W/8)`` or windows (like diffusers' ``latents=``).
        steps: sampling steps (None: the preset's 50, or the config's own).
        group: a ``torch.distributed`` process group: the windows are spread over its ranks
            (`cofi.compose`, docs/distributed.md); every rank gets the whole result.
        output_type: ``"pil"``, ``"pt"`` or ``"latent"`` (see `PanoramaOutput`).
        **overrides: sampler fields to change, e.g. ``lam0=0.5``, ``refine_at=0.2`` or, for
            ``"syncdiffusion"``, ``lpips=...`` (its perceptual distance).
    Returns:
        `PanoramaOutput`: the composition with every candidate decoded (``.images``) and the
        index of the best (``.best``, ``.best_image``).
    """
    if output_type not in ("pil", "pt", "latent"):
        raise ValueError(f"output_type must be 'pil', 'pt' or 'latent', got {output_type!r}")
    out = compose_panorama(pipe, prompt, height=height, width=width, sampler=sampler, generator=generator,
                           negative_prompt=negative_prompt, guidance_scale=guidance_scale, stride=stride,
                           blend=blend, batch=batch, max_batch=max_batch, progress=progress, callback=callback,
                           x_T=x_T, steps=steps, group=group, **overrides)
    images = out.canvas
    if output_type != "latent":
        images = decode(pipe.vae, out.canvas, tile=pipe.unet.config.sample_size)
        images = images if output_type == "pt" else to_pil(images)
    return PanoramaOutput(**vars(out), images=images)


class _CallableModule(types.ModuleType):
    """``cofi.panorama`` is both this module and the one-liner: importing the submodule binds
    the package attribute to the module, so the module itself forwards calls to `panorama`."""

    def __call__(self, *args, **kwargs):
        return panorama(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
