"""Each domain's preset table and the one resolver (cofi.presets)."""

from __future__ import annotations

import dataclasses

import pytest

import cofi
from cofi import presets
from cofi.panorama import PRESETS as PANORAMA
from cofi.planning import PRESETS as PLANNING
from cofi.video import PRESETS as VIDEO


def test_domains_list_their_methods_default_first():
    from cofi.compose import SAMPLERS

    assert tuple(SAMPLERS) == ("gsc", "cofi", "cdgs", "syncdiffusion")
    assert tuple(PLANNING) == ("cofi", "gsc", "cd", "cdgs")
    assert tuple(PANORAMA) == ("cofi", "multidiffusion", "syncdiffusion", "cdgs")
    assert tuple(VIDEO) == ("cofi", "native", "gen-l-video", "cdgs")
    with pytest.raises(ValueError, match="unknown method 'ddpm'; valid: cofi, multidiffusion"):
        presets.resolve(PANORAMA, "ddpm")


def test_core_modules_import_no_domain():
    """compose, layout, steps and the samplers know no domain: importing them loads no front-end."""
    import subprocess
    import sys

    code = ("import sys, cofi, cofi.compose, cofi.layout, cofi.steps, cofi.samplers, cofi.presets; "
            "print(sorted(m for m in sys.modules if m.startswith(('cofi.planning', 'cofi.panorama', 'cofi.video'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_names_configs_and_overrides_resolve_the_same_way():
    r = presets.resolve(PANORAMA, None)
    assert (r.method, r.stride, r.blend) == ("cofi", 1 / 2, "ramp") and r.sampler.steps == 50  # of the window
    r = presets.resolve(PANORAMA, "COFI", steps=20, lam0=0.5)
    assert r.sampler.steps == 20 and r.sampler.lam0 == 0.5 and r.sampler.coarse_update == "renoise"
    # a config of a preset's class takes that preset's geometry and keeps its own fields
    own = cofi.GSC(steps=7, eta=0.3)
    r = presets.resolve(PANORAMA, own)
    assert r.sampler is own and (r.method, r.stride, r.blend) == ("multidiffusion", 1 / 8, "uniform")
    r = presets.resolve(PANORAMA, own, steps=3, stride=16, blend="ramp", eta=0.0)
    assert r.sampler == dataclasses.replace(own, steps=3, eta=0.0) and (r.stride, r.blend) == (16, "ramp")
    r = presets.resolve(VIDEO, cofi.CoFi(steps=4))
    assert r.method == "cofi" and r.stride is None and r.blend == "ramp"
    assert presets.resolve(PLANNING, "gsc").sampler == cofi.planning.planning_sampler("gsc")


class _MySampler:  # a user-written sampler: not a dataclass, no preset builds it
    init_noise = "canvas"

    def nfe(self, layout, batch):
        return 0

    def sample(self, ctx, x):
        return x


def test_a_user_sampler_gets_the_domain_default_geometry():
    mine = _MySampler()
    r = presets.resolve(PANORAMA, mine)
    assert r.sampler is mine and r.method is None and (r.stride, r.blend) == (1 / 2, "ramp")
    with pytest.raises(TypeError, match="cannot apply \\['steps'\\] to a _MySampler: not a dataclass"):
        presets.resolve(PANORAMA, mine, steps=4)
    with pytest.raises(TypeError, match="sampler must be a sampler config"):
        presets.resolve(VIDEO, 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lam1'"):
        presets.resolve(VIDEO, "cofi", lam1=0.2)
