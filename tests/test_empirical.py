"""EmpiricalPrior: exact posterior mean of a bank of windows, pins as observations, gradients."""

import pytest
import torch

import cofi
from cofi.priors import EmpiricalPrior
from cofi.priors.trajectory import cosine_alphas_cumprod
from cofi.testing import check_prior


def brute_force(bank, x_t, a, observed=None, mask=None, obs_std=None, evidence=None, precision=None):
    """float64 reference: the posterior mean of (1/M) Σ δ(x − x_i) given x_t = √a x + √(1−a) ε,
    one query and one bank row at a time (no expansion of the square, no streaming); with
    ``evidence``, also given y = x + noise of precision ``precision`` per entry."""
    out = []
    for q in range(x_t.shape[0]):
        logp = []
        for x in bank:
            if observed is None:
                lp = -((x_t[q] - a[q].sqrt() * x) ** 2).sum() / (2 * (1 - a[q]))
            else:  # observed entries: exact values; their noisy copies are not evidence
                free = ~mask[q]
                lp = -((x_t[q] - a[q].sqrt() * x)[free] ** 2).sum() / (2 * (1 - a[q]))
                lp = lp - ((x - observed[q])[mask[q]] ** 2).sum() / (2 * obs_std**2)
            if evidence is not None:
                lp = lp - (precision[q] * (x - evidence[q]) ** 2).sum() / 2
            logp.append(lp)
        w = torch.softmax(torch.stack(logp), 0)
        out.append((w[:, None, None] * bank).sum(0))
    return torch.stack(out)


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(23, 5, 2, generator=g, dtype=torch.float64)
    ac = cosine_alphas_cumprod(200).double()
    return bank, ac, g


@pytest.mark.parametrize("chunk,top_k", [(4, None), (64, None), (5, 23), (3, 100)])
def test_posterior_mean_matches_brute_force(tiny, chunk, top_k):
    bank, ac, g = tiny
    prior = EmpiricalPrior(bank, ac, chunk=chunk, top_k=top_k)
    t = torch.tensor([0, 10, 60, 120, 199])
    x_t = torch.randn(5, 5, 2, generator=g, dtype=torch.float64) * 1.5
    ref = brute_force(bank, x_t, ac[t])
    torch.testing.assert_close(prior.denoise(x_t, t), ref, atol=1e-10, rtol=1e-8)


def test_limits_nearest_window_and_mean(tiny):
    bank, ac, _ = tiny
    prior = EmpiricalPrior(bank, ac)
    near = bank[7:8] + 1e-3  # at t = 0 (ᾱ ≈ 1) the posterior is the nearest window
    torch.testing.assert_close(prior.denoise(near * ac[0].sqrt(), torch.tensor([0])), bank[7:8], atol=1e-6, rtol=0)
    x_t = torch.zeros(1, 5, 2, dtype=torch.float64)  # an uninformative x_t: the bank mean
    torch.testing.assert_close(prior.denoise(x_t, torch.tensor([199])), bank.mean(0, keepdim=True),
                               atol=1e-3, rtol=0)


def test_top_k_keeps_the_largest_weights(tiny):
    bank, ac, g = tiny
    t = torch.tensor([5, 5])
    x_t = bank[[2, 9]] * ac[5].sqrt() + 0.05 * torch.randn(2, 5, 2, generator=g, dtype=torch.float64)
    exact = EmpiricalPrior(bank, ac).denoise(x_t, t)
    torch.testing.assert_close(EmpiricalPrior(bank, ac, top_k=3, chunk=4).denoise(x_t, t), exact,
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("top_k", [None, 23])
def test_observations_are_exact_conditioning(tiny, top_k):
    bank, ac, g = tiny
    prior = EmpiricalPrior(bank, ac, obs_std=0.3, chunk=6, top_k=top_k)
    x_t = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([150, 150, 40])
    mask = torch.zeros(3, 5, 2, dtype=torch.bool)
    mask[0, 0] = True  # the first point of query 0
    mask[2, -1] = True  # the last point of query 2
    observed = torch.where(mask, torch.randn(3, 5, 2, generator=g, dtype=torch.float64), 0.0)
    out = prior.denoise(x_t, t, observed=observed, observed_mask=mask)
    torch.testing.assert_close(out, brute_force(bank, x_t, ac[t], observed, mask, 0.3), atol=1e-10, rtol=1e-8)
    # query 1 has no observation: unchanged
    torch.testing.assert_close(out[1], prior.denoise(x_t[1:2], t[1:2])[0])
    # a tight observation selects the bank window through that point
    sharp = EmpiricalPrior(bank, ac, obs_std=1e-3)
    obs = torch.zeros(1, 5, 2, dtype=torch.float64)
    obs[0, 0] = bank[11, 0]
    m = torch.zeros(1, 5, 2, dtype=torch.bool)
    m[0, 0] = True
    got = sharp.denoise(torch.zeros(1, 5, 2, dtype=torch.float64), torch.tensor([199]), observed=obs, observed_mask=m)
    torch.testing.assert_close(got[0], bank[11], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="together"):
        prior.denoise(x_t, t, observed=observed)


@pytest.mark.parametrize("chunk,top_k", [(6, None), (5, 23)])
def test_evidence_is_gaussian_conditioning(tiny, chunk, top_k):
    """Soft evidence (values with per-entry precisions, 0 = none) enters the posterior exactly,
    on top of the noisy state and of exact observations."""
    bank, ac, g = tiny
    prior = EmpiricalPrior(bank, ac, obs_std=0.3, chunk=chunk, top_k=top_k)
    x_t = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([150, 60, 10])
    evidence = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    precision = torch.zeros(3, 5, 2, dtype=torch.float64)
    precision[0, :2] = 4.0  # query 0: its first two points, precision 4
    precision[2, -2:] = torch.tensor([0.5, 30.0], dtype=torch.float64)
    mask = torch.zeros(3, 5, 2, dtype=torch.bool)
    mask[2, 0] = True
    observed = torch.where(mask, bank[3], 0.0)
    out = prior.denoise(x_t, t, observed=observed, observed_mask=mask, evidence=evidence, evidence_precision=precision)
    ref = brute_force(bank, x_t, ac[t], observed, mask, 0.3, evidence, precision)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-8)
    # query 1 has precision 0 everywhere: as without evidence
    torch.testing.assert_close(out[1], prior.denoise(x_t[1:2], t[1:2])[0])
    # strong evidence of a whole bank window selects it, even at the highest noise level
    strong = prior.denoise(torch.zeros(1, 5, 2, dtype=torch.float64), torch.tensor([199]),
                           evidence=bank[8:9], evidence_precision=torch.full((1, 5, 2), 1e4, dtype=torch.float64))
    torch.testing.assert_close(strong[0], bank[8], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="together"):
        prior.denoise(x_t, t, evidence=evidence)
    with pytest.raises(ValueError, match=">= 0"):
        prior.denoise(x_t, t, evidence=evidence, evidence_precision=-precision - 1)


@pytest.mark.parametrize("top_k", [None, 4])
def test_gradients(tiny, top_k):
    bank, ac, g = tiny
    prior = EmpiricalPrior(bank, ac, top_k=top_k, chunk=7)
    x_t = (torch.randn(2, 5, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = torch.tensor([100, 30])
    if top_k is None:
        assert torch.autograd.gradcheck(lambda x: prior.denoise(x, t), (x_t,))
    else:  # the kept set is fixed near x_t, so gradients are exact within it
        assert torch.autograd.gradcheck(lambda x: prior.denoise(x, t), (x_t,), atol=1e-6)


def test_contract_and_errors(tiny):
    bank, ac, _ = tiny
    check_prior(EmpiricalPrior(bank.float(), ac.float()))
    with pytest.raises(ValueError, match="bank must have shape"):
        EmpiricalPrior(torch.zeros(0, 3), ac)
    with pytest.raises(ValueError, match="top_k"):
        EmpiricalPrior(bank, ac, top_k=0)
    with pytest.raises(ValueError, match="x_t must have shape"):
        EmpiricalPrior(bank, ac).denoise(torch.zeros(2, 4, 2, dtype=torch.float64), torch.tensor([1, 1]))


def test_compose_passes_pins_as_observations(tiny):
    """Through compose, a pinned canvas position reaches the prior as an observation of
    every window covering it, and the composed plan passes through it."""
    bank, ac, _ = tiny
    seen = {}

    class Spy(EmpiricalPrior):
        def denoise(self, x_t, t, **cond):
            seen.update(cond)
            return super().denoise(x_t, t, **cond)

    prior = Spy(bank.float(), ac.float(), obs_std=0.05)
    layout = cofi.Chain(5, 2, 3, axis=0)
    target = bank[4, 0].float()
    pins = cofi.Pins(positions=(0,), values=target[None])
    out = cofi.compose(prior, layout, cofi.GSC(steps=10), batch=2, pins=pins, progress=False,
                       generator=torch.Generator().manual_seed(0))
    mask = seen["observed_mask"].reshape(2, 3, 5, 2)
    assert mask[:, 0, 0].all() and mask.sum() == 2 * 2  # window 0, position 0, both coordinates
    torch.testing.assert_close(seen["observed"].reshape(2, 3, 5, 2)[:, 0, 0], target.expand(2, 2))
    torch.testing.assert_close(out.canvas[:, 0], target.expand(2, 2))


@pytest.mark.parametrize("sampler,n_calls", [
    (lambda k: cofi.GSC(steps=4, fusion=False, consensus=k), 4),
    # CoFi: the refinement's first prediction reads the coarse stage's last x̂ (λ = 1 there)
    (lambda k: cofi.CoFi(steps=4, refine_at=0.5, fusion=False, consensus=k), 6),
])
def test_consensus_messages_reach_the_prior(tiny, sampler, n_calls):
    """With ``consensus=κ`` each prediction gets, as evidence, the uniform mean of the other
    windows' previous x̂ on its overlap entries, precision κ·ᾱ_t/(1−ᾱ_t) per covering window
    (0 outside the overlaps); the first prediction of a pass gets none."""
    bank, ac, _ = tiny
    calls = []

    class Spy(EmpiricalPrior):
        def denoise(self, x_t, t, **cond):
            out = super().denoise(x_t, t, **cond)
            calls.append((int(t[0]), {k: v.clone() for k, v in cond.items() if k.startswith("evidence")}, out.clone()))
            return out

    prior = Spy(bank.float(), ac.float())
    layout = cofi.Chain(5, 2, 3, axis=0)
    kappa = 2.5
    cofi.compose(prior, layout, sampler(kappa), batch=2, progress=False, generator=torch.Generator().manual_seed(0))
    assert len(calls) == n_calls and not calls[0][1]
    for (_, _, prev), (t, ev, _) in zip(calls[:-1], calls[1:]):
        prev = prev.reshape(2, 3, 5, 2)
        want = torch.zeros_like(prev)
        count = torch.zeros_like(prev)
        for i in range(3):  # window i's last 2 points are window i+1's first 2
            if i + 1 < 3:
                want[:, i, 3:] += prev[:, i + 1, :2]
                count[:, i, 3:] += 1
            if i > 0:
                want[:, i, :2] += prev[:, i - 1, 3:]
                count[:, i, :2] += 1
        want = torch.where(count > 0, want / count.clamp(min=1), 0.0)
        a = ac.float()[t]
        snr = min(float(a / (1 - a)), 10.0)  # the default consensus_snr_max
        torch.testing.assert_close(ev["evidence"], want.flatten(0, 1))
        torch.testing.assert_close(ev["evidence_precision"], (kappa * snr * count).flatten(0, 1))
    assert [t for t, _, _ in calls][:4] == [150, 100, 50, 0] and float(ac[0] / (1 - ac[0])) > 10  # the cap acts


@pytest.mark.parametrize("make", [
    lambda k: cofi.GSC(steps=4, fusion=False, consensus=k, consensus_from="state"),
    lambda k: cofi.CoFi(steps=4, refine_at=0.5, fusion=False, consensus=k, consensus_from="state"),
    lambda k: cofi.CDGS(steps=4, inner=2, prune_at=0.0, fusion=False, consensus=k, consensus_from="state"),
])
def test_consensus_from_states_sends_the_neighbours_noisy_chunks(tiny, make):
    """``consensus_from="state"`` (CompDiffuser's conditioning): every prediction, the first
    included, gets the other windows' *current* noisy states x_t / √ᾱ_t on its overlap
    entries, at precision κ·min(ᾱ_t/(1−ᾱ_t), cap) per covering window."""
    bank, ac, _ = tiny
    calls = []

    class Spy(EmpiricalPrior):
        def denoise(self, x_t, t, **cond):
            calls.append((int(t[0]), x_t.clone(), {k: v.clone() for k, v in cond.items() if k.startswith("evidence")}))
            return super().denoise(x_t, t, **cond)

    prior = Spy(bank.float(), ac.float())
    layout = cofi.Chain(5, 2, 3, axis=0)
    kappa = 1.5
    cofi.compose(prior, layout, make(kappa), batch=2, progress=False, generator=torch.Generator().manual_seed(0))
    assert calls and all(ev for _, _, ev in calls)
    for t, x_t, ev in calls:
        a = ac.float()[t]
        y = (x_t / a.sqrt()).reshape(2, 3, 5, 2)
        want, count = torch.zeros_like(y), torch.zeros_like(y)
        for i in range(3):
            if i + 1 < 3:
                want[:, i, 3:] += y[:, i + 1, :2]
                count[:, i, 3:] += 1
            if i > 0:
                want[:, i, :2] += y[:, i - 1, 3:]
                count[:, i, :2] += 1
        want = torch.where(count > 0, want / count.clamp(min=1), 0.0)
        snr = min(float(a / (1 - a)), 10.0)
        torch.testing.assert_close(ev["evidence"], want.flatten(0, 1))
        torch.testing.assert_close(ev["evidence_precision"], (kappa * snr * count).flatten(0, 1))
    with pytest.raises(ValueError, match="consensus_from must be one of"):
        cofi.GSC(consensus=1.0, consensus_from="noisy")


@pytest.mark.parametrize("sweep,groups", [("red-black", [[0, 2], [1, 3]]), ("forward", [[0], [1], [2], [3]])])
@pytest.mark.parametrize("make", [
    lambda **k: cofi.GSC(steps=4, fusion=False, **k),
    lambda **k: cofi.CoFi(steps=4, refine_at=0.5, fusion=False, **k),
    lambda **k: cofi.CDGS(steps=4, inner=2, prune_at=0.0, fusion=False, **k),
])
def test_gauss_seidel_sweeps_read_the_fresh_estimates_of_earlier_groups(tiny, make, sweep, groups):
    """A Gauss-Seidel ``consensus_sweep`` on a chain of 4 windows predicts the windows in groups
    (red-black: 0 2 | 1 3; forward: 0 | 1 | 2 | 3); each group's messages are the mean of its
    neighbours' *latest* x̂ (this step's where already predicted, else the previous step's; at
    the first step only those predicted so far). The NFE is Jacobi's, which predicts all at once."""
    bank, ac, _ = tiny
    calls = []

    class Spy(EmpiricalPrior):
        def denoise(self, x_t, t, **cond):
            out = super().denoise(x_t, t, **cond)
            calls.append((int(t[0]), cond["window"].clone(), {k: v.clone() for k, v in cond.items()
                                                             if k.startswith("evidence")}, out.clone()))
            return out

    prior = Spy(bank.float(), ac.float())
    layout = cofi.Chain(5, 2, 4, axis=0)
    kappa, B = 2.0, 2
    gs = cofi.compose(prior, layout, make(consensus=kappa, consensus_sweep=sweep), batch=B, progress=False,
                      generator=torch.Generator().manual_seed(0))
    assert len(calls) % len(groups) == 0 and not calls[0][2]
    latest, known = torch.zeros(B, 4, 5, 2), torch.zeros(4, dtype=torch.bool)
    for n, (t, window, ev, out) in enumerate(calls):
        group = groups[n % len(groups)]
        assert window.tolist() == group * B
        if n > 0:  # the latest estimates of the known neighbours, on this group's overlaps
            want, count = torch.zeros(B, len(group), 5, 2), torch.zeros(B, len(group), 5, 2)
            for k, i in enumerate(group):
                if i + 1 < 4 and known[i + 1]:
                    want[:, k, 3:] += latest[:, i + 1, :2]
                    count[:, k, 3:] += 1
                if i > 0 and known[i - 1]:
                    want[:, k, :2] += latest[:, i - 1, 3:]
                    count[:, k, :2] += 1
            want = torch.where(count > 0, want / count.clamp(min=1), 0.0)
            a = ac.float()[t]
            snr = min(float(a / (1 - a)), 10.0)
            torch.testing.assert_close(ev["evidence"], want.flatten(0, 1))
            torch.testing.assert_close(ev["evidence_precision"], (kappa * snr * count).flatten(0, 1))
        latest[:, group] = out.reshape(B, len(group), 5, 2)
        known[group] = True
    calls.clear()
    jacobi = cofi.compose(prior, layout, make(consensus=kappa), batch=B, progress=False,
                          generator=torch.Generator().manual_seed(0))
    assert gs.nfe == jacobi.nfe and all(w.tolist() == [0, 1, 2, 3] * B for _, w, _, _ in calls)


def test_gauss_seidel_sweeps_guide_and_check_their_arguments(tiny):
    """With guidance a sweep's ∇R goes through every group's predictions; with messages of no
    weight it is Jacobi's, with weight it differs; a state message or another sweep is refused."""
    bank, ac, _ = tiny
    prior = EmpiricalPrior(bank.float(), ac.float())
    layout = cofi.Chain(5, 2, 5, axis=0)  # 5 windows: the sweep order (0, 2, 4, 1, 3) is not its own inverse

    def run(**k):
        return cofi.compose(prior, layout, cofi.GSC(steps=4, guidance=5.0, **k), batch=2, progress=False,
                            generator=torch.Generator().manual_seed(0)).canvas

    # messages of ~0 weight: the sweep's two half-predictions and their gradient, reassembled in
    # window order, give the unconditioned guided sample
    for sweep in ("red-black", "forward"):
        torch.testing.assert_close(run(consensus=1e-12, consensus_sweep=sweep), run())
        assert not torch.allclose(run(consensus=5.0, consensus_sweep=sweep), run(consensus=5.0))
    torch.testing.assert_close(run(consensus=1e-12), run())
    with pytest.raises(ValueError, match="consensus_sweep must be one of"):
        cofi.GSC(consensus=1.0, consensus_sweep="gauss")
    with pytest.raises(ValueError, match="needs consensus_from='estimate'"):
        cofi.CoFi(consensus=1.0, consensus_from="state", consensus_sweep="forward")


def test_cdgs_survivors_keep_their_messages(tiny):
    """After pruning, each refilled candidate's first messages come from the candidate it copies."""
    bank, ac, _ = tiny
    calls = []

    class Spy(EmpiricalPrior):
        def denoise(self, x_t, t, **cond):
            out = super().denoise(x_t, t, **cond)
            calls.append(({k: v.clone() for k, v in cond.items() if k.startswith("evidence")}, out.clone()))
            return out

    prior = Spy(bank.float(), ac.float())
    layout = cofi.Chain(5, 2, 3, axis=0)
    s = cofi.CDGS(steps=4, inner=2, prune_at=0.5, keep=0.5, inversion=0.25, fusion=False, consensus=2.0)
    B = 4
    cofi.compose(prior, layout, s, batch=B, progress=False, generator=torch.Generator().manual_seed(0))
    # steps 0-2 (prune_step = 2) × 2 inner, 1 inversion call (no messages), then step 3 × 2 inner
    assert s.prune_step == 2 and len(calls) == 9 and not calls[6][0] and calls[7][0]
    last = calls[5][1].reshape(B, 3, 5, 2)
    expected = [layout.neighbour_mean(last[b : b + 1])[0][0] for b in range(B)]
    got = calls[7][0]["evidence"].reshape(B, 3, 5, 2)
    kept = []
    for b in range(B):
        match = [j for j in range(B) if torch.allclose(got[b], expected[j])]
        assert match, f"candidate {b}'s messages come from no candidate before pruning"
        kept.append(match[0])
    assert len(set(kept)) == 2  # keep 0.5 of 4: two survivors, each copied twice


def test_consensus_needs_a_prior_that_takes_evidence(tiny):
    from cofi.priors import GaussianMixturePrior

    with pytest.raises(ValueError, match="consensus must be"):
        cofi.CoFi(consensus=-1.0)
    with pytest.raises(ValueError, match="consensus_snr_max"):
        cofi.GSC(consensus=1.0, consensus_snr_max=0.0)
    mix = GaussianMixturePrior(torch.zeros(2, 2), window=5)
    with pytest.raises(ValueError, match="accepts_evidence"):
        cofi.compose(mix, cofi.Chain(5, 2, 3, axis=0), cofi.GSC(steps=2, consensus=1.0), batch=1, progress=False)
