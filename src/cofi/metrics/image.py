"""Panorama metrics: Intra-LPIPS, Intra-Style and CLIP score (SyncDiffusion's protocol).

A panorama ``(3, H, W)`` in [0, 1] (or a PIL image / ``(H, W, 3)`` uint8 array) is cut into a grid
of non-overlapping ``crop_size`` squares; Intra-LPIPS and Intra-Style average a distance over all
unordered pairs of crops (lower = more uniform style across the panorama), the CLIP score averages
over crops. See docs/metrics.md for the exact definitions and deviations.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from ._backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG16_RELU,
    CLIPScorer,
    VGG16Features,
    hub_file,
    load_safetensors,
    normalize,
    to_image,
)

__all__ = [
    "LPIPS",
    "VGG16Features",
    "CLIPScorer",
    "crops",
    "intra_lpips",
    "gram_matrix",
    "style_distance",
    "intra_style",
    "clip_score",
    "STYLE_LAYERS",
]

# LPIPS ScalingLayer constants (Zhang et al. 2018, lpips v0.1): input in [-1, 1], x -> (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def _unit_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Divide ``(N, C, H, W)`` by its per-pixel channel norm (lpips ``normalize_tensor``)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 with the VGG16 backbone (Zhang et al. 2018, "The Unreasonable Effectiveness...").

    ``d(a, b) = sum_l mean_{h,w} sum_c w_{l,c} (f̂_l(a) - f̂_l(b))^2_{c,h,w}`` where ``f̂_l`` are
    channel-unit-normalised VGG16 activations at relu1_2..relu5_3 and ``w_l`` the learned
    non-negative 1x1 convs ``lin0..lin4``. Without pretrained weights the VGG is randomly
    initialised and ``w_{l,c} = 1 / C_l`` (an uncalibrated but valid distance, used in tests).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = VGG16Features()
        for i, c in enumerate(LPIPS_CHANNELS):
            lin = nn.Conv2d(c, 1, kernel_size=1, bias=False)
            nn.init.constant_(lin.weight, 1.0 / c)
            setattr(self, f"lin{i}", lin)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_pretrained(
        cls,
        vgg_path: str | Path | None = None,
        lin_path: str | Path | None = None,
        vgg_repo: str = "timm/vgg16.tv_in1k",
    ) -> LPIPS:
        """LPIPS with ImageNet VGG16 and the published linear heads, both from safetensors files.

        Args:
            vgg_path: VGG16 weights (torchvision/timm ``features.*`` keys, or a full lpips state dict);
                ``None`` downloads ``model.safetensors`` from ``vgg_repo`` on the Hugging Face hub.
            lin_path: linear heads, keys ``lin{i}.model.1.weight`` (lpips' ``weights/v0.1/vgg.pth``
                converted to safetensors, see docs/metrics.md) or ``lin{i}.weight``. Required.
        """
        if lin_path is None:
            raise ValueError(
                "lin_path is required: convert lpips' weights/v0.1/vgg.pth to safetensors (docs/metrics.md)"
            )
        model = cls()
        model.net.load_weights(load_safetensors(hub_file(vgg_repo, "model.safetensors") if vgg_path is None else vgg_path))
        return model.load_lin_weights(load_safetensors(lin_path))

    def load_lin_weights(self, state_dict: dict[str, Tensor]) -> LPIPS:
        """Load the five heads from ``lin{i}.model.1.weight`` (lpips) or ``lin{i}.weight`` keys."""
        sd = {}
        for i in range(len(LPIPS_CHANNELS)):
            key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.weight") if k in state_dict), None)
            if key is None:
                raise KeyError(f"no weight for lin{i} (expected 'lin{i}.model.1.weight' or 'lin{i}.weight')")
            sd[f"lin{i}.weight"] = state_dict[key]
        self.load_state_dict(sd, strict=False)  # the VGG keys are loaded separately
        return self

    def features(self, images: Tensor) -> list[Tensor]:
        """Unit-normalised activations ``[(N, C_l, H_l, W_l)]`` for ``images`` ``(N, 3, H, W)`` in [0, 1]."""
        w = self.lin0.weight
        x = (2 * images.to(w.device, w.dtype) - 1 - self.shift) / self.scale
        with torch.no_grad():
            return [_unit_channels(f) for f in self.net(x, [VGG16_RELU[n] for n in LPIPS_LAYERS])]

    def distance(self, feats_a: list[Tensor], feats_b: list[Tensor]) -> Tensor:
        """LPIPS ``(N,)`` between two lists of ``features`` (broadcast over the batch)."""
        total = 0.0
        for i, (fa, fb) in enumerate(zip(feats_a, feats_b)):
            total = total + getattr(self, f"lin{i}")((fa - fb).pow(2)).mean(dim=(1, 2, 3))
        return total

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS ``(N,)`` between images ``a`` and ``b`` ``(N, 3, H, W)`` in [0, 1]."""
        return self.distance(self.features(a), self.features(b))


def crops(panorama: Any, crop_size: int = 512) -> Tensor:
    """Non-overlapping ``crop_size`` squares of a panorama, ``(N, 3, s, s)``, row-major from the top-left.

    A 512x2048 panorama gives 4 crops; leftover pixels at the bottom/right edge are dropped.
    """
    x = to_image(panorama)
    h, w = x.shape[-2:]
    if h < crop_size or w < crop_size:
        raise ValueError(f"panorama {h}x{w} is smaller than one {crop_size}x{crop_size} crop")
    tiles = x.unfold(1, crop_size, crop_size).unfold(2, crop_size, crop_size)  # (3, nh, nw, s, s)
    return rearrange(tiles, "c nh nw h w -> (nh nw) c h w")


def _pairs(n: int) -> list[tuple[int, int]]:
    if n < 2:
        raise ValueError("a pairwise intra metric needs at least two crops; use a smaller crop_size")
    return list(combinations(range(n), 2))


def _pairwise_mean(feats: list[Tensor], dist: Callable[[list[Tensor], list[Tensor]], Tensor]) -> float:
    """Mean of ``dist(feats[i], feats[j])`` over unordered pairs ``i < j`` of the batch axis."""
    values = [dist([f[i : i + 1] for f in feats], [f[j : j + 1] for f in feats]) for i, j in _pairs(feats[0].shape[0])]
    return torch.cat(values).mean().item()


def intra_lpips(panorama: Any, lpips: LPIPS, crop_size: int = 512) -> float:
    """Intra-LPIPS: mean LPIPS over all pairs of non-overlapping crops (SyncDiffusion, Lee et al. 2023)."""
    return _pairwise_mean(lpips.features(crops(panorama, crop_size)), lpips.distance)


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices ``(N, C, C)`` of ``features`` ``(N, C, H, W)``, normalised by ``C * H * W``."""
    n, c, h, w = features.shape
    f = rearrange(features, "n c h w -> n c (h w)")
    return f @ f.transpose(1, 2) / (c * h * w)


def _grams(vgg: VGG16Features, images: Tensor) -> list[Tensor]:
    """Gram matrices at ``STYLE_LAYERS`` for ``images`` ``(N, 3, H, W)`` in [0, 1]."""
    p = next(vgg.parameters())
    x = normalize(images.to(p.device, p.dtype), IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        return [gram_matrix(f) for f in vgg(x, [VGG16_RELU[n] for n in STYLE_LAYERS])]


def _gram_distance(grams_a: list[Tensor], grams_b: list[Tensor]) -> Tensor:
    """``sum_l mean_{c,c'} (G_l(a) - G_l(b))^2`` per batch element, ``(N,)``."""
    return sum((ga - gb).pow(2).mean(dim=(1, 2)) for ga, gb in zip(grams_a, grams_b))


def style_distance(a: Tensor, b: Tensor, vgg: VGG16Features) -> Tensor:
    """Gatys style loss ``(N,)`` between images ``a`` and ``b`` ``(N, 3, H, W)`` in [0, 1]."""
    return _gram_distance(_grams(vgg, a), _grams(vgg, b))


def intra_style(panorama: Any, vgg: VGG16Features, crop_size: int = 512) -> float:
    """Intra-Style: mean Gram-matrix style loss over all pairs of non-overlapping crops.

    ``L_style(a, b) = sum_{l in relu1_2, relu2_2, relu3_3, relu4_3} mean_{c,c'} (G_l(a) - G_l(b))^2``
    with ``G_l = F_l F_l^T / (C_l H_l W_l)`` on ImageNet-normalised input (Gatys et al. 2016).
    """
    return _pairwise_mean(_grams(vgg, crops(panorama, crop_size)), _gram_distance)


def clip_score(panorama: Any, prompt: str, scorer: CLIPScorer, crop_size: int | None = 512) -> float:
    """CLIP score of a panorama against ``prompt``: ``100 * max(cos, 0)`` averaged over crops.

    With ``crop_size=None`` the whole panorama goes through CLIP's preprocessing instead
    (short side resized to 224, then center-cropped: only the middle square is seen).
    """
    x = to_image(panorama)[None] if crop_size is None else crops(panorama, crop_size)
    return scorer.score(x, prompt).mean().item()
