"""SyncDiffusion: MultiDiffusion plus a perceptual pull of every window toward an anchor
window (Lee et al. 2023, "SyncDiffusion: Coherent Montage via Synchronized Joint Diffusions").

At a synchronised step k, every non-anchor window's noisy state moves down the gradient of
``LPIPS(decode(x̂_i), decode(x̂_anchor))`` taken through the prior's x̂ (UNet with CFG) and
the VAE decoder: ``x_t^i ← x_t^i − w_k ∇_{x_t^i} LPIPS``, ``w_k = weight · decay^k``; then a
MultiDiffusion step (DDIM per window, windows averaged on the canvas). Defaults are the
public code's (KAIST-Visual-AI-Group/SyncDiffusion, ``sample_syncdiffusion.sh``): weight 20,
decay 0.95, gradient at every step (``every=1``) of the first 10 of 50 steps, the middle
window as anchor, window stride 16 latents (set by the layout, see `cofi.panorama`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from einops import rearrange, repeat
from torch import Tensor
from tqdm.auto import tqdm

from ..layout import Layout
from ..run import Run, Sampled
from ..steps import ddim_step, disagreement, fuse, pairs, predict
from .config import InitNoise, Noise, check_common, check_number

__all__ = ["SyncDiffusion", "perceptual_distance"]

Distance = Callable[[Tensor, Tensor], Tensor]


def perceptual_distance(lpips) -> Distance:
    """A differentiable ``d(a, b) -> (n,)`` for images in [0, 1] from ``lpips``.

    `cofi.metrics.image.LPIPS` computes its features under ``no_grad`` (it is a metric), so
    its parts are re-run here with autograd on; any other callable is used as it is.
    """
    if all(hasattr(lpips, k) for k in ("net", "distance", "shift", "scale", "lin0")):
        from ..metrics.image import LPIPS_LAYERS, VGG16_RELU, _unit_channels

        taps = [VGG16_RELU[n] for n in LPIPS_LAYERS]

        def feats(img: Tensor) -> list[Tensor]:
            w = lpips.lin0.weight
            x = (2 * img.to(w.device, w.dtype) - 1 - lpips.shift) / lpips.scale
            return [_unit_channels(f) for f in lpips.net(x, taps)]

        return lambda a, b: lpips.distance(feats(a), feats(b))
    if not callable(lpips):
        raise TypeError(f"lpips must be callable lpips(img_a, img_b) -> Tensor, got {type(lpips).__name__}")
    return lpips


@dataclass(frozen=True)
class SyncDiffusion:
    """SyncDiffusion over a `Chain` or `Grid` of windows. NFE = K·N·B + n_sync·N·B (per synchronised
    step one anchor evaluation and N − 1 differentiated ones; ``grad_evals`` counts the latter).
    Over a process group every rank evaluates the anchor itself (NFE counts each evaluation).

    Args:
        steps: DDIM steps K.
        weight: gradient-descent weight w at step 0.
        decay: w_k = weight · decay^k.
        sync_steps: synchronise only in the first ``sync_steps`` steps (public script: 10).
        every: synchronise every ``every``-th step (``(k + 1) % every == 0``).
        anchor: window index of the anchor; None: the middle window ``N // 2`` (public code).
        eta: DDIM η (0: deterministic, as the public code).
        noise: directional noise for ``eta > 0``; init_noise: x_T on the ``canvas`` or per ``plans``.
        grad_batch: windows per differentiated pass (1: least memory, as the public code).
        lpips: perceptual distance ``lpips(img_a, img_b) -> (n,)`` on images in [0, 1], e.g.
            `cofi.metrics.image.LPIPS.from_pretrained(...)` (VGG, as the public code). Required.
        decode: latents ``(n, *S)`` -> images ``(n, 3, H, W)`` in [0, 1], differentiable;
            None: ``prior.decode`` (`StableDiffusionPrior.decode`).
    """

    steps: int = 50
    weight: float = 20.0
    decay: float = 0.95
    sync_steps: int = 10
    every: int = 1
    anchor: int | None = None
    eta: float = 0.0
    noise: Noise = "independent"
    init_noise: InitNoise = "canvas"
    grad_batch: int = 1
    lpips: Distance | None = field(default=None, compare=False, repr=False)
    decode: Callable[[Tensor], Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_common(self)
        check_number("weight", self.weight)
        check_number("decay", self.decay, 0.0, 1.0, open_lo=True)
        check_number("sync_steps", self.sync_steps, 0, integer=True)
        check_number("every", self.every, 1, integer=True)
        check_number("grad_batch", self.grad_batch, 1, integer=True)

    def synced(self, k: int) -> bool:
        """Whether step k (0-based) runs the perceptual gradient."""
        return k < self.sync_steps and (k + 1) % self.every == 0

    def anchor_index(self, count: int) -> int:
        a = count // 2 if self.anchor is None else self.anchor
        if not 0 <= a < count:
            raise ValueError(f"anchor must be a window index in [0, {count - 1}], got {self.anchor}")
        return a

    def nfe(self, layout: Layout, batch: int) -> int:
        n_sync = sum(self.synced(k) for k in range(self.steps)) if layout.count > 1 else 0
        return (self.steps + n_sync) * layout.count * batch

    def sample(self, run: Run, x: Tensor) -> Sampled:
        a = self.anchor_index(run.windows)
        dist = decode = None
        if run.windows > 1 and self.sync_steps > 0:
            if self.lpips is None:
                raise ValueError("SyncDiffusion needs a perceptual distance: SyncDiffusion(lpips=...), e.g. "
                                 "cofi.metrics.image.LPIPS.from_pretrained(lin_path=...)")
            dist = perceptual_distance(self.lpips)
            decode = self.decode or getattr(run.prior, "decode", None)
            if decode is None:
                raise ValueError("SyncDiffusion needs decode=... or a prior with a differentiable decode()")
        ts = run.grid(self.steps)
        for k, (t, s) in enumerate(tqdm(list(pairs(ts)), desc="syncdiffusion", disable=not run.progress,
                                        leave=False)):
            a_t, a_s = run.alpha(t), run.alpha(s)
            if dist is not None and self.synced(k) and self.weight > 0:
                x = self._synchronise(run, x, t, self.weight * self.decay**k, a, dist, decode)
            x0 = predict(run, x, t)
            z = run.noise(self.noise) if self.eta > 0 else None
            # MultiDiffusion: a DDIM step per window, then the windows averaged on the canvas
            x = fuse(run, ddim_step(x, x0, a_t, a_s, self.eta, z))
            run.emit(stage="syncdiffusion", step=k, t=t, x=x, x0=x0)
        return Sampled(x, disagreement(run, x0))

    def _synchronise(self, run: Run, x: Tensor, t: int, w: float, a: int, dist: Distance,
                     decode: Callable[[Tensor], Tensor]) -> Tensor:
        """``x_t^i ← x_t^i − w ∇ LPIPS(decode(x̂_i), decode(x̂_a))`` for every window i ≠ a
        held here. The anchor's state comes from wherever it is held (`Lattice.gather`)."""
        B = x.shape[0]
        anchor = torch.tensor([a], device=run.device)
        x0_a = predict(run, run.layout.gather(x)[:, a : a + 1], t, ids=anchor)
        with torch.no_grad():
            img_a = decode(x0_a[:, 0])
        ids = run.layout.window_ids.tolist()
        others = [j for j, i in enumerate(ids) if i != a]  # positions in x of the windows to pull
        out = x.clone()
        for c in range(0, len(others), self.grad_batch):
            pos = torch.tensor(others[c : c + self.grad_batch], device=run.device)
            n = pos.numel()
            xg = x[:, pos].detach().requires_grad_(True)
            with torch.enable_grad():
                x0 = predict(run, xg, t, ids=run.layout.window_ids.to(run.device)[pos], grad=True)
                loss = dist(decode(rearrange(x0, "b n ... -> (b n) ...")),
                            repeat(img_a, "b ... -> (b n) ...", n=n)).sum()
                (g,) = torch.autograd.grad(loss, xg)
            out[:, pos] = xg.detach() - w * g.to(xg.dtype)
            run.meter.grad_evals += B * n
        return out
