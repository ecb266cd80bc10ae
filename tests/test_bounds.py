"""Tests of gpo_core.bounds: closed forms against hand values, the core's indexing, and brute force.

The bounds are also falsification-tested: Hedge is driven on hypothesis-generated gain sequences
and the measured regret must stay below the bound at every round; a bound with a smaller constant
is shown to be violated by a known near-worst-case sequence.
"""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gpo_core as gc
from gpo_core import bounds

FAST = settings(max_examples=25, deadline=None)


# ------------------------------------------------------------------------------ generators
@st.composite
def gain_sequences(draw, max_T: int = 40, max_n: int = 5):
    """A (T, n) array of gains in [-5, 5] with a positive per-round spread somewhere."""
    T = draw(st.integers(1, max_T))
    n = draw(st.integers(2, max_n))
    u = draw(hnp.arrays(np.float64, (T, n), elements=st.floats(-5, 5, allow_nan=False, width=64)))
    spread = float(np.max(u.max(axis=1) - u.min(axis=1)))
    assume(spread > 1e-6)
    return u


@st.composite
def small_games(draw, max_actions: int = 4):
    m = draw(st.integers(1, max_actions))
    n = draw(st.integers(1, max_actions))
    a = draw(hnp.arrays(np.float64, (m, n), elements=st.floats(-10, 10, allow_nan=False, width=64)))
    assume(float(a.max() - a.min()) > 1e-2)
    return gc.MatrixGame(a)


def _hedge_regrets(rule: gc.UpdateRule, u: np.ndarray) -> np.ndarray:
    """Regret after each round t = 1..T of ``rule`` driven on the gains ``u`` (T, n)."""
    state = rule.init(np.zeros(u.shape[1]))
    played = []
    for row in u:
        played.append(gc.softmax(state.logits))
        state = rule.step(state, row)
    p = np.array(played)
    return np.array([float(gc.external_regret(u[: t + 1], p[: t + 1])) for t in range(len(u))])


# ------------------------------------------------------------------------------ hand values
def test_hedge_regret_bound_hand_value():
    # ln 2 / 0.5 + 0.5 * 100 * 1 / 8
    assert bounds.hedge_regret_bound(100, 2, 1.0, 0.5) == pytest.approx(math.log(2) / 0.5 + 6.25, rel=1e-15)


def test_tuned_step_minimises_the_constant_step_bound():
    T, n, B = 5000, 7, 3.0
    eta = gc.horizon_tuned(T, n, B).eta
    at_opt = bounds.hedge_regret_bound(T, n, B, eta)
    assert at_opt == pytest.approx(bounds.hedge_horizon_tuned_regret_bound(T, n, B), rel=1e-12)
    assert at_opt == pytest.approx(B * math.sqrt(T * math.log(n) / 2), rel=1e-12)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert bounds.hedge_regret_bound(T, n, B, eta * factor) > at_opt


def test_anytime_bound_hand_value_and_prior():
    T, n, B, c = 99, 3, 2.0, 0.7
    expected = math.sqrt(100) * math.log(3) / c + c * 4.0 * (2 * math.sqrt(99) - 1) / 8
    assert bounds.hedge_anytime_regret_bound(T, n, B, c) == pytest.approx(expected, rel=1e-14)
    # a non-uniform start replaces ln n by ln(1/min pi_1)
    with_prior = bounds.hedge_anytime_regret_bound(T, n, B, c, prior_min=0.1)
    assert with_prior == pytest.approx(expected + math.sqrt(100) * (math.log(10) - math.log(3)) / c, rel=1e-14)


@given(T=st.integers(1, 10**7), n=st.integers(2, 10**4), B=st.floats(1e-3, 1e3))
@FAST
def test_anytime_bound_is_within_cesa_bianchi_lugosi_thm_2_3(T, n, B):
    c = math.sqrt(8 * math.log(n)) / B  # the book's schedule
    assert bounds.hedge_anytime_regret_bound(T, n, B, c) <= bounds.hedge_anytime_regret_bound_cbl(T, n, B)


def test_bounds_vectorise_over_a_grid_of_rounds():
    t = np.array([1, 10, 100])
    out = bounds.hedge_anytime_regret_bound(t, 4, 1.0, 1.0)
    assert out.shape == (3,)
    assert [float(bounds.hedge_anytime_regret_bound(int(s), 4, 1.0, 1.0)) for s in t] == pytest.approx(out.tolist())
    assert np.all(np.diff(bounds.hedge_regret_bound(t, 4, 1.0, 0.3)) > 0)


def test_qre_and_mmd_closed_forms():
    assert bounds.qre_nash_gap_bound(0.5, 2, 8) == pytest.approx(0.5 * math.log(16))
    assert bounds.qre_nash_gap_entropy_bound(0.5, 0.2, 0.3) == pytest.approx(0.25)
    assert bounds.mmd_max_step(0.3, 3.0) == pytest.approx(0.3 / 9)
    assert bounds.mmd_contraction(0.5, 0.4) == pytest.approx(1 / 1.2)
    d = bounds.mmd_divergence_bound(np.arange(1, 4), 0.5, 0.4, 2.0)
    assert d.tolist() == pytest.approx([2 / 1.2, 2 / 1.44, 2 / 1.728])


def test_folk_theorem_gap_bound_broadcasts():
    assert bounds.folk_theorem_gap_bound(3.0, 5.0, 4) == 2.0
    out = bounds.folk_theorem_gap_bound(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1, 2]))
    assert out.tolist() == [2.0, 2.0]


# ------------------------------------------------------------------ the indexing the bound needs
@pytest.mark.parametrize("c", [0.3, 1.7])
def test_core_anytime_hedge_uses_eta_k_plus_1_after_k_updates(c):
    """Round t plays softmax(eta_t * U_{t-1}), eta_t = c/sqrt(t): the indexing of CBL Thm. 2.3."""
    rng = np.random.default_rng(5)
    rule = gc.hedge(gc.inverse_sqrt(c))
    state = rule.init(np.zeros(4))
    cum = np.zeros(4)
    for k in range(1, 30):
        u = rng.uniform(-1, 1, size=4)
        cum += u
        state = rule.step(state, u)
        expected = gc.log_softmax(c / math.sqrt(k + 1) * cum)
        np.testing.assert_allclose(state.logits, expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- brute force against the bounds
@given(u=gain_sequences(), eta=st.floats(0.01, 3.0))
@FAST
def test_constant_step_regret_never_exceeds_the_bound(u, eta):
    B = float(np.max(u.max(axis=1) - u.min(axis=1)))
    regrets = _hedge_regrets(gc.hedge(eta), u)
    bound = bounds.hedge_regret_bound(np.arange(1, len(u) + 1), u.shape[1], B, eta)
    assert np.all(regrets <= bound + 1e-9)


@given(u=gain_sequences(), c=st.floats(0.01, 5.0))
@FAST
def test_anytime_regret_never_exceeds_the_bound(u, c):
    B = float(np.max(u.max(axis=1) - u.min(axis=1)))
    regrets = _hedge_regrets(gc.hedge(gc.inverse_sqrt(c)), u)
    bound = bounds.hedge_anytime_regret_bound(np.arange(1, len(u) + 1), u.shape[1], B, c)
    assert np.all(regrets <= bound + 1e-9)


def test_a_smaller_constant_is_violated_by_a_switching_sequence():
    """The constant-step bound is nearly tight: 0.9 x bound fails on a switching sequence."""
    T, n, B = 2000, 2, 1.0
    u = np.zeros((T, n))
    u[: T // 2, 0] = B
    u[T // 2 :, 1] = B
    eta = gc.horizon_tuned(T, n, B).eta
    regrets = _hedge_regrets(gc.hedge(eta), u)
    bound = bounds.hedge_regret_bound(np.arange(1, T + 1), n, B, eta)
    assert np.all(regrets <= bound)
    assert np.any(regrets > 0.9 * bound)


@given(game=small_games())
@settings(max_examples=15, deadline=None)
def test_folk_theorem_is_an_identity_for_uniform_averages(game):
    """gap(x_bar, y_bar) == (R_x + R_y) / T, regrets from gc.external_regret on the played iterates."""
    m, n = game.shape
    A = game.payoff
    rule = gc.hedge(0.3)
    sx, sy = rule.init(np.zeros(m)), rule.init(np.zeros(n))
    xs, ys, ux, uy = [], [], [], []
    for _ in range(25):
        x, y = gc.softmax(sx.logits), gc.softmax(sy.logits)
        xs.append(x), ys.append(y), ux.append(A @ y), uy.append(-(x @ A))
        sx, sy = rule.step(sx, ux[-1]), rule.step(sy, uy[-1])
    r_x = float(gc.external_regret(np.array(ux), np.array(xs)))
    r_y = float(gc.external_regret(np.array(uy), np.array(ys)))
    gap = float(gc.nash_gap(game, np.mean(xs, axis=0), np.mean(ys, axis=0)))
    assert gap == pytest.approx(bounds.folk_theorem_gap_bound(r_x, r_y, 25), abs=1e-9 * (1 + game.payoff_range))


@given(game=small_games(), frac=st.sampled_from([0.05, 0.3, 1.0]))
@settings(max_examples=15, deadline=None)
def test_qre_gap_is_within_both_bounds(game, frac):
    alpha = frac * game.payoff_range
    qre = gc.solve_qre(game, alpha)
    gap = float(gc.nash_gap(game, qre.row, qre.col))
    sharp = bounds.qre_nash_gap_entropy_bound(alpha, float(gc.entropy(qre.row)), float(gc.entropy(qre.col)))
    m, n = game.shape
    assert gap <= sharp + 1e-9 * game.payoff_range
    assert sharp <= bounds.qre_nash_gap_bound(alpha, m, n) + 1e-12


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: bounds.hedge_regret_bound(0, 2, 1.0, 0.1), ValueError, "T must be an integer >= 1"),
        (lambda: bounds.hedge_regret_bound(10.0, 2, 1.0, 0.1), TypeError, "T must be an integer"),
        (lambda: bounds.hedge_regret_bound(True, 2, 1.0, 0.1), TypeError, "T must be"),
        (lambda: bounds.hedge_regret_bound([1, 2.5], 2, 1.0, 0.1), ValueError, "T must hold integers"),
        (lambda: bounds.hedge_regret_bound(10, 0, 1.0, 0.1), ValueError, "n must be an integer >= 1"),
        (lambda: bounds.hedge_regret_bound(10, 2, -1.0, 0.1), ValueError, "B must be"),
        (lambda: bounds.hedge_regret_bound(10, 2, 1.0, 0.0), ValueError, "eta must be"),
        (lambda: bounds.hedge_regret_bound(10, 2, 1.0, 0.1, prior_min=0.9), ValueError, "prior_min"),
        (lambda: bounds.hedge_anytime_regret_bound(10, 2, 1.0, "1"), TypeError, "c must be"),
        (lambda: bounds.hedge_horizon_tuned_regret_bound(10, 2.0, 1.0), TypeError, "n must be"),
        (lambda: bounds.folk_theorem_gap_bound(np.nan, 1.0, 3), ValueError, "regret_row must be finite"),
        (lambda: bounds.folk_theorem_gap_bound([1.0, 2.0], [1.0, 2.0, 3.0], 3), ValueError, "broadcast"),
        (lambda: bounds.qre_nash_gap_bound(0.0, 2, 2), ValueError, "alpha must be"),
        (lambda: bounds.qre_nash_gap_entropy_bound(0.1, -1.0, 0.0), ValueError, "row_entropy"),
        (lambda: bounds.mmd_max_step(0.1, 0.0), ValueError, "lipschitz"),
        (lambda: bounds.mmd_divergence_bound(3, 0.1, 0.1, -1.0), ValueError, "initial_divergence"),
    ],
)
def test_bounds_validate_their_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()
