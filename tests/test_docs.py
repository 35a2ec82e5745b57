"""The docs cannot drift: docs/api.md names every public name, and the python blocks of README
and docs compile, name real API, and run as written on tiny models (hub loaders patched)."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
MODULES = ["cofi", "cofi.samplers", "cofi.presets", "cofi.priors", "cofi.metrics.coherence", "cofi.viz",
           "cofi.planning.planner", "cofi.planning.control", "cofi.planning.data", "cofi.planning.evaluate",
           "cofi.panorama", "cofi.video", "cofi.metrics.image", "cofi.metrics.video", "cofi.distributed",
           "cofi.scaffold", "cofi.planning.train", "cofi.planning.scene", "cofi.planning.scene_plan",
           "cofi.planning.scene_control", "cofi.planning.scene_evaluate"]
HEAVY = {"cofi.panorama", "cofi.video", "cofi.metrics.image", "cofi.metrics.video", "cofi.planning.evaluate",
         "cofi.planning.scene", "cofi.planning.scene_control", "cofi.planning.scene_evaluate"}


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


def test_readme_first_block_runs(capsys):
    """The README's first example is examples/readme_example.py, runs as written on CPU, and shows
    what it says: CoFi's canvases are coherent where GSC's are not."""
    block = _blocks(ROOT / "README.md")[0]
    example = (ROOT / "examples" / "readme_example.py").read_text()
    assert block.strip() in example, "README's first block and examples/readme_example.py differ"
    ns: dict = {}
    exec(block, ns)
    lines = capsys.readouterr().out.splitlines()
    coh = {ln.split()[0]: float(ln.split()[2]) for ln in lines}
    assert coh["GSC"] < 0.1 and coh["CoFi"] > 0.8, lines
    assert ns["out"].canvas.shape == (64, 200, 2) and ns["out"].nfe == 14336


@pytest.fixture
def tiny_hub(monkeypatch, tmp_path):
    """The hub downloads of the docs, answered by tiny random-weight pipelines on CPU.

    ``StableDiffusionPipeline.from_pretrained`` returns a tiny SD pipeline with SD's 64-latent
    window, ``CogVideoXPipeline.from_pretrained`` a tiny CogVideoX with the 2B model's 13-frame
    latent chunk, and ``.to("cuda")`` returns the pipeline itself. Every composition runs 2
    steps instead of its preset's, and videos default to 32 × 32 pixels instead of 480 × 720.
    These are the only changes: the blocks run as written. The working directory is a temporary
    one (the blocks write files). Yields ``(sd_pipe, video_pipe)``."""
    import dataclasses
    import functools
    import sys

    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_cogvideox import tiny_pipe as tiny_video_pipe
    from _tiny_sd import tiny_pipe as tiny_sd_pipe

    import cofi
    import cofi.panorama as pano_mod
    import cofi.video as video_mod

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sd, vid = tiny_sd_pipe(seed=0, sample_size=64), tiny_video_pipe(seed=0, sample_frames=49)
    for pipe, cls in ((sd, diffusers.StableDiffusionPipeline), (vid, diffusers.CogVideoXPipeline)):
        pipe.to = functools.partial(lambda p, *a, **k: p, pipe)
        monkeypatch.setattr(cls, "from_pretrained", classmethod(functools.partial(lambda p, cls, *a, **k: p, pipe)))
    compose = cofi.compose

    def two_steps(prior, layout, sampler, **kw):
        return compose(prior, layout, dataclasses.replace(sampler, steps=2), **kw)

    for mod in (pano_mod, video_mod, cofi):
        monkeypatch.setattr(mod, "compose", two_steps)
    long_video = video_mod.long_video

    @functools.wraps(long_video)
    def small_video(*a, **kw):
        return long_video(*a, **{"height": 32, "width": 32, **kw})

    monkeypatch.setattr(video_mod, "long_video", small_video)
    monkeypatch.setattr(cofi, "long_video", small_video)
    monkeypatch.chdir(tmp_path)
    yield sd, vid
    torch.set_num_threads(threads)


def test_panorama_doc_blocks_run_on_a_tiny_pipeline(tiny_hub, tmp_path):
    """docs/panorama.md's blocks run as written on the tiny SD pipeline (`tiny_hub`)."""
    blocks = _blocks(ROOT / "docs" / "panorama.md")
    ns: dict = {}
    exec(blocks[0], ns)
    assert (tmp_path / "dolomites.png").exists() and ns["out"].best_image.size == (2048, 512)
    ns["prompt"] = "a photo of the mountains"
    exec(blocks[1], ns)
    assert len(ns["images"]) == 1 and ns["images"][0].size == (2048, 512)


def test_video_doc_blocks_run_on_a_tiny_pipeline(tiny_hub, tmp_path):
    """docs/video.md's blocks run as written on the tiny CogVideoX pipeline (`tiny_hub`): nine
    13-frame latent chunks, 273 frames, written to mp4 and a frame strip."""
    import cofi

    blocks = _blocks(ROOT / "docs" / "video.md")
    ns: dict = {}
    exec(blocks[0], ns)
    assert ns["frames"].shape == (273, 32, 32, 3) and ns["out"].frames.shape[0] == 1
    assert (tmp_path / "panda.mp4").stat().st_size > 0 and (tmp_path / "panda.png").exists()
    ns["prompt"] = "a red panda eats bamboo"
    exec(blocks[1], ns)
    assert isinstance(ns["prior"], cofi.priors.CogVideoXPrior) and ns["prior"].sample_shape[0] == 13


def test_readme_domain_lines_run_on_tiny_pipelines(tiny_hub):
    """The README's panorama and long-video one-liners run as written, each on its tiny pipeline."""
    sd, vid = tiny_hub
    image_line, video_line = _blocks(ROOT / "README.md")[1].strip().splitlines()
    ns: dict = {"pipe": sd}
    exec("import cofi\n" + image_line, ns)
    assert ns["image"].size == (2048, 512)
    ns["pipe"] = vid
    exec(video_line, ns)
    assert ns["frames"].shape == (273, 32, 32, 3)


def test_planning_doc_blocks_run(monkeypatch):
    """docs/planning.md's blocks run as written with the shipped giant prior. The only changes:
    every composition runs 2 DDIM steps instead of the preset's, and `evaluate`'s episodes stop after 30
    env steps and one replan (the plans are poor; the API is exercised end to end)."""
    import dataclasses
    import functools

    pytest.importorskip("ogbench")
    torch = pytest.importorskip("torch")
    import cofi.planning.evaluate as evaluate_mod
    import cofi.planning.planner as planner

    monkeypatch.setattr(evaluate_mod, "evaluate", functools.partial(evaluate_mod.evaluate, max_steps=30, max_replans=1))
    compose = planner.compose
    monkeypatch.setattr(planner, "compose", lambda prior, layout, sampler, **kw: compose(
        prior, layout, dataclasses.replace(sampler, steps=2), **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        blocks = _blocks(ROOT / "docs" / "planning.md")
        ns: dict = {}
        exec(blocks[0], ns)
        out = ns["out"]
        assert out.xy.shape[1] == 2 and out.windows.shape == (8, 40, 2) and out.nfe > 0
        assert np.allclose(out.xy[0], (0.3, -0.4)) and np.allclose(out.xy[-1], (52.0, 36.0))
        exec(blocks[1], ns)
        recs = ns["recs"]
        assert len(recs) == 10 and {r.task for r in recs} == {1, 2, 3, 4, 5} and all(r.steps <= 30 for r in recs)
    finally:
        torch.set_num_threads(threads)


def test_metrics_doc_block_runs_on_tiny_networks(monkeypatch):
    """docs/metrics.md's first block runs as written: the four hub loaders return random-weight
    networks (a tiny CLIP and a tiny ViT for DINO), and the block's inputs are a two-crop
    panorama (512 × 1024), a prompt and a 4-frame video."""
    import sys

    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_metrics_image import tiny_clip
    from test_metrics_video import tiny_dino

    import cofi.metrics.image as mi
    import cofi.metrics.video as mv

    torch.manual_seed(0)
    lpips, vgg, clip = mi.LPIPS(), mi.VGG16Features(), mi.CLIPScorer(*tiny_clip())
    for cls, obj in ((mi.LPIPS, lpips), (mi.VGG16Features, vgg), (mi.CLIPScorer, clip), (mv.DINOEncoder, tiny_dino())):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda c, *a, _o=obj, **k: _o))
    g = torch.Generator().manual_seed(0)
    ns = {"pano": torch.rand(3, 512, 1024, generator=g), "prompt": "a photo of a mountain",
          "frames": torch.rand(4, 3, 32, 32, generator=g)}
    lines = _blocks(ROOT / "docs" / "metrics.md")[0].splitlines()
    exec("\n".join(lines), ns)
    # the block's bare expressions are the metric calls: every one gives a finite number
    for line in lines:
        call = line.split("#")[0].strip()
        if call.startswith(("mi.", "mv.")) and "=" not in call.split("(")[0]:
            assert np.isfinite(float(eval(call, ns))), call


def test_distributed_doc_block_runs_in_a_one_process_group(tmp_path):
    """docs/distributed.md's block runs as written in a fresh process, as torchrun would start
    it with one process (RANK 0 of WORLD_SIZE 1, gloo); the composition it returns matches the
    same call without a group."""
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("torch")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    block = _blocks(ROOT / "docs" / "distributed.md")[0]
    check = (
        "\nref = cofi.compose(prior, cofi.Chain(32, 16, 16), cofi.CoFi(steps=50), batch=4,"
        " generator=torch.Generator().manual_seed(0))"
        "\ntorch.testing.assert_close(comp.canvas, ref.canvas); print('ok', tuple(comp.canvas.shape), comp.nfe)"
        "\ndist.destroy_process_group()\n"
    )
    script = tmp_path / "block.py"
    script.write_text(block + check)
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[:2] == ["ok", "(4,"]


def test_samplers_md_loop_excerpts_are_the_code():
    """docs/samplers.md shows each sampler's loop beside its algorithm: every line of every loop
    excerpt (a block starting with ``for``) is a line of the samplers or the custom-sampler example."""
    src = "\n".join(p.read_text() for p in sorted((ROOT / "src" / "cofi" / "samplers").glob("*.py")))
    src += (ROOT / "examples" / "custom_sampler.py").read_text()
    lines = {ln.strip() for ln in src.splitlines()}
    excerpts = [b for b in _blocks(ROOT / "docs" / "samplers.md") if b.lstrip().startswith("for ")]
    assert len(excerpts) >= 4
    for block in excerpts:
        for ln in block.splitlines():
            assert not ln.strip() or ln.strip() in lines, f"docs/samplers.md excerpt line not in the code: {ln!r}"
