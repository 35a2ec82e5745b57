"""docs/api.md names every public name the package exports."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

import pytest

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
MODULES = ["cofi", "cofi.samplers", "cofi.presets", "cofi.priors", "cofi.metrics.coherence", "cofi.viz",
           "cofi.planning.planner", "cofi.planning.control", "cofi.planning.data", "cofi.planning.evaluate",
           "cofi.panorama", "cofi.video", "cofi.metrics.image", "cofi.metrics.video", "cofi.distributed",
           "cofi.scaffold"]
HEAVY = {"cofi.panorama", "cofi.video", "cofi.metrics.image", "cofi.metrics.video", "cofi.planning.evaluate"}


@pytest.mark.parametrize("module", MODULES)
def test_api_md_names_every_public_name(module):
    if module in HEAVY:
        pytest.importorskip("diffusers" if "metrics" not in module and "planning" not in module else "torch")
    names = importlib.import_module(module).__all__
    missing = [n for n in names if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", API)]
    assert not missing, f"docs/api.md does not mention {module}.{missing}"


# ---------------------------------------------------------------- code blocks of README and docs
ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)]


def _resolve(dotted: str):
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, p in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, p)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_code_blocks_compile_and_name_real_things(path):
    """Every python block parses, and every ``cofi.x.y`` it names and every ``from cofi... import``
    it makes exists: renamed or removed API cannot survive in the docs."""
    pytest.importorskip("diffusers")
    for block in _blocks(path):
        compile(block, str(path), "exec")
        for dotted in set(re.findall(r"\bcofi(?:\.[A-Za-z_]\w*)+", block)):
            _resolve(dotted.rstrip("."))
        for mod, names in re.findall(r"from (cofi[\w.]*) import ([\w, ]+)", block):
            for n in names.split(","):
                n = n.split(" as ")[0].strip()
                assert hasattr(importlib.import_module(mod), n), f"{path.name}: {mod}.{n}"


def test_readme_first_block_runs():
    """The README's first example runs as written, on CPU."""
    ns: dict = {}
    exec(_blocks(ROOT / "README.md")[0], ns)
    out = ns["out"]
    assert out.canvas.shape == (4, 200, 2) and out.plans.shape == (4, 8, 32, 2) and out.nfe > 0


def test_panorama_doc_blocks_run_on_a_tiny_pipeline(monkeypatch, tmp_path):
    """docs/panorama.md's blocks run as written on a tiny random-weight SD pipeline with SD's
    64-latent window: the hub download and ``.to("cuda")`` return the tiny pipeline, and
    every composition runs 2 steps instead of its 50 (the only changes)."""
    import dataclasses
    import sys

    diffusers = pytest.importorskip("diffusers")
    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_sd import tiny_pipe

    import cofi
    import cofi.panorama as pano_mod

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipe = tiny_pipe(seed=0, sample_size=64)
    pipe.to = lambda *a, **k: pipe
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", classmethod(lambda cls, *a, **k: pipe))
    compose = cofi.compose

    def two_steps(prior, layout, sampler, **kw):
        return compose(prior, layout, dataclasses.replace(sampler, steps=2), **kw)

    monkeypatch.setattr(pano_mod, "compose", two_steps)
    monkeypatch.setattr(cofi, "compose", two_steps)
    monkeypatch.chdir(tmp_path)
    try:
        blocks = _blocks(ROOT / "docs" / "panorama.md")
        ns: dict = {}
        exec(blocks[0], ns)
        assert (tmp_path / "dolomites.png").exists() and ns["out"].best_image.size == (2048, 512)
        ns["prompt"] = "a photo of the mountains"
        exec(blocks[1], ns)
        assert len(ns["images"]) == 1 and ns["images"][0].size == (2048, 512)
    finally:
        torch.set_num_threads(threads)
