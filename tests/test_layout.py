import pytest
import torch

import cofi


@pytest.mark.parametrize("blend", ["uniform", "ramp", "exp"])
@pytest.mark.parametrize("window,overlap,count", [(16, 4, 5), (8, 6, 4), (10, 0, 3), (12, 5, 1)])
def test_split_merge_round_trip(blend, window, overlap, count):
    ch = cofi.Chain(window, overlap, count, axis=1, blend=blend)
    canvas = torch.randn(2, 3, ch.length, 2, dtype=torch.float64)
    plans = ch.split(canvas)
    assert plans.shape == (2, count, 3, window, 2)
    torch.testing.assert_close(ch.merge(plans), canvas)  # consistent plans merge back exactly
    torch.testing.assert_close(ch.fuse(plans), plans)


@pytest.mark.parametrize("blend", ["uniform", "ramp", "exp"])
def test_weights_partition_of_unity(blend):
    ch = cofi.Chain(20, 7, 6, blend=blend, beta=2.0)
    w = ch.weights(torch.float64)
    assert (w > 0).all()
    cover = torch.zeros(ch.length, dtype=torch.float64)
    for i, s in enumerate(ch.starts):
        cover[s : s + ch.window] += w[i]
    if blend == "uniform":  # counts of covering windows
        assert cover.max() == 2 and cover.min() == 1
    else:  # a cross-fade: weights already sum to exactly one everywhere
        torch.testing.assert_close(cover, torch.ones_like(cover))


def test_merge_is_weighted_mean_in_overlap():
    ch = cofi.Chain(4, 2, 2, blend="ramp")
    plans = torch.stack([torch.zeros(4), torch.ones(4)])[None, :, :]  # (1, 2, 4)
    canvas = ch.merge(plans)
    # overlap positions 2,3: right window weight (j+1)/(o+1) = 1/3, 2/3
    torch.testing.assert_close(canvas[0], torch.tensor([0, 0, 1 / 3, 2 / 3, 1, 1]))


@pytest.mark.parametrize("blend", ["uniform", "ramp", "exp"])
def test_blend_noise_is_unit_variance_and_exact(blend):
    """Σ_i w_i z_i / √(Σ_i w_i²): a linear map of the per-window draws whose rows have unit
    norm, so every canvas position is exactly unit-variance; checked on the map itself."""
    ch = cofi.Chain(6, 3, 4, blend=blend, beta=2.0)
    n = ch.count * ch.window  # every per-window entry as a basis vector
    basis = torch.eye(n, dtype=torch.float64).reshape(n, ch.count, ch.window)
    M = ch.blend_noise(basis)  # (n, L): column j is canvas position j's coefficients
    torch.testing.assert_close(M.pow(2).sum(0), torch.ones(ch.length, dtype=torch.float64))
    w = ch.weights(torch.float64)
    # position 4 lies in windows 1 (offset 1) and 0 (offset 4): coefficients ∝ their weights
    col = M[:, 4].reshape(ch.count, ch.window)
    norm = (w[0, 4] ** 2 + w[1, 1] ** 2).sqrt()
    torch.testing.assert_close(col[0, 4], w[0, 4] / norm)
    torch.testing.assert_close(col[1, 1], w[1, 1] / norm)
    assert col.abs().sum() - col[0, 4].abs() - col[1, 1].abs() < 1e-12


def test_geometry_and_selectors():
    ch = cofi.Chain(160, 56, 8)
    assert ch.stride == 104 and ch.length == 160 + 7 * 104
    assert ch.global_shape((160, 2)) == (ch.length, 2)
    plans = ch.split(torch.arange(ch.length, dtype=torch.float64)[None, :, None])
    torch.testing.assert_close(ch.right(plans)[:, :-1], ch.left(plans)[:, 1:])
    assert ch.overlap_error(plans).item() == 0.0


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(window=8, overlap=8, count=2), r"overlap must be an int in \[0, window-1\]"),
        (dict(window=8, overlap=-1, count=2), r"overlap must be an int in \[0, window-1\]"),
        (dict(window=8, overlap=2, count=0), r"count must be an int >= 1"),
        (dict(window=0, overlap=0, count=1), r"window must be an int >= 1"),
        (dict(window=8, overlap=2, count=2, blend="cubic"), r"blend must be"),
    ],
)
def test_chain_rejects_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        cofi.Chain(**kwargs)


def test_canvas_of_wrong_length():
    ch = cofi.Chain(8, 2, 3)
    with pytest.raises(ValueError, match=f"canvas must have {ch.length} positions"):
        ch.split(torch.zeros(1, ch.length + 1, 2))
    with pytest.raises(ValueError, match="sample_shape"):
        ch.global_shape((9, 2))
