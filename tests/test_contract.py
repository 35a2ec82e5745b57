"""The contract suite must pass good priors and catch broken ones."""

import pytest
import torch

import cofi
from cofi.testing import check_prior
from conftest import gen


class Linear:
    """x̂ = c_t · x_t: a valid prior (the exact denoiser of N(0, s²I) data)."""

    supports_grad = True
    sample_shape = (6, 2)
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 200), 0)

    def denoise(self, x_t, t, **cond):
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"bad shape {tuple(x_t.shape)}")
        a = self.alphas_cumprod[t].reshape(-1, 1, 1)
        return a.sqrt() * 0.25 / (a * 0.25 + 1 - a) * x_t


class BatchCoupled(Linear):
    def denoise(self, x_t, t, **cond):
        return super().denoise(x_t, t) + x_t.mean(0, keepdim=True)


class WrongDtype(Linear):
    def denoise(self, x_t, t, **cond):
        return super().denoise(x_t, t).double()


class NoGrad(Linear):
    def denoise(self, x_t, t, **cond):
        return super().denoise(x_t, t).detach()


class Random(Linear):
    def denoise(self, x_t, t, **cond):
        return super().denoise(x_t, t) + 1e-3 * torch.randn_like(x_t)


class NoWindowKwarg(Linear):
    def denoise(self, x_t, t):  # forgets **cond
        return super().denoise(x_t, t)


def test_good_prior_passes():
    check_prior(Linear())


@pytest.mark.parametrize(
    "prior,msg",
    [
        (BatchCoupled(), "depends on the other samples"),
        (WrongDtype(), "must return the input dtype"),
        (NoGrad(), "supports_grad=True"),
        (Random(), "not deterministic"),
    ],
)
def test_broken_priors_are_caught(prior, msg):
    with pytest.raises(AssertionError, match=msg):
        check_prior(prior)


def test_missing_cond_kwargs_is_caught():
    with pytest.raises(TypeError, match="window"):
        check_prior(NoWindowKwarg())


def test_cdgs_pruning_keeps_the_best_fraction(gmm):
    layout = cofi.Chain(16, 4, 3)
    # inner=1 and eta=0: after pruning, copies stay identical -> at most ceil(keep*P) distinct canvases
    s = cofi.CDGS(steps=10, inner=1, prune_at=0.3, keep=0.25, inversion=0.2)
    out = cofi.compose(gmm, layout, s, batch=8, generator=gen(0), progress=False)
    distinct = torch.unique(out.canvas.reshape(8, -1), dim=0)
    assert distinct.shape[0] == 2
    without = cofi.compose(gmm, layout, cofi.CDGS(steps=10, inner=1, prune_at=0.0), batch=8,
                           generator=gen(0), progress=False)
    assert torch.unique(without.canvas.reshape(8, -1), dim=0).shape[0] == 8
