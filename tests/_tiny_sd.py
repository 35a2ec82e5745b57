"""Tiny random-weight Stable Diffusion components for offline CPU tests (no hub access).

Shapes follow diffusers' own SD tests (a 2-level UNet with ``block_out_channels=(32, 64)``
and cross-attention dim 32, a 1-layer CLIP text encoder), except that the VAE has four
levels so it really downsamples by 8 like SD's, and the tokenizer is a word-level
tokenizer built from an in-memory vocabulary. ``sample_size`` is the UNet's native latent
size, i.e. the panorama window (SD 2 base: 64); tests use 8 (64 px) for speed and 64 only
where diffusers' `StableDiffusionPanoramaPipeline` (which hard-codes 64-latent views) is the
reference.
"""

from __future__ import annotations

import torch

VOCAB = ["<pad>", "<|startoftext|>", "<|endoftext|>", "<unk>", "a", "photo", "of", "the", "mountains",
         "river", "forest", "beach", "with", "palm", "trees", "castle", "in", "sunset", "snowy", "city"]
TEXT_LEN = 12  # tokenizer.model_max_length = the CLIP encoder's max_position_embeddings


def tiny_tokenizer():
    """A CLIP-like word-level tokenizer: ``<|startoftext|> words <|endoftext|> <pad>...``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", vocab["<|startoftext|>"]), ("<|endoftext|>", vocab["<|endoftext|>"])],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<|startoftext|>",
                                   eos_token="<|endoftext|>", unk_token="<unk>", model_max_length=TEXT_LEN)


def tiny_components(seed: int = 0, sample_size: int = 8, set_alpha_to_one: bool = True) -> dict:
    """Components of a `StableDiffusionPanoramaPipeline` with random (seeded) weights.

    The scheduler is a `DDIMScheduler` with SD 2 base's config (epsilon, scaled-linear,
    ``leading`` spacing, ``steps_offset=1``), except ``set_alpha_to_one`` (True by default,
    so the last DDIM step lands on the clean estimate as cofi's samplers do).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=8 * sample_size, scaling_factor=0.18215,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=1, vocab_size=len(VOCAB),
        max_position_embeddings=TEXT_LEN,
    ))
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", set_alpha_to_one=set_alpha_to_one, clip_sample=False, steps_offset=1,
    )
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tiny_tokenizer(), "scheduler": scheduler}


def tiny_pipe(seed: int = 0, sample_size: int = 8, set_alpha_to_one: bool = True):
    """A diffusers `StableDiffusionPanoramaPipeline` over `tiny_components` (CPU, float32)."""
    from diffusers import StableDiffusionPanoramaPipeline

    pipe = StableDiffusionPanoramaPipeline(**tiny_components(seed, sample_size, set_alpha_to_one),
                                           safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
