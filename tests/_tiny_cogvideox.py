"""Tiny random-weight CogVideoX components for offline CPU tests (no hub access).

Shapes follow diffusers' own CogVideoX tests: a 1-layer transformer with 4 latent channels,
a 4-level causal VAE with 8 channels (spatial ×8, temporal ×4), a 1-layer T5 encoder with
``d_model=32`` and a word-level tokenizer built from an in-memory vocabulary.
"""

from __future__ import annotations

import torch

VOCAB = ["<pad>", "</s>", "<unk>", "a", "an", "red", "panda", "eats", "bamboo", "in", "the",
         "forest", "car", "drives", "on", "road", "at", "sunset", "white", "jeep"]
TEXT_LEN = 16  # max_text_seq_length of the tiny transformer = the prompt's token length


def tiny_tokenizer():
    """A `T5TokenizerFast`-compatible word-level tokenizer (whitespace split, pad id 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=TEXT_LEN)


def tiny_components(seed: int = 0, rotary: bool = False, sample_frames: int = 9) -> dict:
    """Components of a `CogVideoXPipeline` with random weights (seeded). ``sample_frames`` sets
    the chunk (``(sample_frames − 1) / 4 + 1`` latent frames; 49 → CogVideoX-2B's 13)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,  # RoPE needs dim 16
        time_embed_dim=2, text_embed_dim=32, num_layers=1, sample_width=4, sample_height=4,
        sample_frames=sample_frames, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=rotary, use_learned_positional_embeddings=False,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    torch.manual_seed(seed + 2)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(VOCAB), d_model=32, d_ff=37, d_kv=8,
                                           num_layers=1, num_heads=4, relative_attention_num_buckets=8,
                                           decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    # the CogVideoX-2b scheduler config (model-configs.json)
    scheduler = CogVideoXDDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        snr_shift_scale=3.0, timestep_spacing="trailing", clip_sample=False, steps_offset=0,
    )
    return {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(),
            "tokenizer": tiny_tokenizer(), "scheduler": scheduler}


def tiny_pipe(seed: int = 0, rotary: bool = False, sample_frames: int = 9):
    """A `CogVideoXPipeline` over `tiny_components` (CPU, float32)."""
    from diffusers import CogVideoXPipeline

    pipe = CogVideoXPipeline(**tiny_components(seed, rotary, sample_frames))
    pipe.set_progress_bar_config(disable=True)
    return pipe
