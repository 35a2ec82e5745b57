"""Scene-Play planning: the closed-form prior of scene windows, the layout, goal conditioning on
the object dimensions only, and plan_scene (on a small synthetic dataset: seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cofi.planning.scene import SCENE_PLAN_DIMS

DIMS = list(SCENE_PLAN_DIMS)
from cofi.planning.scene_plan import GOAL_DIMS, load_scene_episodes, plan_scene, scene_layout, scene_pins, scene_prior


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    steps = np.cumsum(rng.normal(scale=0.02, size=(3, 1001, 40)), axis=1).astype(np.float32)
    path = tmp_path_factory.mktemp("scene") / "scene-play-v0.npz"
    np.savez(path, observations=steps.reshape(-1, 40), actions=np.zeros((3003, 5), np.float32),
             terminals=np.zeros(3003, bool))
    return path, steps


def test_episodes_and_bank_in_the_planning_space(data):
    path, obs = data
    eps = load_scene_episodes(path)
    assert eps.shape == (3, 1001, 14) and np.array_equal(eps, obs[..., DIMS])
    prior = scene_prior(path, every=64)
    assert prior.sample_shape == (32, 14) and prior.size == 3 * ((1001 - 128) // 64 + 1)
    assert float(prior.bank.abs().max()) <= 1 + 1e-6  # normalised per dimension to [-1, 1]
    torch.testing.assert_close(prior.unnormalize(prior.normalize(torch.as_tensor(eps[0]))), torch.as_tensor(eps[0]))
    layout = scene_layout()
    assert (layout.window, layout.overlap, layout.count, layout.length) == (32, 12, 8, 172)  # 128 / 48 steps
    with pytest.raises(ValueError, match="no OGBench scene file"):
        load_scene_episodes(path.parent / "missing")


def test_goal_pins_only_the_objects(data):
    path, obs = data
    prior = scene_prior(path, every=64)
    pins = scene_pins(prior, obs[0, 0], obs[1, 500])
    assert pins.mask[0].all() and pins.mask[1, list(GOAL_DIMS)].all()
    # what OGBench's success checks: cube xyz (3-5), button one-hots (8-11), drawer (12), window (13);
    # not the effector's xyz (0-2, a goal's arm is random) nor the cube's yaw (6-7, success ignores it)
    assert GOAL_DIMS == (3, 4, 5, 8, 9, 10, 11, 12, 13)
    assert pins.mask[1].nonzero().flatten().tolist() == list(GOAL_DIMS)


@pytest.mark.parametrize("method", ["cofi", "gsc"])
def test_plan_scene_starts_at_the_start_and_ends_at_the_goal_objects(data, method):
    path, obs = data
    prior = scene_prior(path, every=64)
    start, goal = obs[0, 0], obs[1, 500]
    out = plan_scene(prior, start, goal, method, batch=2, count=3, generator=torch.Generator().manual_seed(0))
    plan = out.xy
    assert plan.shape == (scene_layout(3).length, 14) and out.nfe > 0
    np.testing.assert_allclose(plan[0], start[DIMS], atol=1e-5)
    free = [d for d in range(14) if d not in GOAL_DIMS]
    np.testing.assert_allclose(plan[-1, list(GOAL_DIMS)], goal[DIMS][list(GOAL_DIMS)], atol=1e-5)
    assert np.abs(plan[-1, free] - goal[DIMS][free]).max() > 1e-3  # the arm and the cube's yaw are free
    with pytest.raises(ValueError, match="sample_shape must be"):
        plan_scene(type("P", (), {"sample_shape": (40, 2)})(), start, goal)


def test_plan_scene_consistency_selection(data):
    """``select="consistency"``: the same candidates, the one the prior moves least executed."""
    from cofi.planning.planner import CONSISTENCY, CONSISTENCY_NFE
    from cofi.steps import self_consistency

    path, obs = data
    prior = scene_prior(path, every=64)
    start, goal = obs[0, 0], obs[1, 500]
    g = torch.Generator().manual_seed(2)
    ref = plan_scene(prior, start, goal, "gsc", batch=4, count=3, generator=g)
    score = self_consistency(prior, ref.plans, generator=g, **CONSISTENCY)
    out = plan_scene(prior, start, goal, "gsc", batch=4, count=3, generator=torch.Generator().manual_seed(2),
                     select="consistency")
    assert out.best == int(torch.argmin(score)) and out.nfe == ref.nfe + CONSISTENCY_NFE * 4 * 3
    np.testing.assert_allclose(out.xy, prior.unnormalize(out.canvas[out.best]).double().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="select"):
        plan_scene(prior, start, goal, "gsc", select="best")
