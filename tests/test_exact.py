"""Exact oracles: solve_lp against known answers and nashpy; solve_qre as MMD's fixed point."""

from __future__ import annotations

import nashpy
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import alphas, payoff_matrices, step_sizes, strategies, zero_sum_games

import gpo_core as gc


def _scale(game):
    return 1.0 + float(np.abs(game.payoff).max())


# ---------------------------------------------------------------------- solve_lp: known games
KNOWN = {
    # Rock-paper-scissors: uniform equilibrium, value 0.
    "rps": ([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], [1 / 3] * 3, [1 / 3] * 3, 0.0),
    # Biased RPS, OpenSpiel's matrix_brps (Bosansky et al. 2016; OpenSpiel lp_solver_test):
    # equilibrium (1/16, 10/16, 5/16) for both players, value 0.
    "brps": (
        [[0, -25, 50], [25, 0, -5], [-50, 5, 0]],
        [1 / 16, 10 / 16, 5 / 16],
        [1 / 16, 10 / 16, 5 / 16],
        0.0,
    ),
    # Matching pennies: uniform, value 0.
    "mp": ([[1, -1], [-1, 1]], [0.5, 0.5], [0.5, 0.5], 0.0),
    # [[3,-1],[-2,1]] by indifference: row 3p - 2(1-p) = -p + (1-p) -> p = 3/7;
    # column 3q - (1-q) = -2q + (1-q) -> q = 2/7; value 3(2/7) - 5/7 = 1/7.
    "2x2 mixed": ([[3, -1], [-2, 1]], [3 / 7, 4 / 7], [2 / 7, 5 / 7], 1 / 7),
    # Pure saddle at (row 0, col 1): 2 is the minimum of row 0 and the maximum of column 1.
    #        c0  c1  c2
    #   r0 [  4,  2,  5 ]
    #   r1 [  1,  0,  3 ]
    #   r2 [  6,  1,  0 ]
    "saddle": ([[4, 2, 5], [1, 0, 3], [6, 1, 0]], [1, 0, 0], [0, 1, 0], 2.0),
    # Non-square: column 2 is dominated for the minimiser, what remains is matching pennies.
    "2x3": ([[1, -1, 3], [-1, 1, 3]], [0.5, 0.5], [0.5, 0.5, 0.0], 0.0),
}


@pytest.mark.parametrize("name", list(KNOWN))
def test_solve_lp_known_answers(name):
    payoff, row, col, value = KNOWN[name]
    sol = gc.solve_lp(gc.MatrixGame(payoff))
    np.testing.assert_allclose(sol.row, row, atol=1e-9)
    np.testing.assert_allclose(sol.col, col, atol=1e-9)
    assert float(sol.value) == pytest.approx(value, abs=1e-9)
    assert sol.value.shape == ()


@pytest.mark.parametrize("seed", range(8))
def test_solve_lp_value_matches_nashpy(seed):
    rng = np.random.default_rng(seed)
    m, n = rng.integers(2, 5, size=2)
    a = rng.normal(size=(m, n))  # continuous entries: non-degenerate with probability 1
    game = gc.MatrixGame(a)
    sol = gc.solve_lp(game)
    # nashpy's vertex enumeration (all extreme equilibria) and Lemke-Howson (complementary
    # pivoting): algorithms independent of our LP. Every equilibrium of a zero-sum game has the
    # game's value. (Its support enumeration misses equilibria here: its 1e-16 tolerance.)
    equilibria = list(nashpy.Game(a).vertex_enumeration())
    equilibria.append(nashpy.Game(a).lemke_howson(initial_dropped_label=0))
    assert len(equilibria) >= 2
    for x, y in equilibria:
        x, y = np.clip(x, 0.0, None), np.clip(y, 0.0, None)  # vertex enumeration's -1e-17s
        assert float(sol.value) == pytest.approx(float(x @ a @ y), abs=1e-9)
        assert float(gc.nash_gap(game, x / x.sum(), y / y.sum())) <= 1e-9


def test_solve_lp_batched_equals_a_loop():
    game = gc.MatrixGame.random(3, 5, seed=2, batch_shape=(2, 2))
    sol = gc.solve_lp(game)
    assert sol.row.shape == (2, 2, 3) and sol.col.shape == (2, 2, 5) and sol.value.shape == (2, 2)
    for idx in np.ndindex(2, 2):
        single = gc.solve_lp(gc.MatrixGame(game.payoff[idx]))
        np.testing.assert_allclose(sol.value[idx], single.value, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sol.row[idx], single.row, atol=1e-12)
        np.testing.assert_allclose(sol.col[idx], single.col, atol=1e-12)
    np.testing.assert_allclose(gc.nash_gap(game, sol.row, sol.col), 0.0, atol=1e-9)


@given(game=zero_sum_games())
def test_solve_lp_answer_has_zero_gap_and_the_right_value(game):
    sol = gc.solve_lp(game)
    tol = 1e-7 * _scale(game)  # HiGHS' feasibility tolerance, relative to the payoff scale
    assert float(gc.nash_gap(game, sol.row, sol.col)) <= tol
    assert float(sol.value) == pytest.approx(float(sol.row @ game.payoff @ sol.col), abs=tol)
    for p in sol:
        assert np.all(np.isfinite(p))
    assert np.all(sol.row >= 0) and sol.row.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(sol.col >= 0) and sol.col.sum() == pytest.approx(1.0, abs=1e-12)


@given(
    game=zero_sum_games(max_abs=100.0),
    c=st.floats(-100, 100),
    k=st.floats(1e-2, 1e2),
)
def test_game_value_transforms(game, c, k):
    v = float(gc.solve_lp(game).value)
    tol = 1e-7 * (_scale(game) + abs(c))
    assert float(gc.solve_lp(gc.MatrixGame(game.payoff + c)).value) == pytest.approx(v + c, abs=tol)
    assert float(gc.solve_lp(gc.MatrixGame(k * game.payoff)).value) == pytest.approx(
        k * v, abs=k * tol
    )
    assert float(gc.solve_lp(game.swap()).value) == pytest.approx(-v, abs=tol)


@given(half=payoff_matrices(min_actions=1, max_actions=6, max_abs=1e3))
def test_antisymmetric_games_have_value_zero(half):
    n = min(half.shape)
    b = half[:n, :n]
    game = gc.MatrixGame(b - b.T)  # a symmetric zero-sum game: A = -A^T
    sol = gc.solve_lp(game)
    assert float(sol.value) == pytest.approx(0.0, abs=1e-7 * _scale(game))
    # The row player's equilibrium strategy is also one for the column player.
    assert float(gc.nash_gap(game, sol.row, sol.row)) <= 1e-7 * _scale(game)


# ------------------------------------------------------------------------------ solve_qre
@given(
    data=st.data(),
    game=zero_sum_games(max_actions=5, max_abs=10.0),
    alpha=alphas(0.05, 10.0),
    eta=step_sizes(1e-2, 10.0),
    uniform=st.booleans(),
)
def test_qre_is_a_fixed_point_of_mmd_with_zero_regularized_gap(data, game, alpha, eta, uniform):
    m, n = game.shape
    rho_x = None if uniform else 0.5 * data.draw(strategies(m), label="rho_x") + 0.5 / m
    rho_y = None if uniform else 0.5 * data.draw(strategies(n), label="rho_y") + 0.5 / n
    qre = gc.solve_qre(game, alpha, magnet_row=rho_x, magnet_col=rho_y)
    assert float(qre.residual) < 1e-10
    x, y = qre.row, qre.col
    # One MMD step from the QRE (each player against the other's QRE strategy) moves nothing.
    row_rule = gc.mmd(eta, alpha, magnet=rho_x)
    col_rule = gc.mmd(eta, alpha, magnet=rho_y)
    x_next = gc.softmax(row_rule.step(row_rule.init(np.log(x)), game.payoff @ y).logits)
    y_next = gc.softmax(col_rule.step(col_rule.init(np.log(y)), -(game.payoff.T @ x)).logits)
    assert np.max(np.abs(x_next - x)) < 1e-10
    assert np.max(np.abs(y_next - y)) < 1e-10
    gap = gc.regularized_gap(game, x, y, alpha, magnet_row=rho_x, magnet_col=rho_y)
    assert float(gap) <= 1e-9 * _scale(game)
    assert float(qre.value) == pytest.approx(float(x @ game.payoff @ y), abs=1e-12 * _scale(game))


@given(game=zero_sum_games(max_actions=5, max_abs=10.0), ratio=st.floats(1.0, 1e3))
def test_qre_approaches_nash_as_alpha_shrinks(game, ratio):
    # At the QRE the regularised gap is 0, so the Nash gap is at most alpha (log m + log n).
    alpha = max(float(np.abs(game.payoff).max()), 1e-3) / ratio  # |A| / alpha up to 1e3
    qre = gc.solve_qre(game, alpha)
    assert float(qre.residual) < 1e-10
    m, n = game.shape
    bound = alpha * (np.log(m) + np.log(n)) + 1e-9 * _scale(game)
    assert float(gc.nash_gap(game, qre.row, qre.col)) <= bound


@pytest.mark.parametrize(
    ("payoff", "alpha"),
    [
        # |A| / alpha = 5120: Newton from the magnet and MMD's alpha / L^2 steps both stalled
        # here (RuntimeError) before solve_qre traced the QRE down from a high temperature.
        ([[0.0, 10.0], [10.0, 10.0]], 0.001953125),
        # |A| ~ 1e-227: the MMD step alpha / |A|^2 divided by zero (ZeroDivisionError).
        ([[0.0, 2e-227], [-2e-227, 0.0]], 1.0),
    ],
)
def test_qre_regressions(payoff, alpha):
    game = gc.MatrixGame(payoff)
    qre = gc.solve_qre(game, alpha)
    assert float(qre.residual) < 1e-10
    a, x, y = game.payoff, qre.row, qre.col
    np.testing.assert_allclose(x, gc.softmax(np.log(0.5) + a @ y / alpha), atol=1e-10)
    np.testing.assert_allclose(y, gc.softmax(np.log(0.5) - a.T @ x / alpha), atol=1e-10)


@given(half=payoff_matrices(min_actions=1, max_actions=5, max_abs=10.0), alpha=alphas(0.05, 5.0))
def test_qre_of_a_symmetric_game_is_symmetric(half, alpha):
    n = min(half.shape)
    b = half[:n, :n]
    game = gc.MatrixGame(b - b.T)
    qre = gc.solve_qre(game, alpha)
    np.testing.assert_allclose(qre.row, qre.col, atol=1e-10)
    assert float(qre.value) == pytest.approx(0.0, abs=1e-10 * _scale(game))


@pytest.mark.parametrize("uniform", [True, False])
def test_mmd_last_iterate_converges_to_the_qre(uniform):
    # Sokota et al. 2023, Thm. 3.4: with eta <= alpha / L^2 the last iterate of MMD self-play
    # converges linearly to the alpha-regularised equilibrium (here computed by Newton).
    game = gc.MatrixGame.random(4, 3, seed=12)
    alpha = 0.5
    rho_x = None if uniform else np.array([0.1, 0.2, 0.3, 0.4])
    rho_y = None if uniform else np.array([0.6, 0.3, 0.1])
    eta = alpha / float(np.abs(game.payoff).max()) ** 2
    traj = gc.play(
        game, gc.mmd(eta, alpha, magnet=rho_x), gc.mmd(eta, alpha, magnet=rho_y), steps=400,
        x0=[0.7, 0.1, 0.1, 0.1], y0=[0.1, 0.1, 0.8], record_every=400,
    )
    qre = gc.solve_qre(game, alpha, magnet_row=rho_x, magnet_col=rho_y)
    np.testing.assert_allclose(traj.last.row, qre.row, atol=1e-9)
    np.testing.assert_allclose(traj.last.col, qre.col, atol=1e-9)


def test_qre_of_rps_is_uniform_and_rps_has_zero_nash_gap_there():
    rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    qre = gc.solve_qre(rps, 0.05)
    np.testing.assert_allclose(qre.row, [1 / 3] * 3, atol=1e-13)
    np.testing.assert_allclose(qre.col, [1 / 3] * 3, atol=1e-13)
    assert float(gc.nash_gap(rps, qre.row, qre.col)) < 1e-12


def test_qre_with_non_uniform_magnets_by_the_fixed_point_equations():
    # With A = 0 the QRE is the magnet itself: x = softmax(log rho_x + 0).
    game = gc.MatrixGame(np.zeros((3, 2)))
    qre = gc.solve_qre(game, 0.7, magnet_row=[0.2, 0.5, 0.3], magnet_col=[0.9, 0.1])
    np.testing.assert_allclose(qre.row, [0.2, 0.5, 0.3], atol=1e-14)
    np.testing.assert_allclose(qre.col, [0.9, 0.1], atol=1e-14)
    # A 1x2 game: the row player has one action, so y = softmax(log rho_y - A^T x / alpha).
    game = gc.MatrixGame([[1.0, -1.0]])
    qre = gc.solve_qre(game, 0.5, magnet_col=[0.25, 0.75])
    w = np.array([0.25 * np.exp(-2.0), 0.75 * np.exp(2.0)])
    np.testing.assert_allclose(qre.col, w / w.sum(), rtol=1e-12)
    np.testing.assert_array_equal(qre.row, [1.0])


def test_qre_batched_equals_a_loop():
    game = gc.MatrixGame.random(3, 4, seed=8, batch_shape=(3,))
    qre = gc.solve_qre(game, 0.2)
    assert qre.row.shape == (3, 3) and qre.residual.shape == (3,)
    for b in range(3):
        single = gc.solve_qre(gc.MatrixGame(game.payoff[b]), 0.2)
        np.testing.assert_allclose(qre.row[b], single.row, atol=1e-13)
        np.testing.assert_allclose(qre.col[b], single.col, atol=1e-13)


@pytest.mark.parametrize("alpha", [1.0, 0.01])
def test_qre_of_a_200x300_random_game(alpha):
    game = gc.MatrixGame.random(200, 300, seed=0)
    qre = gc.solve_qre(game, alpha)
    assert float(qre.residual) < 1e-10
    a, x, y = game.payoff, qre.row, qre.col
    np.testing.assert_allclose(x, gc.softmax(np.log(1 / 200) + a @ y / alpha), atol=1e-10)
    np.testing.assert_allclose(y, gc.softmax(np.log(1 / 300) - a.T @ x / alpha), atol=1e-10)
    assert float(gc.regularized_gap(game, x, y, alpha)) < 1e-9
    assert float(gc.nash_gap(game, x, y)) <= alpha * np.log(200 * 300)


def test_lp_of_a_200x300_random_game_has_zero_gap():
    game = gc.MatrixGame.random(200, 300, seed=0)
    sol = gc.solve_lp(game)
    assert float(gc.nash_gap(game, sol.row, sol.col)) < 1e-7


def test_qre_far_from_the_magnet_is_accepted_at_the_rounding_floor():
    """|A|/alpha = 1e5: rounding in A y / alpha bounds the reachable residual near eps*|A|/alpha
    (here ~1e-12, above the old absolute 1e-12 cutoff, which raised RuntimeError)."""
    game = gc.MatrixGame([[1, 9, -5], [7, 4, -10], [-2, 8, 1]])
    alpha = 1e-4
    qre = gc.solve_qre(game, alpha=alpha)
    floor = 64 * np.finfo(float).eps * 10 / alpha
    assert qre.residual <= floor
    a = game.payoff
    np.testing.assert_allclose(qre.row, gc.softmax(np.log(np.full(3, 1 / 3)) + a @ qre.col / alpha), atol=floor)
    np.testing.assert_allclose(qre.col, gc.softmax(np.log(np.full(3, 1 / 3)) - a.T @ qre.row / alpha), atol=floor)


@pytest.mark.parametrize("scale", [1e-300, 1e-12, 1.0, 1e20, 1e307, np.finfo(float).max])
def test_solve_lp_takes_payoffs_of_any_finite_size(scale):
    """HiGHS refuses entries above 1e15 ("Model error") and drops those below 1e-9: solve_lp
    solved a 1e-12 game at a wrong pure profile and failed on 1e20. The answer is scale-free."""
    base = np.array([[1.0, -1.0], [-1.0, 0.5]])  # equilibrium (3/7, 4/7) both, value -1/7
    sol = gc.solve_lp(gc.MatrixGame(base * scale))
    np.testing.assert_allclose(sol.row, [3 / 7, 4 / 7], atol=1e-9)
    np.testing.assert_allclose(sol.col, [3 / 7, 4 / 7], atol=1e-9)
    assert float(sol.value) == pytest.approx(-scale / 7, rel=1e-9)
