"""nash_gap, regularized_gap, external_regret, best_response: identities from the math."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from strategies import alphas, profiles, strategies, zero_sum_games

import gpo_core as gc

RPS = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], name="rps")


def _scale(game):
    return 1.0 + float(np.abs(game.payoff).max())


# ------------------------------------------------------------------------------- nash_gap
@given(data=st.data(), game=zero_sum_games())
def test_nash_gap_bounds_every_unilateral_deviation(data, game):
    x, y = data.draw(profiles(game), label="profile")
    dx, dy = data.draw(profiles(game), label="deviations")
    gap = float(gc.nash_gap(game, x, y))
    a = game.payoff
    assert gap >= 0.0
    # gap = max_x' x'Ay - min_y' xAy' >= dx A y - x A dy for any dx, dy.
    assert dx @ a @ y - x @ a @ dy <= gap + 1e-12 * _scale(game)
    # ... with equality at the best responses (pure strategies suffice).
    br_row = gc.best_response(game, y, player="row")
    br_col = gc.best_response(game, x, player="col")
    assert gap == pytest.approx(
        float(br_row.value - br_col.value), rel=1e-12, abs=1e-12 * _scale(game)
    )


@given(
    data=st.data(),
    game=zero_sum_games(max_abs=100.0),
    c=st.floats(-1e3, 1e3, allow_subnormal=False),
    k=st.floats(1e-3, 1e3),
)
def test_nash_gap_shift_scale_and_swap(data, game, c, k):
    x, y = data.draw(profiles(game))
    gap = float(gc.nash_gap(game, x, y))
    tol = 1e-10 * (_scale(game) + abs(c))
    # Adding a constant to every payoff changes nothing.
    assert float(gc.nash_gap(gc.MatrixGame(game.payoff + c), x, y)) == pytest.approx(gap, abs=tol)
    # Scaling the payoffs by k > 0 scales the gap by k.
    assert float(gc.nash_gap(gc.MatrixGame(k * game.payoff), x, y)) == pytest.approx(
        k * gap, rel=1e-10, abs=k * tol
    )
    # Swapping the players' roles (-A^T, with x and y exchanged) changes nothing.
    assert float(gc.nash_gap(game.swap(), y, x)) == pytest.approx(gap, abs=tol)


def test_nash_gap_known_values():
    third = [1 / 3] * 3
    assert gc.nash_gap(RPS, third, third) == 0.0
    # Rock vs rock: the row player gains 1 by switching to paper, the column player 1 too.
    assert gc.nash_gap(RPS, [1, 0, 0], [1, 0, 0]) == 2.0
    # Batched: one gap per game.
    batch = gc.MatrixGame(np.stack([RPS.payoff, 2 * RPS.payoff]))
    np.testing.assert_array_equal(gc.nash_gap(batch, [1, 0, 0], [1, 0, 0]), [2.0, 4.0])


# ------------------------------------------------------------------------ regularized_gap
def _regularised_objective(a, x, y, alpha, rho_x, rho_y):
    """f(x, y) = x^T A y - alpha KL(x||rho_x) + alpha KL(y||rho_y) (scipy's rel_entr)."""
    kl_x = np.sum(scipy.special.rel_entr(x, rho_x))
    kl_y = np.sum(scipy.special.rel_entr(y, rho_y))
    return x @ a @ y - alpha * kl_x + alpha * kl_y


@given(data=st.data(), game=zero_sum_games(max_abs=10.0), alpha=alphas())
def test_regularized_gap_by_its_definition(data, game, alpha):
    m, n = game.shape
    a = game.payoff
    x, y = data.draw(profiles(game), label="profile")
    rho_x = 0.5 * data.draw(strategies(m), label="rho_x") + 0.5 / m
    rho_y = 0.5 * data.draw(strategies(n), label="rho_y") + 0.5 / n
    got = float(gc.regularized_gap(game, x, y, alpha, magnet_row=rho_x, magnet_col=rho_y))
    # The regularised best responses are Gibbs distributions (computed here with scipy).
    bx = scipy.special.softmax(np.log(rho_x) + a @ y / alpha)
    by = scipy.special.softmax(np.log(rho_y) - a.T @ x / alpha)
    f = _regularised_objective
    want = f(a, bx, y, alpha, rho_x, rho_y) - f(a, x, by, alpha, rho_x, rho_y)
    tol = 1e-9 * (_scale(game) + alpha * 10)
    assert got == pytest.approx(want, abs=tol)
    assert got >= 0.0
    # The Gibbs responses are the best: any other deviation gains less.
    dx, dy = data.draw(profiles(game), label="deviations")
    assert f(a, dx, y, alpha, rho_x, rho_y) - f(a, x, dy, alpha, rho_x, rho_y) <= got + tol


@given(data=st.data(), game=zero_sum_games(max_abs=10.0), alpha=alphas(1e-3, 1.0))
def test_regularized_gap_is_close_to_nash_gap_for_small_alpha(data, game, alpha):
    # With uniform magnets, |reg_gap - nash_gap| <= alpha (log m + log n): each log-sum-exp is
    # within alpha log(size) of the max, and each KL to uniform lies in [0, log(size)].
    x, y = data.draw(profiles(game))
    m, n = game.shape
    diff = float(gc.regularized_gap(game, x, y, alpha) - gc.nash_gap(game, x, y))
    assert abs(diff) <= alpha * (np.log(m) + np.log(n)) + 1e-9 * _scale(game)


def test_regularized_gap_is_zero_at_the_uniform_profile_of_rps():
    third = [1 / 3] * 3
    assert float(gc.regularized_gap(RPS, third, third, 0.3)) == pytest.approx(0.0, abs=1e-15)
    assert float(gc.regularized_gap(RPS, [1, 0, 0], third, 0.3)) > 0.1


# ------------------------------------------------------------------------ external_regret
def test_external_regret_by_hand():
    u = [[1.0, 0.0, 2.0], [3.0, -1.0, 0.0]]
    x = [[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    # Best fixed action: action 0 with 1 + 3 = 4. Realised: 0.5 + 0 = 0.5. Regret 3.5.
    assert float(gc.external_regret(u, x)) == 3.5


@given(data=st.data(), n=st.integers(1, 5), steps=st.integers(1, 6))
def test_external_regret_matches_a_loop(data, n, steps):
    row = st.lists(st.floats(-10, 10), min_size=n, max_size=n)
    u = np.array([data.draw(row) for _ in range(steps)])
    x = np.array([data.draw(strategies(n)) for _ in range(steps)])
    best = max(sum(u[t, i] for t in range(steps)) for i in range(n))
    realised = sum(float(u[t] @ x[t]) for t in range(steps))
    got = float(gc.external_regret(u, x))
    assert got == pytest.approx(best - realised, abs=1e-9)
    # Adding a per-step constant to every action's utility changes nothing.
    shifted = u + np.arange(steps)[:, None]
    assert float(gc.external_regret(shifted, x)) == pytest.approx(got, abs=1e-9)
    # Always playing an action that is best at every step has zero regret.
    constant = np.tile(u[0], (steps, 1))
    best_vertex = np.tile(np.eye(n)[np.argmax(u[0])], (steps, 1))
    assert float(gc.external_regret(constant, best_vertex)) == pytest.approx(0.0, abs=1e-12)


def test_external_regret_batched():
    u = np.random.default_rng(0).normal(size=(5, 2, 3))
    x = np.full((5, 2, 3), 1 / 3)
    got = gc.external_regret(u, x)
    assert got.shape == (2,)
    for b in range(2):
        assert got[b] == pytest.approx(float(gc.external_regret(u[:, b], x[:, b])), rel=1e-14)


# -------------------------------------------------------------------------- best_response
@given(data=st.data(), game=zero_sum_games())
def test_best_response_is_a_best_pure_strategy(data, game):
    x, y = data.draw(profiles(game))
    dx, dy = data.draw(profiles(game), label="others")
    a = game.payoff
    tol = 1e-12 * _scale(game)
    row = gc.best_response(game, y, player="row")
    col = gc.best_response(game, x, player="col")
    m, n = game.shape
    np.testing.assert_array_equal(row.strategy, np.eye(m)[row.action])
    np.testing.assert_array_equal(col.strategy, np.eye(n)[col.action])
    assert float(row.value) == pytest.approx(float(a[row.action] @ y), abs=tol)
    assert float(col.value) == pytest.approx(float(x @ a[:, col.action]), abs=tol)
    assert dx @ a @ y <= row.value + tol  # no mixed strategy does better for the maximiser
    assert x @ a @ dy >= col.value - tol  # ... nor for the minimiser


def test_best_response_by_hand_and_batched():
    br = gc.best_response(RPS, [1, 0, 0], player="row")  # paper beats rock
    assert int(br.action) == 1 and float(br.value) == 1.0
    br = gc.best_response(RPS, [1, 0, 0], player="col")  # the column player also answers paper
    assert int(br.action) == 1 and float(br.value) == -1.0
    batch = gc.MatrixGame(np.stack([RPS.payoff, -RPS.payoff]))
    br = gc.best_response(batch, [1, 0, 0], player="row")
    np.testing.assert_array_equal(br.action, [1, 2])
    np.testing.assert_array_equal(br.strategy, [[0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(br.value, [1.0, 1.0])


def test_diagnostics_do_not_mutate_their_inputs():
    x = np.array([0.2, 0.3, 0.5])
    y = np.array([0.6, 0.2, 0.2])
    x.setflags(write=False)
    y.setflags(write=False)
    gc.nash_gap(RPS, x, y)
    gc.regularized_gap(RPS, x, y, 0.1, magnet_row=x, magnet_col=y)
    gc.best_response(RPS, y)
    gc.external_regret(np.stack([x, y]), np.stack([y, x]))
    np.testing.assert_array_equal(x, [0.2, 0.3, 0.5])
    np.testing.assert_array_equal(y, [0.6, 0.2, 0.2])


@pytest.mark.parametrize(
    "call",
    [
        lambda g, x, y: gc.nash_gap(g, x, y),
        lambda g, x, y: gc.regularized_gap(g, x, y, 0.1),
        lambda g, x, y: g.utilities(x, y),
        lambda g, x, y: g.value(x, y),
    ],
    ids=["nash_gap", "regularized_gap", "utilities", "value"],
)
def test_profiles_must_fit_the_games_batch_as_in_play(call):
    """A (2, 3) profile on one 3x3 game is refused, as play refuses that x0 (nash_gap returned
    [0, 0] for it); one strategy or one per game of a batch is fine."""
    rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    two = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"x must broadcast to the game's batch: shape \(3,\)"):
        call(rps, two, [1 / 3] * 3)
    with pytest.raises(ValueError, match=r"y must broadcast to the game's batch: shape \(3,\)"):
        call(rps, [1 / 3] * 3, two)
    with pytest.raises(ValueError, match=r"x0 must broadcast to the game's batch: shape \(3,\)"):
        gc.play(rps, gc.hedge(0.1), steps=2, x0=two)
    batch = gc.MatrixGame(np.stack([rps.payoff, 2 * rps.payoff]))
    call(batch, two, two)  # one strategy per game
    call(batch, [1 / 3] * 3, two)  # one for every game
    with pytest.raises(ValueError, match=r"x must broadcast to the game's batch: shape \(2, 3\)"):
        call(batch, np.full((3, 3), 1 / 3), two)


def test_best_response_opponent_must_fit_the_games_batch():
    rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    with pytest.raises(ValueError, match=r"opponent must broadcast to the game's batch"):
        gc.best_response(rps, np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"opponent must broadcast to the game's batch"):
        gc.best_response(rps, np.full((2, 3), 1 / 3), player="col")


def test_regularized_gap_magnets_must_fit_the_games_batch():
    rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    third = [1 / 3] * 3
    with pytest.raises(ValueError, match=r"magnet_row must broadcast to the game's batch"):
        gc.regularized_gap(rps, third, third, 0.1, magnet_row=np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"magnet_col must broadcast to the game's batch"):
        gc.regularized_gap(rps, third, third, 0.1, magnet_col=np.full((2, 3), 1 / 3))
