"""The SAC ant expert that regenerates AntMaze data: its policy density, state round trip,
resumable training, the directional task and OGBench's stitch goals."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("ogbench")
pytest.importorskip("mujoco")

from cofi.planning import ant_expert as ae  # noqa: E402


def test_actor_log_prob_matches_torch_tanh_gaussian():
    torch.manual_seed(0)
    actor = ae.Actor(hidden=32)
    with torch.no_grad():  # a policy far from its near-deterministic init
        actor.net[-1].weight.normal_(0, 0.3)
        actor.net[-1].bias.normal_(0, 0.3)
    obs = torch.randn(64, ae.OBS_DIM)
    a, logp = actor(obs)
    mean, log_std = actor.net(obs).chunk(2, dim=-1)
    log_std = log_std.clamp(ae.LOG_STD_MIN, ae.LOG_STD_MAX)
    a = a.clamp(-1 + 1e-6, 1 - 1e-6)
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    ).log_prob(a).sum(-1)
    torch.testing.assert_close(logp, ref, atol=2e-3, rtol=1e-4)
    det, none = actor(obs, deterministic=True)
    assert none is None
    torch.testing.assert_close(det, torch.tanh(mean))


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, ae.OBS_DIM, generator=g), torch.rand(n, ae.ACT_DIM, generator=g) * 2 - 1,
            torch.randn(n, generator=g), torch.ones(n), torch.randn(n, ae.OBS_DIM, generator=g)]


def test_update_moves_actor_critic_and_temperature_and_target_by_tau():
    torch.manual_seed(0)
    agent = ae.SAC(ae.SACConfig(hidden=32))
    target0 = [p.clone() for p in agent.target.parameters()]
    actor0 = [p.clone() for p in agent.actor.parameters()]
    info = agent.update(_batch())
    assert set(info) == {"critic", "actor", "alpha", "entropy", "q"}
    assert all(math.isfinite(v) for v in info.values())
    # the target moves a fraction tau of the way to the updated critic
    for tp, t0, p in zip(agent.target.parameters(), target0, agent.critic.parameters()):
        torch.testing.assert_close(tp, t0 + 0.005 * (p - t0))
    assert any(not torch.equal(p, q) for p, q in zip(agent.actor.parameters(), actor0))
    # at init the policy is near uniform: entropy above the target, so the temperature falls
    assert agent.log_alpha.item() < 0


def test_state_round_trip_continues_identically(tmp_path):
    torch.manual_seed(1)
    a = ae.SAC(ae.SACConfig(hidden=32))
    a.update(_batch(seed=1))
    ae.save_agent(a, tmp_path, dict(step=7, config=vars(a.cfg) | {}))
    b, meta = ae.load_agent(tmp_path)
    assert meta["step"] == 7
    for x, y in zip(a.tensors().values(), b.tensors().values()):
        assert torch.equal(x, y)
    torch.manual_seed(5)
    a.update(_batch(seed=2))
    torch.manual_seed(5)
    b.update(_batch(seed=2))
    for x, y in zip(a.actor.parameters(), b.actor.parameters()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_load_agent_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.safetensors") as e:
        ae.load_agent(tmp_path)
    assert f"--out {tmp_path})" in str(e.value)


def test_direction_task_rewards_displacement_along_the_direction():
    env = ae.DirectionTask(seed=3, resample=5)
    ob = env.reset()
    assert ob.shape == (ae.OBS_DIM,)
    np.testing.assert_allclose(np.linalg.norm(ob[-2:]), 1.0)
    z0 = env.z.copy()
    data = env.env.unwrapped.data
    for t in range(1, 8):
        before, z = data.qpos[:2].copy(), env.z.copy()
        ob, r, term, trunc = env.step(np.full(ae.ACT_DIM, 0.5 * (-1) ** t))
        assert r == pytest.approx(float((data.qpos[:2] - before) @ z))
        np.testing.assert_allclose(ob[-2:], env.z)
        assert not term and not trunc
    assert not np.allclose(env.z, z0)  # redrawn after 5 steps


def test_training_resumes_with_and_without_its_replay_buffer(tmp_path):
    torch.set_num_threads(1)
    cfg = ae.SACConfig(hidden=16, batch=8, seed_steps=50, buffer=1000)
    lines = []
    ae.train(tmp_path, steps=80, save_every=40, eval_every=10**9, cfg=cfg, eval_episodes=1, log=lines.append)
    meta = json.loads((tmp_path / "state.json").read_text())
    assert meta["step"] == 80 and meta["evals"][0]["step"] == 80
    assert json.loads((tmp_path / "replay.json").read_text())["step"] == 80
    assert len(np.load(tmp_path / "replay.npz")["rew"]) == 80
    lines.clear()
    ae.train(tmp_path, steps=100, save_every=40, eval_every=10**9, eval_episodes=1, log=lines.append)
    assert lines[0].startswith("resuming") and not any("refilling" in s for s in lines)
    assert len(np.load(tmp_path / "replay.npz")["rew"]) == 100
    (tmp_path / "replay.npz").unlink()
    lines.clear()
    ae.train(tmp_path, steps=110, save_every=40, eval_every=10**9, eval_episodes=1, log=lines.append)
    assert any("refilling 50 transitions" in s for s in lines)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 110
    assert len(np.load(tmp_path / "replay.npz")["rew"]) == 60  # 50 refilled + 10 new


def test_stitch_check_runs_the_data_generators_episodes_with_the_expert():
    torch.manual_seed(0)
    out = ae.stitch_check(ae.SAC(ae.SACConfig(hidden=16)), "antmaze-medium-stitch-v0", episodes=2)
    assert out["maze"] == "antmaze-medium-stitch-v0" and out["episodes"] == 2
    assert 0 <= out["reached"] <= 2 and out["rate"] == out["reached"] / 2


def test_plot_training_writes_a_figure(tmp_path):
    meta = dict(log=[dict(step=5000, train_return=None), dict(step=10000, train_return=1.5)],
                evals=[dict(step=10000, direction_return=2.0)])
    out = ae.plot_training(meta, tmp_path / "curve.png")
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
