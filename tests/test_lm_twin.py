"""The LLM twin of the tabular test: transformers playing an enumerable matrix game follow play.

Two random tiny Llamas write one-token outputs (``backends.enumerated``), so their exact
distributions, the payoff matrix and every Nash gap are computable. The bounds below come from the
fit's tolerance (``backends.fit``'s docstring):

* one fitted step misses the exact mirror step by a log-ratio ``d`` with
  ``osc(d) <= e_t = 2 sqrt(threshold_t / min_y pi_t(y))``, ``threshold_t = max(tol R0_t, atol)``;
* with ``D_t = osc(log pi_t - log x_t)`` (defender vs play's row iterate) and ``E_t`` likewise for
  the adversary, one simultaneous Hedge round adds the fit error and the opponent's drift, since
  ``osc(A v) <= 2 range(A) TV`` for ``sum(v) = 0``:
  ``D_{t+1} <= D_t + 2 eta range(A) tanh(E_t / 4) + e_t`` (and symmetrically), with
  ``D_1 = E_1 = 0`` (play starts from the networks' own initial distributions);
* ``TV(pi_t, x_t) <= tanh(D_t / 4)`` (a log-likelihood ratio of range ``s`` keeps TV below
  ``tanh(s/4)``), and the Nash gap, ``range(A)``-Lipschitz in each player's TV, moves by at most
  ``range(A) (TV(xbar) + TV(ybar))``, the mixtures' TVs being at most the mean of the iterates'.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpo_core as gc
from backends.enumerated import iterate_probabilities, lm_matrix_game_players
from gpo_core.alignment import GameConfig, estimate_gap, run_game
from gpo_core.protocols import Experience, MirrorStep

TOL = 1e-6  # the fit tolerance these tests run at (R <= TOL * R0)
ATOL = 1e-12


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _play_iterates(game, x0, y0, eta, rounds):
    """play's simultaneous Hedge iterates x_1..x_{T+1} (x_1 = x0), by the core's mirror_step."""
    xs, ys = [np.asarray(x0)], [np.asarray(y0)]
    lx, ly = np.log(x0), np.log(y0)
    for _ in range(rounds):
        x, y = np.exp(lx), np.exp(ly)
        lx = gc.mirror_step(lx, game.payoff @ y, eta, 0.0, np.zeros_like(lx))
        ly = gc.mirror_step(ly, -(x @ game.payoff), eta, 0.0, np.zeros_like(ly))
        xs.append(np.exp(lx))
        ys.append(np.exp(ly))
    return xs, ys


@pytest.mark.parametrize("objective", ["regression", "pg"])
def test_transformers_track_plays_hedge_iterates_within_the_fit_bound(objective):
    game = gc.MatrixGame.random(3, 4, seed=1)
    eta, rounds = 0.5, 12
    d, a, r = lm_matrix_game_players(game, seed=0, fit_tol=TOL, fit_atol=ATOL,
                                     objective=objective)
    x0, y0 = d.probabilities(), a.probabilities()
    res = run_game(d, a, r, GameConfig(rounds=rounds, schedule="simultaneous", batch_size=1,
                                       conditional_adversary=False, defender_eta=eta,
                                       adversary_eta=eta))
    xs, ys = _play_iterates(game, x0, y0, eta, rounds)
    pis = iterate_probabilities(d, res.defender_iterates) + [d.probabilities()]
    mus = iterate_probabilities(a, res.adversary_iterates) + [a.probabilities()]
    width = game.payoff_range
    big_d = big_e = 0.0
    bounds = [0.0]
    for t, log in enumerate(res.logs):
        m = log.metrics
        assert m["defender/fit/converged"] == 1.0 and m["adversary/fit/converged"] == 1.0
        e_d = 2 * math.sqrt(max(TOL * m["defender/fit/residual_initial"], ATOL) / pis[t].min())
        e_a = 2 * math.sqrt(max(TOL * m["adversary/fit/residual_initial"], ATOL) / mus[t].min())
        big_d, big_e = (big_d + 2 * eta * width * math.tanh(big_e / 4) + e_d,
                        big_e + 2 * eta * width * math.tanh(big_d / 4) + e_a)
        bounds.append(max(math.tanh(big_d / 4), math.tanh(big_e / 4)))
    tvs = [max(_tv(p, x), _tv(q, y)) for p, q, x, y in zip(pis, mus, xs, ys)]
    for t, (tv, bound) in enumerate(zip(tvs, bounds)):
        assert tv <= bound, f"round {t}: TV {tv:.3g} above the fit's bound {bound:.3g}"
    assert bounds[-1] < 0.05  # the bound says something: the tracking is tight, not vacuous
    assert max(tvs) > 0 and max(_tv(pis[-1], pis[0]), _tv(mus[-1], mus[0])) > 0.1  # they moved

    # The averaged policies (mixtures of iterates) have play's Nash gap curve, within the bound.
    traj = gc.play(game, gc.hedge(eta), gc.hedge(eta), steps=rounds, x0=x0, y0=y0)
    for t in range(1, rounds + 1):
        xbar, ybar = np.mean(pis[:t], axis=0), np.mean(mus[:t], axis=0)
        drift = width * float(np.mean(bounds[:t])) * 2
        gap = float(gc.nash_gap(game, xbar, ybar))
        assert abs(gap - float(traj.nash_gap[t - 1])) <= drift + 1e-9


def _one_step(eta, alpha, *, seed=3, tol=TOL):
    """One defender update against a fixed adversary; (measured KL, exact KL, exact target)."""
    game = gc.MatrixGame.random(4, 3, seed=seed)
    d, a, _ = lm_matrix_game_players(game, seed=seed, fit_tol=tol, fit_atol=ATOL)
    y = a.probabilities()
    u = game.payoff @ y
    before = d.probabilities()
    log_ref = np.log(before)  # the reference is the initial network: rho = pi_t here
    target = np.exp(gc.mirror_step(np.log(before), u, eta, alpha, log_ref))
    m = d.update(Experience(("",) * 4, d.outputs, u, np.ones(4)), MirrorStep(eta, alpha))
    after = d.probabilities()
    return _kl(after, before), _kl(target, before), m, u, before, after, target


@pytest.mark.parametrize("eta", [0.1, 1.0, 10.0])
def test_the_measured_move_is_the_exact_steps_for_eta_over_two_decades(eta):
    kl, kl_exact, m, *_ = _one_step(eta, 0.0)
    assert m["fit/converged"] == 1.0
    # rms log-ratio error <= sqrt(TOL) = 1e-3 of the move: the KL's first-order share is 2e-3
    assert kl == pytest.approx(kl_exact, rel=1e-2)


@pytest.mark.parametrize("eta", [0.01, 0.1])
def test_small_steps_move_eta_squared_var_u_over_two(eta):
    kl, _, _, u, before, *_ = _one_step(eta, 0.0)
    var = float(np.sum(before * u**2) - np.sum(before * u) ** 2)
    # KL = eta^2 k2 / 2 + eta^3 k3 / 3 + O(eta^4) and |k3| <= range(u) k2
    assert kl == pytest.approx(eta**2 * var / 2, rel=eta * float(np.ptp(u)) + 1e-2)


def test_eta_sets_the_move_not_the_optimiser():
    small, *_ = _one_step(0.1, 0.0)
    large, large_exact, m, *_ = _one_step(100.0, 0.0, tol=1e-2)
    assert large > 100 * small  # eta = 0.1 and eta = 100 move by very different amounts
    assert m["fit/converged"] == 1.0
    assert large == pytest.approx(large_exact, rel=5e-2)


@pytest.mark.parametrize("alpha", [0.5, 5.0])
def test_alpha_shrinks_the_step_as_the_closed_form_says(alpha):
    free, *_ = _one_step(1.0, 0.0)
    kl, kl_exact, m, *_ = _one_step(1.0, alpha)
    assert m["fit/converged"] == 1.0
    assert kl == pytest.approx(kl_exact, rel=1e-2)
    assert kl < free / (1 + alpha) ** 1.5  # kappa = eta / (1 + eta alpha) < eta


def test_eta_inf_is_the_fixed_reference_target():
    kl, kl_exact, m, _, _, after, target = _one_step(math.inf, 1.0)
    assert m["fit/converged"] == 1.0
    assert kl == pytest.approx(kl_exact, rel=1e-2)
    assert _tv(after, target) < 1e-3


def test_estimated_gap_of_the_lm_game_meets_the_exact_gap():
    game = gc.MatrixGame.random(3, 3, seed=5)
    d, a, r = lm_matrix_game_players(game, seed=2, fit_tol=1e-3)
    config = GameConfig(rounds=1, batch_size=1, conditional_adversary=False, gap_steps=3,
                        gap_eta=30.0, gap_rollouts=2)
    est = estimate_gap(d, a, r, config)
    exact = float(gc.nash_gap(game, d.probabilities(), a.probabilities()))
    # enumerated rollouts are exact expectations, so the only error is the best responder's
    # distance from a pure best response after gap_steps steps of gap_eta (a lower estimate)
    assert est["gap/estimated"] <= exact + 1e-6
    assert est["gap/estimated"] >= 0.9 * exact
    assert est["gap/estimated_ci_low"] <= est["gap/estimated"] <= est["gap/estimated_ci_high"]
