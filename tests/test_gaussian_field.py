"""GaussianFieldMixturePrior: exact posterior mean, exact marginals, the global law."""

from __future__ import annotations

import math

import pytest
import torch

import cofi
from cofi.priors import GaussianFieldMixturePrior
from cofi.priors.gaussian_mixture import se_kernel
from cofi.testing import check_prior


def _tiny():
    means = torch.tensor([[1.0, -0.5], [-1.0, 0.5]], dtype=torch.float64)
    A = torch.tensor([[[1.0, 0.3], [0.3, 0.8]], [[0.6, -0.2], [-0.2, 1.2]]], dtype=torch.float64)
    return GaussianFieldMixturePrior(means, (3, 2), lengthscales=torch.tensor([1.0, 2.5]), channel_cov=A,
                                     weights=torch.tensor([0.3, 0.7]))


def _dense_cov(prior, k, h, w):
    """Σ_k = A_k ⊗ K_h ⊗ K_w as a dense matrix, in the (C, h, w) row-major flattening."""
    l = float(prior.lengthscales[k])
    return torch.kron(torch.kron(prior.channel_cov[k], se_kernel(h, l, 1.0, prior.jitter)),
                      se_kernel(w, l, 1.0, prior.jitter))


def test_posterior_mean_equals_brute_force():
    prior = _tiny()
    D = 2 * 3 * 2
    x_t = torch.randn(5, 2, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 200, 500, 800, 999])
    out = prior.denoise(x_t, t)
    for i in range(5):
        a = prior.alphas_cumprod[t[i]]
        logw, means = [], []
        for k in range(2):
            S = _dense_cov(prior, k, 3, 2)
            mu = prior.means[k][:, None, None].expand(2, 3, 2).reshape(D)
            cov_t = a * S + (1 - a) * torch.eye(D, dtype=torch.float64)
            y = x_t[i].reshape(D) - a.sqrt() * mu
            logw.append(prior.log_weights[k] + torch.distributions.MultivariateNormal(
                torch.zeros(D, dtype=torch.float64), cov_t).log_prob(y))
            means.append(mu + a.sqrt() * S @ torch.linalg.solve(cov_t, y))
        r = torch.softmax(torch.stack(logw), 0)
        ref = (r[:, None] * torch.stack(means)).sum(0).reshape(2, 3, 2)
        torch.testing.assert_close(out[i], ref, atol=1e-10, rtol=1e-9)


def test_windows_are_exact_marginals_of_the_global_law():
    """Σ of a 4 × 5 canvas restricted to any 3 × 2 window is the local Σ (stationarity), and the
    global density is the dense mixture density."""
    prior = _tiny()
    H, W = 4, 5
    idx = torch.arange(2 * H * W).reshape(2, H, W)
    for k in range(2):
        G = _dense_cov(prior, k, H, W)
        for r0, c0 in ((0, 0), (1, 3), (1, 2)):
            sel = idx[:, r0 : r0 + 3, c0 : c0 + 2].reshape(-1)
            torch.testing.assert_close(G[sel][:, sel], _dense_cov(prior, k, 3, 2))
    X = torch.randn(3, 2, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.logsumexp(torch.stack([prior.log_weights[k] + torch.distributions.MultivariateNormal(
        prior.means[k][:, None, None].expand(2, H, W).reshape(-1), _dense_cov(prior, k, H, W)).log_prob(
        X.reshape(3, -1)) for k in range(2)], 1), 1)
    torch.testing.assert_close(prior.global_logpdf(X), ref, atol=1e-9, rtol=1e-9)


def test_global_samples_have_the_law_and_one_style_each():
    prior = _tiny()
    X, k = prior.sample_global(4000, (4, 5), generator=torch.Generator().manual_seed(2))
    assert X.shape == (4000, 2, 4, 5) and abs(float((k == 1).double().mean()) - 0.7) < 0.03
    for c in range(2):
        Y = (X[k == c] - prior.means[c][:, None, None]).reshape(-1, 40)
        emp = Y.T @ Y / len(Y)
        assert (emp - _dense_cov(prior, c, 4, 5)).abs().max() < 0.15
    # each window of a canvas takes the canvas' own component (distinct colours, unit scale)
    wins = cofi.Grid((cofi.Chain(3, 2, 2, axis=1), cofi.Chain(2, 1, 4, axis=2))).split(X[:200])
    comp = prior.component_logprob(wins.reshape(-1, 2, 3, 2)).argmax(1).reshape(200, 8)
    assert (comp == k[:200, None]).double().mean() > 0.9


def test_contract_and_errors():
    prior = GaussianFieldMixturePrior.styles_benchmark(window=4, components=3)
    assert prior.sample_shape == (3, 4, 4)
    check_prior(prior)
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianFieldMixturePrior(torch.zeros(3), (2, 2))
    with pytest.raises(ValueError, match="lengthscales must be > 0"):
        GaussianFieldMixturePrior(torch.zeros(2, 3), (2, 2), lengthscales=-1.0)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianFieldMixturePrior(torch.zeros(1, 2), (2, 2), channel_cov=-torch.eye(2))
    with pytest.raises(ValueError, match="x_t must have shape"):
        prior.denoise(torch.zeros(1, 3, 4, 5), torch.tensor([1]))
    assert math.isclose(float(prior.log_weights.exp().sum()), 1.0)
