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


# ---------------------------------------------------------------- 2-D grids
def _grid(blend="ramp", counts=(3, 4), overlaps=(2, 3), windows=(6, 8)):
    return cofi.Grid(tuple(cofi.Chain(w, o, n, axis=a, blend=blend) for a, (w, o, n) in
                           enumerate(zip(windows, overlaps, counts))))


@pytest.mark.parametrize("blend", ["uniform", "ramp", "exp"])
def test_grid_split_merge_round_trip_and_partition_of_unity(blend):
    g = _grid(blend)
    assert g.count == 12 and g.lengths == (14, 23) and g.global_shape((6, 8, 2)) == (14, 23, 2)
    canvas = torch.randn(2, 14, 23, 2, dtype=torch.float64)
    plans = g.split(canvas)
    assert plans.shape == (2, 12, 6, 8, 2)
    torch.testing.assert_close(plans[:, 5], canvas[:, 4:10, 5:13])  # window (1, 1): row-major order
    torch.testing.assert_close(g.merge(plans), canvas)
    torch.testing.assert_close(g.fuse(plans), plans)
    # product weights, summed over the windows covering each position (computed here by hand)
    ws = [c.chain_weights(torch.float64) for c in g.chains]
    cover = torch.zeros(14, 23, dtype=torch.float64)
    for k, ((i, j), (s0, s1)) in enumerate(zip(g.index, g.starts)):
        w = ws[0][i][:, None] * ws[1][j][None, :]
        torch.testing.assert_close(g.weights(torch.float64)[k], w)  # a window's weight: the chains' product
        cover[s0 : s0 + 6, s1 : s1 + 8] += w
    if blend == "uniform":
        assert cover.min() == 1 and cover.max() == 4
    else:
        torch.testing.assert_close(cover, torch.ones_like(cover))
    M = g.blend_noise(torch.eye(12 * 48, dtype=torch.float64).reshape(-1, 12, 6, 8))  # exact unit variance
    torch.testing.assert_close(M.pow(2).sum(0), torch.ones(14, 23, dtype=torch.float64))


def test_grid_with_one_row_is_the_chain_bit_for_bit():
    chain = cofi.Chain(16, 4, 5, axis=0, blend="ramp")
    grid = cofi.Grid((chain, cofi.Chain(2, 0, 1, axis=1, blend="ramp")))
    x = torch.randn(2, 5, 16, 2)
    for f in ("merge", "fuse", "overlap_error", "blend_noise"):
        assert torch.equal(getattr(grid, f)(x), getattr(chain, f)(x)), f
    assert torch.equal(grid.split(chain.merge(x)), chain.split(chain.merge(x)))
    gmm = cofi.priors.GaussianMixturePrior.chain_benchmark(window=16)
    for s in (cofi.GSC(steps=6), cofi.CoFi(steps=6, refine_at=0.5), cofi.CDGS(steps=4, inner=2)):
        a = cofi.compose(gmm, chain, s, batch=3, generator=torch.Generator().manual_seed(1), progress=False)
        b = cofi.compose(gmm, grid, s, batch=3, generator=torch.Generator().manual_seed(1), progress=False)
        assert torch.equal(a.canvas, b.canvas) and a.nfe == b.nfe, type(s).__name__


def test_grid_overlap_pairs_cover_both_axes():
    g = _grid("uniform", counts=(2, 2), overlaps=(2, 3), windows=(4, 5))
    plans = torch.randn(1, 4, 4, 5)
    rows, cols = g.overlap_pairs(plans)
    assert rows.shape == (1, 2, 2, 5) and cols.shape == (1, 2, 4, 3)
    # window 0 = (0, 0) above window 2 = (1, 0); window 0 left of window 1 = (0, 1)
    torch.testing.assert_close(rows[0, 0], plans[0, 0, 2:] - plans[0, 2, :2])
    torch.testing.assert_close(cols[0, 0], plans[0, 0, :, 2:] - plans[0, 1, :, :3])
    expected = torch.cat([rows.pow(2).flatten(2).mean(2), cols.pow(2).flatten(2).mean(2)], 1).mean(1)
    torch.testing.assert_close(g.overlap_error(plans), expected)
    torch.testing.assert_close(cofi.overlap_reward(plans, g),
                               -(rows.pow(2).flatten(2).mean(2).sum(1) + cols.pow(2).flatten(2).mean(2).sum(1)))


def test_grid_pins_and_errors():
    g = _grid("ramp")
    pins = cofi.Pins(positions=[(0, 0), (-1, -1), (5, 6)], values=torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    x0 = cofi.apply_pins(torch.zeros(1, 12, 6, 8, 2), pins, g)
    covering = [i for i, (s0, s1) in enumerate(g.starts) if s0 <= 5 < s0 + 6 and s1 <= 6 < s1 + 8]
    assert covering == [0, 1, 4, 5]  # rows 0-1 × columns 0-1 contain canvas point (5, 6)
    for i in covering:
        s0, s1 = g.starts[i]
        torch.testing.assert_close(x0[0, i, 5 - s0, 6 - s1], torch.tensor([5.0, 6.0]))
    assert x0.abs().sum() == (1 + 2) + (3 + 4) + 4 * (5 + 6)
    with pytest.raises(ValueError, match="one index per tiled axis"):
        cofi.apply_pins(torch.zeros(1, 12, 6, 8, 2), cofi.Pins([3], torch.zeros(1, 2)), g)
    with pytest.raises(ValueError, match=r"outside the canvas \[0, 13\], \[0, 22\]"):
        cofi.apply_pins(torch.zeros(1, 12, 6, 8, 2), cofi.Pins([(14, 0)], torch.zeros(1, 2)), g)
    with pytest.raises(ValueError, match="distinct axes"):
        cofi.Grid((cofi.Chain(4, 1, 2), cofi.Chain(4, 1, 2)))
    with pytest.raises(ValueError, match="non-empty sequence of Chain"):
        cofi.Grid(())
    with pytest.raises(ValueError, match="canvas must have 14 positions on dim 1"):
        g.split(torch.zeros(1, 13, 23, 2))
    with pytest.raises(ValueError, match="plans must have count=12"):
        g.merge(torch.zeros(1, 11, 6, 8, 2))


def test_every_sampler_composes_on_a_grid():
    """An exact prior over 8 × 8 image windows (the posterior mean over a random bank) on a
    3 × 3 grid: all samplers run, fusion makes the overlaps agree, pins hold."""
    bank = torch.randn(64, 1, 8, 8)
    prior = cofi.priors.EmpiricalPrior(bank, cofi.priors.trajectory.cosine_alphas_cumprod(100))
    g = cofi.Grid((cofi.Chain(8, 4, 3, axis=1, blend="ramp"), cofi.Chain(8, 4, 3, axis=2, blend="ramp")))
    pins = cofi.Pins(positions=[(0, 0)], values=torch.tensor([[0.5]]))
    for s in (cofi.GSC(steps=5), cofi.CoFi(steps=5, noise="blend"), cofi.CDGS(steps=4, inner=2, prune_at=0.0)):
        out = cofi.compose(prior, g, s, batch=2, generator=torch.Generator().manual_seed(0), pins=pins, progress=False)
        assert out.canvas.shape == (2, 1, 16, 16) and out.nfe == s.nfe(g, 2)
        assert out.overlap_error.max() < 1e-10  # fused at every step
        torch.testing.assert_close(out.canvas[:, 0, 0, 0], torch.full((2,), 0.5))
    guided = cofi.compose(prior, g, cofi.GSC(steps=5, fusion=False, guidance=0.5), batch=2,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert guided.grad_evals == 5 * 9 * 2 - 9 * 2  # every step but the one landing on clean data


@pytest.mark.parametrize("make", [
    lambda: cofi.Chain(6, 2, 4, axis=0, blend="exp"),
    lambda: cofi.Chain(5, 4, 3, axis=1),  # overlap > window / 2: three windows cover a position
    lambda: cofi.Grid((cofi.Chain(4, 2, 3, axis=1, blend="ramp"), cofi.Chain(3, 1, 2, axis=2))),
])
def test_neighbour_mean_is_the_mean_of_the_other_windows(make):
    """Brute force: paint every *other* window onto a canvas and average where they cover."""
    layout = make()
    g = torch.Generator().manual_seed(0)
    shape = (2, layout.count, *[c.window for c in getattr(layout, "chains", (layout,))])
    if isinstance(layout, cofi.Chain) and layout.axis == 1:
        shape = (2, layout.count, 3, layout.window)
    if isinstance(layout, cofi.Grid):
        shape = (2, layout.count, 2, 4, 3)
    plans = torch.randn(*shape, generator=g, dtype=torch.float64)
    mean, count = layout.neighbour_mean(plans)
    ones = torch.ones_like(plans)
    for i in range(layout.count):
        keep = torch.ones(layout.count, dtype=torch.bool)
        keep[i] = False
        others = torch.where(keep.reshape(1, -1, *[1] * (plans.ndim - 2)), plans, 0.0)
        flags = torch.where(keep.reshape(1, -1, *[1] * (plans.ndim - 2)), ones, 0.0)
        # unnormalised sums with uniform weights: merge × coverage
        s = layout.split(_paint(layout, others))[:, i]
        c = layout.split(_paint(layout, flags))[:, i]
        torch.testing.assert_close(count.expand_as(plans)[:, i], c)
        torch.testing.assert_close(mean[:, i], torch.where(c > 0, s / c.clamp(min=1), 0.0))
    # only the windows ``known`` speak (a red-black sweep's second half): the others' values are ignored
    known = torch.arange(layout.count) % 2 == 0
    garbage = torch.where(known.reshape(1, -1, *[1] * (plans.ndim - 2)), plans, torch.full_like(plans, 1e6))
    mean_k, count_k = layout.neighbour_mean(garbage, known)
    for i in range(layout.count):
        keep = known.clone()
        keep[i] = False
        k = keep.reshape(1, -1, *[1] * (plans.ndim - 2))
        s = layout.split(_paint(layout, torch.where(k, plans, 0.0)))[:, i]
        c = layout.split(_paint(layout, torch.where(k, ones, 0.0)))[:, i]
        torch.testing.assert_close(count_k.expand_as(plans)[:, i], c)
        torch.testing.assert_close(mean_k[:, i], torch.where(c > 0, s / c.clamp(min=1), 0.0))
    with pytest.raises(ValueError, match="known must be"):
        layout.neighbour_mean(plans, known[:-1])


def _paint(layout, plans):
    """Σ over windows of each window's values placed on the canvas (uniform weights, no division)."""
    canvas = torch.zeros(plans.shape[0], *layout.global_shape(tuple(plans.shape[2:])), dtype=plans.dtype)
    for i, start in enumerate(layout.starts):
        view = canvas
        starts = start if isinstance(start, tuple) else (start,)
        chains = getattr(layout, "chains", (layout,))
        for c, s0 in zip(chains, starts):
            view = view.narrow(1 + c.axis, s0, c.window)
        view += plans[:, i]
    return canvas
