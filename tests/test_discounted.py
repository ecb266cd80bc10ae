"""Discounted regret matching+ (gpo_core.discounted): closed form, its regret bound, speed-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpo_core as gc
from gpo_core.discounted import discounted_regret_matching_plus


def _drm_reference(a: np.ndarray, steps: int, alpha: float, *, alternating: bool, power: int):
    """DCFR+ on a matrix game written out plainly from Brown & Sandholm (2019): after iteration
    ``t`` the positive regrets are multiplied by ``t^alpha / (t^alpha + 1)``; regrets are clipped
    at zero as in CFR+; the average weighs iterate ``t`` by ``t^power``."""
    m, n = a.shape
    x, y = np.full(m, 1.0 / m), np.full(n, 1.0 / n)
    rx, ry = np.zeros(m), np.zeros(n)
    x_sum, y_sum, w_sum = np.zeros(m), np.zeros(n), 0.0
    for t in range(1, steps + 1):
        w = float(t) ** power
        x_sum, y_sum, w_sum = x_sum + w * x, y_sum + w * y, w_sum + w
        ux = a @ y
        rx = np.maximum(rx + ux - ux @ x, 0.0)
        x_new = rx / rx.sum() if rx.sum() > 0 else x
        uy = -(a.T @ (x_new if alternating else x))
        ry = np.maximum(ry + uy - uy @ y, 0.0)
        y = ry / ry.sum() if ry.sum() > 0 else y
        x = x_new
        discount = t**alpha / (t**alpha + 1.0)
        rx, ry = rx * discount, ry * discount
    return x_sum / w_sum, y_sum / w_sum, x, y


# ----------------------------------------------------------------------------- closed form
def test_first_steps_by_hand():
    rule = discounted_regret_matching_plus(alpha=2.0)
    assert isinstance(rule, gc.UpdateRule) and rule.name == "drm+(alpha=2)"
    state = rule.init(np.zeros(3))
    assert isinstance(state, gc.RMPlusState) and state.count == 0
    # u = [3, 0, 0] against uniform: r = [2, -1, -1], Q = [2, 0, 0] (nothing to discount yet)
    state = rule.step(state, np.array([3.0, 0.0, 0.0]))
    np.testing.assert_array_equal(state.cum_regret, [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(state.strategy, [1.0, 0.0, 0.0])
    # u = [0, 3, 0] against [1, 0, 0]: r = [0, 3, 0], Q = [2 * 1/2, 3, 0] (d_1 = 1 / (1 + 1))
    state = rule.step(state, np.array([0.0, 3.0, 0.0]))
    np.testing.assert_allclose(state.cum_regret, [1.0, 3.0, 0.0], atol=1e-15)
    # u = [0, 0, 4] against [1/4, 3/4, 0]: r = [0, 0, 4], Q = (4/5) [1, 3, 0] + r (d_2 = 4/5)
    state = rule.step(state, np.array([0.0, 0.0, 4.0]))
    np.testing.assert_allclose(state.cum_regret, [0.8, 2.4, 4.0], atol=1e-15)
    np.testing.assert_allclose(state.strategy, np.array([0.8, 2.4, 4.0]) / 7.2, atol=1e-15)
    assert state.count == 3


@pytest.mark.parametrize("alternating", [True, False])
@pytest.mark.parametrize("alpha", [0.5, 1.5, 3.0])
def test_play_matches_the_papers_update_written_out(alternating, alpha):
    # With alpha < 1 the regrets are forgotten fast and the last iterates wander chaotically:
    # the two roundings of the same arithmetic part by ~10x per 20 steps (1e-15 at step 10,
    # 1e-7 at step 100), so that case is compared over fewer steps.
    steps = 150 if alpha >= 1 else 50
    a = np.random.default_rng(7).uniform(-1, 1, size=(6, 9))
    x_avg, y_avg, x_last, y_last = _drm_reference(a, steps, alpha, alternating=alternating,
                                                  power=2)
    traj = gc.play(gc.MatrixGame(a), discounted_regret_matching_plus(alpha), steps=steps,
                   alternating=alternating, averaging="quadratic")
    np.testing.assert_allclose(traj.average.row, x_avg, atol=1e-12)
    np.testing.assert_allclose(traj.average.col, y_avg, atol=1e-12)
    np.testing.assert_allclose(traj.last.row, x_last, atol=1e-12)
    np.testing.assert_allclose(traj.last.col, y_last, atol=1e-12)


def test_invariant_to_positive_scaling_and_shifts_of_the_payoff():
    a = np.random.default_rng(1).uniform(-1, 1, size=(8, 5))
    kwargs = dict(steps=200, alternating=True, averaging="quadratic")
    base = gc.play(gc.MatrixGame(a), discounted_regret_matching_plus(), **kwargs)
    moved = gc.play(gc.MatrixGame(3.0 * a + 2.0), discounted_regret_matching_plus(), **kwargs)
    np.testing.assert_allclose(moved.average.row, base.average.row, atol=1e-10)
    np.testing.assert_allclose(moved.average.col, base.average.col, atol=1e-10)


def test_keeps_its_strategy_without_positive_regret():
    rule = discounted_regret_matching_plus()
    state = rule.step(rule.init(np.log([0.2, 0.3, 0.5])), np.ones(3))  # every action ties
    np.testing.assert_allclose(state.strategy, [0.2, 0.3, 0.5], atol=1e-15)
    np.testing.assert_array_equal(state.cum_regret, [0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- guarantee
@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0, 10.0])
@pytest.mark.parametrize("gamma", [1, 2])
def test_the_proofs_weight_ratio_is_nondecreasing(alpha, gamma):
    """The bound needs w_t / omega_t = t^gamma prod_{s<t} d_s nondecreasing (module docstring):
    (1 + 1/t)^gamma >= 1 + t^-alpha for alpha >= 1; checked in logs up to t = 10^5."""
    t = np.arange(1, 100_001, dtype=float)
    log_d = -np.log1p(t ** -alpha)  # log d_t
    log_ratio = gamma * np.log(t) + np.concatenate([[0.0], np.cumsum(log_d)[:-1]])
    assert np.all(np.diff(log_ratio) >= -1e-12)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 12),
    n=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.sampled_from([1.0, 1.5, 2.5]),
    averaging=st.sampled_from(["linear", "quadratic"]),
)
def test_the_averaged_gap_obeys_the_regret_bound(m, n, seed, alpha, averaging):
    """Simultaneous updates: gap(T) <= (gamma + 1) B (sqrt m + sqrt n) / sqrt T at every T,
    B = max A - min A (the bound of the module docstring; it can fail if the rule is wrong)."""
    a = np.random.default_rng(seed).uniform(-1, 1, size=(m, n))
    traj = gc.play(gc.MatrixGame(a), discounted_regret_matching_plus(alpha), steps=400,
                   averaging=averaging)
    gamma = {"linear": 1, "quadratic": 2}[averaging]
    spread = a.max() - a.min()
    bound = (gamma + 1) * spread * (math.sqrt(m) + math.sqrt(n)) / np.sqrt(traj.steps)
    assert np.all(traj.nash_gap <= bound + 1e-12)


def test_averaged_profile_converges_on_rps_from_an_off_equilibrium_start():
    rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    traj = gc.play(rps, discounted_regret_matching_plus(), steps=3000, alternating=True,
                   averaging="quadratic", x0=[0.6, 0.3, 0.1], y0=[0.2, 0.2, 0.6])
    assert float(traj.final_gap) < 1e-3
    np.testing.assert_allclose(traj.average.row, [1 / 3] * 3, atol=1e-3)


@pytest.mark.parametrize("n", [60, 200])
def test_fewer_iterations_than_rm_plus_on_random_games(n):
    """What the rule is for (benchmarks/README.md): the same gap in fewer iterations than RM+
    with the same alternation and quadratic averaging, on every one of five random games."""
    kwargs = dict(steps=20_000, alternating=True, averaging="quadratic", tol=1e-4)
    ratios = []
    for seed in range(5):
        game = gc.MatrixGame.random(n, seed=seed)
        drm = gc.play(game, discounted_regret_matching_plus(), **kwargs)
        rmp = gc.play(game, gc.regret_matching_plus(), **kwargs)
        assert float(drm.final_gap) <= 1e-4 and float(rmp.final_gap) <= 1e-4
        ratios.append(drm.num_steps / rmp.num_steps)
    assert max(ratios) < 1.0, ratios
    assert np.mean(ratios) < 0.85, ratios


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_alpha_out_of_range_is_a_value_error(bad):
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        discounted_regret_matching_plus(bad)


@pytest.mark.parametrize("bad", ["1.5", True, None, [1.5]])
def test_alpha_of_the_wrong_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match="alpha must be a real number"):
        discounted_regret_matching_plus(bad)


def test_large_counts_do_not_overflow():
    """t^alpha would overflow a float for t = 10^6, alpha = 100; the discount is then 1."""
    rule = discounted_regret_matching_plus(alpha=100.0)
    state = gc.RMPlusState(np.array([1.0, 0.0]), 10**6, np.array([1.0, 0.0]))
    state = rule.step(state, np.array([0.0, 1.0]))
    np.testing.assert_allclose(state.cum_regret, [1.0, 1.0], atol=1e-15)


def test_the_averaged_value_matches_the_lp_within_the_gap():
    """Against HiGHS: |x^T A y - v*| <= gap(x, y) for any profile, so a small certified gap pins
    the value; checked on a random 30 x 20 game."""
    game = gc.MatrixGame.random(30, 20, seed=11)
    traj = gc.play(game, discounted_regret_matching_plus(), steps=5000, alternating=True,
                   averaging="quadratic", tol=1e-4)
    x, y = traj.average.row, traj.average.col
    gap = float(gc.nash_gap(game, x, y))
    assert gap <= 1e-4
    value = float(gc.solve_lp(game).value)
    assert abs(float(x @ game.payoff @ y) - value) <= gap
