"""VBench-style video metrics: temporal flickering (exact), subject consistency and CLIP alignment on tiny nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cofi.metrics import video as mv
from test_metrics_image import tiny_clip


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_dino(seed: int = 0) -> mv.DINOEncoder:
    """A DINO encoder over a random 2-layer ViT (32 px images)."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2
    )
    torch.manual_seed(seed)
    return mv.DINOEncoder(ViTModel(config, add_pooling_layer=False))


@pytest.fixture(scope="module")
def dino() -> mv.DINOEncoder:
    return tiny_dino()


@pytest.fixture(scope="module")
def clip() -> mv.CLIPScorer:
    return mv.CLIPScorer(*tiny_clip())


# ----------------------------------------------------------------------------- temporal flickering


def test_flickering_constant_video_is_one():
    frame = torch.rand(1, 3, 16, 24, generator=gen())
    assert mv.temporal_flickering(frame.repeat(5, 1, 1, 1)) == 1.0


def test_flickering_known_difference():
    frames = torch.zeros(2, 3, 8, 8)
    frames[1] = 51 / 255  # MAE = 51 grey levels
    assert mv.temporal_flickering(frames) == pytest.approx((255 - 51) / 255, abs=1e-12)
    arr = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    arr[1, :4] = 100  # half the pixels differ by 100: MAE = 50
    assert mv.temporal_flickering(arr) == pytest.approx(205 / 255, abs=1e-12)


def test_flickering_matches_vbench_numpy():
    """VBench: mean over consecutive pairs of np.mean(|a - b|) on uint8 frames read as float32."""
    arr = (torch.rand(4, 12, 10, 3, generator=gen(1)) * 255).round().to(torch.uint8).numpy()
    maes = [np.mean(np.abs(arr[i].astype(np.float32) - arr[i + 1].astype(np.float32))) for i in range(3)]
    expected = (255.0 - np.mean(maes)) / 255.0
    assert mv.temporal_flickering(arr) == pytest.approx(expected, abs=1e-6)
    assert mv.temporal_flickering([Image.fromarray(f) for f in arr]) == mv.temporal_flickering(arr)
    as_tensor = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    assert mv.temporal_flickering(as_tensor) == pytest.approx(mv.temporal_flickering(arr), abs=1e-12)


def test_flickering_quantize():
    frames = torch.zeros(2, 3, 4, 4)
    frames[1] = 0.3 / 255  # below half a grey level: invisible after quantisation
    assert mv.temporal_flickering(frames) == 1.0
    assert mv.temporal_flickering(frames, quantize=False) == pytest.approx(1 - 0.3 / 255, abs=1e-9)


# ----------------------------------------------------------------------------- subject consistency


def test_consistency_formula():
    e1, e2 = torch.eye(2)
    f = torch.stack([e1, e2, (e1 + e2) / math.sqrt(2)])
    # i=1: both cosines 0; i=2: both 1/sqrt(2)  ->  mean of (0, 1/sqrt(2))
    assert mv.consistency_from_features(f) == pytest.approx(1 / (2 * math.sqrt(2)), rel=1e-6)
    assert mv.consistency_from_features(torch.stack([e1, -e1])) == 0.0  # negative cosines are clamped


def test_subject_consistency_identical_frames(dino):
    frame = torch.rand(1, 3, 48, 64, generator=gen(2))  # non-square: exercises pos-embedding interpolation
    assert mv.subject_consistency(frame.repeat(4, 1, 1, 1), dino) == pytest.approx(1.0, abs=1e-5)


def test_subject_consistency_range_and_features(dino):
    frames = torch.rand(5, 3, 32, 40, generator=gen(3))
    value = mv.subject_consistency(frames, dino)
    assert 0.0 <= value <= 1.0
    feats = dino.embed(frames)
    assert feats.shape == (5, 32)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(5))
    assert value == pytest.approx(mv.consistency_from_features(feats), abs=1e-6)


def test_dino_preprocessing_matches_vbench(dino):
    """Short side to 32 (bilinear, no antialias), ImageNet normalisation, CLS of the last layer norm."""
    frames = torch.rand(2, 3, 64, 80, generator=gen(4))
    x = torch.nn.functional.interpolate(frames, size=(32, 40), mode="bilinear", align_corners=False, antialias=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        cls = dino.model(pixel_values=(x - mean) / std, interpolate_pos_encoding=True).last_hidden_state[:, 0]
    torch.testing.assert_close(dino.embed(frames), torch.nn.functional.normalize(cls, dim=-1))


# ----------------------------------------------------------------------------- CLIP alignment


def test_sample_frames():
    assert mv.sample_frames(5, 2).tolist() == [0, 4]
    assert mv.sample_frames(9, 3).tolist() == [0, 4, 8]
    assert mv.sample_frames(3, 8).tolist() == [0, 1, 2]
    assert mv.sample_frames(4, None).tolist() == [0, 1, 2, 3]


def test_clip_alignment_uses_sampled_frames(clip):
    frames = torch.rand(5, 3, 32, 32, generator=gen(5))
    expected = clip.score(frames[[0, 4]], "a dog").mean().item()
    assert mv.clip_alignment(frames, "a dog", clip, num_frames=2) == pytest.approx(expected, rel=1e-5)
    assert 0.0 <= mv.clip_alignment(frames, "a dog", clip, num_frames=None) <= 100.0


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise(dino):
    one = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="at least 2 frames"):
        mv.temporal_flickering(one)
    with pytest.raises(ValueError, match="at least 2 frames"):
        mv.subject_consistency(one, dino)
    with pytest.raises(ValueError, match=r"\(F, 3, H, W\)"):
        mv.temporal_flickering(torch.rand(3, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        mv.temporal_flickering(np.zeros((3, 16, 16, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        mv.temporal_flickering([])
