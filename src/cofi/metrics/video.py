"""Video metrics with VBench's definitions (Huang et al. 2024): subject consistency, temporal flickering,
plus CLIP prompt alignment over sampled frames.

Frames are a tensor ``(F, 3, H, W)`` in [0, 1] (or uint8), an array ``(F, H, W, 3)`` uint8 (what
``cofi.long_video`` returns), or a list of PIL images / ``(H, W, 3)`` arrays.
See docs/metrics.md for the formulas and how they differ from VBench's pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._backbones import IMAGENET_MEAN, IMAGENET_STD, CLIPScorer, normalize, resize_short_side, to_frames

__all__ = [
    "DINOEncoder",
    "CLIPScorer",
    "sample_frames",
    "consistency_from_features",
    "subject_consistency",
    "temporal_flickering",
    "clip_alignment",
]


def _at_least_two(x: Tensor) -> Tensor:
    if x.shape[0] < 2:
        raise ValueError(f"a temporal metric needs at least 2 frames, got {x.shape[0]}")
    return x


class DINOEncoder:
    """Unit-norm DINO CLS features of frames from a built ``transformers.ViTModel``.

    Preprocessing follows VBench's ``dino_transform``: bilinear resize (no antialias) of the short
    side to ``config.image_size`` (224) keeping the aspect ratio, no crop, ImageNet normalisation;
    the position embeddings are interpolated to the non-square grid. The feature is the final
    layer-normed CLS token, which is what DINO's own ``VisionTransformer.forward`` returns.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        self.image_size = int(model.config.image_size)

    @classmethod
    def from_pretrained(cls, name: str = "facebook/dino-vitb16", device: str | torch.device = "cpu") -> DINOEncoder:
        """Load DINO ViT-B/16 (no pooler head) from the hub or a local directory."""
        from transformers import ViTModel

        return cls(ViTModel.from_pretrained(name, add_pooling_layer=False).to(device))

    @torch.no_grad()
    def embed(self, frames: Tensor, batch_size: int = 16) -> Tensor:
        """Unit-norm CLS features ``(F, D)`` of ``frames`` ``(F, 3, H, W)`` in [0, 1]."""
        p = next(self.model.parameters())
        out = []
        for chunk in frames.split(batch_size):
            x = resize_short_side(chunk.to(p.device, torch.float32), self.image_size, mode="bilinear", antialias=False)
            x = normalize(x, IMAGENET_MEAN, IMAGENET_STD).to(p.dtype)
            hidden = self.model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
            out.append(hidden[:, 0].float())
        return F.normalize(torch.cat(out), dim=-1)


def sample_frames(num_total: int, num_frames: int | None) -> Tensor:
    """Indices ``(K,)`` of ``num_frames`` frames spread uniformly (first and last included); all if ``None``."""
    if num_frames is None or num_frames >= num_total:
        return torch.arange(num_total)
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    return torch.linspace(0, num_total - 1, num_frames).round().long()


def consistency_from_features(features: Tensor) -> float:
    """VBench's consistency of unit-norm per-frame features ``(F, D)``.

    ``S = 1/(F-1) * sum_{i=1}^{F-1} ( max(0, <f_i, f_{i-1}>) + max(0, <f_i, f_0>) ) / 2``.
    """
    f = _at_least_two(features)
    prev = (f[1:] * f[:-1]).sum(-1).clamp(min=0)
    first = (f[1:] * f[:1]).sum(-1).clamp(min=0)
    return ((prev + first) / 2).mean().item()


def subject_consistency(frames: Any, dino: DINOEncoder) -> float:
    """VBench subject consistency: ``consistency_from_features`` of DINO ViT-B/16 CLS features, in [0, 1]."""
    return consistency_from_features(dino.embed(_at_least_two(to_frames(frames))))


def temporal_flickering(frames: Any, quantize: bool = True) -> float:
    """VBench temporal flickering: ``(255 - mean_i MAE(x_i, x_{i+1})) / 255``, in [0, 1] (1 = no change).

    ``MAE`` is the mean absolute difference over pixels and channels in [0, 255] units. With
    ``quantize`` (default) float frames are first rounded to uint8 levels, as VBench reads videos.
    """
    x = _at_least_two(to_frames(frames)).double() * 255
    x = x.round() if quantize else x
    mae = (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3))
    return ((255.0 - mae.mean()) / 255.0).item()


def clip_alignment(frames: Any, prompt: str, scorer: CLIPScorer, num_frames: int | None = 8) -> float:
    """Mean CLIP score ``100 * max(cos, 0)`` of ``num_frames`` uniformly sampled frames against ``prompt``."""
    x = to_frames(frames)
    return scorer.score(x[sample_frames(x.shape[0], num_frames)], prompt).mean().item()
