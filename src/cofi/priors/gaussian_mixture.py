"""An exact analytic prior: a mixture of Gaussian processes along the chain axis.

The global distribution over a canvas ``X ∈ R^{L×C}`` is
``p(X) = Σ_k π_k N(X; m_k 1_L, K_L ⊗ I_C)`` with a constant mean ``m_k ∈ R^C`` per
component and a stationary kernel ``K`` along the axis (squared exponential). Because
the kernel is stationary and the means constant, every window of length W has the same
marginal ``Σ_k π_k N(m_k 1_W, K_W ⊗ I_C)``: that marginal is the local prior, and its
posterior mean under ``x_t = √ᾱ x + √(1−ᾱ) ε`` is exact (eigendecomposition of K_W):

``E[x|x_t] = Σ_k r_k(x_t) (m_k + √ᾱ K (ᾱK + (1−ᾱ)I)^{-1} (x_t − √ᾱ m_k))``,
``r_k ∝ π_k N(x_t; √ᾱ m_k, ᾱK + (1−ᾱ)I)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GaussianMixturePrior", "ddpm_alphas_cumprod"]


def ddpm_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """ᾱ of the DDPM linear β schedule (Ho et al. 2020), float64, ``(T,)``."""
    return torch.cumprod(1 - torch.linspace(beta_start, beta_end, T, dtype=torch.float64), 0)


def se_kernel(n: int, lengthscale: float, variance: float, jitter: float) -> Tensor:
    """Squared-exponential covariance over n unit-spaced positions, float64 ``(n, n)``."""
    i = torch.arange(n, dtype=torch.float64)
    d = i[:, None] - i[None, :]
    return variance * torch.exp(-0.5 * (d / lengthscale) ** 2) + jitter * torch.eye(n, dtype=torch.float64)


class GaussianMixturePrior:
    """Exact LocalPrior over windows ``(window, channels)`` of a GP mixture (chain axis 0).

    Args:
        means: ``(K, C)`` constant mean of every component.
        window: window length W (the local plan's length).
        weights: ``(K,)`` mixture weights (uniform if None).
        lengthscale, variance, jitter: the squared-exponential kernel along the axis.
        alphas_cumprod: the diffusion schedule (DDPM linear, T=1000, if None).
        dtype: float64 by default (exactness); the denoiser runs in this dtype.
    """

    supports_grad = True
    timestep_spacing = "leading"
    steps_offset = 0

    def __init__(
        self,
        means: Tensor,
        window: int,
        *,
        weights: Tensor | None = None,
        lengthscale: float = 8.0,
        variance: float = 1.0,
        jitter: float = 1e-4,
        alphas_cumprod: Tensor | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (components, channels), got {tuple(means.shape)}")
        K = means.shape[0]
        weights = torch.full((K,), 1.0 / K, dtype=dtype) if weights is None else torch.as_tensor(weights, dtype=dtype)
        if weights.shape != (K,) or (weights < 0).any():
            raise ValueError(f"weights must be non-negative with shape ({K},)")
        if lengthscale <= 0 or variance <= 0 or jitter < 0:
            raise ValueError("lengthscale and variance must be > 0 and jitter >= 0")
        self.means, self.log_weights = means, torch.log(weights / weights.sum())
        self.window, self.channels = int(window), means.shape[1]
        self.lengthscale, self.variance, self.jitter = float(lengthscale), float(variance), float(jitter)
        self.dtype = dtype
        self.alphas_cumprod = (ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod).to(dtype)
        self.sample_shape = (self.window, self.channels)
        lam, U = torch.linalg.eigh(self.kernel(self.window))
        self._lam, self._U = lam, U

    # ------------------------------------------------------------------ construction
    @classmethod
    def chain_benchmark(
        cls, window: int = 32, components: int = 4, channels: int = 2, separation: float = 3.0,
        lengthscale: float = 4.0, **kw,
    ) -> "GaussianMixturePrior":
        """The coherence benchmark's prior: ``components`` means spread on a circle of radius
        ``separation`` in the first two channels (zero elsewhere), unit-variance GP."""
        if channels < 1 or components < 1:
            raise ValueError("channels and components must be >= 1")
        ang = torch.arange(components, dtype=torch.float64) * (2 * math.pi / components)
        means = torch.zeros(components, channels, dtype=torch.float64)
        means[:, 0] = separation * torch.cos(ang)
        if channels > 1:
            means[:, 1] = separation * torch.sin(ang)
        return cls(means, window, lengthscale=lengthscale, **kw)

    def kernel(self, n: int) -> Tensor:
        return se_kernel(n, self.lengthscale, self.variance, self.jitter).to(self.dtype)

    # ------------------------------------------------------------------ LocalPrior
    def _posterior(self, x_t: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Component log-responsibilities ``(M, K)`` and per-component posterior means ``(M, K, W, C)``."""
        x_t = x_t.to(self.dtype)
        a = a.to(self.dtype).reshape(-1, 1, 1, 1)  # (M,1,1,1)
        U, lam = self._U.to(x_t.device), self._lam.to(x_t.device)
        m = self.means.to(x_t.device)[None, :, None, :]  # (1,K,1,C)
        y = x_t[:, None] - a.sqrt() * m  # (M,K,W,C)
        yt = torch.einsum("wv,mkwc->mkvc", U, y)  # eigen-coordinates
        s = a * lam[None, None, :, None] + (1 - a)  # (M,1,W,1) marginal variances
        W, C = self.window, self.channels
        logp = -0.5 * (yt**2 / s).sum((2, 3)) - 0.5 * C * torch.log(s).sum((2, 3)) - 0.5 * W * C * math.log(2 * math.pi)
        logr = torch.log_softmax(self.log_weights.to(x_t.device) + logp, dim=1)
        gain = a.sqrt() * lam[None, None, :, None] / s
        mean_k = m + torch.einsum("wv,mkvc->mkwc", U, gain * yt)
        return logr, mean_k

    def denoise(self, x_t: Tensor, t: Tensor, **cond) -> Tensor:
        """Exact ``E[x_0 | x_t]`` for ``x_t`` of shape ``(M, W, C)``, ``t`` ``(M,)``."""
        if x_t.shape[1:] != self.sample_shape:
            raise ValueError(f"x_t must have shape (M, {self.window}, {self.channels}), got {tuple(x_t.shape)}")
        a = self.alphas_cumprod.to(x_t.device)[t.long()]
        logr, mean_k = self._posterior(x_t, a)
        return (logr.exp()[:, :, None, None] * mean_k).sum(1).to(x_t.dtype)

    # ------------------------------------------------------------------ exact references
    def component_logprob(self, x: Tensor) -> Tensor:
        """Log-responsibilities of clean windows ``(M, W, C)`` under the local prior, ``(M, K)``."""
        return self._posterior(x, torch.ones(x.shape[0], dtype=self.dtype, device=x.device))[0]

    def global_logpdf(self, canvas: Tensor) -> Tensor:
        """Exact log-density of canvases ``(B, L, C)`` under the global mixture, ``(B,)``."""
        X = canvas.to(self.dtype)
        L = X.shape[1]
        chol = torch.linalg.cholesky(self.kernel(L).to(X.device))
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()
        out = []
        for k in range(self.means.shape[0]):
            y = X - self.means[k].to(X.device)  # (B, L, C)
            z = torch.linalg.solve_triangular(chol, y, upper=False)
            quad = (z**2).sum((1, 2))
            out.append(self.log_weights[k] - 0.5 * quad - 0.5 * self.channels * logdet
                       - 0.5 * L * self.channels * math.log(2 * math.pi))
        return torch.logsumexp(torch.stack(out, 1), 1)

    def sample_global(self, n: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Ancestral samples of the global distribution: canvases ``(n, L, C)`` and components ``(n,)``."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.kernel(length))
        z = torch.randn(n, length, self.channels, generator=generator, dtype=self.dtype)
        return self.means[k][:, None, :] + torch.einsum("lm,nmc->nlc", chol, z), k
