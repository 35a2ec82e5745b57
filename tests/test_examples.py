"""The examples run, and the custom sampler of examples/custom_sampler.py is what it says."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import torch

import cofi

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_custom_sampler_is_short_and_without_a_scaffold_is_the_panorama_loop():
    ex = _load("custom_sampler")
    lines = inspect.getsource(ex.LowFrequencyCoFi).splitlines()
    assert len(lines) < 40, f"the example sampler should stay short, has {len(lines)} lines"
    prior = cofi.priors.GaussianFieldMixturePrior.styles_benchmark(window=6, components=2)
    layout = cofi.Chain(6, 2, 3, axis=2, blend="ramp")
    kw = dict(batch=3, progress=False, dtype=torch.float64)
    # λ0 = 1 (no scaffold): the authors' panorama loop with the same refinement depth, draw for draw
    mine = cofi.compose(prior, layout, ex.LowFrequencyCoFi(steps=8, lam0=1.0, refine_at=0.5),
                        generator=torch.Generator().manual_seed(2), **kw)
    ref = cofi.CoFi(steps=8, lam0=1.0, schedule="constant", refine_at=0.5, coarse_update="renoise", noise="blend",
                    refine_noise="shared", refine_eta=1.0)
    want = cofi.compose(prior, layout, ref, generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(mine.canvas, want.canvas, atol=1e-12, rtol=1e-12)
    assert mine.nfe == ex.LowFrequencyCoFi(steps=8, refine_at=0.5).nfe(layout, 3) == want.nfe
    torch.testing.assert_close(mine.disagreement, want.disagreement, atol=1e-12, rtol=1e-12)


def test_low_frequency_scaffold_moves_only_the_window_means():
    """λ0 = 0 on a one-step coarse stage (which lands on ᾱ = 1, so the state *is* the shrunk
    estimate): every window's per-channel mean becomes the windows' average, the rest of x̂ stays."""
    ex = _load("custom_sampler")
    prior = cofi.priors.GaussianFieldMixturePrior.styles_benchmark(window=6, components=2)
    layout = cofi.Chain(6, 0, 3, axis=2)  # no overlaps: fusion is the identity
    calls, states = [], []

    class Spy:
        alphas_cumprod, sample_shape = prior.alphas_cumprod, prior.sample_shape

        def denoise(self, x_t, t, **cond):
            calls.append(prior.denoise(x_t, t))
            return calls[-1]

    cofi.compose(Spy(), layout, ex.LowFrequencyCoFi(steps=1, lam0=0.0, refine_at=0.0), batch=2,
                 generator=torch.Generator().manual_seed(1), progress=False, dtype=torch.float64,
                 callback=lambda d: states.append(d["x"]) if d["stage"] == "coarse" else None)
    assert len(calls) == 2 and len(states) == 1  # one coarse and one refinement prediction
    x0 = calls[0].reshape(2, 3, *prior.sample_shape)
    m = x0.mean((-2, -1), keepdim=True)
    torch.testing.assert_close(states[0], x0 - m + m.mean(1, keepdim=True), atol=1e-12, rtol=1e-12)


def test_custom_sampler_main_prints_its_table(capsys):
    ex = _load("custom_sampler")
    rows = ex.main(n=4, k=6)
    assert set(rows) >= {"ground truth", "GSC (MultiDiffusion)", "low-frequency CoFi (this file)"}
    assert "| low-frequency CoFi (this file) |" in capsys.readouterr().out


def test_antmaze_example_plans_and_executes_a_medium_task(tmp_path, capsys, monkeypatch):
    import pytest

    pytest.importorskip("ogbench")
    monkeypatch.syspath_prepend(str(EXAMPLES))  # antmaze.py imports pointmaze.py beside it
    ex = _load("antmaze")
    out = tmp_path / "ant.png"
    ex.main(["--env", "antmaze-medium-stitch-v0", "--task", "1", "--steps", "5", "--max-replans", "1",
             "--out", str(out)], env="antmaze-giant-stitch-v0", out="antmaze_plan.png", description=ex.__doc__)
    text = capsys.readouterr().out
    assert "antmaze-medium-stitch-v0 task 1: cofi, 4 windows" in text and "success radius 0.5" in text
    assert "/ 1000" in text and out.stat().st_size > 10_000
