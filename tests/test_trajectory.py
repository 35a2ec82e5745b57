"""The 1D temporal U-Net, its training loop and `TrajectoryPrior`."""

import argparse
import math

import numpy as np
import pytest
import torch

from cofi.planning.planner import planning_sampler
from cofi.priors.trajectory import CHECKPOINTS, TrajectoryPrior, cosine_alphas_cumprod
from cofi.priors.unet1d import TemporalUNet, UNet1DConfig
from cofi.testing import check_prior


def tiny_prior():
    torch.manual_seed(0)
    net = TemporalUNet(UNet1DConfig(horizon=160, dim=8, dim_mults=(1, 2), groups=4))
    return TrajectoryPrior(net, cosine_alphas_cumprod(50), [0.0, -1.0], [20.0, 9.0], env_name="test")


def test_unet_shapes():
    net = TemporalUNet(UNet1DConfig(horizon=32, channels=3, dim=8, dim_mults=(1, 2, 4), groups=4))
    x = torch.randn(5, 32, 3)
    assert net(x, torch.randint(0, 100, (5,))).shape == (5, 32, 3)
    with pytest.raises(ValueError, match="divisible by 4"):
        TemporalUNet(UNet1DConfig(horizon=30, dim_mults=(1, 2, 4)))


def test_fourier_features_are_sin_cos_of_octaves_of_the_input():
    net = TemporalUNet(UNet1DConfig(horizon=16, channels=2, dim=8, dim_mults=(1, 2), groups=4, fourier=3))
    assert net.inp.in_channels == 2 * (1 + 2 * 3)
    seen = {}
    net.inp.register_forward_hook(lambda m, a, out: seen.update(inp=a[0]))  # returns None: output kept
    x = torch.rand(2, 16, 2) * 2 - 1
    net(x, torch.tensor([1, 2]))
    feats = seen["inp"]  # (B, C·(1+2F), H): raw, then sin of (channel, octave), then cos
    xc = x.transpose(1, 2)
    torch.testing.assert_close(feats[:, :2], xc)
    for c in range(2):
        for k in range(3):
            torch.testing.assert_close(feats[:, 2 + 3 * c + k], torch.sin(math.pi * 2**k * xc[:, c]))
            torch.testing.assert_close(feats[:, 8 + 3 * c + k], torch.cos(math.pi * 2**k * xc[:, c]))
    with pytest.raises(ValueError, match="fourier must be >= 0"):
        TemporalUNet(UNet1DConfig(fourier=-1))


def test_feature_grid_is_read_at_each_steps_xy_and_passes_gradients():
    net = TemporalUNet(UNet1DConfig(horizon=4, channels=2, dim=8, dim_mults=(1,), groups=4, grid=5, grid_dim=3))
    assert net.inp.in_channels == 2 + 3
    seen = {}
    net.inp.register_forward_hook(lambda m, a, out: seen.update(inp=a[0]))
    # nodes of a 5 x 5 grid over [-1, 1]^2 sit at -1, -0.5, 0, 0.5, 1; x indexes columns, y rows
    x = torch.tensor([[[-1.0, -1.0], [0.5, 0.0], [1.0, -0.5], [0.25, 0.0]]], requires_grad=True)
    net(x, torch.tensor([3]))
    g = net.grid.detach()[0]  # (3, rows, cols)
    feats = seen["inp"][0, 2:].detach()  # (3, H)
    torch.testing.assert_close(feats[:, 0], g[:, 0, 0])
    torch.testing.assert_close(feats[:, 1], g[:, 2, 3])
    torch.testing.assert_close(feats[:, 2], g[:, 1, 4])
    torch.testing.assert_close(feats[:, 3], 0.5 * (g[:, 2, 2] + g[:, 2, 3]))  # bilinear between nodes
    (gx,) = torch.autograd.grad(seen["inp"][0, 2:, 3].sum(), x)
    assert gx[0, 3].abs().sum() > 0  # differentiable in x: guidance passes through the lookup
    with pytest.raises(ValueError, match="grid needs 2 channels"):
        TemporalUNet(UNet1DConfig(channels=3, grid=8))


def test_feature_grid_spans_grid_extent():
    """A prior trained with ``scale`` s has data in [-s, s]²: its grid must cover that range. With the
    grid fixed to [-1, 1]², points beyond ±1 all read the border (the bug that made the first
    scale-2.5 giant run ignore most of its maze)."""
    cfg = UNet1DConfig(horizon=4, channels=2, dim=8, dim_mults=(1,), groups=4, grid=5, grid_dim=3, grid_extent=2.5)
    net = TemporalUNet(cfg)
    assert UNet1DConfig.from_dict(cfg.to_dict()) == cfg
    assert UNet1DConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "grid_extent"}).grid_extent == 1.0
    seen = {}
    net.inp.register_forward_hook(lambda m, a, out: seen.update(inp=a[0]))
    # nodes of a 5 x 5 grid over [-2.5, 2.5]^2 sit at -2.5, -1.25, 0, 1.25, 2.5
    x = torch.tensor([[[-2.5, -2.5], [1.25, 0.0], [2.5, -1.25], [1.875, 2.5]]])
    net(x, torch.tensor([3]))
    g = net.grid.detach()[0]
    feats = seen["inp"][0, 2:].detach()
    torch.testing.assert_close(feats[:, 0], g[:, 0, 0])
    torch.testing.assert_close(feats[:, 1], g[:, 2, 3])
    torch.testing.assert_close(feats[:, 2], g[:, 1, 4])
    torch.testing.assert_close(feats[:, 3], 0.5 * (g[:, 4, 3] + g[:, 4, 4]))
    with pytest.raises(ValueError, match="grid_extent must be > 0"):
        TemporalUNet(UNet1DConfig(grid=8, grid_extent=0.0))


def test_feature_grid_read_at_the_wiener_estimate():
    """With grid_wiener the grid is read at E[x_0 | x_t] under N(0, s²), s² = extent²/3, i.e.
    √ᾱ s² x_t / (ᾱ s² + 1 − ᾱ); observed points are read where they are."""
    cfg = UNet1DConfig(horizon=4, channels=2, dim=8, dim_mults=(1,), groups=4, grid=5, grid_dim=3,
                       grid_extent=1.5, grid_wiener=True, cond=True)
    net = TemporalUNet(cfg)
    seen = {}
    net.inp.register_forward_hook(lambda m, a, out: seen.update(inp=a[0]))
    a = torch.tensor([0.25])
    s2 = 1.5**2 / 3  # 0.75: the estimate is √ᾱ s² x / (ᾱ s² + 1 − ᾱ) = 0.375 x / 0.9375 = 0.4 x
    x = torch.tensor([[[1.875, 0.0], [-1.875, 1.875], [0.75, 0.75], [0.0, 0.0]]])
    mask = torch.tensor([[False, False, True, False]])
    net(x, torch.tensor([100]), mask, alpha=a)
    g = net.grid.detach()[0]  # nodes at -1.5, -0.75, 0, 0.75, 1.5
    feats = seen["inp"][0, 2:5].detach()
    assert abs(0.5 * s2 / (0.25 * s2 + 0.75) - 0.4) < 1e-12
    torch.testing.assert_close(feats[:, 0], g[:, 2, 3])  # (0.75, 0)
    torch.testing.assert_close(feats[:, 1], g[:, 3, 1])  # (-0.75, 0.75)
    torch.testing.assert_close(feats[:, 2], g[:, 3, 3])  # observed: (0.75, 0.75) as it is
    torch.testing.assert_close(feats[:, 3], g[:, 2, 2])
    net(x, torch.tensor([0]), mask, alpha=torch.tensor([1.0]))  # ᾱ = 1: the estimate is x_t itself
    torch.testing.assert_close(seen["inp"][0, 2:5, 0].detach(), g[:, 2, 4])  # (1.875, 0) -> border (1.5, 0)
    with pytest.raises(ValueError, match="grid_wiener needs alpha"):
        net(x, torch.tensor([100]), mask)


def test_feature_grid_is_also_read_at_moving_averages():
    cfg = UNet1DConfig(horizon=4, channels=2, dim=8, dim_mults=(1,), groups=4, grid=5, grid_dim=3, grid_smooth=(3,))
    net = TemporalUNet(cfg)
    assert net.inp.in_channels == 2 + 3 + 3
    assert UNet1DConfig.from_dict(cfg.to_dict()) == cfg
    assert UNet1DConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "grid_smooth"}).grid_smooth == ()
    seen = {}
    net.inp.register_forward_hook(lambda m, a, out: seen.update(inp=a[0]))
    # steps chosen so that every 3-step mean (ends replicated) lands on a grid node
    x = torch.tensor([[[-1.0, -1.0], [-1.0, -1.0], [0.5, 0.5], [1.0, 1.0]]])
    net(x, torch.tensor([3]))
    g = net.grid.detach()[0]  # (3, rows, cols); node k of an axis sits at -1 + 0.5 k
    smooth = seen["inp"][0, 5:].detach()  # (3, H)
    # means: (-1,-1,-1)=-1, (-1,-1,0.5)=-0.5, (-1,0.5,1)=0.1667, (0.5,1,1)=0.8333
    torch.testing.assert_close(smooth[:, 0], g[:, 0, 0])
    torch.testing.assert_close(smooth[:, 1], g[:, 1, 1])
    m = 1 / 6  # 0.1667 lies 1/3 of the way from node 2 (0.0) to node 3 (0.5) on both axes
    w = m / 0.5
    ref = ((1 - w) ** 2 * g[:, 2, 2] + w * (1 - w) * (g[:, 2, 3] + g[:, 3, 2]) + w * w * g[:, 3, 3])
    torch.testing.assert_close(smooth[:, 2], ref)
    with pytest.raises(ValueError, match="grid_smooth needs a grid and odd widths"):
        TemporalUNet(UNet1DConfig(grid=8, grid_smooth=(4,)))
    with pytest.raises(ValueError, match="grid_smooth needs a grid"):
        TemporalUNet(UNet1DConfig(grid_smooth=(3,)))


def test_sample_prediction_returns_the_network_output_clipped():
    torch.manual_seed(0)
    net = TemporalUNet(UNet1DConfig(horizon=16, dim=8, dim_mults=(1, 2), groups=4))
    prior = TrajectoryPrior(net, cosine_alphas_cumprod(50), [0.0, 0.0], [1.0, 1.0], prediction="sample", clip=None)
    x, t = torch.randn(3, 16, 2), torch.tensor([0, 10, 49])
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, t), net(x, t))
    with pytest.raises(ValueError, match="prediction must be"):
        TrajectoryPrior(net, cosine_alphas_cumprod(50), [0.0, 0.0], [1.0, 1.0], prediction="v")


def test_unet_overfits_a_tiny_batch():
    torch.manual_seed(0)
    net = TemporalUNet(UNet1DConfig(horizon=16, dim=16, dim_mults=(1, 2), groups=4))
    x, t = torch.randn(8, 16, 2), torch.randint(0, 50, (8,))
    target = torch.randn(8, 16, 2)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    first = None
    for _ in range(150):
        loss = (net(x, t) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_cosine_schedule():
    ac = cosine_alphas_cumprod(200)
    assert ac.shape == (200,) and (ac[1:] < ac[:-1]).all() and 0.99 < ac[0] <= 1 and ac[-1] < 1e-3


def test_prior_contract_and_normaliser():
    prior = tiny_prior()
    check_prior(prior)
    xy = torch.tensor([[0.0, -1.0], [20.0, 9.0], [5.0, 2.0]])
    n = prior.normalize(xy)
    torch.testing.assert_close(n[:2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    torch.testing.assert_close(prior.unnormalize(n), xy)


def test_scale_stretches_the_normalised_range_and_the_clip(tmp_path):
    torch.manual_seed(0)
    net = TemporalUNet(UNet1DConfig(horizon=16, dim=8, dim_mults=(1, 2), groups=4))
    prior = TrajectoryPrior(net, cosine_alphas_cumprod(50), [0.0, -1.0], [20.0, 9.0], scale=4.0, prediction="sample")
    xy = torch.tensor([[0.0, -1.0], [20.0, 9.0], [5.0, 4.0]])
    torch.testing.assert_close(prior.normalize(xy), torch.tensor([[-4.0, -4.0], [4.0, 4.0], [-2.0, 0.0]]))
    torch.testing.assert_close(prior.unnormalize(prior.normalize(xy)), xy)
    big = torch.full((1, 16, 2), 50.0)
    with torch.no_grad():
        out = prior.denoise(big, torch.tensor([0]))
    assert out.abs().max() <= 4.0 and (out.abs() > 1.0).any()  # clamped to the scaled range, not to 1
    prior.save_pretrained(tmp_path / "s")
    assert TrajectoryPrior.from_pretrained(tmp_path / "s").scale == 4.0
    with pytest.raises(ValueError, match="scale must be > 0"):
        TrajectoryPrior(net, cosine_alphas_cumprod(50), [0.0, 0.0], [1.0, 1.0], scale=0.0)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_save_and_from_pretrained_round_trip(tmp_path, prediction):
    prior = tiny_prior()
    prior.prediction_type = prediction
    prior.clip, prior.stride, prior.planning_guidance = 0.5, 4, 3.0  # non-defaults must survive the round trip
    prior.planning_guidance_schedule = "variance"
    prior.planning_steps, prior.planning_select, prior.planning_batch = 50, "consistency", 32
    prior.planning_lam0, prior.planning_consensus_sweep = 0.7, "red-black"
    prior.planning_refine_fusion, prior.planning_refine_inner = True, 2
    prior.save_pretrained(tmp_path / "ckpt", extra={"command": "test"})
    again = TrajectoryPrior.from_pretrained(tmp_path / "ckpt")
    x, t = 3 * torch.randn(2, 160, 2), torch.tensor([3, 40])
    assert torch.equal(prior.denoise(x, t), again.denoise(x, t))
    assert again.env_name == "test" and again.prediction_type == prediction
    assert again.clip == 0.5 and again.stride == 4 and again.planning_guidance == 3.0
    assert again.planning_guidance_schedule == "variance"
    assert planning_sampler("cofi", prior=again).guidance_schedule == "variance"
    assert (again.planning_steps, again.planning_select, again.planning_batch) == (50, "consistency", 32)
    from cofi.planning.planner import default_batch, resolve_planning
    assert default_batch("cofi", again) == 32 and default_batch("cdgs", again) == 40 and default_batch("gsc") == 16
    assert resolve_planning(again, "gsc", None)[2] == 32 and resolve_planning(again, "gsc", 4)[2] == 4
    assert planning_sampler("gsc", prior=again).steps == 50 and planning_sampler("gsc", prior=again, steps=8).steps == 8
    assert planning_sampler("gsc").steps == 20
    assert again.planning_lam0 == 0.7 and planning_sampler("cofi", prior=again).lam0 == 0.7
    assert planning_sampler("cofi").lam0 == 0.9 and planning_sampler("cofi", prior=again, lam0=0.5).lam0 == 0.5
    # the sweep goes to every method with consensus; GSC composes unconditional scores
    assert again.planning_consensus_sweep == "red-black"
    assert [planning_sampler(m, prior=again, consensus=1.0).consensus_sweep for m in ("cofi", "cd", "cdgs")] == \
        ["red-black"] * 3
    assert planning_sampler("gsc", prior=again).consensus_sweep == "jacobi"
    assert planning_sampler("cofi").consensus_sweep == "jacobi"
    # refinement-stage fusion is CoFi's alone; the coarse stage stays unfused
    assert again.planning_refine_fusion is True
    cofi = planning_sampler("cofi", prior=again)
    assert (cofi.fusion, cofi.refine_fusion) == (False, True)
    assert planning_sampler("cofi", prior=again, refine_fusion=False).refine_fusion is False
    assert planning_sampler("cofi").refine_fusion is None and planning_sampler("cdgs", prior=again).fusion
    assert planning_sampler("gsc", prior=again).fusion is False
    # so are the refinement's rounds per step: 2 here, the paper's 1 without the setting
    assert again.planning_refine_inner == 2 and cofi.refine_inner == 2
    assert planning_sampler("cofi", prior=again, refine_inner=3).refine_inner == 3
    assert planning_sampler("cofi").refine_inner == 1 and planning_sampler("cofi", prior=prior).refine_inner == 2
    assert not hasattr(planning_sampler("cdgs", prior=again), "refine_inner")
    again.planning_refine_inner = 0  # set after loading (as the benchmarks' flags do): CoFi refuses it
    with pytest.raises(ValueError, match="refine_inner must be an int >= 1"):
        planning_sampler("cofi", prior=again)


@pytest.mark.parametrize("kw, match", [(dict(planning_steps=0), "planning_steps"),
                                       (dict(planning_steps=2.5), "planning_steps"),
                                       (dict(planning_batch=0), "planning_batch"),
                                       (dict(planning_select="best"), "planning_select"),
                                       (dict(planning_lam0=0.0), "planning_lam0"),
                                       (dict(planning_lam0=1.5), "planning_lam0"),
                                       (dict(planning_lam0=True), "planning_lam0"),
                                       (dict(planning_consensus_sweep="gauss"), "planning_consensus_sweep"),
                                       (dict(planning_refine_fusion=1), "planning_refine_fusion"),
                                       (dict(planning_refine_fusion="yes"), "planning_refine_fusion"),
                                       (dict(planning_refine_inner=0), "planning_refine_inner"),
                                       (dict(planning_refine_inner=1.5), "planning_refine_inner")])
def test_bad_planning_settings(kw, match):
    net = tiny_prior().net
    with pytest.raises(ValueError, match=match):
        TrajectoryPrior(net, cosine_alphas_cumprod(50), [0.0, 0.0], [1.0, 1.0], **kw)


def test_missing_checkpoint_names_the_shipped_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped names: " + ", ".join(CHECKPOINTS)):
        TrajectoryPrior.from_pretrained(tmp_path / "nothing")


def _toy_data(tmp_path):
    eps = np.cumsum(np.random.default_rng(0).normal(size=(12, 201, 2)), axis=1).astype(np.float32)
    for name, e in (("toy.npz", eps), ("toy-val.npz", eps[:4])):
        np.savez(tmp_path / name, observations=e.reshape(-1, 2))


def _train_args(tmp_path, out, *extra):
    from cofi.planning.train import add_train_args

    p = argparse.ArgumentParser()
    add_train_args(p)
    return p.parse_args(["--data", str(tmp_path / "toy.npz"), "--out", str(tmp_path / out), "--every", "1",
                         "--dim", "8", "--dim-mults", "1", "2", "--T", "20", "--batch", "4", "--grid", "8",
                         *extra])


def test_training_stops_and_resumes_bit_identically(tmp_path):
    import json

    from safetensors.torch import load_file

    from cofi.planning.train import train

    _toy_data(tmp_path)
    train(_train_args(tmp_path, "straight", "--steps", "2"), "test")
    train(_train_args(tmp_path, "split", "--steps", "2", "--stop-at", "1"), "test")
    assert json.loads((tmp_path / "split" / "state.json").read_text())["step"] == 1
    train(_train_args(tmp_path, "split", "--steps", "2"), "test")  # resumes at step 1
    a = load_file(tmp_path / "straight" / "state.safetensors")
    b = load_file(tmp_path / "split" / "state.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("opt.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (tmp_path / "split" / "state.pt").exists()  # no pickle
    cfg = json.loads((tmp_path / "split" / "config.json").read_text())
    assert cfg["step"] == 2 and cfg["target"] == "stf" and cfg["stride"] == 4 and cfg["clip"] == 1.0
    prior = TrajectoryPrior.from_pretrained(tmp_path / "split")
    assert prior.sample_shape == (40, 2) and prior.stride == 4 and prior.accepts_observations
    assert prior.prediction_type == "v_prediction"


def test_training_warm_start_from_a_previous_run(tmp_path):
    """--init starts from a run's final weights and EMA with a fresh optimiser and schedule;
    the config records where it came from; a warm-started run also resumes bit-identically."""
    import json

    from safetensors.torch import load_file

    from cofi.planning.train import train

    _toy_data(tmp_path)
    train(_train_args(tmp_path, "base", "--steps", "2"), "base-cmd")
    base = load_file(tmp_path / "base" / "state.safetensors")
    train(_train_args(tmp_path, "warm", "--steps", "1", "--init", str(tmp_path / "base"), "--lr", "0"), "warm-cmd")
    warm = load_file(tmp_path / "warm" / "state.safetensors")
    # lr 0: the weights are the base run's; the optimiser state is fresh (one step of moments)
    for k in base:
        if k.startswith("net."):
            assert torch.equal(base[k], warm[k]), k
    assert json.loads((tmp_path / "warm" / "state.json").read_text())["step"] == 1
    cfg = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert cfg["init"]["command"] == "base-cmd" and cfg["init"]["steps"] == 2 and cfg["command"] == "warm-cmd"
    # from a checkpoint directory alone (what ships): its EMA weights start the net and the EMA
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes((tmp_path / "base" / "model.safetensors").read_bytes())
    tuned = dict(json.loads((tmp_path / "base" / "config.json").read_text()), planning_guidance=5.0,
                 planning_guidance_schedule="variance", planning_steps=50,
                 planning_select="consistency", planning_batch=32)  # as the shipped giant prior's
    (ckpt / "config.json").write_text(json.dumps(tuned))
    train(_train_args(tmp_path, "fromckpt", "--steps", "1", "--init", str(ckpt), "--lr", "0"), "c")
    got = load_file(tmp_path / "fromckpt" / "state.safetensors")
    shipped = load_file(ckpt / "model.safetensors")
    for k, v in shipped.items():
        assert torch.equal(got[f"net.{k}"], v), k
    # the warm start keeps the planning settings its checkpoint was tuned with; a fresh run has none
    warmed = TrajectoryPrior.from_pretrained(tmp_path / "fromckpt")
    assert (warmed.planning_guidance, warmed.planning_guidance_schedule) == (5.0, "variance")
    assert (warmed.planning_steps, warmed.planning_select, warmed.planning_batch) == (50, "consistency", 32)
    assert TrajectoryPrior.from_pretrained(tmp_path / "base").planning_guidance is None
    # bit-identical resume of a warm-started run
    train(_train_args(tmp_path, "w2", "--steps", "2", "--init", str(tmp_path / "base")), "w")
    train(_train_args(tmp_path, "w3", "--steps", "2", "--init", str(tmp_path / "base"), "--stop-at", "1"), "w")
    train(_train_args(tmp_path, "w3", "--steps", "2", "--init", str(tmp_path / "base")), "w")
    a, b = load_file(tmp_path / "w2" / "state.safetensors"), load_file(tmp_path / "w3" / "state.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_stf_targets_are_the_bank_posterior_mean(tmp_path):
    """With --target stf the network's v target decodes (to_x0) to the EmpiricalPrior's
    posterior mean given the noisy window and the observed ends, not to x_0."""
    from cofi.planning.data import cut_windows, pad_episodes
    from cofi.planning.train import Batcher
    from cofi.priors import EmpiricalPrior
    from cofi.priors.trajectory import cosine_alphas_cumprod
    from cofi.prior import to_x0

    _toy_data(tmp_path)
    args = _train_args(tmp_path, "x", "--steps", "1")
    eps = torch.from_numpy(pad_episodes(np.load(tmp_path / "toy.npz")["observations"].reshape(12, 201, 2), 64) / 20)
    ac = cosine_alphas_cumprod(20)
    bank = EmpiricalPrior(torch.from_numpy(cut_windows(eps.numpy(), 160, 4, 4)), ac, obs_std=0.02)
    x_in, t, mask, target, ev = Batcher(eps.float(), ac, args, bank, cond=True)(32, torch.Generator().manual_seed(0))
    assert ev == {}  # no --evidence-prob
    assert mask.shape == (32, 40) and mask[:, 1:-1].sum() == 0 and 0 < mask.sum() < 64
    x0 = to_x0(target, x_in, ac[t], "v_prediction")
    full = mask[..., None].expand_as(x_in)
    torch.testing.assert_close(x0, bank.denoise(x_in, t, observed=x_in, observed_mask=full), atol=1e-4, rtol=1e-4)


def test_training_plain_targets_resume_and_wall_time(tmp_path):
    import json

    from cofi.planning.train import train

    _toy_data(tmp_path)
    args = _train_args(tmp_path, "run", "--steps", "4", "--every", "2", "--fourier", "2", "--prediction", "sample",
                       "--target", "plain", "--cond-prob", "0", "--stride", "1", "--grid", "0")
    train(args, "test")
    first = json.loads((tmp_path / "run" / "config.json").read_text())
    args.steps = 6
    train(args, "test")  # resumes from step 4
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["step"] == 6 and np.isfinite(cfg["val_loss"])
    # training time adds up across resumes (kept in state.json)
    assert cfg["wall_s"] >= first["wall_s"] >= 0
    assert json.loads((tmp_path / "run" / "state.json").read_text())["wall_s"] == cfg["wall_s"]
    assert (tmp_path / "run" / "loss.png").exists()
    prior = TrajectoryPrior.from_pretrained(tmp_path / "run")
    assert prior.sample_shape == (160, 2) and not prior.accepts_observations
    assert prior.prediction_type == "sample" and prior.net.config.fourier == 2


def test_stf_reference_batch_is_the_batch_plus_a_bank_sample(tmp_path):
    """--bank-sample n: the target is the posterior mean over n bank rows (drawn from the
    training generator) together with the batch's own clean windows."""
    from cofi.planning.data import cut_windows, pad_episodes
    from cofi.planning.train import Batcher, sample_windows
    from cofi.priors import EmpiricalPrior
    from cofi.priors.trajectory import cosine_alphas_cumprod
    from cofi.prior import to_x0

    _toy_data(tmp_path)
    args = _train_args(tmp_path, "x", "--steps", "1", "--bank-sample", "5", "--cond-prob", "0")
    eps = torch.from_numpy(pad_episodes(np.load(tmp_path / "toy.npz")["observations"].reshape(12, 201, 2), 64) / 20)
    ac = cosine_alphas_cumprod(20)
    bank = EmpiricalPrior(torch.from_numpy(cut_windows(eps.numpy(), 160, 4, 4)), ac)
    g = torch.Generator().manual_seed(0)
    x_in, t, mask, target, _ = Batcher(eps.float(), ac, args, bank, cond=False)(6, g)
    # replay the draws: windows, timesteps, noise, then the bank rows
    r = torch.Generator().manual_seed(0)
    x0 = sample_windows(eps.float(), 6, 160, r, 4)
    torch.randint(0, 20, (6,), generator=r), torch.randn(x0.shape, generator=r)
    rows = torch.randint(0, bank.size, (5,), generator=r)
    ref = EmpiricalPrior(torch.cat([x0, bank.bank[rows].reshape(5, 40, 2)]), ac)
    torch.testing.assert_close(to_x0(target, x_in, ac[t], "v_prediction"), ref.denoise(x_in, t), atol=1e-4, rtol=1e-4)


def test_unet_evidence_inputs_and_zero_weight_expansion():
    """A network with ``evidence`` reads (y, π/(1+π)); weights of a network without those
    inputs, expanded with zero columns, compute exactly the old network's output whatever the
    evidence, and evidence changes the output once those weights are nonzero."""
    from cofi.priors.unet1d import expand_input_weights

    torch.manual_seed(0)
    cfg = dict(horizon=16, dim=8, dim_mults=(1, 2), groups=4, grid=8, cond=True)
    old = TemporalUNet(UNet1DConfig(**cfg))
    new = TemporalUNet(UNet1DConfig(**cfg, evidence=True))
    assert new.inp.weight.shape[1] == old.inp.weight.shape[1] + 4
    new.load_state_dict(expand_input_weights(old.state_dict(), new))
    x, t = torch.randn(3, 16, 2), torch.tensor([0, 5, 9])
    mask = torch.zeros(3, 16, dtype=torch.bool)
    mask[:, 0] = True
    y, prec = torch.randn(3, 16, 2), torch.rand(3, 16, 2) * 5
    ref = old(x, t, mask)
    torch.testing.assert_close(new(x, t, mask), ref, atol=0, rtol=0)
    torch.testing.assert_close(new(x, t, mask, evidence=y, evidence_precision=prec), ref, atol=0, rtol=0)
    with torch.no_grad():
        new.inp.weight[:, -4:] = torch.randn_like(new.inp.weight[:, -4:])
    assert not torch.allclose(new(x, t, mask, evidence=y, evidence_precision=prec), ref)
    # no evidence and zero precision are the same input: y is ignored where π = 0
    torch.testing.assert_close(new(x, t, mask, evidence=y, evidence_precision=torch.zeros_like(y)),
                               new(x, t, mask), atol=0, rtol=0)
    with pytest.raises(ValueError, match="shape of x"):
        new(x, t, mask, evidence=y[:, :8], evidence_precision=prec[:, :8])


def test_trajectory_prior_evidence_surface():
    prior = tiny_prior()
    assert not prior.accepts_evidence and prior.planning_consensus == 0.0
    x = torch.randn(2, 160, 2)
    with pytest.raises(ValueError, match="not trained to read evidence"):
        prior.denoise(x, torch.tensor([3, 4]), evidence=x, evidence_precision=torch.ones_like(x))
    with pytest.raises(ValueError, match="planning_consensus = 5 needs a network trained to read consensus"):
        TrajectoryPrior(prior.net, prior.alphas_cumprod, [0.0, -1.0], [20.0, 9.0], planning_consensus=5.0)
    with pytest.raises(ValueError, match="planning_consensus = 2 needs a network trained to read consensus"):
        prior.planning_consensus = 2  # set after construction: checked the same way
    prior.planning_consensus = 0  # off is always allowed
    assert prior.planning_consensus == 0.0
    with pytest.raises(ValueError, match="finite number >= 0"):
        prior.planning_consensus = -1.0


def test_sample_evidence_covers_overlaps_at_the_consensus_precision(tmp_path):
    """Training evidence: prefix and/or suffix of exactly the overlap (56 env steps = 14
    points at stride 4), precision κ·min(ᾱ/(1−ᾱ), 10) with κ in range, y = x_0 + ε/√π."""
    from cofi.planning.train import sample_evidence

    _toy_data(tmp_path)
    args = _train_args(tmp_path, "x", "--evidence-prob", "0.75", "--evidence-kappa", "1", "4")
    n = 4000
    x0 = torch.randn(n, 40, 2)
    a = torch.rand(n).clamp(0.01, 0.99)
    ev = sample_evidence(x0, a, args, torch.Generator().manual_seed(0))
    y, prec = ev["evidence"], ev["evidence_precision"]
    assert y.shape == prec.shape == x0.shape and (prec >= 0).all()
    on = prec[:, :, 0] > 0
    assert (prec[..., 0] == prec[..., 1]).all() and not on[:, 14:26].any()  # middle never observed
    pre, suf = on[:, :14], on[:, 26:]
    assert (pre.all(1) | ~pre.any(1)).all() and (suf.all(1) | ~suf.any(1)).all()  # whole overlaps
    frac = (pre.any(1) | suf.any(1)).float().mean().item()
    assert abs(frac - 0.75) < 0.03
    both = (pre.any(1) & suf.any(1)).float().mean().item()
    assert abs(both - 0.25) < 0.03  # a third of the windows with evidence get both ends
    kappa = prec[:, :, 0].max(1).values / (a / (1 - a)).clamp(max=10.0)
    assert (kappa[on.any(1)] >= 1 - 1e-4).all() and (kappa[on.any(1)] <= 4 + 1e-4).all()
    z = ((y - x0) * prec.sqrt())[prec > 0]
    assert abs(z.std().item() - 1) < 0.02 and abs(z.mean().item()) < 0.02
    assert (y[prec == 0] == 0).all()


def test_sample_evidence_independent_sides_drop_each_neighbour_separately(tmp_path):
    """--evidence-sides independent (CompDiffuser's per-side dropout): each overlap is observed
    with probability q on its own, with its own κ, at the consensus precision."""
    from cofi.planning.train import sample_evidence

    _toy_data(tmp_path)
    args = _train_args(tmp_path, "x", "--evidence-prob", "0.8", "--evidence-kappa", "1", "4",
                       "--evidence-sides", "independent")
    n = 6000
    x0 = torch.randn(n, 40, 2)
    a = torch.rand(n).clamp(0.01, 0.99)
    ev = sample_evidence(x0, a, args, torch.Generator().manual_seed(1))
    prec = ev["evidence_precision"][..., 0]
    pre, suf = prec[:, :14], prec[:, 26:]
    assert (prec[:, 14:26] == 0).all()
    assert (pre == pre[:, :1]).all() and (suf == suf[:, :1]).all()  # one precision per overlap
    on_p, on_s = pre[:, 0] > 0, suf[:, 0] > 0
    assert abs(on_p.float().mean().item() - 0.8) < 0.02 and abs(on_s.float().mean().item() - 0.8) < 0.02
    assert abs((on_p & on_s).float().mean().item() - 0.64) < 0.02  # independent: q²
    assert abs((~on_p & ~on_s).float().mean().item() - 0.04) < 0.01
    snr = (a / (1 - a)).clamp(max=10.0)
    kp, ks = pre[:, 0] / snr, suf[:, 0] / snr
    both = on_p & on_s
    assert ((kp[on_p] > 1 - 1e-4) & (kp[on_p] < 4 + 1e-4)).all() and ((ks[on_s] > 1 - 1e-4) & (ks[on_s] < 4 + 1e-4)).all()
    assert (kp[both] - ks[both]).abs().mean() > 0.3  # each side its own κ
    y = ev["evidence"]
    z = ((y - x0) * ev["evidence_precision"].sqrt())[ev["evidence_precision"] > 0]
    assert abs(z.std().item() - 1) < 0.02


def test_snapshot_every_keeps_loadable_checkpoints_of_those_steps(tmp_path):
    from cofi.planning.train import TrainingSetupError, train

    _toy_data(tmp_path)
    with pytest.raises(TrainingSetupError, match="--snapshot-every must be a multiple of --every"):
        train(_train_args(tmp_path, "bad", "--steps", "4", "--every", "2", "--snapshot-every", "3"), "x")
    assert not (tmp_path / "bad").exists()
    train(_train_args(tmp_path, "s", "--steps", "4", "--every", "1", "--snapshot-every", "2"), "x")
    snaps = sorted(p.name for p in (tmp_path / "s" / "snapshots").iterdir())
    assert snaps == ["step-0000002", "step-0000004"]
    last = TrajectoryPrior.from_pretrained(tmp_path / "s" / "snapshots" / "step-0000004")
    final = TrajectoryPrior.from_pretrained(tmp_path / "s")
    for (k, v), (_, w) in zip(last.net.state_dict().items(), final.net.state_dict().items()):
        assert torch.equal(v, w), k
    two = TrajectoryPrior.from_pretrained(tmp_path / "s" / "snapshots" / "step-0000002")
    assert any(not torch.equal(v, w) for v, w in zip(two.net.state_dict().values(), final.net.state_dict().values()))


def test_evidence_targets_are_the_bank_posterior_under_the_evidence(tmp_path):
    """With --evidence-prob the target decodes to the bank's posterior mean given the noisy
    window, the observed ends and the evidence (which moves it toward y over the overlaps)."""
    from cofi.planning.data import cut_windows, pad_episodes
    from cofi.planning.train import Batcher
    from cofi.priors import EmpiricalPrior
    from cofi.prior import to_x0

    _toy_data(tmp_path)
    args = _train_args(tmp_path, "x", "--steps", "1", "--evidence-prob", "1")
    eps = torch.from_numpy(pad_episodes(np.load(tmp_path / "toy.npz")["observations"].reshape(12, 201, 2), 64) / 20)
    ac = cosine_alphas_cumprod(20)
    bank = EmpiricalPrior(torch.from_numpy(cut_windows(eps.numpy(), 160, 4, 4)), ac, obs_std=0.02)
    x_in, t, mask, target, ev = Batcher(eps.float(), ac, args, bank, cond=True)(32, torch.Generator().manual_seed(0))
    assert set(ev) == {"evidence", "evidence_precision"} and (ev["evidence_precision"] > 0).any(1).all()
    full = mask[..., None].expand_as(x_in)
    x0 = to_x0(target, x_in, ac[t], "v_prediction")
    torch.testing.assert_close(x0, bank.denoise(x_in, t, observed=x_in, observed_mask=full, **ev), atol=1e-4, rtol=1e-4)
    plain = bank.denoise(x_in, t, observed=x_in, observed_mask=full)
    seen = ev["evidence_precision"] > 0
    assert (x0 - ev["evidence"])[seen].abs().mean() < (plain - ev["evidence"])[seen].abs().mean()


def test_training_with_evidence_warm_starts_resumes_and_plans_with_consensus(tmp_path):
    """--evidence-prob: a network with evidence inputs, warm-started from one without (zero
    new weights), resumable bit-identically; its prior takes consensus in the planner."""
    import json

    from safetensors.torch import load_file

    from cofi.planning.train import train

    _toy_data(tmp_path)
    train(_train_args(tmp_path, "base", "--steps", "1"), "base")
    ev = ("--evidence-prob", "0.5", "--init", str(tmp_path / "base"))
    train(_train_args(tmp_path, "warm", "--steps", "1", "--lr", "0", *ev), "w")
    base, warm = load_file(tmp_path / "base" / "state.safetensors"), load_file(tmp_path / "warm" / "state.safetensors")
    w = warm.pop("net.inp.weight")  # lr 0: the base run's weights, with zero columns for the new inputs
    torch.testing.assert_close(w[:, :-4], base.pop("net.inp.weight"), atol=0, rtol=0)
    assert (w[:, -4:] == 0).all()
    for k in base:
        if k.startswith("net."):
            assert torch.equal(base[k], warm[k]), k
    train(_train_args(tmp_path, "a", "--steps", "2", *ev), "e")
    train(_train_args(tmp_path, "b", "--steps", "2", "--stop-at", "1", *ev), "e")
    train(_train_args(tmp_path, "b", "--steps", "2", *ev), "e")
    a, b = load_file(tmp_path / "a" / "state.safetensors"), load_file(tmp_path / "b" / "state.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["unet"]["evidence"] and cfg["evidence_prob"] == 0.5 and cfg["evidence_kappa"] == [0.5, 20.0]
    prior = TrajectoryPrior.from_pretrained(tmp_path / "a")
    assert prior.accepts_evidence and prior.planning_consensus == 0.0
    prior.planning_consensus = 5.0
    prior.save_pretrained(tmp_path / "c")
    prior = TrajectoryPrior.from_pretrained(tmp_path / "c")
    assert prior.planning_consensus == 5.0
    sampler = planning_sampler("cd", prior=prior, steps=2)  # GSC with neighbour-conditioned scores
    assert sampler.consensus == 5.0 and planning_sampler("gsc", prior=prior).consensus == 0.0
    from cofi.planning.planner import plan

    seen = []
    prior.net.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["evidence_precision"]), with_kwargs=True)
    result = plan(prior, (0.0, 0.0), (20.0, 20.0), sampler, count=2, batch=2,
                  generator=torch.Generator().manual_seed(0), maze="medium")
    assert np.isfinite(result.xy).all()
    # the first prediction has no messages yet; later ones read the neighbour over the 14-point overlaps
    assert seen[0] is None and seen[-1] is not None
    on = (seen[-1][..., 0] > 0).reshape(2, 2, 40)  # (candidates, windows, points)
    assert on[:, 0, 26:].all() and on[:, 1, :14].all() and not on[:, 0, :26].any() and not on[:, 1, 14:].any()


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_shipped_checkpoints_load_and_pass_the_contract(name):
    import json

    from cofi.priors.trajectory import _PACKAGE_DIR

    prior = TrajectoryPrior.from_pretrained(name)
    cfg = json.loads((_PACKAGE_DIR / name / "config.json").read_text())
    assert cfg["command"].startswith("python -m cofi.planning train") and cfg["step"] > 0
    if name == "scene-play":  # 128-step windows of the 14 planning dimensions
        assert prior.sample_shape == (128 // prior.stride, 14) and prior.env_name == "scene-play-v0"
    else:
        assert prior.sample_shape == (160 // prior.stride, 2) and prior.env_name == f"{name}-v0"
    # ε-prediction divides by √ᾱ ≈ 1e-2 at the noisy end: batch-size-dependent float rounding
    # of the convolutions is amplified 100×, so the tolerance follows the prediction type
    tol = 1e-3 if prior.prediction_type != "epsilon" else 2e-2
    check_prior(prior, batch=2, atol=tol, rtol=tol)


def test_evidence_features_are_weighted_and_bounded():
    """The network reads (w·y, w), w = π/(1+π): evidence drawn at a tiny precision (high noise,
    y = x_0 + ε/√π far outside the data) stays bounded, |w·y| ≤ |x_0| + |ε|/2, and π = 0
    gives zeros whatever y holds."""
    from cofi.priors.unet1d import _evidence_features

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 10, 2, generator=g), torch.randn(4, 10, 2, generator=g)
    prec = torch.logspace(-8, 2, 40).reshape(4, 10, 1).expand(4, 10, 2)
    y = x0 + eps / prec.sqrt()
    wy, w = _evidence_features(x0, y, prec)
    torch.testing.assert_close(w, (prec / (1 + prec)).transpose(1, 2))
    torch.testing.assert_close(wy, (w.transpose(1, 2) * y).transpose(1, 2))
    assert bool((wy.abs() <= (x0.abs() + eps.abs() / 2).transpose(1, 2) + 1e-5).all())
    assert y.abs().max() > 1e3  # the raw value would not have been
    zero = torch.zeros_like(prec)
    wy0, w0 = _evidence_features(x0, y, zero)
    assert not wy0.any() and not w0.any()


def test_entry_observations_reach_the_network_per_entry():
    """``cond_entries``: a goal that fixes some dimensions only is read per entry (one mask
    channel per dimension), the observed values replace the noisy ones, and the mask channels
    change the output (they are wired in)."""
    torch.manual_seed(0)
    net = TemporalUNet(UNet1DConfig(horizon=8, channels=3, dim=8, dim_mults=(1, 2), cond=True, cond_entries=True))
    assert net.inp.in_channels == 3 + 3
    prior = TrajectoryPrior(net, cosine_alphas_cumprod(10), [-1.0] * 3, [1.0] * 3, prediction="v_prediction")
    seen = []
    forward = net.forward
    net.forward = lambda x, t, mask=None, **kw: seen.append((x.clone(), mask)) or forward(x, t, mask, **kw)
    x_t, obs = torch.randn(2, 8, 3), torch.full((2, 8, 3), 0.5)
    m = torch.zeros(2, 8, 3, dtype=torch.bool)
    m[:, -1, 1:] = True
    a = prior.denoise(x_t, torch.tensor([3, 7]), observed=obs, observed_mask=m)
    x_in, mask = seen[-1]
    assert torch.equal(mask, m) and torch.equal(x_in[m], obs[m]) and torch.equal(x_in[~m], x_t[~m])
    b = prior.denoise(x_t.where(~m, obs), torch.tensor([3, 7]))  # the same input, no mask
    assert not torch.allclose(a, b)


def test_shipped_antmaze_giant_prior_plans_cofi_at_a_fifth_of_cdgs_nfe():
    """Issue 27's budget: the giant ant prior's CoFi plan (fused refinement, two rounds per
    refinement step, 32 candidates, consistency choice) costs (50 + 2·30)·11·32 + 12·11·32 =
    42 944 prior calls, at most 1/5 of CDGS's (P = 40, 10 inner iterations, pruning)."""
    from cofi.planning.planner import CONSISTENCY_NFE, default_batch, default_count, planning_layout

    env = "antmaze-giant-stitch-v0"
    prior = TrajectoryPrior.from_pretrained("antmaze-giant-stitch")
    layout = planning_layout(default_count(env), prior.stride)
    cofi_s, cdgs_s = planning_sampler("cofi", prior=prior), planning_sampler("cdgs", prior=prior)
    assert (cofi_s.refine_inner, cofi_s.refine_fusion, cofi_s.fusion) == (2, True, False)

    def per_plan(sampler, method):
        batch = default_batch(method, prior)
        return sampler.nfe(layout, batch) + CONSISTENCY_NFE * layout.count * batch

    assert per_plan(cofi_s, "cofi") == (50 + 2 * 30) * 11 * 32 + 12 * 11 * 32 == 42_944
    assert per_plan(cdgs_s, "cdgs") == 229_680  # the NFE its benchmark episodes counted
    assert 5 * per_plan(cofi_s, "cofi") <= per_plan(cdgs_s, "cdgs")
