"""Scene-Play plan execution: the inverse-dynamics MLP (shapes, bounds, standardisation,
persistence), the plan-tracking controller, training and segment reproduction on tiny data,
and the shipped checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cofi.planning import scene as S
from cofi.planning import scene_control as C

torch.set_num_threads(1)


def _model(offsets=(8,), gripper=False, seed=0, hidden=32, depth=3) -> C.InverseDynamics:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(40, generator=g)
    std = torch.rand(40, generator=g) + 0.5
    torch.manual_seed(seed)
    return C.InverseDynamics(offsets=offsets, gripper=gripper, hidden=hidden, depth=depth, obs_mean=mean,
                             obs_std=std).eval()


def test_shapes_and_bounds():
    m = _model()
    assert len([x for x in m.net if isinstance(x, torch.nn.Linear)]) == 4  # 3 hidden layers + output
    obs, goal = torch.randn(7, 40), torch.randn(7, 14)
    a = m(obs, goal)
    assert a.shape == (7, 5) and (a.abs() <= 1).all()
    torch.testing.assert_close(m(obs, goal[:, None]), a)  # (..., n, g) form
    assert m.act(obs[0].numpy(), goal[0].numpy()).shape == (5,)
    with torch.no_grad():
        m.net[-1].bias.fill_(1e4)  # saturates: still within [-1, 1]
    assert (m(obs, goal).abs() <= 1).all()
    m2 = _model(offsets=(4, 8, 16), gripper=True)
    assert m2.k == 16 and m2.goal_dim == 15 and m2.goal_dims == tuple(S.SCENE_PLAN_DIMS) + (17,)
    assert m2.net[0].in_features == 40 + 3 * 15
    assert m2(torch.randn(2, 3, 40), torch.randn(2, 3, 3, 15)).shape == (2, 3, 5)
    for bad in ((torch.randn(7, 40), torch.randn(7, 15)), (torch.randn(7, 39), torch.randn(7, 14)),
                (torch.randn(7, 40), torch.randn(7, 2, 14))):
        with pytest.raises(ValueError):
            m(*bad)
    for kw in (dict(offsets=()), dict(offsets=(8, 4)), dict(offsets=(0,)), dict(activation="tanh"),
               dict(obs_std=torch.zeros(40)), dict(obs_mean=torch.zeros(39))):
        with pytest.raises(ValueError):
            C.InverseDynamics(**kw)


def test_standardisation_round_trip():
    m = _model(gripper=True)
    x = torch.randn(5, 40) * 3 + 1
    z = m.normalize_obs(x)
    torch.testing.assert_close(m.unnormalize_obs(z), x)
    torch.testing.assert_close(m.normalize_obs(m.obs_mean), torch.zeros(40))
    dims = list(m.goal_dims)
    # a subgoal is standardised exactly like the observation dims it copies
    torch.testing.assert_close(m.normalize_goal(x[:, dims]), z[:, dims])
    torch.testing.assert_close(m.unnormalize_goal(m.normalize_goal(x[:, dims])), x[:, dims])
    torch.testing.assert_close(m.plan_std, m.obs_std[list(S.SCENE_PLAN_DIMS)])


def test_save_load_round_trip_bit_identical_and_atomic(tmp_path, monkeypatch):
    m = _model(offsets=(4, 8))
    d = m.save_pretrained(tmp_path / "ck", extra=dict(command="python -m x", episodes=3))
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["offsets"] == [4, 8] and cfg["k"] == 8 and cfg["command"] == "python -m x" and cfg["episodes"] == 3
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]  # no temporary files left
    r = C.InverseDynamics.from_pretrained(d)
    assert not r.training and not any(p.requires_grad for p in r.parameters())
    obs, goal = torch.randn(9, 40), torch.randn(9, 2, 14)
    assert torch.equal(r(obs, goal), m(obs, goal))
    assert torch.equal(r.obs_mean, m.obs_mean) and torch.equal(r.obs_std, m.obs_std)
    # a save that dies before its replace leaves the previous checkpoint whole
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    import cofi.priors.trajectory as T

    def boom(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(T.os, "replace", boom)
    with pytest.raises(OSError):
        _model(offsets=(4, 8), seed=1).save_pretrained(d)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    with pytest.raises(FileNotFoundError):
        C.InverseDynamics.from_pretrained(tmp_path / "nothing")
    (d / "config.json").write_text(json.dumps(dict(cfg, hidden=64)))
    with pytest.raises(ValueError, match="do not fit"):
        C.InverseDynamics.from_pretrained(d)


def test_interpolate_plan_holds_buttons():
    plan = np.zeros((3, 14))
    plan[:, 0] = [0.0, 4.0, 8.0]
    plan[:, 8:12] = [[1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 0, 1]]
    dense = C.interpolate_plan(plan, 4)
    assert dense.shape == (9, 14)
    np.testing.assert_allclose(dense[:, 0], np.arange(9.0))
    np.testing.assert_array_equal(dense[::4], plan)
    np.testing.assert_array_equal(dense[1:4, 8:12], np.repeat(plan[:1, 8:12], 3, 0))  # held until the next point
    np.testing.assert_array_equal(dense[5:8, 8:12], np.repeat(plan[1:2, 8:12], 3, 0))


def _obs_at(state14):
    ob = np.zeros(40)
    ob[list(S.SCENE_PLAN_DIMS)] = state14
    return ob


def test_controller_index_progression_time_and_nearest():
    m = _model(offsets=(8,))
    L, stride = 11, 4
    plan = np.zeros((L, 14))
    plan[:, 0] = np.linspace(0, 10, L)  # effector x moves 1 unit per plan point
    dense = C.interpolate_plan(plan, stride)
    # time tracking follows the clock whatever the state
    c = C.SceneController(m, plan, stride=stride, tracking="time")
    idx = []
    for t in range(50):
        a = c.act(_obs_at(plan[0]))
        assert a.shape == (5,) and np.all(np.abs(a) <= 1)
        idx.append(c.index)
        np.testing.assert_array_equal(c.goal, dense[[min(t + 8, len(dense) - 1)]])
    assert idx == [min(t // stride, L - 1) for t in range(50)] and c.done
    assert c.deviation > 0  # the state stayed at the start
    # nearest tracking follows a state that moves at half the plan's speed, never backwards
    c = C.SceneController(m, plan, stride=stride, tracking="nearest", window=8)
    pos = []
    for t in range(80):
        c.act(_obs_at(dense[t // 2]))
        pos.append(c.pos)
        assert c.deviation < 1e-9 and c.index == min(c.pos // stride, L - 1)
    assert pos == [t // 2 for t in range(80)]
    c.act(_obs_at(dense[3]))  # a state behind the progress: no going back
    assert c.pos == pos[-1]
    # a plan that holds still does not hold the controller (ties go to the latest point)
    c = C.SceneController(m, np.zeros((5, 14)), stride=stride, tracking="nearest", window=4)
    c.act(_obs_at(np.zeros(14)))
    assert c.pos == 4
    for bad in (np.zeros((5, 15)), np.zeros((0, 14)), np.full((3, 14), np.nan)):
        with pytest.raises(ValueError):
            C.SceneController(m, bad)
    with pytest.raises(ValueError):
        C.SceneController(m, plan, tracking="gps")
    with pytest.raises(ValueError, match="metric must be 'std', 'env' or 'objects'"):
        C.SceneController(m, plan, metric="l1")


def test_controller_deviation_metrics():
    """``std``: RMS over the 14 dims in the data's standard deviations; ``env``: the Euclidean
    distance in env units (the paper's replanning distance)."""
    m = _model(offsets=(8,))
    plan = np.zeros((3, 14))
    state = np.zeros(14)
    state[[0, 12]] = 3.0, 4.0  # effector x off by 3, drawer off by 4
    env = C.SceneController(m, plan, metric="env")
    env.act(_obs_at(state))
    assert env.deviation == pytest.approx(5.0)
    std = C.SceneController(m, plan)
    std.act(_obs_at(state))
    s = m.plan_std.double().numpy()
    assert std.deviation == pytest.approx(np.sqrt(((3 / s[0]) ** 2 + (4 / s[12]) ** 2) / 14))
    # objects: the arm does not count; an object counts against the closest of the last `lag` steps
    plan = np.zeros((11, 14))
    plan[5:, 12] = 2.0  # the drawer opens at plan point 5 (env step 20)
    obj = C.SceneController(m, plan, stride=4, metric="objects", lag=8)
    arm_off = np.zeros(14)
    arm_off[:3] = 5.0
    for t in range(25):  # the drawer stays shut: the plan starts opening it at step 16, late is fine until 24
        obj.act(_obs_at(arm_off))
        assert obj.pos == t and obj.deviation == 0.0
    for t in range(25, 40):
        obj.act(_obs_at(arm_off))
        assert (obj.deviation > 0) and (t < 28 or obj.deviation == pytest.approx(2.0 / s[12]))  # missed
    with pytest.raises(ValueError, match="lag must be >= 0"):
        C.SceneController(m, plan, metric="objects", lag=-1)


def test_controller_cube_deviation_is_the_cube_distance_to_the_recent_plan():
    """``cube_deviation``: the cube's distance (plan units) to the closest plan cube of the last
    ``lag`` steps, whatever the metric: a carry that never started shows once the plan's cube has
    left every point of that stretch."""
    m = _model(offsets=(8,))
    plan = np.zeros((11, 14))
    plan[5:, 4] = np.arange(1, 7) * 0.2  # the plan's cube moves 0.2 in y per point from point 5
    ctrl = C.SceneController(m, plan, stride=4, lag=8)
    still = np.zeros(14)  # the real cube never moves
    dense = C.interpolate_plan(plan, 4)
    for t in range(40):
        ctrl.act(_obs_at(still))
        assert ctrl.cube_deviation == pytest.approx(np.abs(dense[max(0, t - 8):t + 1, 4]).min())
    assert ctrl.cube_deviation > 0.4


def _synthetic(path, episodes=2, length=30, seed=0):
    rng = np.random.default_rng(seed)
    n = episodes * length
    term = np.zeros(n, bool)
    term[length - 1::length] = True
    data = dict(observations=rng.normal(size=(n, 40)).astype(np.float32),
                actions=rng.uniform(-1, 1, (n, 5)).astype(np.float32), terminals=term,
                qpos=np.zeros((n, 25), np.float32), qvel=np.zeros((n, 24), np.float32),
                button_states=np.zeros((n, 2), np.int64))
    np.savez(path, **data)
    return data


def test_goal_rows_stay_in_episode_and_loader(tmp_path):
    term = np.zeros(10, bool)
    term[[3, 9]] = True
    rows = C._goal_rows(term, (2, 5))
    np.testing.assert_array_equal(rows[:, 0], [2, 3, 3, 3, 6, 7, 8, 9, 9, 9])
    np.testing.assert_array_equal(rows[:, 1], [3, 3, 3, 3, 9, 9, 9, 9, 9, 9])
    parts = tmp_path / "parts"
    parts.mkdir()
    a = _synthetic(parts / "train-00000-n2.npz", seed=0)
    b = _synthetic(parts / "train-00001-n2.npz", seed=1)
    _synthetic(parts / "val-00000-n2.npz", seed=2)
    got = C.load_scene_arrays(parts, "train")
    np.testing.assert_array_equal(got["observations"], np.concatenate([a["observations"], b["observations"]]))
    got = C.load_scene_arrays(parts, "train", max_episodes=3)
    assert got["terminals"].sum() == 3 and len(got["terminals"]) == 90
    with pytest.raises(FileNotFoundError):
        C.load_scene_arrays(tmp_path / "none")


def test_training_and_cli_record_the_command(tmp_path):
    data = tmp_path / "d.npz"
    _synthetic(data)
    out = tmp_path / "run"
    m = C.main(["train", "--data", str(data), "--val", str(data), "--out", str(out), "--k", "4", "8",
                "--steps", "30", "--batch", "16", "--hidden", "16", "--log-every", "10"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"].startswith("python -m cofi.planning.scene_control train --data ")
    assert cfg["offsets"] == [4, 8] and cfg["episodes"] == 2 and cfg["steps"] == 30
    assert np.isfinite(cfg["train_mse"]) and np.isfinite(cfg["val_mse"])
    r = C.InverseDynamics.from_pretrained(out)
    obs = torch.randn(3, 40)
    goal = torch.randn(3, 2, 14)
    assert torch.equal(r(obs, goal), m(obs, goal))
    # standardisation statistics are the training data's
    d = np.load(data)
    np.testing.assert_allclose(r.obs_mean.numpy(), d["observations"].mean(0), atol=1e-5)


def test_goal_noise_is_recorded_changes_training_and_is_checked(tmp_path):
    data = tmp_path / "d.npz"
    _synthetic(data)
    kw = dict(k=4, steps=20, batch=16, hidden=16, log_every=10, progress=False)
    a = C.train_inverse_dynamics(data, tmp_path / "a", **kw)
    b = C.train_inverse_dynamics(data, tmp_path / "b", goal_noise=0.5, **kw)
    c = C.train_inverse_dynamics(data, None, goal_noise=0.0, **kw)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["goal_noise"] == 0.5
    obs, goal = torch.randn(3, 40), torch.randn(3, 1, 14)
    assert torch.equal(a(obs, goal), c(obs, goal))  # no noise: the same seed trains the same model
    assert not torch.equal(a(obs, goal), b(obs, goal))
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="goal_noise"):
            C.train_inverse_dynamics(data, None, goal_noise=bad, **kw)


@pytest.fixture(scope="module")
def chunk():
    pytest.importorskip("ogbench")
    pytest.importorskip("mujoco")
    data, _ = S.generate_chunk(1, *S.chunk_seeds(0, "train", 0), episode_length=40)
    return data


def test_log_replay_and_closed_loop_smoke(chunk):
    """Restore a recorded state: replaying its actions reproduces the recorded end state; the
    shipped controller runs a few closed-loop steps from it."""
    r = C.reproduce_segments(None, chunk, [3], length=30)
    assert r["segments"] == 1 and r["success"] == 1.0
    model = C.InverseDynamics.from_pretrained(C.CHECKPOINT)
    env = S.make_scene_env(30)
    try:
        env.reset(seed=0)
        ob = C._restore(env, chunk["qpos"][3], chunk["qvel"][3], chunk["button_states"][3])
        np.testing.assert_allclose(ob, chunk["observations"][3], atol=2e-4)
        dims = list(model.goal_dims)
        ctrl = C.SceneController(model, chunk["observations"][3:24:4][:, dims], stride=4)
        for _ in range(6):
            a = ctrl.act(ob)
            assert a.shape == (5,) and np.all(np.abs(a) <= 1)
            ob, *_ = env.step(a)
            assert np.isfinite(ob).all() and np.isfinite(ctrl.deviation)
        assert ctrl.index == 1 and ctrl.steps == 6
    finally:
        env.close()


def test_eval_cli_records_reproduction(chunk, tmp_path):
    path = tmp_path / "val.npz"
    np.savez(path, **chunk)
    d = _model(offsets=(4, 8)).save_pretrained(tmp_path / "m", extra=dict(command="x"))
    r = C.main(["eval", "--model", str(d), "--data", str(path), "--segments", "2", "--length", "12", "--record"])
    assert r["segments"] == 2 and 0 <= r["success"] <= 1 and len(r["ok"]) == 2
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["reproduction"]["segments"] == 2 and cfg["reproduction"]["command"].endswith("--record")
    assert cfg["command"] == "x" and C.InverseDynamics.from_pretrained(d).offsets == (4, 8)
    with pytest.raises(SystemExit):
        C.main(["eval", "--data", str(path)])  # neither --model nor --replay


def test_shipped_checkpoint_loads():
    m = C.InverseDynamics.from_pretrained("scene-play-invdyn")
    cfg = m.train_config
    assert cfg["model"] == "InverseDynamics" and cfg["command"].startswith("python -m cofi.planning.scene_control")
    assert m.net[0].in_features == 40 + len(m.offsets) * m.goal_dim and m.hidden == 256 and m.depth == 3
    assert all(o % 4 == 0 for o in m.offsets)
    assert (m.obs_std > 0).all() and torch.isfinite(m.obs_mean).all()
