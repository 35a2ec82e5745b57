"""OGBench stitch-data regeneration: layout, 4-step goals, determinism, loadable by ogbench."""

import numpy as np
import pytest

pytest.importorskip("ogbench")

from cofi.planning import data as D  # noqa: E402

NAME = "pointmaze-medium-stitch-v0"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return D.generate_dataset(NAME, out, episodes=6, val_episodes=2, seed=3, progress=False)


def test_layout_and_dtypes(small):
    train = np.load(small[0])
    assert set(train.files) == {"observations", "actions", "terminals", "qpos", "qvel"}
    n = 6 * D.EPISODE_STEPS
    assert train["observations"].shape == (n, 2) and train["observations"].dtype == np.float32
    assert train["actions"].shape == (n, 2) and np.abs(train["actions"]).max() <= 1.0
    term = train["terminals"].reshape(6, D.EPISODE_STEPS)
    assert (term[:, -1] == 1).all() and (term[:, :-1] == 0).all()
    # qpos of a point agent is its xy
    np.testing.assert_allclose(train["qpos"], train["observations"], atol=1e-6)
    assert np.load(small[1])["observations"].shape == (2 * D.EPISODE_STEPS, 2)


def test_loadable_by_ogbench(small):
    import ogbench

    env, train, val = ogbench.make_env_and_datasets(NAME, dataset_path=str(small[0]))
    assert train["observations"].shape[1] == 2 and val["observations"].shape[0] > 0


def test_goals_are_exactly_four_bfs_steps_away():
    env = D.make_data_env(NAME)
    m = env.unwrapped.maze_map
    for start in D.free_cells(m)[:10]:
        for goal in D.cells_at_distance(m, start, 4):
            # independent check: shortest path length by brute-force relaxation
            dist = {start: 0}
            frontier = [start]
            for k in range(1, 5):
                frontier = [(i + di, j + dj) for i, j in frontier for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
                            if m[i + di, j + dj] == 0 and (i + di, j + dj) not in dist]
                for c in frontier:
                    dist.setdefault(c, k)
            assert dist.get(goal) == 4


def test_episodes_move_toward_their_goal_and_are_seeded():
    a = D.generate_episodes(NAME, 3, seed=11, progress=False)
    b = D.generate_episodes(NAME, 3, seed=11, progress=False)
    c = D.generate_episodes(NAME, 3, seed=12, progress=False)
    np.testing.assert_array_equal(a["observations"], b["observations"])
    assert not np.array_equal(a["observations"], c["observations"])
    obs = a["observations"].reshape(3, D.EPISODE_STEPS, 2)
    travelled = np.linalg.norm(obs[:, -1] - obs[:, 0], axis=1)
    assert (travelled > 4.0).all()  # 4 cells of 4 units away: the oracle makes real progress


def test_unknown_maze_name():
    with pytest.raises(ValueError, match="unknown maze 'pointmaze-tiny-stitch-v0'; valid names"):
        D.generate_dataset("pointmaze-tiny-stitch-v0", "/tmp/x", episodes=1)


def test_padding_and_strided_windows():
    eps = np.arange(2 * 201 * 2, dtype=np.float32).reshape(2, 201, 2)
    padded = D.pad_episodes(eps, 64)
    assert padded.shape == (2, 265, 2)
    assert (padded[:, :65] == eps[:, :1]).all() and (padded[:, 64:] == eps).all()
    w = D.cut_windows(padded, 160, 4, 4)
    assert w.shape == (2 * 27, 40, 2)  # starts 0, 4, …, 104 in each padded episode
    np.testing.assert_array_equal(w[1], padded[0, 4:164:4])
    np.testing.assert_array_equal(w[27], padded[1, 0:160:4])
    with pytest.raises(ValueError, match="multiple of stride"):
        D.cut_windows(padded, 160, 3)
    with pytest.raises(ValueError, match="pad"):
        D.pad_episodes(eps, -1)


def test_window_stats_see_that_padding_lets_windows_chain():
    # episodes that walk 4 units right, then hover: unpadded windows all end still and
    # start moving, so no window's tail is another's head; padded ones start still too
    walk = np.concatenate([np.linspace(0, 4, 100), np.full(101, 4.0)])
    eps = np.stack([np.stack([walk + 4 * k, np.zeros(201)], 1) for k in range(6)]).astype(np.float32)
    raw = D.window_stats(D.cut_windows(eps, 160, 4, 4), 14, sample=30)
    pad = D.window_stats(D.cut_windows(D.pad_episodes(eps, 64), 160, 4, 4), 14, sample=30)
    assert raw["chainable"] == 0.0 and pad["chainable"] > 0.5
    assert raw["tail_motion"] == 0.0 and pad["head_motion"] < raw["head_motion"]


def test_antmaze_layout_with_an_expert_and_loadable_by_ogbench(tmp_path):
    import ogbench
    import torch

    from cofi.planning.ant_expert import SAC, SACConfig

    name = "antmaze-medium-stitch-v0"
    with pytest.raises(ValueError, match="needs the ant expert"):
        D.generate_episodes(name, 1, progress=False)
    torch.manual_seed(0)
    paths = D.generate_dataset(name, tmp_path, episodes=2, val_episodes=1, seed=0, progress=False,
                               expert=SAC(SACConfig(hidden=16)))
    train = np.load(paths[0])
    n = 2 * D.EPISODE_STEPS
    assert train["observations"].shape == (n, 29) and train["actions"].shape == (n, 8)
    assert train["qpos"].shape == (n, 15) and train["qvel"].shape == (n, 14)
    assert np.abs(train["actions"]).max() <= 1.0
    # an ant's state observation is its qpos and qvel
    np.testing.assert_allclose(train["observations"], np.concatenate([train["qpos"], train["qvel"]], 1), atol=1e-5)
    env, tr, va = ogbench.make_env_and_datasets(name, dataset_path=str(paths[0]))
    assert tr["observations"].shape[1] == 29 and va["observations"].shape[0] > 0
