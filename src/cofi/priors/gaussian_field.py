"""An exact image-domain prior: a mixture of stationary Gaussian random fields ("styles").

Component k is a field over a ``C × H × W`` canvas with a constant colour ``m_k ∈ R^C`` and a
separable covariance ``A_k ⊗ K_H(ℓ_k) ⊗ K_W(ℓ_k)``: ``A_k`` (C × C) couples the colour channels
and ``K(ℓ)`` is a squared-exponential kernel over unit-spaced rows or columns. One draw of the
global law picks one component for the whole canvas: ``p(X) = Σ_k π_k N(X; m_k, Σ_k)``. Because
the fields are stationary and the means constant, every ``C × h × w`` window of any canvas has
the same marginal ``Σ_k π_k N(m_k, A_k ⊗ K_h ⊗ K_w)``: it is the local prior, and its posterior
mean under ``x_t = √ᾱ x + √(1−ᾱ) ε`` is exact. The Kronecker factors' eigendecompositions are
cached, so one call costs ``O(M·K·D·(C + h + w))`` for ``D = C·h·w``.

A composition is *style-coherent* when all its windows take the same component; ground-truth
canvases always are. This is the CPU stand-in for the paper's panorama claim (one style across
the panorama): see ``benchmarks/image_coherence.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .gaussian_mixture import ddpm_alphas_cumprod, se_kernel

__all__ = ["GaussianFieldMixturePrior"]


class GaussianFieldMixturePrior:
    """Exact LocalPrior over image windows ``(C, h, w)`` of a mixture of Gaussian random fields.

    Args:
        means: ``(K, C)`` constant colour of every component.
        window: ``(h, w)`` of the local windows.
        lengthscales: ``(K,)`` (or one float) spatial lengthscale ℓ_k of each component's kernel.
        channel_cov: ``(K, C, C)`` (or ``(C, C)``) channel covariance A_k, symmetric positive
            definite; None: the identity.
        weights: ``(K,)`` mixture weights (uniform if None).
        jitter: added to the diagonal of every spatial kernel.
        alphas_cumprod: the diffusion schedule (DDPM linear, T = 1000, if None).
        dtype: float64 by default (exactness); the denoiser runs in this dtype.
    """

    supports_grad = True
    timestep_spacing = "leading"
    steps_offset = 0

    def __init__(self, means: Tensor, window: tuple[int, int], *, lengthscales: Tensor | float = 4.0,
                 channel_cov: Tensor | None = None, weights: Tensor | None = None, jitter: float = 1e-4,
                 alphas_cumprod: Tensor | None = None, dtype: torch.dtype = torch.float64) -> None:
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (components, channels), got {tuple(means.shape)}")
        K, C = means.shape
        h, w = (int(v) for v in window)
        if h < 1 or w < 1:
            raise ValueError(f"window must be (h, w) with h, w >= 1, got {window!r}")
        ls = torch.as_tensor(lengthscales, dtype=dtype).reshape(-1).expand(K).clone()
        if not (ls > 0).all():
            raise ValueError(f"lengthscales must be > 0, got {ls.tolist()}")
        A = torch.eye(C, dtype=dtype).expand(K, C, C) if channel_cov is None else torch.as_tensor(channel_cov, dtype=dtype)
        A = A.expand(K, C, C).clone() if A.ndim == 2 else A
        if A.shape != (K, C, C) or not torch.allclose(A, A.transpose(1, 2)):
            raise ValueError(f"channel_cov must be symmetric, (C, C) or (K, C, C) = ({K}, {C}, {C}), "
                             f"got {tuple(A.shape)}")
        weights = torch.full((K,), 1.0 / K, dtype=dtype) if weights is None else torch.as_tensor(weights, dtype=dtype)
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be non-negative with shape ({K},) and a positive sum")
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        self.means, self.lengthscales, self.channel_cov = means, ls, A
        self.log_weights = torch.log(weights / weights.sum())
        self.jitter, self.dtype = float(jitter), dtype
        self.channels, self.window = C, (h, w)
        self.sample_shape = (C, h, w)
        self.alphas_cumprod = (ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod).to(dtype)
        lam_a, U_a = torch.linalg.eigh(A)
        if not (lam_a > 0).all():
            raise ValueError("channel_cov must be positive definite")
        self._eig = [(lam_a, U_a), *(self._kernel_eig(n) for n in (h, w))]

    # ------------------------------------------------------------------ construction
    @classmethod
    def styles_benchmark(cls, window: int = 16, components: int = 4, separation: float = 1.5,
                         lengthscales: tuple[float, ...] = (1.5, 3.0, 5.0, 8.0), **kw) -> "GaussianFieldMixturePrior":
        """The image-coherence benchmark's prior: RGB windows ``window × window``, ``components``
        styles with colours on a circle of radius ``separation`` in the first two channels and
        their own texture scale (``lengthscales``, cycled), unit-variance fields with channels
        correlated 0.5."""
        ang = torch.arange(components, dtype=torch.float64) * (2 * math.pi / components)
        means = torch.zeros(components, 3, dtype=torch.float64)
        means[:, 0], means[:, 1] = separation * torch.cos(ang), separation * torch.sin(ang)
        ls = torch.tensor([lengthscales[k % len(lengthscales)] for k in range(components)], dtype=torch.float64)
        A = 0.5 * torch.eye(3, dtype=torch.float64) + 0.5
        return cls(means, (window, window), lengthscales=ls, channel_cov=A, **kw)

    def _kernel_eig(self, n: int) -> tuple[Tensor, Tensor]:
        """Per-component eigendecomposition of the ``n``-position spatial kernel: ``(K, n)``, ``(K, n, n)``."""
        ks = torch.stack([se_kernel(n, float(l), 1.0, self.jitter) for l in self.lengthscales]).to(self.dtype)
        return torch.linalg.eigh(ks)

    # ------------------------------------------------------------------ the local prior
    def _posterior(self, x_t: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Component log-responsibilities ``(M, K)`` and per-component posterior means ``(M, K, C, h, w)``."""
        x_t = x_t.to(self.dtype)
        dev = x_t.device
        (la, Ua), (lh, Uh), (lw, Uw) = [(lam.to(dev), U.to(dev)) for lam, U in self._eig]
        a = a.to(self.dtype).reshape(-1, 1, 1, 1, 1)  # (M, 1, 1, 1, 1)
        m = self.means.to(dev)[None, :, :, None, None]  # (1, K, C, 1, 1)
        y = x_t[:, None] - a.sqrt() * m  # (M, K, C, h, w)
        yt = torch.einsum("kcd,khi,kwj,mkchw->mkdij", Ua, Uh, Uw, y)  # eigen-coordinates
        lam = la[:, :, None, None] * lh[:, None, :, None] * lw[:, None, None, :]  # (K, C, h, w)
        s = a * lam[None] + (1 - a)  # marginal variances of x_t
        D = math.prod(self.sample_shape)
        logp = -0.5 * (yt**2 / s).flatten(2).sum(2) - 0.5 * torch.log(s).flatten(2).sum(2) \
            - 0.5 * D * math.log(2 * math.pi)
        logr = torch.log_softmax(self.log_weights.to(dev) + logp, dim=1)
        mean_k = m + torch.einsum("kcd,khi,kwj,mkdij->mkchw", Ua, Uh, Uw, a.sqrt() * lam[None] / s * yt)
        return logr, mean_k

    def denoise(self, x_t: Tensor, t: Tensor, **cond) -> Tensor:
        """Exact ``E[x_0 | x_t]`` for windows ``x_t (M, C, h, w)``, timesteps ``t (M,)``."""
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must have shape (M, {', '.join(map(str, self.sample_shape))}), "
                             f"got {tuple(x_t.shape)}")
        a = self.alphas_cumprod.to(x_t.device)[t.long()]
        logr, mean_k = self._posterior(x_t, a)
        return (logr.exp()[:, :, None, None, None] * mean_k).sum(1).to(x_t.dtype)

    def component_logprob(self, x: Tensor) -> Tensor:
        """Log-responsibilities of clean windows ``(M, C, h, w)``, ``(M, K)``: which style each window takes."""
        return self._posterior(x, torch.ones(x.shape[0], dtype=self.dtype, device=x.device))[0]

    # ------------------------------------------------------------------ the global law
    def global_logpdf(self, canvas: Tensor) -> Tensor:
        """Exact log-density of canvases ``(B, C, H, W)`` under the global mixture, ``(B,)``."""
        X = canvas.to(self.dtype)
        H, W = X.shape[2:]
        (la, Ua), (lh, Uh), (lw, Uw) = self._eig[0], self._kernel_eig(H), self._kernel_eig(W)
        y = X[:, None] - self.means[None, :, :, None, None]  # (B, K, C, H, W)
        yt = torch.einsum("kcd,khi,kwj,bkchw->bkdij", Ua, Uh, Uw, y)
        lam = la[:, :, None, None] * lh[:, None, :, None] * lw[:, None, None, :]  # (K, C, H, W)
        D = self.channels * H * W
        logp = -0.5 * (yt**2 / lam).flatten(2).sum(2) - 0.5 * torch.log(lam).flatten(1).sum(1) \
            - 0.5 * D * math.log(2 * math.pi)
        return torch.logsumexp(self.log_weights + logp, dim=1)

    def sample_global(self, n: int, size: tuple[int, int], generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Ancestral samples of the global law: canvases ``(n, C, H, W)`` and their components ``(n,)``."""
        H, W = size
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.channels, H, W, generator=generator, dtype=self.dtype)
        chol = [torch.linalg.cholesky(m) for m in (
            self.channel_cov,
            torch.stack([se_kernel(H, float(l), 1.0, self.jitter) for l in self.lengthscales]).to(self.dtype),
            torch.stack([se_kernel(W, float(l), 1.0, self.jitter) for l in self.lengthscales]).to(self.dtype))]
        La, Lh, Lw = (c[k] for c in chol)
        x = torch.einsum("ncd,nhi,nwj,ndij->nchw", La, Lh, Lw, z)
        return self.means[k][:, :, None, None] + x, k
