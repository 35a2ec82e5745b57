"""The Scene evaluation loop: plan, execute with the controller, replan (seconds: a synthetic
prior, an untrained controller, a few env steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cofi.planning.scene_control import InverseDynamics
from cofi.planning.scene_evaluate import evaluate_scene, make_eval_env, run_scene_episode, summarize_scene
from cofi.planning.scene_plan import scene_prior


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    rng = np.random.default_rng(0)
    obs = np.cumsum(rng.normal(scale=0.02, size=(2, 1001, 40)), axis=1).astype(np.float32)
    path = tmp_path_factory.mktemp("scene") / "scene-play-v0.npz"
    np.savez(path, observations=obs.reshape(-1, 40))
    return scene_prior(path, every=128)


def test_episode_replans_when_the_state_strays(prior):
    env = make_eval_env()
    try:
        model = InverseDynamics()
        rec = run_scene_episode(env, prior, model, 2, "gsc", batch=2, count=2, max_steps=12, max_replans=3,
                                replan_deviation=0.0, keep_paths=True)  # any deviation: replan at once
        assert rec.steps == 12 and not rec.success and rec.task == 2
        assert rec.replans == 3 and rec.plan_steps[0] == 0 and len(rec.plans) == 4
        assert rec.nfe == 4 * rec.first_plan_nfe and rec.plan_time_s > 0
        assert rec.states.shape == (13, 40) and set(rec.to_dict()) >= {"success", "steps", "replans", "nfe"}
        calm = run_scene_episode(env, prior, model, 2, "gsc", batch=2, count=2, max_steps=12, replan_deviation=1e9)
        assert calm.replans == 0  # a plan longer than the episode, no straying allowed to count
        with pytest.raises(ValueError, match="task must be one of 1..5"):
            run_scene_episode(env, prior, model, 0)
    finally:
        env.close()


def test_evaluate_and_summarize(prior):
    logged = []
    recs = evaluate_scene(prior, InverseDynamics(), "gsc", tasks=(1, 3), seeds=(0,), batch=2, count=2, max_steps=5,
                          log=lambda r, s: logged.append((r.task, s)))
    assert [r.task for r in recs] == [1, 3] and [t for t, _ in logged] == [1, 3]
    s = summarize_scene(recs)
    assert s["episodes"] == 2 and 0 <= s["success"] <= 1 and s["nfe_per_plan"] == recs[0].first_plan_nfe
