"""Reference checks against OpenSpiel (a test dependency, never skipped).

* ``solve_lp``'s value equals OpenSpiel's ``lp_solver.solve_zero_sum_matrix_game`` on every
  zero-sum normal-form game OpenSpiel registers, plus Blotto and Kuhn poker.
* ``nash_gap`` equals OpenSpiel's ``exploitability.nash_conv`` (the sum of both players'
  best-response gains) on the turn-based conversion of the game, for arbitrary profiles.
* General-sum OpenSpiel games are refused by ``MatrixGame.from_openspiel``.
"""

from __future__ import annotations

import re

import numpy as np
import pyspiel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import exploitability, lp_solver
from strategies import strategies

import gpo_core as gc

_ZERO_SUM = pyspiel.GameType.Utility.ZERO_SUM


def _matrix_names(zero_sum: bool) -> list[str]:
    """OpenSpiel's registered normal-form games ("matrix_*"), split by OpenSpiel's own label."""
    names = [name for name in pyspiel.registered_names() if name.startswith("matrix_")]
    return sorted(
        name
        for name in names
        if (pyspiel.load_game(name).get_type().utility == _ZERO_SUM) == zero_sum
    )


ZERO_SUM_MATRIX_GAMES = _matrix_names(zero_sum=True)
GENERAL_SUM_MATRIX_GAMES = _matrix_names(zero_sum=False)


def test_the_registry_lists_the_known_zero_sum_matrix_games():
    assert {"matrix_rps", "matrix_rpsw", "matrix_brps", "matrix_mp"} <= set(ZERO_SUM_MATRIX_GAMES)
    # Shapley's game is general-sum in OpenSpiel; it must land on one side of the split.
    assert "matrix_shapleys_game" in ZERO_SUM_MATRIX_GAMES + GENERAL_SUM_MATRIX_GAMES
    assert {"matrix_pd", "matrix_bos"} <= set(GENERAL_SUM_MATRIX_GAMES)


def _openspiel_matrix(name: str):
    """The game as a ``pyspiel.MatrixGame``, built by OpenSpiel alone (for lp_solver)."""
    game = pyspiel.load_game(name)
    if isinstance(game, pyspiel.MatrixGame):
        return game
    if game.get_type().dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS:
        game = pyspiel.convert_to_turn_based(game)  # blotto
    return pyspiel.extensive_to_matrix_game(game)


# Known values: every symmetric game has value 0; Kuhn poker's first player loses 1/18 per hand
# (Kuhn 1950; OpenSpiel's cfr/lp tests).
KNOWN_VALUES = {
    "matrix_rps": 0.0,
    "matrix_rpsw": 0.0,
    "matrix_brps": 0.0,
    "matrix_mp": 0.0,
    "blotto": 0.0,
    "kuhn_poker": -1.0 / 18.0,
}
LP_GAMES = ZERO_SUM_MATRIX_GAMES + ["blotto", "kuhn_poker"]


@pytest.mark.parametrize("name", LP_GAMES)
def test_solve_lp_value_equals_openspiel_lp_solver(name):
    ours = gc.MatrixGame.from_openspiel(name)
    theirs = _openspiel_matrix(name)
    p0, p1, v0, v1 = lp_solver.solve_zero_sum_matrix_game(theirs)
    sol = gc.solve_lp(ours)
    # OpenSpiel's LP goes through cvxpy/ECOS: about 1e-8 accurate.
    assert float(sol.value) == pytest.approx(float(v0), abs=1e-7)
    assert float(v1) == pytest.approx(-float(v0), abs=1e-7)
    if name in KNOWN_VALUES:
        assert float(sol.value) == pytest.approx(KNOWN_VALUES[name], abs=1e-9)
    # OpenSpiel's equilibrium is (nearly) an equilibrium of our game: the action orders agree.
    x = np.clip(np.asarray(p0, dtype=float), 0.0, None)
    y = np.clip(np.asarray(p1, dtype=float), 0.0, None)
    assert float(gc.nash_gap(ours, x / x.sum(), y / y.sum())) < 1e-6


def test_biased_rps_equilibrium_matches_openspiel_and_the_literature():
    # (1/16, 10/16, 5/16): Bosansky et al. 2016, as in OpenSpiel's lp_solver_test.
    sol = gc.solve_lp(gc.MatrixGame.from_openspiel("matrix_brps"))
    p0, p1, _, _ = lp_solver.solve_zero_sum_matrix_game(pyspiel.load_matrix_game("matrix_brps"))
    np.testing.assert_allclose(sol.row, [1 / 16, 10 / 16, 5 / 16], atol=1e-9)
    np.testing.assert_allclose(sol.row, p0, atol=1e-6)
    np.testing.assert_allclose(sol.col, p1, atol=1e-6)


# ------------------------------------------------------------------ nash_gap == nash_conv
def _nash_conv(turn_based, x: np.ndarray, y: np.ndarray) -> float:
    """OpenSpiel's NashConv of the profile (x, y) on a turn-based one-shot game."""
    policy = policy_lib.TabularPolicy(turn_based)
    for player, probs in ((0, x), (1, y)):
        (key,) = policy.states_per_player[player]  # one information state per player
        row = policy.state_lookup[key]
        assert policy.action_probability_array[row].shape == probs.shape
        policy.action_probability_array[row] = probs
    return float(exploitability.nash_conv(turn_based, policy))


@pytest.mark.parametrize("name", ZERO_SUM_MATRIX_GAMES)
@settings(max_examples=20)
@given(data=st.data())
def test_nash_gap_equals_nash_conv_on_matrix_games(name, data):
    game = gc.MatrixGame.from_openspiel(name)
    m, n = game.shape
    x = data.draw(strategies(m), label="x")
    y = data.draw(strategies(n), label="y")
    turn_based = pyspiel.convert_to_turn_based(pyspiel.load_game(name))
    scale = 1.0 + float(np.abs(game.payoff).max())
    assert float(gc.nash_gap(game, x, y)) == pytest.approx(
        _nash_conv(turn_based, x, y), abs=1e-10 * scale
    )


def _profiles(m: int, n: int, seed: int):
    """Seeded profiles: interior (Dirichlet), sparse faces, and pure (vertex) strategies."""
    rng = np.random.default_rng(seed)
    out = [(rng.dirichlet(np.ones(m)), rng.dirichlet(np.ones(n))) for _ in range(2)]
    face_x = np.where(rng.random(m) < 0.2, rng.random(m), 0.0)
    face_x[rng.integers(m)] += 1.0
    face_y = np.where(rng.random(n) < 0.2, rng.random(n), 0.0)
    face_y[rng.integers(n)] += 1.0
    out.append((face_x / face_x.sum(), face_y / face_y.sum()))
    out.append((np.eye(m)[rng.integers(m)], np.eye(n)[rng.integers(n)]))
    return out


def test_nash_gap_equals_nash_conv_on_blotto():
    # Blotto's own turn-based conversion (not a round trip through our payoff matrix), so this
    # also checks MatrixGame.from_openspiel's enumeration of the simultaneous game's root.
    game = gc.MatrixGame.from_openspiel("blotto")
    turn_based = pyspiel.convert_to_turn_based(pyspiel.load_game("blotto"))
    for x, y in _profiles(*game.shape, seed=0):
        assert float(gc.nash_gap(game, x, y)) == pytest.approx(
            _nash_conv(turn_based, x, y), abs=1e-10
        )


def test_nash_gap_equals_nash_conv_on_kuhn_poker_matrix_form():
    # Kuhn poker's normal form has pure strategies (64 x 64): NashConv on its matrix game's
    # turn-based conversion, for mixtures over those pure strategies.
    game = gc.MatrixGame.from_openspiel("kuhn_poker")
    assert game.shape == (64, 64)
    kuhn_matrix = pyspiel.extensive_to_matrix_game(pyspiel.load_game("kuhn_poker"))
    np.testing.assert_array_equal(game.payoff, np.asarray(kuhn_matrix.row_utilities()))
    turn_based = pyspiel.convert_to_turn_based(kuhn_matrix)
    for x, y in _profiles(*game.shape, seed=1):
        assert float(gc.nash_gap(game, x, y)) == pytest.approx(
            _nash_conv(turn_based, x, y), abs=1e-10
        )
    # At our LP solution both measures vanish.
    sol = gc.solve_lp(game)
    assert _nash_conv(turn_based, sol.row, sol.col) < 1e-7


# ---------------------------------------------------------------------------- conversions
@pytest.mark.parametrize("name", GENERAL_SUM_MATRIX_GAMES)
def test_general_sum_games_are_refused(name):
    with pytest.raises(ValueError, match=rf"game '{name}' is not zero-sum"):
        gc.MatrixGame.from_openspiel(name)


def test_from_openspiel_accepts_a_loaded_game_and_reads_the_row_player_payoff():
    loaded = pyspiel.load_game("matrix_rpsw")
    game = gc.MatrixGame.from_openspiel(loaded)
    np.testing.assert_array_equal(game.payoff, np.asarray(loaded.row_utilities()))
    assert game.shape == (4, 4) and game.name == "matrix_rpsw"


# ---------------------------------------------------------------------- size and name guards
@pytest.mark.parametrize("name", ["tic_tac_toe", "leduc_poker", "liars_dice"])
def test_huge_normal_forms_are_refused_before_they_are_built(name):
    """tic_tac_toe's normal form was built until the kernel killed it at 24 GB."""
    with pytest.raises(
        ValueError,
        match=rf"game '{name}' is too big to convert to a matrix: its normal form has at least "
        r"[0-9.e+]+ entries \(at least [0-9,]+ x [0-9,]+ pure strategies\), over the limit of "
        r"max_entries=10,000,000 .*raise the limit",
    ):
        gc.MatrixGame.from_openspiel(name)


def test_max_entries_is_counted_exactly_and_can_be_raised():
    # Kuhn poker: 64 x 64 pure strategies (6 information states of 2 actions each per player)
    with pytest.raises(ValueError, match=r"at least 64 x 64 pure strategies.*max_entries=4,095"):
        gc.MatrixGame.from_openspiel("kuhn_poker", max_entries=4095)
    assert gc.MatrixGame.from_openspiel("kuhn_poker", max_entries=4096).shape == (64, 64)
    with pytest.raises(ValueError, match=r"'blotto' .*66 x 66 pure strategies.*max_entries=100"):
        gc.MatrixGame.from_openspiel("blotto", max_entries=100)
    with pytest.raises(ValueError, match=r"max_entries must be an integer >= 1, got 0"):
        gc.MatrixGame.from_openspiel("kuhn_poker", max_entries=0)


def test_an_unknown_name_gets_one_line_with_the_closest_names():
    with pytest.raises(ValueError) as info:
        gc.MatrixGame.from_openspiel("kuhn_pokr")
    message = str(info.value)
    assert "\n" not in message and len(message) < 300  # not OpenSpiel's list of every game
    assert re.search(r"game 'kuhn_pokr' is not a game OpenSpiel can load \(no game of that "
                     r"name\); closest names: kuhn_poker, .*list them with: python -c", message)


def test_a_bad_parameter_is_named_in_one_line():
    with pytest.raises(ValueError, match=r"game 'blotto\(coins=abc\)' is not a game OpenSpiel "
                       r"can load \(.*coins.*\); check its parameters, e\.g\. blotto\(\)"):
        gc.MatrixGame.from_openspiel("blotto(coins=abc)")
