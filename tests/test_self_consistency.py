"""`cofi.steps.self_consistency`: ranking finished plans by how far the prior moves them."""

import pytest
import torch

from cofi.priors import EmpiricalPrior
from cofi.priors.trajectory import cosine_alphas_cumprod
from cofi.steps import self_consistency


def _point_prior(m: torch.Tensor) -> EmpiricalPrior:
    # one bank window: the exact posterior mean is that window whatever x_t is
    return EmpiricalPrior(m[None].double(), cosine_alphas_cumprod(100))


def test_single_window_prior_scores_the_worst_window_exactly():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(8, 2, generator=g, dtype=torch.float64)
    prior = _point_prior(m)
    plans = m.expand(3, 4, 8, 2).clone()
    plans[1, 2] += 0.5                      # candidate 1: one window off by 0.5 everywhere
    plans[2] += 0.1                         # candidate 2: every window off by 0.1
    s = self_consistency(prior, plans, alphas=(0.9, 0.5), draws=2, generator=g)
    torch.testing.assert_close(s, torch.tensor([0.0, 0.25, 0.01], dtype=torch.float64))
    assert int(torch.argmin(s)) == 0 and int(torch.argmax(s)) == 1
    # micro-batching does not change it
    s2 = self_consistency(prior, plans, alphas=(0.9, 0.5), draws=2, generator=g, max_batch=5)
    torch.testing.assert_close(s2, s)


def test_two_window_prior_prefers_plans_on_its_data():
    # a bank of two windows far apart: a plan at one of them is left in place, a plan halfway is
    # pulled to one side at every noise level
    a, b = torch.zeros(8, 1, dtype=torch.float64), torch.full((8, 1), 2.0, dtype=torch.float64)
    prior = EmpiricalPrior(torch.stack([a, b]), cosine_alphas_cumprod(100))
    plans = torch.stack([a, (a + b) / 2])[:, None]   # (B=2, N=1, 8, 1)
    s = self_consistency(prior, plans, alphas=(0.95,), draws=8, generator=torch.Generator().manual_seed(1))
    assert s[0] < 0.05 and s[1] > 0.5


@pytest.mark.parametrize("kw, match", [(dict(draws=0), "draws"), (dict(alphas=(1.0,)), "alphas"),
                                       (dict(alphas=()), "alphas")])
def test_bad_arguments(kw, match):
    prior = _point_prior(torch.zeros(4, 1))
    with pytest.raises(ValueError, match=match):
        self_consistency(prior, torch.zeros(1, 2, 4, 1), **kw)
    with pytest.raises(ValueError, match="plans"):
        self_consistency(prior, torch.zeros(4, 1))
