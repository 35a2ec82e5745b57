"""Shared pieces of the image and video metrics: input conversion, VGG16, CLIP embeddings, weight loading.

Nothing here imports ``transformers`` at module level; the CLIP wrapper receives an already-built
``CLIPModel`` and only ``CLIPScorer.from_pretrained`` imports transformers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CLIP_MEAN",
    "CLIP_STD",
    "to_image",
    "to_frames",
    "normalize",
    "resize_short_side",
    "center_crop",
    "hub_file",
    "load_safetensors",
    "vgg16_features_state_dict",
    "VGG16_RELU",
    "VGG16Features",
    "CLIPScorer",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# torchvision's VGG16 configuration "D"; "M" is a 2x2 max-pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
# Index in ``features`` of the ReLU after the last conv of each block.
VGG16_RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}


# ----------------------------------------------------------------------------- inputs


def _check_range(x: Tensor) -> Tensor:
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(f"float images must lie in [0, 1], got range [{x.min():.3g}, {x.max():.3g}]")
    return x.clamp(0, 1)


def to_image(image: Any) -> Tensor:
    """One RGB image as a float tensor ``(3, H, W)`` in [0, 1].

    Accepts a tensor ``(3, H, W)`` (float in [0, 1] or uint8), a PIL image, or an array
    ``(H, W, 3)`` (uint8, or float in [0, 1]).
    """
    if isinstance(image, Tensor):
        x = image.detach()
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"expected an image tensor (3, H, W), got shape {tuple(x.shape)}")
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {arr.shape}; convert with .convert('RGB')")
        x = torch.tensor(arr).permute(2, 0, 1)  # copies: PIL arrays are read-only
    if x.dtype == torch.uint8:
        return x.float() / 255
    return _check_range(x.float())


def to_frames(frames: Any) -> Tensor:
    """Video frames as a float tensor ``(F, 3, H, W)`` in [0, 1].

    Accepts a tensor ``(F, 3, H, W)`` (float in [0, 1] or uint8), an array ``(F, H, W, 3)``
    (uint8 or float in [0, 1]), or a sequence of PIL images / ``(H, W, 3)`` arrays / ``(3, H, W)`` tensors.
    """
    if isinstance(frames, Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected frames (F, 3, H, W), got shape {tuple(frames.shape)}")
        x = frames.detach()
        return x.float() / 255 if x.dtype == torch.uint8 else _check_range(x.float())
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected a frame array (F, H, W, 3), got shape {frames.shape}")
        return torch.stack([to_image(f) for f in frames])
    if isinstance(frames, Sequence) and len(frames) > 0:
        return torch.stack([to_image(f) for f in frames])
    raise ValueError("expected a non-empty tensor, array or sequence of frames")


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Channel-wise ``(x - mean) / std`` for ``x`` ``(N, 3, H, W)``."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def resize_short_side(x: Tensor, size: int, mode: str = "bicubic", antialias: bool = True) -> Tensor:
    """Resize ``(N, C, H, W)`` so that ``min(H, W) == size``, keeping the aspect ratio."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    scale = size / min(h, w)
    new = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
    return F.interpolate(x, size=new, mode=mode, align_corners=False, antialias=antialias)


def center_crop(x: Tensor, size: int) -> Tensor:
    """Central ``size x size`` window of ``(N, C, H, W)`` (offsets rounded like torchvision)."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


# ----------------------------------------------------------------------------- weights


def hub_file(repo_id: str, filename: str) -> str:
    """Local path of ``filename`` from the Hugging Face hub repo ``repo_id`` (downloads once, then cached)."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename)


def load_safetensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a ``.safetensors`` file, on CPU."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def vgg16_features_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep the convolutional part of a VGG16 checkpoint, renamed to ``features.{i}.{weight,bias}``.

    Understands torchvision (``features.0.weight``, ``classifier.*`` dropped), timm
    ``vgg16.tv_in1k`` (same ``features.*`` keys; ``pre_logits.*``/``head.*`` dropped) and a full
    ``lpips.LPIPS`` state dict (``net.slice1.0.weight``: slices keep torchvision's indices).
    A leading ``module.`` (DataParallel) is stripped.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        m = re.fullmatch(r"(?:features|net\.slice\d)\.(\d+)\.(weight|bias)", key)
        if m:
            out[f"features.{m.group(1)}.{m.group(2)}"] = value
    return out


# ----------------------------------------------------------------------------- VGG16


class VGG16Features(nn.Module):
    """The convolutional trunk of VGG16 (Simonyan & Zisserman 2015) in torchvision's layout.

    ``features`` is the same ``nn.Sequential`` of 31 modules as ``torchvision.models.vgg16().features``,
    so state-dict keys are ``features.0.weight`` ... ``features.28.bias`` and ImageNet weights load as is.
    Expects ImageNet-normalised input; see ``VGG16_RELU`` for the tap indices.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        self.features = nn.Sequential(*layers)
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # torchvision's init; only matters without pretrained weights
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.requires_grad_(False).eval()

    def forward(self, x: Tensor, taps: Sequence[int] = tuple(VGG16_RELU.values())) -> list[Tensor]:
        """Activations ``[(N, C_k, H_k, W_k)]`` after the modules at indices ``taps`` for ``x`` ``(N, 3, H, W)``."""
        out, last = [], max(taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
            if i == last:
                break
        return out

    def load_weights(self, state_dict: dict[str, Tensor]) -> VGG16Features:
        """Load any checkpoint understood by ``vgg16_features_state_dict`` (strict on the conv keys)."""
        sd = vgg16_features_state_dict(state_dict)
        if not sd:
            raise ValueError("no VGG16 'features.*' (or lpips 'net.slice*') keys in the state dict")
        self.load_state_dict(sd, strict=True)
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, repo_id: str = "timm/vgg16.tv_in1k") -> VGG16Features:
        """ImageNet VGG16 from a safetensors file, or from ``repo_id``'s ``model.safetensors`` on the hub."""
        path = hub_file(repo_id, "model.safetensors") if path is None else path
        return cls().load_weights(load_safetensors(path))


# ----------------------------------------------------------------------------- CLIP


class CLIPScorer:
    """Unit-norm CLIP embeddings of images and texts from a built ``transformers.CLIPModel``.

    Image preprocessing mirrors ``CLIPImageProcessor`` in torch: bicubic (antialiased) resize of
    the short side to ``vision_config.image_size``, center crop, CLIP mean/std normalisation.
    """

    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, name: str = "openai/clip-vit-base-patch32", device: str | torch.device = "cpu") -> CLIPScorer:
        """Load ``CLIPModel`` and its tokenizer from the hub (or a local directory)."""
        from transformers import AutoTokenizer, CLIPModel

        return cls(CLIPModel.from_pretrained(name).to(device), AutoTokenizer.from_pretrained(name))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> normalised ``(N, 3, S, S)`` with ``S = image_size``."""
        x = resize_short_side(images.float(), self.image_size, mode="bicubic", antialias=True)
        x = center_crop(x, self.image_size).clamp(0, 1)
        return normalize(x, CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def embed_images(self, images: Tensor, batch_size: int = 32) -> Tensor:
        """Unit-norm image embeddings ``(N, D)`` of ``images`` ``(N, 3, H, W)`` in [0, 1]."""
        dtype = next(self.model.parameters()).dtype
        out = []
        for chunk in images.split(batch_size):
            pixels = self.preprocess(chunk.to(self.device)).to(dtype)
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            out.append(self.model.visual_projection(pooled).float())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm text embeddings ``(T, D)``; prompts longer than the context are truncated."""
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        out = self.model.text_model(input_ids=ids, attention_mask=mask)
        return F.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)

    def score(self, images: Tensor, prompt: str) -> Tensor:
        """CLIP score per image, ``(N,)``: ``100 * max(cos(E_img, E_txt), 0)`` (torchmetrics convention)."""
        cos = self.embed_images(images) @ self.embed_texts([prompt])[0]
        return 100 * cos.clamp(min=0)
