"""backends.objectives against the closed form gpo_core.mirror_step on tabular softmax policies.

Each test enumerates the support exactly, so the oracle is the exact target
``mirror_step(log pi_t, u, eta, alpha, log rho)`` and nothing is estimated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import torch  # noqa: E402  (the [all] extra installs it: missing is a failure, not a skip)

from backends.objectives import (  # noqa: E402
    estimate_objective,
    kl_regularized_pg_loss,
    target_log_ratio,
    target_log_ratio_regression_loss,
)
from gpo_core import log_softmax, mirror_step, softmax  # noqa: E402

LOSSES = {"pg": kl_regularized_pg_loss, "regression": target_log_ratio_regression_loss}
STEPS = [(0.5, 0.0), (3.0, 0.0), (1.0, 0.5), (0.3, 2.0), (math.inf, 0.7)]


def _problem(seed: int, groups: int = 3, n: int = 5):
    rng = np.random.default_rng(seed)
    logp_t = log_softmax(rng.normal(scale=1.5, size=(groups, n)))
    log_ref = log_softmax(rng.normal(scale=1.5, size=(groups, n)))
    u = rng.uniform(-1.0, 1.0, size=(groups, n))
    return rng, logp_t, log_ref, u


def _fit(loss_fn, logits0: np.ndarray, rest: tuple, steps: int = 200) -> np.ndarray:
    """Minimise loss_fn(log_softmax(theta).ravel(), *rest) over tabular logits with L-BFGS."""
    theta = torch.nn.Parameter(torch.tensor(logits0, dtype=torch.float64))
    opt = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=steps, tolerance_grad=1e-13, tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(torch.log_softmax(theta, dim=-1).reshape(-1), *rest)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return torch.log_softmax(theta.detach(), dim=-1).numpy()


def _fit_by_gradient(loss_fn, logits0: np.ndarray, rest: tuple, steps: int = 1500) -> np.ndarray:
    """Follow the loss's gradient only (Adam), as a trainer does; no line search on its value."""
    theta = torch.nn.Parameter(torch.tensor(logits0, dtype=torch.float64))
    opt = torch.optim.Adam([theta], lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if t < steps // 2 else 0.1)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(torch.log_softmax(theta, dim=-1).reshape(-1), *rest).backward()
        opt.step()
        sched.step()
    return torch.log_softmax(theta.detach(), dim=-1).numpy()


@pytest.mark.parametrize("eta,alpha", STEPS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fitting_each_loss_lands_on_mirror_step_target(name, eta, alpha):
    rng, logp_t, log_ref, u = _problem(seed=1)
    target = mirror_step(logp_t, u, eta, alpha, log_ref)
    groups, n = u.shape
    assert np.abs(softmax(target) - softmax(logp_t)).sum(-1).max() > 0.1  # the test can fail
    # PG needs Monte-Carlo weights under pi_t (here exact); regression accepts any positive ones.
    w = np.exp(logp_t) if name == "pg" else rng.uniform(0.2, 1.0, size=(groups, n))
    gid = np.repeat(np.arange(groups) * 7 + 3, n)  # arbitrary integer ids
    rest = (logp_t.ravel(), log_ref.ravel(), u.ravel(), w.ravel(), eta, alpha, gid)
    fitted = _fit(LOSSES[name], rng.normal(size=(groups, n)), rest)
    np.testing.assert_allclose(softmax(fitted), softmax(target), atol=1e-4)


@pytest.mark.parametrize("eta,alpha", STEPS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fixed_point_on_an_enumerated_subset_is_the_conditional_target(name, eta, alpha):
    """Outputs never seen keep zero gradient; on the seen ones the fit is the conditional target.

    On a subset the PG loss's value (-J-hat) is not the potential of its gradient, so this follows
    the gradient (as a trainer does) instead of line-searching on the value.
    """
    rng, logp_t, log_ref, u = _problem(seed=2, groups=2, n=6)
    keep = np.array([0, 2, 3, 5])  # outputs 1 and 4 are never seen
    cond_t = log_softmax(logp_t[:, keep])
    target = mirror_step(cond_t, u[:, keep], eta, alpha, log_softmax(log_ref[:, keep]))
    w = np.exp(cond_t)  # Monte-Carlo weights of the subset under pi_t
    gid = np.repeat([0, 1], keep.size)

    def loss_on_subset(logp_full, *rest):
        return LOSSES[name](logp_full.reshape(2, 6)[:, keep].reshape(-1), *rest)

    rest = (logp_t[:, keep].ravel(), log_ref[:, keep].ravel(), u[:, keep].ravel(), w.ravel(),
            eta, alpha, gid)
    fit = _fit_by_gradient if name == "pg" else _fit
    fitted = fit(loss_on_subset, logp_t.copy(), rest)
    np.testing.assert_allclose(softmax(fitted[:, keep]), softmax(target), atol=1e-4)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rows_split_among_opponent_parts_use_the_conditional_mean_utility(name):
    rng, logp_t, log_ref, _ = _problem(seed=3, groups=2, n=4)
    m = 3  # opponent parts per output, with probabilities q(j | output)
    q = rng.dirichlet(np.ones(m), size=(2, 4))
    u_rows = rng.uniform(-1, 1, size=(2, 4, m))
    eta, alpha = 1.5, 0.4
    target = mirror_step(logp_t, (q * u_rows).sum(-1), eta, alpha, log_ref)
    w = np.exp(logp_t)[..., None] * q
    idx = np.repeat(np.arange(8), m)  # row -> (group, output) flat index

    def loss_rows(logp_flat, *rest):
        return LOSSES[name](logp_flat[torch.as_tensor(idx)], *rest)

    rest = (logp_t.ravel()[idx], log_ref.ravel()[idx], u_rows.ravel(), w.ravel(), eta, alpha,
            np.repeat([0, 1], 4 * m))
    fitted = _fit(loss_rows, np.zeros((2, 4)), rest)
    np.testing.assert_allclose(softmax(fitted), softmax(target), atol=1e-4)


@pytest.mark.parametrize("eta,alpha", STEPS)
def test_pg_loss_value_and_gradient_are_exactly_minus_j_on_a_full_enumeration(eta, alpha):
    rng, logp_t, log_ref, u = _problem(seed=4)
    theta = torch.tensor(rng.normal(size=u.shape), dtype=torch.float64, requires_grad=True)
    lp = torch.log_softmax(theta, -1)
    loss = kl_regularized_pg_loss(lp.reshape(-1), logp_t.ravel(), log_ref.ravel(), u.ravel(),
                                  np.exp(logp_t).ravel(), eta, alpha, np.repeat([0, 1, 2], 5))
    (g_loss,) = torch.autograd.grad(loss, theta)
    # The closed form, by autograd: J = E_pi[u] - alpha KL(pi||rho) - KL(pi||pi_t)/eta.
    theta2 = theta.detach().clone().requires_grad_(True)
    lp2 = torch.log_softmax(theta2, -1)
    p = lp2.exp()
    inv_eta = 0.0 if math.isinf(eta) else 1.0 / eta
    t, r, uu = (torch.tensor(a) for a in (logp_t, log_ref, u))
    j = (p * (uu - alpha * (lp2 - r) - inv_eta * (lp2 - t))).sum(-1).mean()
    (g_j,) = torch.autograd.grad(j, theta2)
    assert loss.item() == pytest.approx(-j.item(), abs=1e-12)
    np.testing.assert_allclose(g_loss.numpy(), -g_j.numpy(), atol=1e-12)
    assert g_loss.abs().max().item() > 1e-3  # not trivially zero


@pytest.mark.parametrize("eta,alpha", STEPS)
def test_at_the_target_regression_is_zero_and_pg_is_stationary(eta, alpha):
    _, logp_t, log_ref, u = _problem(seed=5)
    target = mirror_step(logp_t, u, eta, alpha, log_ref)
    gid = np.repeat([0, 1, 2], 5)
    args = (logp_t.ravel(), log_ref.ravel(), u.ravel(), np.exp(logp_t).ravel(), eta, alpha, gid)
    theta = torch.tensor(target, requires_grad=True)
    reg = target_log_ratio_regression_loss(torch.log_softmax(theta, -1).reshape(-1), *args)
    assert reg.item() == pytest.approx(0.0, abs=1e-20)
    pg = kl_regularized_pg_loss(torch.log_softmax(theta, -1).reshape(-1), *args)
    (grad,) = torch.autograd.grad(pg, theta)
    assert grad.abs().max().item() < 1e-12
    # and the tau helper normalises to the same target
    tau = target_log_ratio(logp_t, log_ref, u, eta, alpha)
    np.testing.assert_allclose(log_softmax(logp_t + tau), target, atol=1e-12)


def test_regression_is_invariant_to_per_context_constants():
    """log Z per context is eliminated: shifting any input by a per-context constant is free."""
    rng, logp_t, log_ref, u = _problem(seed=6)
    lp = rng.normal(size=u.shape)
    gid = np.repeat([0, 1, 2], 5)
    w = rng.uniform(0.1, 1.0, size=u.shape).ravel()

    def loss(a, b, c, d):
        return target_log_ratio_regression_loss(
            torch.tensor(a.ravel()), b.ravel(), c.ravel(), d.ravel(), w, 0.7, 0.3, gid
        ).item()

    base = loss(lp, logp_t, log_ref, u)
    shift = rng.normal(size=(3, 1)) * np.ones((1, 5))
    assert base > 1e-3
    for args in [(lp + shift, logp_t, log_ref, u), (lp, logp_t + shift, log_ref, u),
                 (lp, logp_t, log_ref + shift, u), (lp, logp_t, log_ref, u + shift)]:
        assert loss(*args) == pytest.approx(base, rel=1e-10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contexts_count_in_proportion_to_their_total_weight(name):
    rng, logp_t, log_ref, u = _problem(seed=8, groups=2, n=4)
    lp = torch.tensor(log_softmax(rng.normal(size=(2, 4))))
    w = rng.uniform(0.1, 1.0, size=(2, 4))
    w[1] *= 5.0  # the second context weighs more

    def loss(g):
        rows = slice(None) if g is None else slice(g, g + 1)
        return LOSSES[name](lp[rows].reshape(-1), logp_t[rows].ravel(), log_ref[rows].ravel(),
                            u[rows].ravel(), w[rows].ravel(), 0.8, 0.3,
                            np.repeat(np.arange(2)[rows], 4)).item()

    total = w.sum(-1)
    expected = (total[0] * loss(0) + total[1] * loss(1)) / total.sum()
    assert loss(None) == pytest.approx(expected, rel=1e-12)
    assert abs(loss(None) - 0.5 * (loss(0) + loss(1))) > 1e-6


def test_estimates_at_the_current_policy_and_after_a_move():
    _, logp_t, log_ref, u = _problem(seed=7, groups=1, n=4)
    w = np.exp(logp_t).ravel()
    args = (logp_t.ravel(), log_ref.ravel(), u.ravel(), w, 2.0, 0.5, np.zeros(4, dtype=int))
    est = estimate_objective(torch.tensor(logp_t.ravel()), *args)
    p = np.exp(logp_t.ravel())
    assert est.kl_previous == pytest.approx(0.0, abs=1e-15)
    assert est.utility == pytest.approx(float(p @ u.ravel()), abs=1e-12)
    assert est.kl_reference == pytest.approx(float(p @ (logp_t - log_ref).ravel()), abs=1e-12)
    new = log_softmax(np.array([0.3, -1.0, 2.0, 0.1]))
    est2 = estimate_objective(torch.tensor(new), *args)
    q = np.exp(new)
    assert est2.kl_previous == pytest.approx(float(q @ (new - logp_t.ravel())), abs=1e-12)
    assert est2.kl_reference == pytest.approx(float(q @ (new - log_ref.ravel())), abs=1e-12)
    assert est2.objective == pytest.approx(
        float(q @ u.ravel()) - 0.5 * est2.kl_reference - est2.kl_previous / 2, abs=1e-12
    )


def test_kl_estimates_are_non_negative_on_any_rows():
    """On a few rows (not the whole support) the signed estimator can go negative; these cannot."""
    rng, logp_t, log_ref, u = _problem(seed=15, groups=2, n=6)
    keep = np.array([1, 4])
    new = log_softmax(rng.normal(scale=2.0, size=(2, 6)))
    rows = (logp_t[:, keep].ravel(), log_ref[:, keep].ravel(), u[:, keep].ravel(), np.ones(4),
            1.0, 0.5, np.repeat([0, 1], 2))
    est = estimate_objective(torch.tensor(new[:, keep].ravel()), *rows)
    ratio = np.exp(new[:, keep] - logp_t[:, keep])
    signed = np.mean(ratio * (new[:, keep] - logp_t[:, keep]))
    assert signed < 0  # the plain estimate on these rows
    assert est.kl_previous >= 0 and est.kl_reference >= 0


def _good_args():
    lp = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    return dict(logp_new=lp, logp_old=np.zeros(3), logp_ref=np.zeros(3), utilities=np.ones(3),
                weights=np.ones(3), eta=1.0, alpha=0.1, group_ids=np.array([0, 0, 1]))


@pytest.mark.parametrize("fn", [kl_regularized_pg_loss, target_log_ratio_regression_loss])
@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(utilities=np.ones(4)), ValueError, r"utilities must be 1-D with one entry per row"),
        (dict(logp_old=np.zeros(2)), ValueError, "logp_old.*got shape \\(2,\\)"),
        (dict(group_ids=np.array([0, 1])), ValueError, "group_ids"),
        (dict(group_ids=np.array([0.0, 1.0, 1.0])), TypeError, "group_ids must hold integers"),
        (dict(weights=np.array([1.0, -1.0, 1.0])), ValueError, "weights must be >= 0"),
        (dict(weights=np.array([1.0, 1.0, 0.0])), ValueError, "positive sum within every group"),
        (dict(utilities=np.array([1.0, np.nan, 0.0])), ValueError, "utilities must be finite"),
        (dict(eta=0.0), ValueError, "eta must be > 0"),
        (dict(eta=math.inf, alpha=0.0), ValueError, "eta=inf needs alpha > 0"),
        (dict(alpha=-1.0), ValueError, "alpha"),
        (dict(logp_new=np.zeros(3)), TypeError, "logp_new must be a floating torch.Tensor"),
        (dict(logp_new=torch.zeros(0)), ValueError, "at least one row"),
        (dict(utilities=["a", "b", "c"]), TypeError, "utilities must hold real numbers"),
    ],
)
def test_bad_inputs_are_named(fn, change, exc, match):
    args = _good_args() | change
    with pytest.raises(exc, match=match):
        fn(**args)


def test_target_log_ratio_checks_shapes():
    with pytest.raises(ValueError, match="same shape"):
        target_log_ratio([0.0, 1.0], [0.0], [1.0, 2.0], eta=1.0, alpha=0.0)
