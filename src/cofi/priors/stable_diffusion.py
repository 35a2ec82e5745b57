"""Stable Diffusion latent windows as a LocalPrior (SD 2.0 base: 512×512 px = (4, 64, 64) latents).

A local plan is one latent window ``sample_shape = (C, h, w)`` in diffusers' layout, so a
panorama chains windows along the width, ``axis=2``, and a canvas ``(B, C, h, W)`` is
exactly the ``latents`` tensor of `StableDiffusionPanoramaPipeline` for a ``8h × 8W`` image.

``denoise`` runs the UNet once for all M windows and both classifier-free guidance branches
(a batch of 2M), combines the predictions in float32 and returns x̂ (``cofi.prior.to_x0``, for
epsilon and v-prediction schedulers) in the dtype of ``x_t``. The text is encoded once at
construction by diffusers' own ``pipe.encode_prompt``: one prompt for every window, or a list
with one prompt per window, selected by the ``window`` index that `cofi.compose` passes with
every call. CFG is `cofi.priors._cfg.cfg_combine`, the pipelines' formula; ``decode`` ends in
the pipeline's `VaeImageProcessor`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..prior import schedule_from_diffusers, to_x0
from ._cfg import cfg_combine

__all__ = ["StableDiffusionPrior", "encode_prompt"]


def _text_pipeline(pipe):
    """``pipe`` itself when it is a diffusers SD pipeline (it has ``encode_prompt``); otherwise a
    `StableDiffusionPipeline` over its ``text_encoder`` and ``tokenizer`` alone (no UNet, VAE or
    scheduler: building one over the caller's scheduler would let diffusers rewrite a legacy
    ``steps_offset``/``clip_sample`` in its config; no safety checker)."""
    if callable(getattr(pipe, "encode_prompt", None)):
        return pipe
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=None, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=None,
                                   scheduler=None, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@torch.no_grad()
def _encode(pipe, prompts: list[str]) -> Tensor:
    """``pipe.encode_prompt`` (diffusers) of P prompts, no CFG branch: ``(P, L, D)`` on the
    pipeline's execution device in the text encoder's dtype."""
    device = getattr(pipe, "_execution_device", None) or pipe.text_encoder.device
    return pipe.encode_prompt(prompts, device, 1, False)[0]


def encode_prompt(tokenizer, text_encoder, prompt: str | Sequence[str], device=None,
                  dtype: torch.dtype | None = None) -> Tensor:
    """CLIP embeddings ``(P, L, D)`` of P prompts by diffusers' own
    `StableDiffusionPipeline.encode_prompt` (padded to ``tokenizer.model_max_length``,
    truncated; last hidden state), built over ``tokenizer`` and ``text_encoder`` alone.

    Args:
        tokenizer, text_encoder: the pipeline's CLIP tokenizer and text encoder.
        prompt: one prompt or a list of P prompts.
        device: where the embeddings go (default: the text encoder's device).
        dtype: their dtype (default: the text encoder's).
    Returns:
        ``(P, L, D)`` embeddings, without autograd history.
    """
    from types import SimpleNamespace

    pipe = _text_pipeline(SimpleNamespace(text_encoder=text_encoder, tokenizer=tokenizer))
    emb = _encode(pipe, [prompt] if isinstance(prompt, str) else list(prompt))
    return emb.to(device=device if device is not None else text_encoder.device,
                  dtype=dtype if dtype is not None else emb.dtype)


def _as_list(prompt: str | Sequence[str], name: str) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    prompts = list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a string or a non-empty list of strings (one per window)")
    return prompts


class StableDiffusionPrior:
    """LocalPrior over SD latent windows ``(C, h, w)`` with text CFG, one or one-per-window prompts.

    Args:
        unet: a diffusers `UNet2DConditionModel` (its dtype is the model dtype: fp16/bf16 on CUDA).
        scheduler: the pipeline's scheduler (any diffusers scheduler with ``alphas_cumprod``);
            ``prediction_type``, ``timestep_spacing`` and ``steps_offset`` come from its config.
        prompt_embeds: ``(P, L, D)`` text embeddings, P = 1 (every window) or one per window.
        negative_prompt_embeds: ``(1, L, D)`` or ``(P, L, D)``; required when ``guidance_scale > 1``.
        guidance_scale: CFG weight w: ``ε̂ = ε_u + w (ε_c − ε_u)``; ``w <= 1`` runs only the
            conditional branch (as the pipelines do).
        height, width: the window in pixels (default: the UNet's ``sample_size × 8`` = 512).
        vae: the `AutoencoderKL`, used by `decode` (SyncDiffusion's perceptual gradient); optional.
        vae_scale_factor: pixels per latent cell (8).
        device: where the schedule (and so cofi's sampler state) lives; default: the UNet's.
    """

    supports_grad = True

    def __init__(
        self,
        unet,
        scheduler,
        prompt_embeds: Tensor,
        negative_prompt_embeds: Tensor | None = None,
        *,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        vae=None,
        vae_scale_factor: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        cfg = unet.config
        native = cfg.sample_size * vae_scale_factor
        height = native if height is None else height
        width = native if width is None else width
        for name, v in (("height", height), ("width", width)):
            if not isinstance(v, int) or v <= 0 or v % vae_scale_factor:
                raise ValueError(f"window {name} must be a positive multiple of {vae_scale_factor} px "
                                 f"(the VAE factor), got {v!r}")
        self.guidance_scale = float(guidance_scale)
        self.do_cfg = self.guidance_scale > 1.0
        if prompt_embeds.ndim != 3:
            raise ValueError(f"prompt_embeds must have shape (P, seq, dim), got {tuple(prompt_embeds.shape)}")
        P = prompt_embeds.shape[0]
        if self.do_cfg:
            if negative_prompt_embeds is None:
                raise ValueError("guidance_scale > 1 needs negative_prompt_embeds (the embedding of '' by default)")
            if negative_prompt_embeds.shape[0] not in (1, P) or negative_prompt_embeds.shape[1:] != prompt_embeds.shape[1:]:
                raise ValueError(f"negative_prompt_embeds must have shape (1 or {P}, "
                                 f"{', '.join(map(str, prompt_embeds.shape[1:]))}), got {tuple(negative_prompt_embeds.shape)}")
        self.unet, self.vae = unet, vae
        self.dtype = unet.dtype
        self.device = torch.device(device) if device is not None else unet.device
        self.prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        self.negative_prompt_embeds = None
        if self.do_cfg:
            self.negative_prompt_embeds = negative_prompt_embeds.to(self.device, self.dtype).expand(P, -1, -1)

        # prediction type, spacing, offset, ᾱ and the final ᾱ (set_alpha_to_one) from the scheduler
        vars(self).update(schedule_from_diffusers(scheduler, self.device))
        self.vae_scale_factor = vae_scale_factor
        self.height, self.width = height, width
        self.sample_shape = (cfg.in_channels, height // vae_scale_factor, width // vae_scale_factor)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pipe(
        cls,
        pipe,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] = "",
        guidance_scale: float = 7.5,
        *,
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str | None = None,
    ) -> StableDiffusionPrior:
        """Prior from a diffusers SD pipeline (`StableDiffusionPipeline`,
        `StableDiffusionPanoramaPipeline`, ...) or any object with ``unet``, ``vae``,
        ``text_encoder``, ``tokenizer`` and ``scheduler``. The prompt(s) and, with CFG, the
        negative prompt(s) are encoded once, by the pipeline's own ``encode_prompt`` (for an
        object without one, by a `StableDiffusionPipeline` built over its text encoder and
        tokenizer). A list of prompts gives one per window (its length must equal the
        layout's window count, see `check_layout`)."""
        prompts = _as_list(prompt, "prompt")
        negs = _as_list(negative_prompt if negative_prompt is not None else "", "negative_prompt")
        if len(negs) not in (1, len(prompts)):
            raise ValueError(f"negative_prompt must be one string or one per prompt ({len(prompts)}), got {len(negs)}")
        if device is None:
            device = getattr(pipe, "_execution_device", None) or pipe.unet.device
        text = _text_pipeline(pipe)  # diffusers' encode_prompt: the pipeline's own, or one over its components
        pos = _encode(text, prompts)
        neg = _encode(text, negs) if guidance_scale > 1.0 else None  # one negative is encoded once, not per window
        vsf = getattr(pipe, "vae_scale_factor", None) or 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        return cls(pipe.unet, pipe.scheduler, pos, neg, guidance_scale=guidance_scale, height=height,
                   width=width, vae=pipe.vae, vae_scale_factor=vsf, device=device)

    @classmethod
    def from_components(cls, unet, vae, text_encoder, tokenizer, scheduler, prompt: str | Sequence[str],
                        negative_prompt: str | Sequence[str] = "", guidance_scale: float = 7.5,
                        **kwargs) -> StableDiffusionPrior:
        """`from_pipe` over separate components (no pipeline object needed; the prompts are
        encoded by diffusers' `StableDiffusionPipeline.encode_prompt` over ``text_encoder`` and
        ``tokenizer``, and ``scheduler`` is only read, never handed to a pipeline)."""
        from types import SimpleNamespace

        pipe = SimpleNamespace(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                               scheduler=scheduler)
        return cls.from_pipe(pipe, prompt, negative_prompt, guidance_scale, **kwargs)

    @property
    def num_prompts(self) -> int:
        """P: 1 (one prompt for every window) or the number of per-window prompts."""
        return self.prompt_embeds.shape[0]

    def check_layout(self, layout) -> None:
        """Raise ValueError unless per-window prompts match ``layout.count`` windows."""
        if self.num_prompts > 1 and self.num_prompts != layout.count:
            raise ValueError(f"got {self.num_prompts} prompts but the layout has {layout.count} windows: "
                             f"pass one prompt, or exactly one per window")

    # ------------------------------------------------------------------ the prior
    def _embeddings(self, M: int, window: Tensor | None) -> tuple[Tensor, Tensor | None]:
        P = self.num_prompts
        if P == 1:
            idx = torch.zeros(M, dtype=torch.long, device=self.device)
        else:
            if window is None:
                raise ValueError(f"this prior has {P} per-window prompts: denoise needs window=(M,) indices")
            idx = torch.as_tensor(window, device=self.device).long().reshape(-1)
            if idx.shape[0] != M:
                raise ValueError(f"window must have one index per sample ({M}), got {idx.shape[0]}")
            if idx.min() < 0 or idx.max() >= P:
                raise ValueError(f"window index {int(idx.max())} out of range: got {P} prompts (one per window), "
                                 f"but the layout has more windows")
        neg = None if self.negative_prompt_embeds is None else self.negative_prompt_embeds[idx]
        return self.prompt_embeds[idx], neg

    def denoise(self, x_t: Tensor, t: Tensor, window: Tensor | None = None, **cond) -> Tensor:
        """x̂ for windows ``x_t (M, C, h, w)`` at integer timesteps ``t (M,)``; one UNet call
        over the M windows × CFG branches; returns ``x_t``'s dtype (autograd-safe)."""
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must have shape (M, {', '.join(map(str, self.sample_shape))}) "
                             f"= (windows, latent channels, h, w), got {tuple(x_t.shape)}")
        M = x_t.shape[0]
        t = torch.as_tensor(t, device=self.device).long().reshape(-1).expand(M)
        emb, neg = self._embeddings(M, window)
        x_in = x_t.to(self.device, self.dtype)
        if self.do_cfg:  # [uncond; cond]
            x_in, t_in, emb = torch.cat([x_in, x_in]), torch.cat([t, t]), torch.cat([neg, emb])
        else:
            t_in = t
        out = self.unet(x_in, t_in, encoder_hidden_states=emb, return_dict=False)[0]
        work = torch.promote_types(x_t.dtype, torch.float32)  # CFG and x̂ in >= float32
        out = out.to(work)
        if self.do_cfg:
            out = cfg_combine(*out.chunk(2), self.guidance_scale)  # [uncond; cond]
        x0 = to_x0(out, x_t.to(self.device, work), self.alphas_cumprod[t], self.prediction_type)
        return x0.to(x_t.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Images of latent windows through the VAE, differentiable (SyncDiffusion's perceptual
        gradient): the pipelines' ``vae.decode(latents / scaling_factor)`` followed by diffusers'
        `VaeImageProcessor.postprocess(..., output_type="pt")` (denormalised to [0, 1]).

        Args:
            latents: ``(M, C, h, w)`` latent windows.
        Returns:
            ``(M, 3, H, W)`` float32 images in [0, 1], with autograd history.
        """
        if self.vae is None:
            raise ValueError("decode needs the VAE: build the prior with vae=... (from_pipe does)")
        if getattr(self, "_image_processor", None) is None:
            from diffusers.image_processor import VaeImageProcessor

            self._image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        z = latents.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor
        img = self.vae.decode(z, return_dict=False)[0]
        return self._image_processor.postprocess(img.float(), output_type="pt")

    def __repr__(self) -> str:
        return (f"StableDiffusionPrior(sample_shape={self.sample_shape}, prompts={self.num_prompts}, "
                f"guidance_scale={self.guidance_scale}, prediction_type={self.prediction_type!r}, dtype={self.dtype})")
