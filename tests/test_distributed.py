"""Composition over 2 gloo processes equals the single-process run (cofi.distributed).

Each case spawns two local processes (`cofi.testing.spawn`), composes with
``group=dist.group.WORLD`` and compares every rank's `Composition` against the same
composition run here in one process with the same generator.
"""

from __future__ import annotations

import pytest
import torch

import cofi
from cofi.distributed import block
from cofi.testing import spawn

TOL = dict(atol=1e-9, rtol=1e-9)  # float64 priors: only the order of a few sums differs


def _gmm():
    return cofi.priors.GaussianMixturePrior.chain_benchmark(window=16, components=3, channels=2)


def _field():
    return cofi.priors.GaussianFieldMixturePrior.styles_benchmark(window=6, components=2)


def _bank():
    """A closed-form prior over random windows: it takes consensus messages (gathered across ranks)."""
    from cofi.priors.trajectory import cosine_alphas_cumprod

    bank = torch.randn(40, 16, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return cofi.priors.EmpiricalPrior(bank, cosine_alphas_cumprod(200).double())


CASES = {
    # name: (prior factory, layout, sampler, compose kwargs)
    "gsc": (_gmm, cofi.Chain(16, 8, 5, blend="ramp"), cofi.GSC(steps=8, eta=1.0), {}),
    "cofi": (_gmm, cofi.Chain(16, 8, 5, blend="exp"), cofi.CoFi(steps=8, lam0=0.5, noise="blend"), {}),
    "cofi-guided-pinned": (_gmm, cofi.Chain(16, 6, 4), cofi.CoFi(steps=6, guidance=0.5, refine_noise="shared",
                                                                  weights=(1.0, 2.0, 1.0, 3.0)), {"pins": True}),
    "cofi-video": (_gmm, cofi.Chain(16, 12, 5, blend="ramp"),
                   cofi.CoFi(steps=6, eta=0.0, direction="fused", refine_at=0.2), {}),
    "cdgs": (_gmm, cofi.Chain(16, 8, 5), cofi.CDGS(steps=6, inner=2, prune_at=0.34, keep=0.5), {}),
    "gsc-consensus": (_bank, cofi.Chain(16, 8, 5, blend="exp"), cofi.GSC(steps=6, eta=1.0, consensus=2.0), {}),
    "cofi-consensus-pinned": (_bank, cofi.Chain(16, 6, 4), cofi.CoFi(steps=6, guidance=0.5, consensus=5.0),
                              {"pins": True}),
    "cofi-grid": (_field, cofi.Grid((cofi.Chain(6, 2, 3, axis=1, blend="ramp"), cofi.Chain(6, 2, 2, axis=2))),
                  cofi.CoFi(steps=6, guidance=0.2), {}),
    # the anchor lives on one rank; every rank evaluates it (so NFE grows by B per synchronised step)
    "syncdiffusion": (_gmm, cofi.Chain(16, 8, 5, blend="ramp"),
                      cofi.SyncDiffusion(steps=5, sync_steps=3, weight=2.0, eta=1.0,
                                         lpips=lambda a, b: (a - b).pow(2).flatten(1).mean(1),
                                         decode=lambda x: torch.sigmoid(x).unsqueeze(1).expand(-1, 3, -1, -1)), {}),
}


def _compose(name: str, distributed: bool):
    import torch.distributed as dist

    make, layout, sampler, kw = CASES[name]
    prior = make()
    kw = dict(kw)
    if kw.pop("pins", False):
        kw["pins"] = cofi.Pins([0, -1], torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=torch.float64))
    comp = cofi.compose(prior, layout, sampler, batch=3, generator=torch.Generator().manual_seed(7),
                        dtype=torch.float64, progress=False, group=dist.group.WORLD if distributed else None, **kw)
    return {"canvas": comp.canvas, "plans": comp.plans, "err": comp.overlap_error, "best": comp.best,
            "disagreement": comp.disagreement,
            "nfe": comp.nfe, "grad_evals": comp.grad_evals, "scaffold": comp.scaffold}


def _compare(got: dict, want: dict, extra_nfe: int = 0) -> None:
    for k in ("canvas", "plans", "err", "disagreement", "scaffold"):
        if want[k] is None:
            assert got[k] is None, k
        else:
            torch.testing.assert_close(got[k], want[k], **TOL, msg=k)
    assert (got["best"], got["nfe"], got["grad_evals"]) == (want["best"], want["nfe"] + extra_nfe, want["grad_evals"])


def _all_cases() -> dict:
    return {name: _compose(name, True) for name in CASES}


@pytest.fixture(scope="module")
def two_ranks():
    """Every case composed on 2 ranks, in one spawn (process start-up dominates)."""
    return spawn(_all_cases, 2, timeout=120)


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_equal_one_process(two_ranks, name):
    want = _compose(name, False)
    sampler = CASES[name][2]
    # SyncDiffusion: the second rank evaluates the anchor too, B more per synchronised step
    extra = 3 * sum(map(sampler.synced, range(sampler.steps))) if name == "syncdiffusion" else 0
    for rank_result in two_ranks:  # every rank returns the whole composition
        _compare(rank_result[name], want, extra)


def test_blocks_partition_the_windows():
    for n in range(1, 12):
        for world in range(1, n + 1):
            blocks = [block(n, world, r) for r in range(world)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(b0[1] == b1[0] for b0, b1 in zip(blocks, blocks[1:]))
            sizes = [b - a for a, b in blocks]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    with pytest.raises(ValueError, match="cannot be split over 3 ranks"):
        block(2, 3, 0)


def test_group_needs_an_initialised_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        cofi.compose(_gmm(), cofi.Chain(16, 8, 3), cofi.GSC(steps=2), group=object(), progress=False)


def _failing_rank():
    import torch.distributed as dist

    if dist.get_rank() == 1:
        raise ValueError("prior exploded on rank 1")
    # rank 0 waits in a collective that rank 1 never joins
    _compose("gsc", True)


def test_a_failing_rank_fails_the_run_without_hanging():
    import time

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="prior exploded on rank 1"):
        spawn(_failing_rank, 2, timeout=60)
    assert time.monotonic() - t0 < 50


def _sd_panorama(distributed: bool):
    import torch.distributed as dist
    from _tiny_sd import tiny_pipe

    torch.set_num_threads(1)
    out = cofi.panorama(tiny_pipe(seed=0), "a photo of the mountains", height=64, width=160, sampler="cofi",
                        stride=4, steps=4, generator=torch.Generator().manual_seed(3), output_type="latent",
                        progress=False, group=dist.group.WORLD if distributed else None)
    return out.images


def _sd_and_video(distributed: bool):
    import torch.distributed as dist
    from _tiny_cogvideox import tiny_pipe as tiny_video_pipe

    group = dist.group.WORLD if distributed else None
    video = cofi.long_video(tiny_video_pipe(seed=0), "a red panda eats bamboo in the forest", chunks=3, overlap=1,
                            sampler="cofi", steps=3, height=32, width=32, generator=torch.Generator().manual_seed(4),
                            progress=False, output_type="latent", group=group)
    return _sd_panorama(distributed), video.frames


def test_tiny_sd_panorama_and_cogvideox_on_two_ranks():
    """cofi.panorama and cofi.long_video (CoFi presets) with group=. float32 networks: each rank
    calls them on half the windows, which changes the rounding (as ``max_batch`` does); a few
    steps amplify it to ~2e-5 on latents of size ~1."""
    got = spawn(_sd_and_video, 2, True, timeout=120)
    want = _sd_and_video(False)
    for pano, video in got:
        torch.testing.assert_close(pano, want[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(video, want[1], atol=1e-4, rtol=1e-4)
