import math

import torch
from torch.distributions import MultivariateNormal

import cofi
from cofi.metrics import coherence as C
from cofi.testing import check_prior


def _reference_denoise(prior, x_t, a):
    """Dense-covariance posterior mean of the GP mixture, one sample (W, C), channel by channel."""
    W, Cn = x_t.shape
    Kw = prior.kernel(W)
    cov = a * Kw + (1 - a) * torch.eye(W, dtype=torch.float64)
    logr, means = [], []
    for k in range(prior.means.shape[0]):
        m = prior.means[k]
        lp = prior.log_weights[k].clone()
        mk = torch.empty(W, Cn, dtype=torch.float64)
        for c in range(Cn):
            lp = lp + MultivariateNormal(math.sqrt(a) * m[c] * torch.ones(W, dtype=torch.float64), cov).log_prob(x_t[:, c])
            mk[:, c] = m[c] + math.sqrt(a) * Kw @ torch.linalg.solve(cov, x_t[:, c] - math.sqrt(a) * m[c])
        logr.append(lp)
        means.append(mk)
    r = torch.softmax(torch.stack(logr), 0)
    return (r[:, None, None] * torch.stack(means)).sum(0)


def test_denoiser_is_exact(gmm):
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, *gmm.sample_shape, generator=g, dtype=torch.float64) * 2
    t = torch.tensor([999, 500, 100, 3])
    got = gmm.denoise(x_t, t)
    for i in range(4):
        a = float(gmm.alphas_cumprod[t[i]])
        torch.testing.assert_close(got[i], _reference_denoise(gmm, x_t[i], a), atol=1e-8, rtol=1e-8)


def test_global_logpdf_matches_multivariate_normal(gmm):
    L = 24
    X = gmm.sample_global(3, L, torch.Generator().manual_seed(1))[0]
    KL = gmm.kernel(L)
    ref = []
    for b in range(3):
        comps = []
        for k in range(gmm.means.shape[0]):
            lp = gmm.log_weights[k]
            for c in range(gmm.channels):
                lp = lp + MultivariateNormal(gmm.means[k, c] * torch.ones(L, dtype=torch.float64), KL).log_prob(X[b, :, c])
            comps.append(lp)
        ref.append(torch.logsumexp(torch.stack(comps), 0))
    torch.testing.assert_close(gmm.global_logpdf(X), torch.stack(ref))


def test_ground_truth_is_coherent_and_windows_are_marginals(gmm):
    layout = cofi.Chain(16, 4, 5)
    X, comp = gmm.sample_global(400, layout.length, torch.Generator().manual_seed(2))
    assert C.coherence(gmm, layout, X).float().mean() > 0.97
    # every window of a global sample has the same (stationary) covariance as the local prior
    plans = layout.split(X)[..., 0]  # (n, N, W)
    for i in (0, layout.count - 1):
        y = plans[:, i] - gmm.means[comp, 0][:, None]
        emp = y.T @ y / y.shape[0]
        torch.testing.assert_close(emp, gmm.kernel(16), atol=0.2, rtol=0)


def test_gmm_passes_the_contract_suite(gmm):
    check_prior(gmm, atol=1e-6, rtol=1e-6)
