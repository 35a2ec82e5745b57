"""Panorama metrics on random-weight networks: Intra-LPIPS, Intra-Style, CLIP score, weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from cofi.metrics import image as mi
from cofi.metrics._backbones import CLIP_MEAN, CLIP_STD, vgg16_features_state_dict

S = 32  # crop size used throughout: VGG16 still has a 2x2 map at relu5_3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lpips() -> mi.LPIPS:
    torch.manual_seed(0)
    return mi.LPIPS()


@pytest.fixture(scope="module")
def vgg() -> mi.VGG16Features:
    torch.manual_seed(1)
    return mi.VGG16Features()


def tiny_clip(seed: int = 0):
    """A random 2-layer CLIPModel (32 px images) and a word-level tokenizer over a tiny vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "<s>", "</s>", "a", "photo", "of", "cat", "dog", "mountain", "lake"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>", eos_token="</s>"
    )
    common = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(words), max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3, **common
        ),
        vision_config=dict(image_size=S, patch_size=8, **common),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval(), tokenizer


@pytest.fixture(scope="module")
def clip() -> mi.CLIPScorer:
    return mi.CLIPScorer(*tiny_clip())


def tiled(crop: torch.Tensor, n: int) -> torch.Tensor:
    """A panorama ``(3, s, n*s)`` made of ``n`` copies of ``crop``."""
    return crop.repeat(1, 1, n)


# ----------------------------------------------------------------------------- crops and inputs


def test_crops_grid_and_order():
    pano = torch.rand(3, 2 * S + 5, 3 * S + 7, generator=gen())
    c = mi.crops(pano, S)
    assert c.shape == (6, 3, S, S)
    assert torch.equal(c[4], pano[:, S : 2 * S, S : 2 * S])  # row 1, column 1
    assert mi.crops(torch.rand(3, 512, 2048), 512).shape == (4, 3, 512, 512)


def test_pil_and_uint8_inputs_match_tensor():
    arr = (torch.rand(S, 4 * S, 3, generator=gen()) * 255).round().to(torch.uint8).numpy()
    as_tensor = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert torch.equal(mi.crops(Image.fromarray(arr), S), mi.crops(as_tensor, S))
    assert torch.equal(mi.crops(arr, S), mi.crops(as_tensor, S))


def test_bad_inputs_raise(lpips, vgg):
    with pytest.raises(ValueError, match="3, H, W"):
        mi.crops(torch.rand(4, S, 4 * S), S)
    with pytest.raises(ValueError, match="RGB"):
        mi.crops(np.zeros((S, 4 * S), dtype=np.uint8), S)
    with pytest.raises(ValueError, match="smaller than one"):
        mi.intra_lpips(torch.rand(3, S, S // 2), lpips, crop_size=S)
    with pytest.raises(ValueError, match="at least two crops"):
        mi.intra_style(torch.rand(3, S, S + 3), vgg, crop_size=S)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mi.crops(torch.rand(3, S, 2 * S) * 2 - 1, S)


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_zero_on_identical_crops(lpips):
    pano = tiled(torch.rand(3, S, S, generator=gen(2)), 4)
    assert mi.intra_lpips(pano, lpips, crop_size=S) == pytest.approx(0.0, abs=1e-7)


def test_lpips_symmetric_positive_and_batched(lpips):
    a, b = torch.rand(2, 3, S, S, generator=gen(3)), torch.rand(2, 3, S, S, generator=gen(4))
    d_ab, d_ba = lpips(a, b), lpips(b, a)
    assert d_ab.shape == (2,)
    torch.testing.assert_close(d_ab, d_ba)
    assert (d_ab > 0).all()
    # LPIPS with unit-norm features and lin weights 1/C is at most 4 per layer.
    assert (d_ab <= 4 * 5).all()


def test_intra_lpips_is_mean_over_pairs(lpips):
    pano = torch.rand(3, S, 3 * S, generator=gen(5))
    c = mi.crops(pano, S)
    expected = torch.stack([lpips(c[i : i + 1], c[j : j + 1])[0] for i, j in [(0, 1), (0, 2), (1, 2)]]).mean()
    value = mi.intra_lpips(pano, lpips, crop_size=S)
    assert value == pytest.approx(expected.item(), rel=1e-5)
    assert value > 0


def test_lpips_distance_formula(lpips):
    """Against a direct implementation of eq. (1) of Zhang et al. with lin weights 1/C."""
    a, b = torch.rand(1, 3, S, S, generator=gen(6)), torch.rand(1, 3, S, S, generator=gen(7))
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = [3, 8, 15, 22, 29]

    def feats(x):
        h, out = (2 * x - 1 - shift) / scale, []
        for i, layer in enumerate(lpips.net.features):
            h = layer(h)
            if i in taps:
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out

    expected = sum(((fa - fb) ** 2).mean(1).mean() for fa, fb in zip(feats(a), feats(b)))
    assert lpips(a, b).item() == pytest.approx(expected.item(), rel=1e-5)


# ----------------------------------------------------------------------------- Intra-Style


def test_gram_matrix_normalisation():
    f = torch.rand(2, 4, 3, 5, generator=gen(8))
    expected = torch.einsum("nchw,ndhw->ncd", f, f) / (4 * 3 * 5)
    torch.testing.assert_close(mi.gram_matrix(f), expected)


def test_intra_style_zero_symmetric_positive(vgg):
    assert mi.intra_style(tiled(torch.rand(3, S, S, generator=gen(9)), 4), vgg, crop_size=S) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.rand(1, 3, S, S, generator=gen(10)), torch.rand(1, 3, S, S, generator=gen(11)) ** 3
    torch.testing.assert_close(mi.style_distance(a, b, vgg), mi.style_distance(b, a, vgg))
    pano = torch.cat([a[0], b[0]], dim=-1)
    assert mi.intra_style(pano, vgg, crop_size=S) == pytest.approx(mi.style_distance(a, b, vgg).item(), rel=1e-5)
    assert mi.intra_style(pano, vgg, crop_size=S) > 0


# ----------------------------------------------------------------------------- weight loading


def test_lpips_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(12)
    source = mi.LPIPS()
    for i in range(5):  # non-trivial heads
        getattr(source, f"lin{i}").weight.uniform_(0, 1, generator=gen(i))
    # timm's vgg16.tv_in1k layout: features.* plus a conv-MLP head and classifier, which are ignored.
    vgg_sd = {k: v.clone() for k, v in source.net.state_dict().items()}
    vgg_sd["pre_logits.fc1.weight"] = torch.zeros(8, 512, 7, 7)
    vgg_sd["head.fc.weight"] = torch.zeros(10, 8)
    lin_sd = {f"lin{i}.model.1.weight": getattr(source, f"lin{i}").weight.clone() for i in range(5)}  # lpips' vgg.pth keys
    save_file(vgg_sd, tmp_path / "vgg16.safetensors")
    save_file(lin_sd, tmp_path / "lin.safetensors")

    loaded = mi.LPIPS.from_pretrained(tmp_path / "vgg16.safetensors", tmp_path / "lin.safetensors")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    a, b = torch.rand(1, 3, S, S, generator=gen(13)), torch.rand(1, 3, S, S, generator=gen(14))
    assert torch.equal(loaded(a, b), source(a, b))


def test_vgg_key_mapping_and_errors(tmp_path):
    w = torch.zeros(64, 3, 3, 3)
    lpips_style = {"net.slice1.0.weight": w, "module.features.2.bias": w[:, 0, 0, 0], "lin0.model.1.weight": w}
    mapped = vgg16_features_state_dict(lpips_style)
    assert set(mapped) == {"features.0.weight", "features.2.bias"}
    with pytest.raises(ValueError, match="lin_path is required"):
        mi.LPIPS.from_pretrained(tmp_path / "unused.safetensors")
    with pytest.raises(ValueError, match="no VGG16"):
        mi.VGG16Features().load_weights({"head.fc.weight": w})
    with pytest.raises(KeyError, match="lin3"):
        mi.LPIPS().load_lin_weights({f"lin{i}.weight": torch.zeros(1, c, 1, 1) for i, c in enumerate([64, 128, 256])})


def test_vgg_from_pretrained_file(tmp_path, vgg):
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, tmp_path / "model.safetensors")
    loaded = mi.VGG16Features.from_pretrained(tmp_path / "model.safetensors")
    x = torch.rand(1, 3, S, S, generator=gen(15))
    torch.testing.assert_close(loaded(x)[-1], vgg(x)[-1], rtol=0, atol=0)


# ----------------------------------------------------------------------------- CLIP score


def _reference_clip(model, tokenizer, images: torch.Tensor, prompt: str) -> torch.Tensor:
    """CLIP score through transformers' own get_*_features, for images already at the model size."""
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=(images - mean) / std)
        txt = model.get_text_features(**tokenizer([prompt], return_tensors="pt"))
    img = img if isinstance(img, torch.Tensor) else img.pooler_output  # transformers 5 returns an output object
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return 100 * F.cosine_similarity(img, txt).clamp(min=0)


def test_clip_score_matches_transformers(clip):
    images = torch.rand(3, 3, S, S, generator=gen(16))
    expected = _reference_clip(clip.model, clip.tokenizer, images, "a photo of a cat")
    scores = clip.score(images, "a photo of a cat")
    assert scores.shape == (3,)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    assert ((scores >= 0) & (scores <= 100)).all()


def test_clip_score_on_panorama(clip):
    pano = torch.rand(3, S, 3 * S, generator=gen(17))
    c = mi.crops(pano, S)
    expected = _reference_clip(clip.model, clip.tokenizer, c, "a lake").mean().item()
    assert mi.clip_score(pano, "a lake", clip, crop_size=S) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # whole-panorama mode: resize is a no-op at height S, the center crop is the middle square
    middle = _reference_clip(clip.model, clip.tokenizer, c[1:2], "a lake").item()
    assert mi.clip_score(pano, "a lake", clip, crop_size=None) == pytest.approx(middle, rel=1e-4, abs=1e-4)


def test_clip_text_embedding_batch_padding(clip):
    """Padding a short prompt next to a long one must not change its embedding."""
    alone = clip.embed_texts(["a cat"])
    padded = clip.embed_texts(["a cat", "a photo of a dog of a mountain"])[:1]
    torch.testing.assert_close(alone, padded, rtol=1e-4, atol=1e-5)
