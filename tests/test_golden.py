"""Golden outputs: every sampler and preset computes what it computed when they were recorded
(`tests/golden/record.py`, from the engine the composable samplers replaced).

Compared within 1e-10 (float64 state). Not compared, on purpose: ``overlap_error`` and ``best``.
They used to measure the *final* plans, which fusion makes agree exactly (so every candidate scored 0
and ``best`` was always 0). Candidates are now ranked by the disagreement of the local estimates
before fusion at the last step (eq. 22), which `tests/test_compose.py` checks on its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))

from cases import CASES, FLOAT32, distributed_case  # noqa: E402

TOL64 = dict(atol=1e-10, rtol=1e-10)
# float32 networks (the shipped U-Net, the tiny SD and CogVideoX pipelines), float32 state: the
# engine and the loops run the same float operations in the same order, so on one machine they
# agree to the last bit; the tolerance allows for the kernels a CPU picks (its instruction set
# changes the summation order in convolutions and matmuls: on an AVX-512 Xeon the tiny SD
# panoramas differ from the recording by up to 3.2e-5, where CoFi's λ scaled by 0.999 moves them
# by 3e-2)
TOL32 = dict(atol=1e-4, rtol=1e-4)
COMPARED = ("canvas", "plans", "scaffold")


@pytest.fixture(scope="module")
def golden():
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "outputs.safetensors")), json.loads((GOLDEN / "outputs.json").read_text())


def _compare(name: str, out: dict, golden, tol) -> None:
    tensors, ints = golden
    for key in COMPARED:
        want = tensors.get(f"{name}/{key}")
        if want is None:
            assert out.get(key) is None, f"{name}: {key} was None when recorded"
            continue
        torch.testing.assert_close(out[key].to(want.dtype), want, **tol, msg=lambda m: f"{name}/{key}: {m}")
    for key in ("nfe", "grad_evals"):
        assert out[key] == ints[f"{name}/{key}"], f"{name}: {key} {out[key]} != {ints[f'{name}/{key}']}"


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name, golden):
    torch.manual_seed(1234)  # nothing may depend on the global seed: a changed global RNG must not matter
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as recorded: the float32 networks' kernels sum in a thread-dependent order
    try:
        out = CASES[name]()
    finally:
        torch.set_num_threads(threads)
    _compare(name, out, golden, TOL32 if name in FLOAT32 else TOL64)


def test_golden_distributed(golden):
    try:
        from cofi.testing import spawn
    except ImportError:  # before spawn moved out of the core path
        from cofi.distributed import spawn

    for rank_out in spawn(distributed_case, 2, timeout=180):
        _compare("distributed-2ranks", rank_out, golden, TOL64)
