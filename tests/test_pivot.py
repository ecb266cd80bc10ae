"""solve_pivot: exact equilibria by support pivoting, checked against HiGHS (solve_lp), nashpy and
closed forms, from warm, pure and random starting bases."""

from __future__ import annotations

import nashpy
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import zero_sum_games

import gpo_core as gc
from gpo_core import pivot as pv

# Games whose LPs are degenerate (ties in the ratio tests, singular full-support blocks,
# several equilibria): the pivoting must still end at a certified equilibrium on its own.
DEGENERATE = {
    "rps": [[0, -1, 1], [1, 0, -1], [-1, 1, 0]],
    "zeros": np.zeros((4, 5)),
    "constant": np.ones((3, 3)),
    "identity": np.eye(6),
    "duplicate rows": [[1, -1], [1, -1], [-1, 1]],
    "pure saddle": [[4, 2, 5], [1, 0, 3], [6, 1, 0]],
    "1 x n": [[1, 2, -3]],
    "n x 1": [[1], [2], [-3]],
    "matching pennies": [[1, -1], [-1, 1]],
}


def _gap(game, sol):
    return float(gc.nash_gap(game, sol.row, sol.col))


@pytest.mark.parametrize("name", list(DEGENERATE))
@pytest.mark.parametrize("warm_steps", [0, None])
def test_degenerate_games_are_solved_by_pivoting(name, warm_steps):
    game = gc.MatrixGame(DEGENERATE[name])
    sol = gc.solve_pivot(game, warm_steps=warm_steps)
    assert str(sol.method) == "pivot"
    assert _gap(game, sol) <= 1e-12
    assert float(sol.value) == pytest.approx(float(gc.solve_lp(game).value), abs=1e-12)


def test_known_answer_by_indifference():
    # [[3,-1],[-2,1]]: row 3p - 2(1-p) = -p + (1-p) -> p = 3/7; column q = 2/7; value 1/7.
    sol = gc.solve_pivot(gc.MatrixGame([[3, -1], [-2, 1]]))
    np.testing.assert_allclose(sol.row, [3 / 7, 4 / 7], atol=1e-14)
    np.testing.assert_allclose(sol.col, [2 / 7, 5 / 7], atol=1e-14)
    assert float(sol.value) == pytest.approx(1 / 7, abs=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_random_games_match_highs_and_nashpy(seed):
    rng = np.random.default_rng(seed)
    m, n = (int(v) for v in rng.integers(2, 60, size=2))
    a = rng.normal(size=(m, n))  # continuous entries: a unique equilibrium with probability 1
    game = gc.MatrixGame(a)
    sol = gc.solve_pivot(game)
    assert str(sol.method) == "pivot"
    assert _gap(game, sol) <= 1e-12 * np.abs(a).max()
    lp = gc.solve_lp(game)
    # The equilibrium is unique: the two solvers must agree on the strategies, not only the value.
    np.testing.assert_allclose(sol.row, lp.row, atol=1e-7)
    np.testing.assert_allclose(sol.col, lp.col, atol=1e-7)
    assert float(sol.value) == pytest.approx(float(lp.value), abs=1e-9)
    if max(m, n) <= 8:  # nashpy's Lemke-Howson: an independent complementary-pivoting code
        x, y = nashpy.Game(a).lemke_howson(initial_dropped_label=0)
        assert float(sol.value) == pytest.approx(float(x @ a @ y), abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(game=zero_sum_games(max_actions=12), warm_steps=st.sampled_from([0, 3, None]))
def test_any_game_gets_a_certified_equilibrium(game, warm_steps):
    sol = gc.solve_pivot(game, warm_steps=warm_steps)
    scale = max(1.0, float(np.abs(game.payoff).max()))
    assert _gap(game, sol) <= 1e-9 * scale
    assert np.all(sol.row >= 0) and sol.row.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(sol.col >= 0) and sol.col.sum() == pytest.approx(1.0, abs=1e-12)
    assert float(sol.value) == pytest.approx(float(gc.solve_lp(game).value), abs=1e-7 * scale)


def test_integer_games_need_no_fallback():
    # Small-integer payoffs tie everywhere; the random perturbation must carry the pivoting
    # through them without handing over to HiGHS.
    rng = np.random.default_rng(1)
    for trial in range(150):
        m, n = (int(v) for v in rng.integers(1, 20, size=2))
        a = rng.integers(-2, 3, size=(m, n)).astype(float)
        if trial % 3 == 0:
            a = np.repeat(a, 2, axis=0)[:m]  # duplicated rows
        game = gc.MatrixGame(a)
        for warm_steps in (0, 10):
            sol = gc.solve_pivot(game, warm_steps=warm_steps)
            assert str(sol.method) == "pivot", (trial, warm_steps)
            assert _gap(game, sol) <= 1e-12


@pytest.mark.parametrize("seed", range(20))
def test_pivoting_from_a_random_basis(seed):
    # The engine alone, with no warm start: any equal-size support pair with a nonsingular
    # bordered matrix is a valid start of the self-dual parametric simplex.
    rng = np.random.default_rng(seed)
    m, n = (int(v) for v in rng.integers(1, 30, size=2))
    a = rng.uniform(-1, 1, size=(m, n))
    k = int(rng.integers(1, min(m, n) + 1))
    S = [int(i) for i in rng.choice(m, k, replace=False)]
    T = [int(j) for j in rng.choice(n, k, replace=False)]
    x, y, v, pivots = pv._pivot(a, S, T, rng, max_pivots=10_000)
    assert (a @ y).max() - (x @ a).min() <= 1e-12
    assert v == pytest.approx(float(gc.solve_lp(gc.MatrixGame(a)).value), abs=1e-12)


def test_warm_start_saves_pivots():
    game = gc.MatrixGame.random(80, seed=0)
    cold = gc.solve_pivot(game, warm_steps=0)
    warm = gc.solve_pivot(game)
    assert str(cold.method) == str(warm.method) == "pivot"
    assert int(warm.pivots) * 5 < int(cold.pivots)
    np.testing.assert_allclose(warm.row, cold.row, atol=1e-12)
    np.testing.assert_allclose(warm.col, cold.col, atol=1e-12)


def test_fallback_to_highs_is_reported():
    game = gc.MatrixGame.random(30, seed=4)
    sol = gc.solve_pivot(game, warm_steps=0, max_pivots=0)  # the pure start is not optimal
    assert str(sol.method) == "highs" and int(sol.pivots) == 0
    assert _gap(game, sol) <= 1e-7


def test_batched_equals_a_loop_and_input_is_not_mutated():
    game = gc.MatrixGame.random(7, 5, seed=2, batch_shape=(2, 3))
    before = game.payoff.copy()
    sol = gc.solve_pivot(game)
    np.testing.assert_array_equal(game.payoff, before)
    assert sol.row.shape == (2, 3, 7) and sol.col.shape == (2, 3, 5)
    assert sol.value.shape == sol.pivots.shape == sol.method.shape == (2, 3)
    for idx in np.ndindex(2, 3):
        single = gc.solve_pivot(gc.MatrixGame(game.payoff[idx]))
        np.testing.assert_array_equal(sol.row[idx], single.row)
        np.testing.assert_array_equal(sol.col[idx], single.col)
    np.testing.assert_allclose(gc.nash_gap(game, sol.row, sol.col), 0.0, atol=1e-12)


def test_scale_invariance():
    a = np.random.default_rng(3).normal(size=(9, 11))
    base = gc.solve_pivot(gc.MatrixGame(a))
    for c in (1e-6, 1e6):
        scaled = gc.solve_pivot(gc.MatrixGame(c * a))
        np.testing.assert_allclose(scaled.row, base.row, atol=1e-12)
        assert float(scaled.value) == pytest.approx(c * float(base.value), rel=1e-10)


def test_rank_one_update_is_in_place():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(5, 5))
    u, w = rng.normal(size=5), rng.normal(size=5)
    expected = target + 0.5 * np.outer(u, w)
    pv._rank_one(target, u, w, 0.5)
    np.testing.assert_allclose(target, expected, rtol=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"warm_steps": -1}, ValueError, "warm_steps"),
        ({"warm_steps": 2.5}, ValueError, "warm_steps"),
        ({"warm_steps": True}, ValueError, "warm_steps"),
        ({"tol": 0.0}, ValueError, "tol"),
        ({"max_pivots": -3}, ValueError, "max_pivots"),
        ({"seed": "a"}, TypeError, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        gc.solve_pivot(gc.MatrixGame([[1, 0], [0, 1]]), **kwargs)


def test_not_a_game_is_a_type_error():
    with pytest.raises(TypeError, match="game must be a gpo_core.MatrixGame or a payoff array"):
        gc.solve_pivot("matrix_rps")


def test_a_payoff_array_is_taken_as_a_game():
    sol = gc.solve_pivot([[2.0, -1.0], [-1.0, 1.0]])
    np.testing.assert_allclose(sol.row, [0.4, 0.6], atol=1e-12)


def test_float32_game_is_solved_in_float64():
    a = np.random.default_rng(5).uniform(-1, 1, size=(20, 20)).astype(np.float32)
    sol = gc.solve_pivot(gc.MatrixGame(a))
    assert sol.row.dtype == np.float64
    assert float(gc.nash_gap(gc.MatrixGame(a.astype(np.float64)), sol.row, sol.col)) <= 1e-12


def test_torch_game_is_solved_on_a_host_copy():
    import torch  # the [all] extra installs it: a failure, not a skip

    a = np.random.default_rng(6).normal(size=(6, 8))
    sol = gc.solve_pivot(gc.MatrixGame(torch.tensor(a)))
    ref = gc.solve_pivot(gc.MatrixGame(a))
    assert isinstance(sol.row, np.ndarray)
    np.testing.assert_array_equal(sol.row, ref.row)
    np.testing.assert_array_equal(sol.col, ref.col)


def test_openspiel_toy_games_are_solved_by_pivoting():
    # Kuhn poker and blotto in matrix form are degenerate (many equilibria, duplicate pure
    # strategies); blotto's warm bases are all singular, so this exercises the halving and the
    # Harris ratio test; OpenSpiel's own games are the reference the design names.
    from backends.cli import toy_games

    for game in toy_games():
        sol = gc.solve_pivot(game)
        assert str(sol.method) == "pivot", game.name
        assert _gap(game, sol) <= 1e-12 * max(1.0, float(np.abs(game.payoff).max())), game.name
        lp = gc.solve_lp(game)
        assert float(sol.value) == pytest.approx(float(lp.value), abs=1e-9), game.name


def test_default_warm_steps_grow_with_the_smaller_side():
    assert [pv.default_warm_steps(n, n) for n in (1, 100, 1000)] == [1, 40, 252]
    assert pv.default_warm_steps(5, 1000) == pv.default_warm_steps(5, 5)
