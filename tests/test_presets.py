"""The preset registry and its one resolver (cofi.presets)."""

from __future__ import annotations

import dataclasses

import pytest

import cofi
from cofi import presets


def test_domains_list_their_methods_default_first():
    assert presets.methods("generic") == ("cofi", "gsc", "multidiffusion", "cdgs", "syncdiffusion")
    assert presets.methods("planning") == ("cofi", "gsc", "cd", "cdgs")
    assert presets.methods("panorama")[0] == "cofi" and "cofi-ddim" in presets.methods("panorama")
    assert presets.methods("video")[0] == "cofi" and "cofi-stochastic" in presets.methods("video")
    with pytest.raises(ValueError, match="unknown domain 'audio'"):
        presets.methods("audio")
    with pytest.raises(ValueError, match="unknown method 'ddpm' for panorama; valid: cofi, multidiffusion"):
        presets.get("panorama", "ddpm")


def test_names_configs_and_overrides_resolve_the_same_way():
    r = presets.resolve("panorama", None)
    assert (r.method, r.stride, r.blend) == ("cofi", 32, "ramp") and r.sampler.steps == 50
    r = presets.resolve("panorama", "COFI", steps=20, lam0=0.5)
    assert r.sampler.steps == 20 and r.sampler.lam0 == 0.5 and r.sampler.coarse_update == "renoise"
    # a config of a preset's class takes that preset's geometry and keeps its own fields
    own = cofi.GSC(steps=7, eta=0.3)
    r = presets.resolve("panorama", own)
    assert r.sampler is own and (r.method, r.stride, r.blend) == ("multidiffusion", 8, "uniform")
    r = presets.resolve("panorama", own, steps=3, stride=16, blend="ramp", eta=0.0)
    assert r.sampler == dataclasses.replace(own, steps=3, eta=0.0) and (r.stride, r.blend) == (16, "ramp")
    r = presets.resolve("video", cofi.CoFi(steps=4))
    assert r.method == "cofi" and r.stride is None and r.blend == "ramp"
    assert presets.resolve("planning", "gsc").sampler == cofi.planning.planning_sampler("gsc")


class _MySampler:  # a user-written sampler: not a dataclass, no preset builds it
    init_noise = "canvas"

    def nfe(self, layout, batch):
        return 0

    def sample(self, ctx, x):
        return x


def test_a_user_sampler_gets_the_domain_default_geometry():
    mine = _MySampler()
    r = presets.resolve("panorama", mine)
    assert r.sampler is mine and r.method is None and (r.stride, r.blend) == (32, "ramp")
    with pytest.raises(TypeError, match="cannot apply \\['steps'\\] to a _MySampler: not a dataclass"):
        presets.resolve("panorama", mine, steps=4)
    with pytest.raises(TypeError, match="sampler must be a sampler config"):
        presets.resolve("video", 3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lam1'"):
        presets.resolve("video", "cofi", lam1=0.2)
