"""MatrixGame: construction, immutability, utilities, swap, random games, files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import profiles, zero_sum_games

import gpo_core as gc

# Rock-paper-scissors, row player's payoff (rows/cols: rock, paper, scissors).
RPS = [[0, -1, 1], [1, 0, -1], [-1, 1, 0]]


def test_shape_batch_shape_and_repr():
    game = gc.MatrixGame(np.zeros((2, 5, 3, 4)), name="z")
    assert game.shape == (3, 4)
    assert game.batch_shape == (2, 5)
    assert repr(game) == "MatrixGame('z', shape=(3, 4), batch_shape=(2, 5))"
    assert repr(gc.MatrixGame([[1.0]])) == "MatrixGame(shape=(1, 1))"


def test_payoff_is_a_float64_read_only_copy():
    source = np.array([[1, 2], [3, 4]], dtype=np.int64)
    game = gc.MatrixGame(source)
    assert game.payoff.dtype == np.float64
    source[0, 0] = 100  # editing the caller's array does not reach the game
    assert game.payoff[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        game.payoff[0, 0] = 5.0
    with pytest.raises(AttributeError):
        game.name = "other"  # frozen dataclass


def test_payoff_range():
    assert gc.MatrixGame([[3.0, -1.0], [0.5, 2.0]]).payoff_range == 4.0


@given(data=st.data(), game=zero_sum_games())
def test_utilities_and_value_match_the_matrix_products(data, game):
    x, y = data.draw(profiles(game))
    a = game.payoff
    u_row, u_col = game.utilities(x, y)
    np.testing.assert_allclose(u_row, a @ y, rtol=1e-12, atol=1e-12 * (1 + np.abs(a).max()))
    np.testing.assert_allclose(u_col, -(a.T @ x), rtol=1e-12, atol=1e-12 * (1 + np.abs(a).max()))
    value = game.value(x, y)
    np.testing.assert_allclose(value, x @ a @ y, rtol=1e-9, atol=1e-9 * (1 + np.abs(a).max()))
    # Zero-sum identity: <x, A y> + <y, -A^T x> = 0.
    assert float(x @ u_row + y @ u_col) == pytest.approx(0.0, abs=1e-9 * (1 + np.abs(a).max()))


def test_utilities_hand_computed():
    rps = gc.MatrixGame(RPS)
    u_row, u_col = rps.utilities([1, 0, 0], [0, 1, 0])  # rock vs paper
    np.testing.assert_array_equal(u_row, [-1, 0, 1])  # column 'paper' of A
    np.testing.assert_array_equal(u_col, [0, 1, -1])  # minus row 'rock' of A
    assert rps.value([1, 0, 0], [0, 1, 0]) == -1.0


def test_batched_utilities_equal_a_loop():
    game = gc.MatrixGame.random(3, 4, seed=3, batch_shape=(2, 2))
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=(2, 2))
    y = rng.dirichlet(np.ones(4), size=(2, 2))
    u_row, u_col = game.utilities(x, y)
    values = game.value(x, y)
    assert u_row.shape == (2, 2, 3) and u_col.shape == (2, 2, 4) and values.shape == (2, 2)
    for idx in np.ndindex(2, 2):
        single = gc.MatrixGame(game.payoff[idx])
        r, c = single.utilities(x[idx], y[idx])
        np.testing.assert_allclose(u_row[idx], r, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(u_col[idx], c, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(values[idx], single.value(x[idx], y[idx]), rtol=1e-13)


def test_swap_exchanges_the_roles():
    game = gc.MatrixGame([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], name="g")
    swapped = game.swap()
    np.testing.assert_array_equal(swapped.payoff, [[-1, -4], [-2, -5], [-3, -6]])
    assert swapped.shape == (3, 2)
    np.testing.assert_array_equal(swapped.swap().payoff, game.payoff)
    x, y = np.array([0.3, 0.7]), np.array([0.2, 0.5, 0.3])
    # The swapped game's row player is the old column player, and values are negated.
    assert swapped.value(y, x) == pytest.approx(-game.value(x, y), rel=1e-14)


def test_swap_of_a_batch():
    game = gc.MatrixGame.random(2, 3, seed=1, batch_shape=(4,))
    np.testing.assert_array_equal(game.swap().payoff, -np.swapaxes(game.payoff, -1, -2))


def test_random_is_reproducible_and_in_range():
    a = gc.MatrixGame.random(3, 5, seed=7, low=-2.0, high=3.0, batch_shape=(2,))
    b = gc.MatrixGame.random(3, 5, seed=7, low=-2.0, high=3.0, batch_shape=(2,))
    c = gc.MatrixGame.random(3, 5, seed=8, low=-2.0, high=3.0, batch_shape=(2,))
    assert a.payoff.shape == (2, 3, 5)
    np.testing.assert_array_equal(a.payoff, b.payoff)
    assert not np.array_equal(a.payoff, c.payoff)
    assert a.payoff.min() >= -2.0 and a.payoff.max() <= 3.0
    assert gc.MatrixGame.random(4, seed=0).shape == (4, 4)


def test_from_file_npy_and_csv_round_trip(tmp_path):
    payoff = np.array([[0.5, -1.25, 3.0], [2.0, 0.0, -7.5]])
    np.save(tmp_path / "game.npy", payoff)
    np.savetxt(tmp_path / "game.csv", payoff, delimiter=",")
    np.savetxt(tmp_path / "row.csv", payoff[:1], delimiter=",")  # a single row stays 2-D
    from_npy = gc.MatrixGame.from_file(tmp_path / "game.npy")
    from_csv = gc.MatrixGame.from_file(str(tmp_path / "game.csv"))
    np.testing.assert_array_equal(from_npy.payoff, payoff)
    np.testing.assert_array_equal(from_csv.payoff, payoff)
    assert from_npy.name == "game.npy"
    assert gc.MatrixGame.from_file(tmp_path / "row.csv").shape == (1, 3)


def test_from_openspiel_reads_biased_rps():
    # OpenSpiel's matrix_brps (Bosansky et al. 2016): RPS with the paper-rock and
    # scissors-paper wins scaled, [[0,-25,50],[25,0,-5],[-50,5,0]].
    game = gc.MatrixGame.from_openspiel("matrix_brps")
    np.testing.assert_array_equal(game.payoff, [[0, -25, 50], [25, 0, -5], [-50, 5, 0]])
    assert game.name == "matrix_brps"


SOLVERS_AND_PLAY = {
    "solve_lp": lambda g: gc.solve_lp(g).row,
    "solve_pivot": lambda g: gc.solve_pivot(g).row,
    "solve": lambda g: gc.solve(g, 1e-6).row,
    "solve_qre": lambda g: gc.solve_qre(g, 0.5).row,
    "nash_gap": lambda g: gc.nash_gap(g, [0.6, 0.4], [0.3, 0.7]),
    "regularized_gap": lambda g: gc.regularized_gap(g, [0.6, 0.4], [0.3, 0.7], 0.5),
    "best_response": lambda g: gc.best_response(g, [0.3, 0.7]).value,
    "play": lambda g: gc.play(g, gc.hedge(0.1), steps=20).average.row,
}


def _as_numpy(v):
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


@pytest.mark.parametrize("name", sorted(SOLVERS_AND_PLAY))
@pytest.mark.parametrize("kind", ["numpy", "list", "torch"])
def test_every_solver_and_play_take_a_payoff_array(name, kind):
    """gc.solve(numpy_array) raised 'game must be a gpo_core.MatrixGame': an array or a tensor
    is taken wherever a game is, as MatrixGame(it), with the same answer."""
    import torch

    payoff = np.array([[2.0, -1.0], [-1.0, 1.0]])
    given = {"numpy": payoff, "list": payoff.tolist(), "torch": torch.tensor(payoff)}[kind]
    fn = SOLVERS_AND_PLAY[name]
    expected = _as_numpy(fn(gc.MatrixGame(given)))
    np.testing.assert_allclose(_as_numpy(fn(given)), expected, rtol=1e-12, atol=1e-12)
    if kind == "numpy":  # and the caller's array is left alone
        np.testing.assert_array_equal(given, [[2.0, -1.0], [-1.0, 1.0]])


def test_as_game_refuses_what_is_not_a_payoff():
    from gpo_core.games import as_game

    with pytest.raises(TypeError, match=r"got 'kuhn_poker'; load a named game with "
                       r"gpo_core\.MatrixGame\.from_openspiel\(name\)"):
        as_game("kuhn_poker")
    with pytest.raises(TypeError, match=r"a numpy array, a torch tensor or nested lists\), got 3"):
        as_game(3)
    game = gc.MatrixGame(RPS)
    assert as_game(game) is game

