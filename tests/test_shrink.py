import pytest
import torch

import cofi


def _solve_objective(x0, lam, w):
    """Independent minimiser of Σ_i w_i‖x̃_i−x̂_i‖² + γ Σ_i w_i‖x̃_i − Σ_j w_j x̃_j / Σ w‖²
    by a dense linear solve of its normal equations (x0: (N, D))."""
    N, D = x0.shape
    gamma = 1 / lam - 1
    W = torch.diag(w)
    P = torch.eye(N, dtype=x0.dtype) - torch.outer(torch.ones(N, dtype=x0.dtype), w / w.sum())  # x̃ − mean
    H = W + gamma * P.T @ W @ P  # Hessian / 2
    return torch.linalg.solve(H, W @ x0)


@pytest.mark.parametrize("seed", range(5))
def test_shrink_is_the_minimiser(seed):
    g = torch.Generator().manual_seed(seed)
    N = int(torch.randint(2, 7, (1,), generator=g))
    shape = tuple(int(s) for s in torch.randint(1, 5, (2,), generator=g))
    x0 = torch.randn(N, *shape, generator=g, dtype=torch.float64)
    lam = float(torch.rand(1, generator=g).clamp(0.05, 0.99))
    for w in (torch.ones(N, dtype=torch.float64), torch.rand(N, generator=g, dtype=torch.float64) + 0.1):
        ref = _solve_objective(x0.reshape(N, -1), lam, w).reshape(x0.shape)
        got = cofi.shrink(x0[None], lam, dim=1, weights=None if torch.all(w == 1) else w)[0]
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_shrink_by_gradient_descent():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    lam = 0.3
    gamma = 1 / lam - 1
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        f = ((x - x0) ** 2).sum() + gamma * ((x - x.mean(0, keepdim=True)) ** 2).sum()
        f.backward()
        return f

    opt.step(closure)
    torch.testing.assert_close(cofi.shrink(x0, lam, dim=0), x.detach(), atol=1e-7, rtol=1e-7)


def test_shrink_limits_and_mean():
    x0 = torch.randn(2, 5, 7, 3, dtype=torch.float64)
    assert torch.equal(cofi.shrink(x0, 1.0), x0)
    collapsed = cofi.shrink(x0, 0.0)
    torch.testing.assert_close(collapsed, x0.mean(1, keepdim=True).expand_as(x0))
    torch.testing.assert_close(cofi.shrink(x0, 0.37).mean(1), x0.mean(1))
    w = torch.tensor([1.0, 2, 0, 3, 1], dtype=torch.float64)
    out = cofi.shrink(x0, 0.4, weights=w)
    wm = lambda y: (y * w[None, :, None, None]).sum(1) / w.sum()  # noqa: E731
    torch.testing.assert_close(wm(out), wm(x0))


def test_shrink_per_candidate_lambda():
    x0 = torch.randn(3, 4, 2, dtype=torch.float64)
    lam = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64).reshape(3, 1, 1)
    out = cofi.shrink(x0, lam)
    assert torch.equal(out[0], x0[0])
    torch.testing.assert_close(out[2], x0[2].mean(0, keepdim=True).expand(4, 2))


@pytest.mark.parametrize("lam", [-0.1, 1.5])
def test_shrink_rejects_lambda_outside_unit_interval(lam):
    with pytest.raises(ValueError, match=r"lam must be a number in \[0, 1\]"):
        cofi.shrink(torch.zeros(1, 2, 3), lam)


def test_lam_schedules():
    assert cofi.lam_schedule(0.8, 5, "constant") == [0.8] * 5
    lin = cofi.lam_schedule(0.2, 5, "linear")
    assert lin[0] == pytest.approx(0.2) and lin[-1] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(lin, lin[1:]))
    cos = cofi.lam_schedule(0.2, 9, "cosine")
    assert cos[0] == pytest.approx(0.2) and cos[-1] == pytest.approx(1.0) and cos[4] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="lam0 must be in"):
        cofi.lam_schedule(1.2, 5)
    with pytest.raises(ValueError, match="schedule must be"):
        cofi.lam_schedule(0.5, 5, "exp")
