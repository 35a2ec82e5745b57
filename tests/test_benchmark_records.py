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
