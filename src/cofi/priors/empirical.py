"""`EmpiricalPrior`: the exact posterior mean of the empirical distribution of a bank of windows.

For a bank ``{x_i}`` of M clean local plans, the data distribution ``(1/M) Σ_i δ(x − x_i)``
noised to level t has the Tweedie denoiser in closed form:

    x̂(x_t, t) = Σ_i w_i x_i,   w = softmax_i(−‖x_t − √ᾱ_t x_i‖² / (2(1 − ᾱ_t)))

It is a *nonparametric* prior: it reproduces training windows (at t → 0 it returns the
nearest one), never generalises beyond them, and costs one pass over the bank per call.
That makes it three things for this project: the upper bound of what a learned prior
trained on the same windows can do; the diagnostic that separates sampler failures from
network failures (swap it in and see whether a pipeline still fails); and the reference
bank for low-variance training targets (Stable Target Field, Xu et al. 2023), see
`cofi.planning.train`.

Known entries (a plan's pinned start and goal) enter exactly as noise-free observations:
``observed_mask`` marks them, ``observed`` holds their values; their noisy copies in x_t are
dropped from the likelihood, and every bank window is weighted by how well it matches them,
``− Σ_obs (x_i − y)² / (2 obs_std²)`` added to the logits (``obs_std`` → 0 is an exact constraint; a small positive value keeps the weights
spread over the bank windows that pass near the observed point).

Soft *evidence* about entries of x_0 (``evidence`` values with per-entry precisions
``evidence_precision``, e.g. what neighbouring windows currently say about an overlap: the
messages of consensus coupling) adds ``− Σ_e π_e (x_i,e − y_e)² / 2`` to the logits, on top of
the noisy state's own term; the posterior mean stays exact under it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from .trajectory import XYNormalizer, cosine_alphas_cumprod

__all__ = ["EmpiricalPrior"]


class EmpiricalPrior(XYNormalizer):
    """LocalPrior whose ``denoise`` is the exact posterior mean over a bank of windows.

    Args:
        bank: ``(M, *sample_shape)`` clean windows (any domain).
        alphas_cumprod: the noise schedule ``(T,)`` it is evaluated on.
        chunk: bank rows per matrix product (bounds memory at ``queries × chunk`` logits).
        top_k: if set, each query keeps only its ``top_k`` largest weights (exact when the
            rest are negligible; gradients flow through the kept ones). None: every window.
        obs_std: standard deviation of the observation term of pinned entries (in the
            bank's units). Small: the pins select the windows that pass through them.
        lo, hi, scale, env_name, stride: the trajectory surface (see `XYNormalizer`); for
            other domains leave them at their defaults.
        planning_consensus: the consensus κ `cofi.planning.planning_sampler` plans with (0: off).
    """

    supports_grad = True
    accepts_observations = True
    accepts_evidence = True
    timestep_spacing = "leading"
    steps_offset = 0

    def __init__(self, bank: Tensor, alphas_cumprod: Tensor, *, chunk: int = 16384, top_k: int | None = None,
                 obs_std: float = 0.02, lo=(-1.0, -1.0), hi=(1.0, 1.0), scale: float = 1.0,
                 env_name: str | None = None, stride: int = 1, planning_consensus: float = 0.0) -> None:
        bank = torch.as_tensor(bank)
        if bank.ndim < 2 or bank.shape[0] < 1:
            raise ValueError(f"bank must have shape (M, *sample_shape) with M >= 1, got {tuple(bank.shape)}")
        if not torch.isfinite(bank).all():
            raise ValueError("bank contains NaN or inf")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        if not obs_std > 0:
            raise ValueError(f"obs_std must be > 0, got {obs_std}")
        super().__init__(lo, hi, scale=scale, env_name=env_name, stride=stride)
        self.sample_shape = tuple(bank.shape[1:])
        self.bank = bank.reshape(bank.shape[0], -1)
        self.bank_sq = self.bank.pow(2)
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod).to(self.bank.device)
        self.chunk, self.top_k, self.obs_std = chunk, top_k, float(obs_std)
        self.planning_consensus = float(planning_consensus)

    @property
    def size(self) -> int:
        """Windows M in the bank."""
        return self.bank.shape[0]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_stitch_data(cls, path: str | Path, *, env_name: str | None = None, stride: int = 4, pad: int = 64,
                         every: int | None = None, T: int = 200, lo=None, hi=None, planning_consensus: float = 5.0,
                         **kwargs) -> "EmpiricalPrior":
        """The closed-form trajectory prior of an OGBench stitch dataset (``.npz``).

        Episodes are padded with ``pad`` copies of their first state (`pad_episodes`), cut
        into 160-env-step windows starting every ``every`` steps (default: ``stride``) and
        subsampled to one point per ``stride`` steps (`cut_windows`), then normalised to
        ``[-1, 1]`` by the training positions' min / max (or the given ``lo`` / ``hi``, e.g. a
        `TrajectoryPrior`'s, so the two priors share a space). Cosine schedule with ``T`` steps.
        ``planning_consensus``: the consensus κ `cofi.planning.planning_sampler` plans with
        (docs/planning.md); 0 plans without consensus coupling.
        """
        from ..planning.data import HORIZON_STEPS, cut_windows, load_episodes, pad_episodes

        eps = load_episodes(path)
        lo = eps.reshape(-1, 2).min(0) if lo is None else np.asarray(lo, dtype=np.float32)
        hi = eps.reshape(-1, 2).max(0) if hi is None else np.asarray(hi, dtype=np.float32)
        windows = cut_windows(pad_episodes(eps, pad), HORIZON_STEPS, stride, every or stride)
        if env_name is None:
            env_name = Path(path).name.replace(".npz", "")
        norm = XYNormalizer(lo, hi, env_name=env_name, stride=stride)
        return cls(norm.normalize(windows), cosine_alphas_cumprod(T), lo=lo, hi=hi, env_name=env_name,
                   stride=stride, planning_consensus=planning_consensus, **kwargs)

    # ------------------------------------------------------------------ LocalPrior
    def logits(self, x_t: Tensor, t: Tensor, observed: Tensor | None = None, observed_mask: Tensor | None = None,
               rows: slice = slice(None), evidence: Tensor | None = None,
               evidence_precision: Tensor | None = None) -> Tensor:
        """Unnormalised log-weights ``(Q, rows)`` of the bank windows for each query.

        ``−‖x_t − √ᾱ x_i‖² / (2(1−ᾱ))`` up to a per-query constant, plus the observation and
        evidence terms.
        """
        Q = x_t.shape[0]
        a = self.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype).reshape(Q, 1)
        lin = rearrange(x_t, "q ... -> q (...)") * (a.sqrt() / (1 - a))  # (Q, D)
        quad = (a / (2 * (1 - a))).expand(Q, lin.shape[1])
        if observed is not None and observed_mask is not None:
            # an observed entry is known exactly: its noisy copy in x_t adds nothing
            m = rearrange(observed_mask, "q ... -> q (...)").to(x_t.dtype)
            inv = 1.0 / self.obs_std**2
            lin = lin * (1 - m) + inv * m * rearrange(observed, "q ... -> q (...)").to(x_t.dtype)
            quad = quad * (1 - m) + 0.5 * inv * m
        if evidence is not None:
            prec = rearrange(evidence_precision, "q ... -> q (...)").to(x_t.dtype)
            lin = lin + prec * rearrange(evidence, "q ... -> q (...)").to(x_t.dtype)
            quad = quad + 0.5 * prec
        X, X2 = self.bank[rows].to(x_t), self.bank_sq[rows].to(x_t)
        return lin @ X.T - quad @ X2.T

    def denoise(self, x_t: Tensor, t: Tensor, *, observed: Tensor | None = None,
                observed_mask: Tensor | None = None, evidence: Tensor | None = None,
                evidence_precision: Tensor | None = None, **cond) -> Tensor:
        """x̂ ``(Q, *S)`` for ``x_t`` ``(Q, *S)`` and timesteps ``(Q,)``; differentiable in ``x_t``.

        ``observed`` / ``observed_mask`` (both ``(Q, *S)``): entries known without noise.
        ``evidence`` / ``evidence_precision`` (both ``(Q, *S)``, precisions ≥ 0): Gaussian
        evidence ``y_e`` with precision ``π_e`` about each entry (0: none).
        """
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must have shape (Q, {', '.join(map(str, self.sample_shape))}), got {tuple(x_t.shape)}")
        if (observed is None) != (observed_mask is None):
            raise ValueError("observed and observed_mask must be given together")
        if (evidence is None) != (evidence_precision is None):
            raise ValueError("evidence and evidence_precision must be given together")
        if evidence_precision is not None and bool((evidence_precision < 0).any()):
            raise ValueError("evidence_precision must be >= 0")
        obs = (observed, observed_mask, evidence, evidence_precision)
        if self.top_k is not None:
            out = self._denoise_top_k(x_t, t, *obs)
        else:
            out = self._denoise_exact(x_t, t, *obs)
        return out.reshape(x_t.shape)

    def _denoise_exact(self, x_t, t, observed, mask, evidence, precision) -> Tensor:
        """Streaming softmax over bank chunks (running max, sum and weighted sum)."""
        Q = x_t.shape[0]
        m = torch.full((Q, 1), -torch.inf, dtype=x_t.dtype, device=x_t.device)
        s = torch.zeros((Q, 1), dtype=x_t.dtype, device=x_t.device)
        acc = torch.zeros((Q, self.bank.shape[1]), dtype=x_t.dtype, device=x_t.device)
        for i in range(0, self.size, self.chunk):
            rows = slice(i, i + self.chunk)
            lg = self.logits(x_t, t, observed, mask, rows, evidence, precision)
            m_new = torch.maximum(m, lg.max(1, keepdim=True).values)
            scale = torch.exp(m - m_new)
            w = torch.exp(lg - m_new)
            s = s * scale + w.sum(1, keepdim=True)
            acc = acc * scale + w @ self.bank[rows].to(x_t)
            m = m_new
        return acc / s

    def _denoise_top_k(self, x_t, t, observed, mask, evidence, precision) -> Tensor:
        """Find each query's ``top_k`` windows without gradients, then weight them exactly."""
        k = self.top_k
        with torch.no_grad():
            best_v = best_i = None
            for i in range(0, self.size, self.chunk):
                lg = self.logits(x_t.detach(), t, observed, mask, slice(i, i + self.chunk), evidence, precision)
                v, j = lg.topk(min(k, lg.shape[1]), dim=1)
                j = j + i
                if best_v is not None:
                    v, sel = torch.cat([best_v, v], 1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
                    j = torch.cat([best_i, j], 1).gather(1, sel)
                best_v, best_i = v, j
        X = self.bank.to(x_t)[best_i]  # (Q, k, D)
        Q = x_t.shape[0]
        a = self.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype).reshape(Q, 1)
        sq = (rearrange(x_t, "q ... -> q 1 (...)") - a.sqrt()[..., None] * X).pow(2)
        if observed is not None:
            mk = rearrange(mask, "q ... -> q 1 (...)").to(x_t.dtype)
            sq = sq * (1 - mk)
        lg = -sq.sum(2) / (2 * (1 - a))
        if observed is not None:
            lg = lg - (mk * (X - rearrange(observed, "q ... -> q 1 (...)").to(x_t.dtype)).pow(2)).sum(2) / (2 * self.obs_std**2)
        if evidence is not None:
            prec = rearrange(precision, "q ... -> q 1 (...)").to(x_t.dtype)
            lg = lg - (prec * (X - rearrange(evidence, "q ... -> q 1 (...)").to(x_t.dtype)).pow(2)).sum(2) / 2
        w = torch.softmax(lg, dim=1)
        return (w[..., None] * X).sum(1)

    def to(self, device) -> "EmpiricalPrior":
        self.bank, self.bank_sq = self.bank.to(device), self.bank_sq.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self
