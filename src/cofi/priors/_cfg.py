"""Classifier-free guidance: the one combine the diffusers adapters share (no heavy imports)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["cfg_combine"]


def cfg_combine(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """``uncond + scale · (cond − uncond)``: the guided prediction, written and evaluated in the
    same order as diffusers' pipelines (`StableDiffusionPipeline`, `CogVideoXPipeline`) and
    `diffusers.guiders.ClassifierFreeGuidance` combine ``noise_pred_uncond`` and
    ``noise_pred_text``, so the result is bit-identical to theirs for the same inputs.

    Args:
        uncond: the unconditional (negative-prompt) prediction.
        cond: the text-conditioned prediction, same shape (or broadcastable).
        scale: the guidance weight w (``w = 1`` gives ``cond``).
    Returns:
        The guided prediction, in the promoted dtype of the inputs.
    """
    return uncond + scale * (cond - uncond)
