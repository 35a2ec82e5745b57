"""benchmarks/planning.py resumes from its --json records: `recorded` reads back the episodes a
file holds for one maze and label."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _planning_script():
    spec = importlib.util.spec_from_file_location("bench_planning", ROOT / "benchmarks" / "planning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recorded_filters_by_env_and_label(tmp_path):
    mod = _planning_script()
    rec = dict(env_name="pointmaze-giant-stitch-v0", method="cofi", task=2, seed=3, episode=0, success=True)
    lines = [dict(rec, label="cofi"), dict(rec, label="gsc", method="gsc"),
             dict(rec, env_name="pointmaze-large-stitch-v0", label="cofi"), dict(rec, task=4, label="cofi")]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in lines) + "\n\n")
    got = mod.recorded(str(path), "pointmaze-giant-stitch-v0", "cofi")
    assert set(got) == {(2, 3, 0), (4, 3, 0)}
    assert "label" not in got[(2, 3, 0)] and got[(2, 3, 0)]["success"] is True
    assert mod.recorded(str(tmp_path / "missing.jsonl"), "x", "cofi") == {}
    assert mod.recorded(None, "x", "cofi") == {}


def _scene_script():
    spec = importlib.util.spec_from_file_location("bench_scene", ROOT / "benchmarks" / "scene.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scene_first_lift_miss_is_where_the_plan_grasps_against_where_the_cube_lies():
    """A plan whose cube slides 0.3 in x and 0.4 in y by itself, then rises: its grasp closes 0.5
    (5 cm) from the untouched cube; a plan that never lifts has no miss."""
    import math

    import numpy as np

    mod = _scene_script()
    p = np.zeros((12, 14))
    p[:, 5] = 0.2
    p[3:, 3:5] = 0.3, 0.4
    p[8:, 5] = [0.3, 0.5, 0.8, 1.0]  # first more than 0.2 above the start at index 9
    assert mod.first_lift_miss(p) == 0.5
    p[2:, 3:5] = 0.0
    assert mod.first_lift_miss(p) == 0.0
    assert math.isnan(mod.first_lift_miss(np.zeros((5, 14))))
    assert mod.parse_seeds(["0", "3-5"]) == [0, 3, 4, 5]


def test_learning_curve_evidence_guidance_extrapolates_from_the_plain_estimate():
    """CFG on evidence: x̂(∅) + w·(x̂(e) − x̂(∅)), counting two network calls per window with
    evidence; w = 1 is the plain conditional call, one network call per window."""
    import torch

    spec = importlib.util.spec_from_file_location("bench_curve", ROOT / "benchmarks" / "learning_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Stub:  # x̂(∅) = x_t, x̂(e) = x_t + e
        def denoise(self, x_t, t, *, evidence=None, evidence_precision=None, **kw):
            return x_t if evidence is None else x_t + evidence

    x, t, e = torch.ones(3, 4, 2), torch.zeros(3, dtype=torch.long), torch.full((3, 4, 2), 0.5)
    prior = Stub()
    calls = mod.evidence_guidance(prior, 2.0)
    assert torch.equal(prior.denoise(x, t, evidence=e, evidence_precision=e), x + 2 * e) and calls == [6]
    assert torch.equal(prior.denoise(x, t), x) and calls == [9]
    plain = Stub()
    calls = mod.evidence_guidance(plain, 1.0)
    assert torch.equal(plain.denoise(x, t, evidence=e, evidence_precision=e), x + e) and calls == [3]
