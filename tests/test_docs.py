"""docs/api.md names every public name the package exports."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
MODULES = ["cofi", "cofi.samplers", "cofi.presets", "cofi.priors", "cofi.metrics.coherence", "cofi.viz",
           "cofi.planning.planner", "cofi.planning.control", "cofi.planning.data", "cofi.planning.evaluate",
           "cofi.panorama", "cofi.video", "cofi.metrics.image", "cofi.metrics.video"]
HEAVY = {"cofi.panorama", "cofi.video", "cofi.metrics.image", "cofi.metrics.video", "cofi.planning.evaluate"}


@pytest.mark.parametrize("module", MODULES)
def test_api_md_names_every_public_name(module):
    if module in HEAVY:
        pytest.importorskip("diffusers" if "metrics" not in module and "planning" not in module else "torch")
    names = importlib.import_module(module).__all__
    missing = [n for n in names if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", API)]
    assert not missing, f"docs/api.md does not mention {module}.{missing}"
