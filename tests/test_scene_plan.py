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


class _Identity:
    """A prior whose normalised space is env units (the constraint's arithmetic, seen directly)."""

    def normalize(self, x):
        return torch.as_tensor(x, dtype=torch.float32)

    unnormalize = normalize


def _canvas(L=20):
    x = torch.zeros(1, L, 14)
    x[0, :, 0:3] = torch.tensor([3.0, 3.0, 3.0])  # the effector far from the cube
    x[0, :, 3:6] = torch.tensor([0.0, 0.0, 0.2])  # the cube resting on the table
    return x


def test_carry_constraint_removes_unheld_motion_and_carries_it_instead():
    """A cube that slides 1 unit while the arm is away (steps 3-4), then is held for steps 10-14
    and carried 0.4 units (0.1 a step from step 11): the slide is removed, its 1 unit is spread
    over the 5 held steps (0.2 each, on top of their own motion), the plan ends where it ended,
    and the effector moves with the held cube."""
    from cofi.planning.scene_plan import CarryConstraint

    x = _canvas()
    x[0, 3, 4], x[0, 4:, 4] = 0.5, 1.0                     # unheld slide in y: 0 -> 1
    for t in range(10, 15):                                  # held from step 10 (effector on the cube)
        x[0, t, 3:6] = torch.tensor([0.0, 1.0 + 0.1 * (t - 10), 0.2])
        x[0, t, 0:3] = x[0, t, 3:6] + torch.tensor([0.0, 0.0, 0.05])
    x[0, 15:, 4] = 1.4
    layout = type(scene_layout(1))(20, 0, 1, axis=0)
    out = CarryConstraint(_Identity())(x[:, None], layout)[:, 0]
    y = out[0, :, 4]
    assert torch.allclose(y[:10], torch.zeros(10))                       # still until the arm holds it
    assert torch.allclose(y[10:15], torch.tensor([0.2, 0.5, 0.8, 1.1, 1.4]), atol=1e-6)
    assert torch.allclose(y[15:], torch.full((5,), 1.4))                 # ends where the plan ended
    held = torch.arange(10, 15)
    torch.testing.assert_close(out[0, held, 1] - out[0, held, 4], x[0, held, 1] - x[0, held, 4])  # arm follows
    torch.testing.assert_close(out[0, :10, 0:3], x[0, :10, 0:3])       # the far arm is not moved
    torch.testing.assert_close(out[0, :, 5:], x[0, :, 5:])             # z, yaw and the other objects untouched


def test_carry_constraint_leaves_lifted_drawer_and_unheld_plans_alone():
    from cofi.planning.scene_plan import CarryConstraint

    c = CarryConstraint(_Identity())
    layout = type(scene_layout(1))(20, 0, 1, axis=0)
    x = _canvas()
    x[0, :, 5] = 0.66                                       # in the drawer: rides with it unheld
    x[0, 5:, 4] = -2.0
    torch.testing.assert_close(c(x[:, None], layout)[:, 0], x)
    x = _canvas()
    x[0, 5:, 4] = 1.0                                       # slides but is never held: no carry to move it to
    torch.testing.assert_close(c(x[:, None], layout)[:, 0], x)
    with pytest.raises(ValueError, match="hold < reach"):
        CarryConstraint(_Identity(), hold=1.0, reach=0.5)
    with pytest.raises(TypeError, match="normalize"):
        CarryConstraint(object())


def test_plan_scene_applies_the_carry_constraint_by_default(data):
    """The default plan's cube moves only while held (or off the table); without the constraint
    the same seed's plan need not; unknown names are refused."""
    from cofi.planning.scene_plan import CarryConstraint

    path, obs = data
    prior = scene_prior(path, every=64)
    start, goal = obs[0, 0], obs[1, 500]
    out = plan_scene(prior, start, goal, "gsc", batch=2, count=3, generator=torch.Generator().manual_seed(0))
    raw = plan_scene(prior, start, goal, "gsc", batch=2, count=3, generator=torch.Generator().manual_seed(0),
                     constraint=None)
    assert not np.allclose(out.xy, raw.xy)
    with pytest.raises(ValueError, match="constraint must be one of"):
        plan_scene(prior, start, goal, "gsc", constraint="physics")


def test_plan_scene_cofi_preset_fuses_and_prunes_twenty_candidates(data):
    """On Scene, ``cofi`` (or no sampler) is the planning preset with fusion and 4 refinement
    rounds, 20 candidates, the plan chosen among the likeliest 2 (`cofi.Pruned`): the executed
    plan's windows agree exactly over their overlaps and the others are out of the running; an
    explicit config or batch is taken as given."""
    import cofi
    from cofi.planning.planner import planning_sampler
    from cofi.planning.scene_plan import SCENE_COFI, SCENE_COFI_BATCH, SCENE_COFI_KEEP, scene_layout

    path, obs = data
    prior = scene_prior(path, every=64)
    start, goal = obs[0, 0], obs[1, 500]
    out = plan_scene(prior, start, goal, generator=torch.Generator().manual_seed(0), count=2)
    assert SCENE_COFI_BATCH == 20 and out.plans.shape[0] == 20 and out.method == "cofi"
    assert SCENE_COFI["refine_inner"] == 4 and SCENE_COFI_KEEP == 0.1
    assert float(out.overlap_error.max()) < 1e-10
    assert int(torch.isinf(out.disagreement).sum()) == 18 and bool(torch.isfinite(out.disagreement[out.best]))
    preset = cofi.Pruned(planning_sampler("cofi", prior=prior, **SCENE_COFI), keep=SCENE_COFI_KEEP)
    assert out.nfe == preset.nfe(scene_layout(2), 20)
    cfg = planning_sampler("cofi", prior=prior)  # the generic preset: no fusion
    raw = plan_scene(prior, start, goal, cfg, batch=3, generator=torch.Generator().manual_seed(0), count=2)
    assert raw.plans.shape[0] == 3 and float(raw.overlap_error.max()) > 1e-6


def test_object_manipulation_counts_toggles_cube_and_drawer_paths():
    """Two plans of 3 points: one toggles button 0 on and off (2), carries the cube 0.3 + 0.4 in
    x and y (0.5 of path) and opens the drawer by 1; the other stands still."""
    from cofi.planning.scene_plan import object_effort, object_manipulation

    p = np.zeros((2, 3, 14))
    p[0, 1, 9] = 1.0                       # button 0 unlocked at point 1, locked again at point 2
    p[0, 2, 3:5] = 0.3, 0.4
    p[0, 1:, 12] = -1.0
    np.testing.assert_allclose(object_manipulation(p), [[2.0, 0.5, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(object_effort(torch.as_tensor(p)), [3.5, 0.0])
