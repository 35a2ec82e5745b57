"""Scene-Play regeneration: OGBench's file layout, the observation layout and the 14 planning
dims checked against the MuJoCo state, oracle actions, determinism, workers, resume, loader."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ogbench")
pytest.importorskip("mujoco")

from cofi.planning import scene as S  # noqa: E402

L = 60  # episode_length override: seconds, not minutes
KW = dict(episode_length=L, chunk_episodes=1, progress=False)
KEYS = {"observations": ((40,), np.float32), "actions": ((5,), np.float32), "terminals": ((), np.bool_),
        "qpos": ((25,), np.float32), "qvel": ((24,), np.float32), "button_states": ((2,), np.int64)}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene1")
    paths = S.generate_scene(out, 2, 1, 5, workers=1, **KW)
    return out, paths, {k: v for k, v in np.load(paths[0]).items()}, {k: v for k, v in np.load(paths[1]).items()}


@pytest.fixture(scope="module")
def env():
    e = S.make_scene_env(L)
    e.reset(seed=0)
    return e


def test_file_layout_lengths_terminals_actions(made, env):
    _, paths, train, val = made
    assert paths[0].name == "scene-play-v0.npz" and paths[1].name == "scene-play-v0-val.npz"
    for data, episodes in ((train, 2), (val, 1)):
        assert set(data) == set(KEYS)
        for k, (shape, dtype) in KEYS.items():
            assert data[k].shape == (episodes * L, *shape) and data[k].dtype == dtype, k
        term = data["terminals"].reshape(episodes, L)
        assert term[:, -1].all() and not term[:, :-1].any()
        assert np.isfinite(data["observations"]).all()
        space = env.action_space
        assert space.shape == (5,) and space.contains(data["actions"][0])
        assert (data["actions"] >= space.low).all() and (data["actions"] <= space.high).all()
        assert np.abs(data["actions"]).max() > 0.1  # the oracle moves the arm
    # episodes differ from each other (a fresh reset each), and the first state is a reset state
    ep = train["observations"].reshape(2, L, 40)
    assert not np.allclose(ep[0, 0], ep[1, 0])
    assert np.abs(train["qvel"][0]).max() < 1e-6
    # button states in the file are the one-hots of the observation
    np.testing.assert_array_equal(np.eye(2)[train["button_states"][:, 0]], train["observations"][:, 28:30])
    np.testing.assert_array_equal(np.eye(2)[train["button_states"][:, 1]], train["observations"][:, 32:34])


def _yaw(wxyz):
    w, x, y, z = wxyz
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def test_observation_layout_and_plan_dims_match_mujoco_state(made, env):
    """Restore recorded states into the environment; the observation and its 14 planning dims
    are the named MuJoCo quantities (bodies, sites, joints, button lock states)."""
    _, _, train, _ = made
    u = env.unwrapped
    d = u._data
    c = np.array([0.425, 0.0, 0.0])
    assert S.OBS_DIM == 40 and sum(s.stop - s.start for s in S.OBS_LAYOUT.values()) == 40
    assert len(S.SCENE_PLAN_DIMS) == 14 == len(S.SCENE_PLAN_NAMES)
    for i in (0, 17, L - 1, L, 2 * L - 1):
        qpos, qvel = train["qpos"][i].astype(np.float64), train["qvel"][i].astype(np.float64)
        u.set_state(qpos, qvel, train["button_states"][i])
        ob = train["observations"][i]
        p = S.scene_plan_space(ob)
        # the recomputed observation equals the recorded one (gripper contact needs contact forces: skipped)
        keep = np.r_[0:18, 19:40]
        np.testing.assert_allclose(u.compute_observation()[keep], ob[keep], atol=2e-4)
        # named quantities, from MuJoCo's data, not from the env's observation code
        np.testing.assert_allclose(p[0:3], (d.site("ur5e/robotiq/pinch").xpos - c) * 10, atol=2e-5)
        np.testing.assert_allclose(p[3:6], (d.body("object_0").xpos - c) * 10, atol=2e-5)
        np.testing.assert_allclose(d.body("object_0").xpos, qpos[14:17], atol=1e-6)  # OGBench's qpos cube slot
        yaw = _yaw(d.body("object_0").xquat)
        np.testing.assert_allclose(p[6:8], [np.cos(yaw), np.sin(yaw)], atol=2e-5)
        for b, sl in ((0, slice(8, 10)), (1, slice(10, 12))):
            state = int(train["button_states"][i, b])
            np.testing.assert_array_equal(p[sl], np.eye(2)[state])
            # button 0 locks the drawer, button 1 the window (state 0: locked by a huge damping)
            joint = ("drawer_slide", "window_slide")[b]
            assert (u._model.joint(joint).damping[0] > 1e3) == (state == 0)
        np.testing.assert_allclose(p[12], d.joint("drawer_slide").qpos[0] * 18, atol=2e-5)
        np.testing.assert_allclose(p[13], d.joint("window_slide").qpos[0] * 15, atol=2e-5)
        assert -0.16 - 1e-3 <= d.joint("drawer_slide").qpos[0] <= 1e-3
        assert -1e-3 <= d.joint("window_slide").qpos[0] <= 0.2 + 1e-3


def test_live_rollout_plan_dims():
    """In a live environment step, the observation's cube slot is the cube body's xpos."""
    e = S.make_scene_env(10)
    ob, _ = e.reset(seed=1)
    for _ in range(3):
        ob, *_ = e.step(e.action_space.sample())
    d = e.unwrapped._data
    p = S.scene_plan_space(ob[None])[0]
    np.testing.assert_allclose(p[3:6], (d.body("object_0").xpos - [0.425, 0, 0]) * 10, atol=1e-9)
    np.testing.assert_allclose(p[0:3], (d.site("ur5e/robotiq/pinch").xpos - [0.425, 0, 0]) * 10, atol=1e-9)
    e.close()


def test_plan_space_numpy_torch_and_shape_errors():
    torch = pytest.importorskip("torch")
    x = np.arange(3 * 40, dtype=np.float32).reshape(3, 40)
    np.testing.assert_array_equal(S.scene_plan_space(x), x[:, list(S.SCENE_PLAN_DIMS)])
    assert S.scene_plan_space(x).shape == (3, 14)
    t = S.scene_plan_space(torch.from_numpy(x).reshape(1, 3, 40))
    assert tuple(t.shape) == (1, 3, 14) and np.array_equal(t[0].numpy(), x[:, list(S.SCENE_PLAN_DIMS)])
    with pytest.raises(ValueError, match="40"):
        S.scene_plan_space(np.zeros((3, 39)))


def test_chunks_are_seeded():
    a, _ = S.generate_chunk(1, *S.chunk_seeds(0, "train", 0), episode_length=20)
    b, _ = S.generate_chunk(1, *S.chunk_seeds(0, "train", 0), episode_length=20)
    c, _ = S.generate_chunk(1, *S.chunk_seeds(0, "train", 1), episode_length=20)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["observations"], c["observations"])
    assert len({S.chunk_seeds(0, "train", 0), S.chunk_seeds(0, "val", 0), S.chunk_seeds(1, "train", 0)}) == 3


def test_workers_do_not_change_the_result(made, tmp_path):
    _, _, train, val = made
    paths = S.generate_scene(tmp_path, 2, 1, 5, workers=2, **KW)
    for path, ref in zip(paths, (train, val)):
        got = np.load(path)
        for k in KEYS:
            np.testing.assert_array_equal(got[k], ref[k])


def test_resume_skips_finished_chunks(made, capsys):
    out, paths, train, _ = made
    parts = sorted((out / "scene-play-v0.parts").glob("*.npz"))
    assert [p.name for p in parts] == ["train-00000-n1.npz", "train-00001-n1.npz", "val-00000-n1.npz"]
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    parts[1].unlink()
    S.generate_scene(out, 2, 1, 5, workers=1, episode_length=L, chunk_episodes=1, progress=True)
    log = capsys.readouterr().out
    assert "2 already in" in log and "1 to generate" in log and "train chunk 1 " in log
    assert "train chunk 0 " not in log and "val chunk 0 " not in log
    for p in (parts[0], parts[2]):
        assert p.stat().st_mtime_ns == stamps[p]  # untouched
    again = np.load(paths[0])
    for k in KEYS:
        np.testing.assert_array_equal(again[k], train[k])
    assert not list((out / "scene-play-v0.parts").glob(".*tmp"))
    # chunks made with other settings are refused, not mixed in
    with pytest.raises(ValueError, match="other settings"):
        S.generate_scene(out, 2, 1, 6, workers=1, **KW)


def test_loads_through_ogbench(made):
    import ogbench

    _, paths, train, _ = made
    env, tr, va = ogbench.make_env_and_datasets("scene-play-v0", dataset_path=str(paths[0]), add_info=True)
    assert env.unwrapped.__class__.__name__ == "SceneEnv"
    assert tr["observations"].shape == (2 * (L - 1), 40) and va["observations"].shape == (L - 1, 40)
    ep0 = train["observations"][:L]
    np.testing.assert_array_equal(tr["observations"][: L - 1], ep0[:-1])
    np.testing.assert_array_equal(tr["next_observations"][: L - 1], ep0[1:])
    assert tr["qpos"].shape == (2 * (L - 1), 25) and tr["button_states"].shape == (2 * (L - 1), 2)
    compact = ogbench.utils.load_dataset(str(paths[0]), compact_dataset=True)
    assert compact["observations"].shape == (2 * L, 40) and compact["valids"].sum() == 2 * (L - 1)
    # the single-task variant relabels rewards from qpos / button_states
    _, st, _ = ogbench.make_env_and_datasets("scene-play-singletask-task1-v0", dataset_path=str(paths[0]))
    assert st["rewards"].shape == (2 * (L - 1),) and (st["rewards"] <= 0).all()


def test_bad_arguments(tmp_path):
    for kw in (dict(episodes=0), dict(val_episodes=0), dict(workers=0), dict(seed=-1), dict(episodes=1.5),
               dict(episode_length=1)):
        args = dict(episodes=1, val_episodes=1, seed=0) | kw
        with pytest.raises(ValueError):
            S.generate_scene(tmp_path, **args, progress=False)


def test_cli_dispatch(monkeypatch, tmp_path):
    from cofi.planning import __main__ as M
    from cofi.planning import data as D

    calls = []
    monkeypatch.setattr(S, "generate_scene", lambda *a, **k: calls.append(("scene", a, k)) or ("a", "b"))
    monkeypatch.setattr(D, "generate_dataset", lambda *a, **k: calls.append(("maze", a, k)) or ("a", "b"))
    M.main(["generate", "--env", "scene-play-v0", "--out", str(tmp_path), "--episodes", "7", "--val-episodes", "3",
            "--seed", "4", "--workers", "2"])
    M.main(["generate", "--env", "scene-play-v0", "--out", str(tmp_path), "--no-resume"])
    M.main(["generate", "--env", "pointmaze-medium-stitch-v0", "--out", str(tmp_path)])
    M.main(["generate", "--env", "antmaze-giant-stitch-v0", "--out", str(tmp_path), "--expert", "training/x"])
    assert calls[0] == ("scene", (str(tmp_path), 7, 3, 4), dict(workers=2, resume=True))
    assert calls[1] == ("scene", (str(tmp_path), 1000, 100, 0), dict(workers=1, resume=False))
    assert calls[2] == ("maze", ("pointmaze-medium-stitch-v0", str(tmp_path), 5000, 500, 0), dict(expert=None))
    assert calls[3] == ("maze", ("antmaze-giant-stitch-v0", str(tmp_path), 5000, 500, 0), dict(expert="training/x"))
