"""The ant's inverse dynamics and controller on a few generated AntMaze episodes."""

import numpy as np
import pytest
import torch

pytest.importorskip("ogbench")
pytest.importorskip("mujoco")

from cofi.planning import ant_control as AC  # noqa: E402
from cofi.planning import data as D  # noqa: E402
from cofi.planning.ant_expert import SAC, SACConfig  # noqa: E402

NAME = "antmaze-medium-stitch-v0"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ant")
    return D.generate_dataset(NAME, out, episodes=3, val_episodes=1, seed=0, progress=False,
                              expert=SAC(SACConfig(hidden=16)))


def test_target_rows_stay_inside_their_episode():
    rows = AC._target_rows(2 * AC.EPISODE_STEPS, (8, 16))
    assert rows[0].tolist() == [8, 16]
    assert rows[195].tolist() == [200, 200]  # clipped to the episode's last row
    assert rows[201].tolist() == [209, 217]  # the next episode starts over


def test_inputs_are_standardised_observation_and_relative_targets():
    m = AC.AntInverseDynamics(offsets=(4,), hidden=8, depth=1, obs_mean=torch.ones(29), obs_std=2 * torch.ones(29))
    obs = torch.arange(29.0)
    x = m.inputs(obs, torch.tensor([[4.0, 9.0]]))
    torch.testing.assert_close(x[:29], (obs - 1) / 2)
    torch.testing.assert_close(x[29:], torch.tensor([(4.0 - 0.0) / 4, (9.0 - 1.0) / 4]))
    with pytest.raises(ValueError, match="need obs"):
        m(obs, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="offsets must be increasing"):
        AC.AntInverseDynamics(offsets=(8, 4))


def test_training_fits_and_round_trips(small, tmp_path):
    lines = []
    m = AC.train_ant_inverse_dynamics(small[0], tmp_path, offsets=(4, 8), hidden=32, depth=2, steps=300, batch=128,
                                      val=small[1], log_every=100, log=lines.append)
    h = m.train_config["history"]
    assert h[-1]["train_mse"] < h[0]["train_mse"] and "val_mse" in h[-1] and len(lines) == 3
    back = AC.AntInverseDynamics.from_pretrained(tmp_path)
    obs, tg = np.zeros(29), np.ones((2, 2))
    np.testing.assert_array_equal(back.act(obs, tg), m.act(obs, tg))
    # reach: the 90th percentile of the torso's displacement over each offset, in the data
    xy = np.load(small[0])["observations"][:, :2].reshape(-1, 201, 2)
    for k, r in zip((4, 8), m.reach):
        moved = np.linalg.norm(np.concatenate([xy[:, k:] - xy[:, :-k], xy[:, -1:] - xy[:, -k:]], 1), axis=-1)
        assert r == pytest.approx(float(np.quantile(moved, 0.9)), rel=1e-5)
    assert back.reach == m.reach and m.reach[0] < m.reach[1]
    with pytest.raises(ValueError, match="reach"):
        AC.AntInverseDynamics(offsets=(4, 8), reach=(1.0,))
    with pytest.raises(FileNotFoundError, match="no ant inverse-dynamics checkpoint"):
        AC.AntInverseDynamics.from_pretrained(tmp_path / "nothing")


def test_controller_targets_lie_ahead_of_progress_and_follow_episodes_runs(small):
    m = AC.AntInverseDynamics(offsets=(2, 5), hidden=8, depth=1)
    plan = np.stack([np.arange(10.0), np.zeros(10)], 1)
    c = AC.AntController(m, plan)
    obs = np.zeros(29)
    obs[:2] = [3.1, 0.2]
    a = c.act(obs)
    assert a.shape == (8,) and np.abs(a).max() < 1
    assert c.index == 3 and c.deviation == pytest.approx(np.hypot(0.1, 0.2))
    np.testing.assert_array_equal(c.target, [8.0, 0.0])  # 5 points ahead of the progress index
    out = AC.follow_episodes(m, small[1], NAME, episodes=1)
    assert out["episodes"] == 1 and 0 <= out["reached"] <= 1 and out["fell"] in (0, 1)


def test_controller_pulls_far_targets_within_reach():
    m = AC.AntInverseDynamics(offsets=(2, 5), hidden=8, depth=1, reach=(1.0, 1.5))
    seen = []
    m.act = lambda obs, targets: seen.append(np.array(targets)) or np.zeros(8)
    plan = np.stack([np.arange(10.0), np.zeros(10)], 1)
    obs = np.zeros(29)
    obs[:2] = [3.0, 0.5]
    AC.AntController(m, plan).act(obs)
    # targets (5, 0) and (8, 0): both farther than their reach, moved along the line from the torso
    for want, got, r in zip([(5.0, 0.0), (8.0, 0.0)], seen[0], m.reach):
        d = np.subtract(want, obs[:2])
        np.testing.assert_allclose(got, obs[:2] + d * r / np.linalg.norm(d))
    # along the plan: where the line y = 0 leaves the circle of radius r around (3, 0.5)
    AC.AntController(m, plan, reach_scale=1.0, along_plan=True).act(obs)
    np.testing.assert_allclose(seen[1], [[3 + np.sqrt(1.0 - 0.25), 0.0], [3 + np.sqrt(2.25 - 0.25), 0.0]])
    AC.AntController(m, plan, reach_scale=0.8, along_plan=True).act(obs)  # the scale shrinks both radii
    r = np.multiply(m.reach, 0.8)
    np.testing.assert_allclose(seen[2], [[3 + np.sqrt(r[0] ** 2 - 0.25), 0.0], [3 + np.sqrt(r[1] ** 2 - 0.25), 0.0]])
    obs[:2] = [3.0, 0.0]
    AC.AntController(m, plan).act(obs)  # default: the chord at the full reach; (5, 0) is 2 away: pulled to 1
    np.testing.assert_allclose(seen[3], [[4.0, 0.0], [4.5, 0.0]])
    m.reach = None
    AC.AntController(m, plan).act(obs)
    np.testing.assert_allclose(seen[4], [[5.0, 0.0], [8.0, 0.0]])
    with pytest.raises(ValueError, match="reach_scale"):
        AC.AntController(m, plan, reach_scale=0.0)


def test_controller_target_follows_the_plan_around_a_corner():
    """An L-shaped plan (east along y = 0 to (2, 0), then north): from (1.5, 0) the target 8
    points ahead is around the corner. Along the plan it is where the plan leaves the reach
    circle, on the northward leg; the chord points at the far target through the corner."""
    m = AC.AntInverseDynamics(offsets=(8,), hidden=8, depth=1, reach=(1.0,))
    seen = []
    m.act = lambda obs, targets: seen.append(np.array(targets)) or np.zeros(8)
    east = np.stack([np.linspace(0, 2, 9), np.zeros(9)], 1)  # spacing 0.25
    plan = np.concatenate([east, np.stack([np.full(8, 2.0), np.linspace(0.25, 2, 8)], 1)])
    obs = np.zeros(29)
    obs[:2] = [1.5, 0.0]  # plan index 6; 8 ahead: (2, 1.5), 1.58 away
    AC.AntController(m, plan, along_plan=True).act(obs)
    np.testing.assert_allclose(seen[0], [[2.0, np.sqrt(1.0 - 0.25)]])  # on x = 2, 1 from the torso
    AC.AntController(m, plan).act(obs)
    np.testing.assert_allclose(seen[1], [[1.5 + 0.5 / np.hypot(0.5, 1.5), 1.5 / np.hypot(0.5, 1.5)]])
    obs[:2] = [0.0, 3.0]  # far off the plan: the chord toward the target
    AC.AntController(m, plan, along_plan=True).act(obs)
    assert np.isclose(np.linalg.norm(seen[2][0] - obs[:2]), 1.0)


def test_tilt_guard_relaxes_the_joints_until_the_torso_is_upright_again():
    m = AC.AntInverseDynamics(offsets=(2, 5), hidden=8, depth=1)
    m.act = lambda obs, targets: np.ones(8)
    plan = np.stack([np.arange(10.0), np.zeros(10)], 1)

    def tilted(up):  # a rotation about x with torso_up = up: 1 − 2 sin²(θ/2) = up
        obs = np.zeros(29)
        half = np.arccos(np.sqrt((1 + up) / 2))
        obs[3:7] = [np.cos(half), np.sin(half), 0.0, 0.0]
        assert AC.torso_up(obs) == pytest.approx(up)
        return obs

    c = AC.AntController(m, plan, tilt_guard=0.95)
    ups = [1.0, 0.96, 0.94, 0.5, 0.97, 0.99, 0.96]
    got = [c.act(tilted(u))[0] for u in ups]
    # relaxed from the first reading below 0.95 until one above UPRIGHT = 0.98, then guarded again
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0] and c.relaxed_steps == 3 and AC.UPRIGHT == 0.98
    assert c.index == 0  # progress is still tracked while relaxed
    off = AC.AntController(m, plan)
    assert [off.act(tilted(u))[0] for u in ups] == [1.0] * len(ups) and off.relaxed_steps == 0
    for bad in (1.0, -2.0, float("nan"), True):
        with pytest.raises(ValueError, match="tilt_guard"):
            AC.AntController(m, plan, tilt_guard=bad)
    with pytest.raises(ValueError, match="tilt_guard"):
        AC.ant_controller(m, tilt_guard=1.5)
    assert AC.ant_controller(m, tilt_guard=0.9)(plan).tilt_guard == 0.9


def test_torso_up():
    q = np.zeros(15)
    q[3] = 1.0  # identity quaternion: upright
    assert AC.torso_up(q) == 1.0
    q[3:7] = [0.0, 1.0, 0.0, 0.0]  # half a turn about x: on its back
    assert AC.torso_up(q) == -1.0


def test_shipped_model_loads_and_drives_an_antmaze_episode():
    from cofi.planning.evaluate import evaluate
    from test_planning_exec import TinyTrajectoryPrior

    m = AC.AntInverseDynamics.from_pretrained()  # the shipped antmaze-invdyn
    assert m.offsets == (8, 16) and m.train_config["steps"] >= 1000 and len(m.reach) == 2
    assert float(m.train_config["history"][-1]["val_mse"]) < 0.1
    factory = AC.ant_controller(m)
    assert isinstance(factory(np.zeros((5, 2))), AC.AntController) and factory.model is m
    prior = TinyTrajectoryPrior(env_name=NAME)
    recs = evaluate(NAME, prior, "gsc", tasks=(1,), steps=2, batch=1, max_steps=40, max_replans=1, keep_paths=True)
    r = recs[0]
    assert r.env_name == NAME and r.steps == 40 and r.path.shape == (41, 2)
    assert r.windows[0].shape[0] == 4  # the ant's medium count
    assert np.linalg.norm(r.path[-1] - r.path[0]) > 0.05  # the model moved the ant
    assert r.fell_at is None and r.to_dict()["fell_at"] is None  # upright throughout


def test_episode_records_when_the_ant_fell(monkeypatch):
    """``fell_at`` is the first env step after which the torso's up-axis is below 0 (here a
    stand-in `torso_up` reports the ant on its back from its 13th reading, one per step)."""
    from cofi.planning.evaluate import EpisodeRecord, evaluate
    from test_planning_exec import TinyTrajectoryPrior

    readings = []
    monkeypatch.setattr(AC, "torso_up", lambda ob: readings.append(ob) or (-0.5 if len(readings) >= 13 else 1.0))
    prior = TinyTrajectoryPrior(env_name=NAME)
    r = evaluate(NAME, prior, "gsc", tasks=(1,), steps=2, batch=1, max_steps=20, max_replans=0)[0]
    assert r.steps == 20 and r.fell_at == 13 and len(readings) == 13  # read until it fell
    assert np.shape(readings[0]) == (AC.OBS_DIM,)
    assert EpisodeRecord.from_dict(r.to_dict()).fell_at == 13
    with pytest.raises(ValueError, match="factory"):
        evaluate(NAME, prior, "gsc", tasks=(1,), steps=2, batch=1, max_steps=5, controller=dict(gain=2.0))
    with pytest.raises(FileNotFoundError, match="antmaze-invdyn"):
        AC.AntInverseDynamics.from_pretrained("no/such/dir")
