"""Tools for testing: the prior contract suite and a local multi-process launcher.

Run any LocalPrior (ours or yours) through the contract suite::

    from cofi.testing import check_prior
    def test_my_prior():
        check_prior(MyPrior(...))

Each check raises AssertionError with a message naming what broke. `spawn` runs a function on
a few local processes joined in a ``torch.distributed`` group (tests and benchmarks of
`cofi.distributed`).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import Tensor

from .compose import check_schedule
from .prior import LocalPrior

__all__ = ["check_prior", "spawn"]


def _inputs(prior: LocalPrior, m: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    ac = prior.alphas_cumprod
    T = ac.shape[0]
    x = torch.randn(m, *prior.sample_shape, generator=g).to(ac.device, torch.float32)
    t = torch.linspace(T - 1, 0, m).round().long().to(ac.device)
    return x, t


def check_prior(prior: LocalPrior, *, batch: int = 3, atol: float = 1e-4, rtol: float = 1e-4, **cond) -> None:
    """Check what the `LocalPrior` protocol asks: the schedule (1-D, finite, strictly decreasing
    in (0, 1]), ``denoise`` on ``(M, *sample_shape)`` with integer timesteps returning that shape
    and the input dtype, finite, deterministic and independent across the batch, autograd where
    ``supports_grad``; an error for another shape (if the adapter raises one) must say something."""
    # attributes
    ac = getattr(prior, "alphas_cumprod", None)
    assert isinstance(ac, Tensor) and ac.ndim == 1 and ac.numel() >= 2, "alphas_cumprod must be a 1-D tensor (T_train,)"
    try:
        check_schedule(ac)
    except ValueError as e:
        raise AssertionError(str(e)) from e
    shape = tuple(prior.sample_shape)
    assert len(shape) >= 1 and all(isinstance(s, int) and s > 0 for s in shape), "sample_shape must be positive ints"
    # shapes, dtype, finiteness; `window` is always passed by compose
    x, t = _inputs(prior, batch, 0)
    win = torch.zeros(batch, dtype=torch.long, device=x.device)
    with torch.no_grad():
        out = prior.denoise(x, t, window=win, **cond)
    assert isinstance(out, Tensor), f"denoise must return a Tensor, got {type(out).__name__}"
    assert tuple(out.shape) == (batch, *shape), f"denoise returned {tuple(out.shape)}, expected {(batch, *shape)}"
    assert out.dtype == x.dtype, f"denoise must return the input dtype {x.dtype}, got {out.dtype}"
    assert torch.isfinite(out).all(), "denoise returned NaN or inf on standard-normal input"
    # determinism
    with torch.no_grad():
        again = prior.denoise(x, t, window=win, **cond)
    assert torch.equal(out, again), "denoise is not deterministic for the same input"
    # batch independence: each sample alone gives its own row
    with torch.no_grad():
        rows = [prior.denoise(x[i : i + 1], t[i : i + 1], window=win[i : i + 1], **cond) for i in range(batch)]
    torch.testing.assert_close(torch.cat(rows), out, atol=atol, rtol=rtol,
                               msg=lambda m: f"denoise depends on the other samples of the batch: {m}")
    # autograd where declared
    if getattr(prior, "supports_grad", False):
        xg = x.clone().requires_grad_(True)
        try:
            prior.denoise(xg, t, window=win, **cond).square().sum().backward()
        except RuntimeError as e:
            raise AssertionError(f"supports_grad=True but backward through denoise failed: {e}") from e
        assert xg.grad is not None and torch.isfinite(xg.grad).all(), "supports_grad=True but no finite gradient"
        assert xg.grad.abs().sum() > 0, "supports_grad=True but the gradient is identically zero"
    # other shapes: the protocol leaves them to the adapter (compose only ever passes (M, *S)); an
    # adapter that rejects one must say what is wrong
    bad = torch.zeros(batch, *shape[:-1], shape[-1] + 1, device=x.device)
    try:
        with torch.no_grad():
            prior.denoise(bad, t, window=win, **cond)
    except Exception as e:  # noqa: BLE001 (any error type is the adapter's choice)
        assert str(e), f"denoise rejected input of shape {tuple(bad.shape)} with an empty message"


# ----------------------------------------------------------------------------- local launcher
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, backend, timeout, threads, fn, args, queue):  # pragma: no cover (child)
    import datetime
    import os
    import pickle
    import traceback

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        torch.set_num_threads(threads)
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        out = pickle.dumps(fn(*args))  # plain bytes: no shared-memory handles outliving the child
        queue.put((rank, True, out))
    except BaseException:  # noqa: BLE001 (every failure goes back to the launcher)
        queue.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn, world: int, *args, backend: str = "gloo", timeout: float = 120.0, threads: int = 1) -> list:
    """Run ``fn(*args)`` on ``world`` local processes joined in a process group (localhost,
    ``gloo`` by default) and return their results in rank order. For tests and benchmarks on
    one machine; multi-machine and GPU runs use ``torchrun`` (docs/distributed.md).

    ``fn`` and its results must be picklable (a module-level function). If a rank raises, the
    others are stopped and a ``RuntimeError`` carries that rank's traceback; if the run takes
    longer than ``timeout`` seconds, every rank is stopped and ``TimeoutError`` is raised. It
    never hangs. ``threads``: torch threads per process.
    """
    import pickle
    import queue as queue_mod

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, backend, timeout, threads, fn, args, q), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < world:
            try:
                rank, ok, out = q.get(timeout=0.2)
            except queue_mod.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"distributed run did not finish within {timeout:g} s") from None
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results]
                if dead:
                    raise RuntimeError(f"rank {dead[0]} exited with code {procs[dead[0]].exitcode}")
                continue
            if not ok:
                raise RuntimeError(f"rank {rank} of {world} failed:\n{out}")
            results[rank] = pickle.loads(out)
    finally:
        for p in procs:
            p.join(timeout=5 if len(results) == world else 0)
            if p.is_alive():
                p.terminate()
                p.join()
    return [results[r] for r in range(world)]
