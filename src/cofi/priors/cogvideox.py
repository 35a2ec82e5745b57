"""CogVideoX latent chunks as a LocalPrior (CogVideoX-2B: 13 latent frames = 49 frames).

A local plan is one chunk of the latent video in diffusers' own layout,
``sample_shape = (F, C, h, w)`` (latent frames, channels, height/8, width/8), so the
chain axis is ``axis=0`` (frames) and a canvas ``(B, L, C, h, w)`` is exactly the
``latents`` tensor of `CogVideoXPipeline` for L latent frames.

``denoise`` runs the transformer once for all M chunks and both classifier-free guidance
branches (a batch of 2M), combines the v-predictions in float32 (`cofi.priors._cfg.cfg_combine`,
the pipeline's formula) and returns
``x̂ = √ᾱ_t x_t − √(1−ᾱ_t) v̂`` in the dtype of ``x_t``. The schedule ``alphas_cumprod`` is
read from an instantiated `CogVideoXDDIMScheduler`, so the SNR shift (``snr_shift_scale``)
and the zero-terminal-SNR rescaling are applied exactly as diffusers applies them; the text is
encoded by the pipeline's own ``encode_prompt``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..prior import schedule_from_diffusers, to_x0
from ._cfg import cfg_combine

__all__ = ["CogVideoXPrior", "encode_prompt"]


def encode_prompt(tokenizer, text_encoder, prompt: str | Sequence[str], max_sequence_length: int = 226,
                  device=None, dtype: torch.dtype | None = None) -> Tensor:
    """T5 embeddings of one or more prompts by diffusers' own `CogVideoXPipeline.encode_prompt`
    (padded to ``max_sequence_length``, truncated, special tokens on), built over
    ``tokenizer`` and ``text_encoder`` alone.

    Args:
        tokenizer, text_encoder: the pipeline's T5 tokenizer and encoder.
        prompt: one prompt or a list of P prompts.
        max_sequence_length: tokens per prompt (the transformer's ``max_text_seq_length``, 226).
        device: where the embeddings go (default: the text encoder's device).
        dtype: their dtype (default: the text encoder's).
    Returns:
        ``(P, max_sequence_length, D)`` embeddings, without autograd history.
    """
    from diffusers import CogVideoXPipeline

    pipe = CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, transformer=None, scheduler=None)
    with torch.no_grad():
        emb = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                 device=text_encoder.device)[0]
    return emb.to(device=device if device is not None else text_encoder.device,
                  dtype=dtype if dtype is not None else emb.dtype)


def _rotary_embeddings(transformer, frames: int, grid: tuple[int, int], device) -> tuple[Tensor, Tensor] | None:
    """3-D RoPE (cos, sin) for a chunk of ``frames`` latent frames, as CogVideoXPipeline builds
    them (CogVideoX 1.0: crop region of the base grid; 1.5: sliced grid); None without RoPE."""
    cfg = transformer.config
    if not cfg.use_rotary_positional_embeddings:
        return None
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    p, p_t = cfg.patch_size, cfg.patch_size_t
    gh, gw = grid[0] // p, grid[1] // p
    base_h, base_w = cfg.sample_height // p, cfg.sample_width // p
    if p_t is None:
        crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
        return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                       grid_size=(gh, gw), temporal_size=frames, device=device)
    return get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(gh, gw),
                                   temporal_size=(frames + p_t - 1) // p_t, grid_type="slice",
                                   max_size=(base_h, base_w), device=device)


class CogVideoXPrior:
    """LocalPrior over CogVideoX latent chunks ``(frames, C, h, w)`` with text CFG.

    Args:
        transformer: a diffusers `CogVideoXTransformer3DModel` (its dtype is the model dtype).
        scheduler: the pipeline's scheduler (a `CogVideoXDDIMScheduler` or any scheduler with
            ``alphas_cumprod`` and a diffusers config); ``prediction_type``,
            ``timestep_spacing`` and ``steps_offset`` are read from its config.
        prompt_embeds: ``(1, S, D)`` T5 embedding of the prompt (S = the transformer's
            ``max_text_seq_length``).
        negative_prompt_embeds: ``(1, S, D)`` embedding of the negative prompt; required
            when ``guidance_scale > 1``.
        guidance_scale: CFG weight w: ``v̂ = v_u + w (v_c − v_u)``; ``w <= 1`` runs only the
            conditional branch (as the pipeline does).
        frames: latent frames per chunk (CogVideoX-2B: 13 = 49 video frames).
        height, width: video size in pixels (multiples of 8·patch_size).
        vae_scale_factor_spatial: pixels per latent cell (8).
        device: where the schedule (and so cofi's sampler state) lives; default: the
            transformer's device.
    """

    supports_grad = True

    def __init__(
        self,
        transformer,
        scheduler,
        prompt_embeds: Tensor,
        negative_prompt_embeds: Tensor | None = None,
        *,
        guidance_scale: float = 6.0,
        frames: int = 13,
        height: int = 480,
        width: int = 720,
        vae_scale_factor_spatial: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        cfg = transformer.config
        unit = vae_scale_factor_spatial * cfg.patch_size
        if height % unit or width % unit or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {unit} "
                             f"(VAE factor {vae_scale_factor_spatial} × patch {cfg.patch_size}), got {height}×{width}")
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames (latent frames per chunk) must be an int >= 1, got {frames!r}")
        if cfg.patch_size_t is not None and frames % cfg.patch_size_t:
            raise ValueError(f"frames must be a multiple of the transformer's patch_size_t={cfg.patch_size_t}, got {frames}")
        self.guidance_scale = float(guidance_scale)
        self.do_cfg = self.guidance_scale > 1.0
        if self.do_cfg and negative_prompt_embeds is None:
            raise ValueError("guidance_scale > 1 needs negative_prompt_embeds (the embedding of '' by default)")
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
            raise ValueError(f"prompt_embeds must have shape (1, seq, dim), got {tuple(prompt_embeds.shape)}")
        if prompt_embeds.shape[1] != cfg.max_text_seq_length:
            raise ValueError(f"prompt_embeds has {prompt_embeds.shape[1]} tokens but the transformer expects "
                             f"max_text_seq_length={cfg.max_text_seq_length}")
        self.transformer = transformer
        self.dtype = transformer.dtype
        self.device = torch.device(device) if device is not None else transformer.device
        self.prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        self.negative_prompt_embeds = (None if negative_prompt_embeds is None
                                       else negative_prompt_embeds.to(self.device, self.dtype))

        # prediction type, spacing, offset, ᾱ (SNR-shifted, zero terminal SNR kept finite), final ᾱ
        vars(self).update(schedule_from_diffusers(scheduler, self.device))

        h, w = height // vae_scale_factor_spatial, width // vae_scale_factor_spatial
        self.sample_shape = (frames, cfg.in_channels, h, w)
        self.height, self.width = height, width
        self.image_rotary_emb = _rotary_embeddings(transformer, frames, (h, w), self.device)

    @classmethod
    def from_pipe(
        cls,
        pipe,
        prompt: str,
        negative_prompt: str = "",
        guidance_scale: float = 6.0,
        *,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        max_sequence_length: int | None = None,
        device: torch.device | str | None = None,
    ) -> "CogVideoXPrior":
        """Prior from a diffusers `CogVideoXPipeline`: the prompt (and, with CFG, the negative
        prompt) is encoded once by the pipeline's own ``encode_prompt``. Defaults come from the
        transformer config as in the pipeline: ``frames = (sample_frames − 1)/4 + 1`` (13),
        ``height, width = 8·sample_height, 8·sample_width`` (480×720) and
        ``max_sequence_length = max_text_seq_length`` (226)."""
        cfg = pipe.transformer.config
        s = pipe.vae_scale_factor_spatial
        frames = frames if frames is not None else (cfg.sample_frames - 1) // pipe.vae_scale_factor_temporal + 1
        height = height if height is not None else cfg.sample_height * s
        width = width if width is not None else cfg.sample_width * s
        n = max_sequence_length if max_sequence_length is not None else cfg.max_text_seq_length
        device = device if device is not None else pipe._execution_device
        with torch.no_grad():  # the pipeline's own encode_prompt, on its execution device
            pos, neg = pipe.encode_prompt(prompt, negative_prompt or "",
                                          do_classifier_free_guidance=guidance_scale > 1.0, max_sequence_length=n,
                                          device=pipe._execution_device, dtype=pipe.transformer.dtype)
        return cls(pipe.transformer, pipe.scheduler, pos, neg, guidance_scale=guidance_scale, frames=frames,
                   height=height, width=width, vae_scale_factor_spatial=s, device=device)

    def denoise(self, x_t: Tensor, t: Tensor, **cond) -> Tensor:
        """x̂ for chunks ``x_t (M, F, C, h, w)`` at integer timesteps ``t (M,)``; one
        transformer call over the M chunks × CFG branches; returns ``x_t``'s dtype."""
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must have shape (M, {', '.join(map(str, self.sample_shape))}) "
                             f"= (chunks, latent frames, channels, h, w), got {tuple(x_t.shape)}")
        M = x_t.shape[0]
        t = torch.as_tensor(t, device=self.device).long().reshape(-1).expand(M)
        x_in = x_t.to(self.device, self.dtype)
        emb = self.prompt_embeds.expand(M, -1, -1)
        if self.do_cfg:  # [uncond; cond], as the pipeline orders its batch
            x_in, t_in = torch.cat([x_in, x_in]), torch.cat([t, t])
            emb = torch.cat([self.negative_prompt_embeds.expand(M, -1, -1), emb])
        else:
            t_in = t
        out = self.transformer(hidden_states=x_in, encoder_hidden_states=emb, timestep=t_in,
                               image_rotary_emb=self.image_rotary_emb, return_dict=False)[0]
        work = torch.promote_types(x_t.dtype, torch.float32)  # CFG and x̂ in >= float32
        out = out.to(work)
        if self.do_cfg:
            out = cfg_combine(*out.chunk(2), self.guidance_scale)  # [uncond; cond]
        x0 = to_x0(out, x_t.to(self.device, work), self.alphas_cumprod[t], self.prediction_type)
        return x0.to(x_t.dtype)

    def __repr__(self) -> str:
        return (f"CogVideoXPrior(sample_shape={self.sample_shape}, guidance_scale={self.guidance_scale}, "
                f"prediction_type={self.prediction_type!r}, dtype={self.dtype})")
