"""Every public entry point rejects bad input with a TypeError/ValueError naming the argument."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gpo_core as gc
from gpo_core.schedules import Constant, InverseSqrt

RPS = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
THIRD = [1 / 3] * 3


# ------------------------------------------------------------------------------ MatrixGame
@pytest.mark.parametrize(
    ("payoff", "error", "match"),
    [
        ([[1.0, np.nan], [0.0, 1.0]], ValueError, r"payoff must be finite"),
        ([[1.0, np.inf]], ValueError, r"payoff must be finite"),
        ([[1.0, -np.inf]], ValueError, r"payoff must be finite"),
        ("abc", TypeError, r"payoff must be a real numeric array, got the string 'abc'"),
        ([["a", "b"]], TypeError, r"payoff must hold real numbers .*dtype <U1"),
        ([[True, False]], TypeError, r"payoff must hold real numbers .*dtype bool"),
        ([[1 + 2j, 0]], TypeError, r"payoff must hold real numbers .*dtype complex"),
        ([[None, 1.0]], TypeError, r"payoff must hold real numbers .*dtype object"),
        ([[1.0, 2.0], [3.0]], TypeError, r"payoff must be convertible to a numeric numpy array"),
        (
            [1.0, 2.0, 3.0],
            ValueError,
            r"payoff must have at least 2 dimension\(s\), got shape \(3,\)",
        ),
        (5.0, ValueError, r"payoff must have at least 2 dimension\(s\), got shape \(\)"),
        (
            np.zeros((0, 3)),
            ValueError,
            r"payoff must have at least one row and one column.*\(0, 3\)",
        ),
        (
            np.zeros((2, 0)),
            ValueError,
            r"payoff must have at least one row and one column.*\(2, 0\)",
        ),
        (np.zeros((0, 2, 2)), ValueError, r"payoff must have at least one row and one column"),
    ],
)
def test_bad_payoffs(payoff, error, match):
    with pytest.raises(error, match=match):
        gc.MatrixGame(payoff)


def test_bad_name():
    with pytest.raises(TypeError, match=r"name must be a str, got 3"):
        gc.MatrixGame([[1.0]], name=3)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (
            [0.5, 0.5],
            THIRD,
            ValueError,
            r"x must have 3 entries on its last axis .*got shape \(2,\)",
        ),
        (
            THIRD,
            [0.25] * 4,
            ValueError,
            r"y must have 3 entries on its last axis .*got shape \(4,\)",
        ),
        ([0.5, 0.5, 0.5], THIRD, ValueError, r"x must sum to 1 .*got sums 1\.5; divide by the sum"),
        (THIRD, [1.2, -0.1, -0.1], ValueError, r"y must be a probability vector, got negative"),
        ([np.nan, 0.5, 0.5], THIRD, ValueError, r"x must be finite"),
        (0.5, THIRD, ValueError, r"x must have at least 1 dimension"),
        ("abc", THIRD, TypeError, r"x must be a real numeric array"),
    ],
)
def test_bad_strategies(x, y, error, match):
    for call in (RPS.utilities, RPS.value, lambda a, b: gc.nash_gap(RPS, a, b)):
        with pytest.raises(error, match=match):
            call(x, y)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(m=0), ValueError, r"m must be an integer >= 1, got 0"),
        (dict(m=2.5), TypeError, r"m must be an integer >= 1, got 2\.5"),
        (dict(m=2, n=-1), ValueError, r"n must be an integer >= 1, got -1"),
        (dict(m=True), TypeError, r"m must be an integer >= 1, got True"),
        (
            dict(m=2, low=1.0, high=1.0),
            ValueError,
            r"need finite low < high, got low=1\.0, high=1\.0",
        ),
        (dict(m=2, low=-np.inf), ValueError, r"need finite low < high, got low=-inf"),
    ],
)
def test_bad_random_game_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gc.MatrixGame.random(**kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"path .*missing\.npy' does not exist"):
        gc.MatrixGame.from_file(tmp_path / "missing.npy")
    (tmp_path / "game.txt").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"path .*game\.txt' must end in \.npy or \.csv"):
        gc.MatrixGame.from_file(tmp_path / "game.txt")
    (tmp_path / "nan.csv").write_text("1,nan\n3,4\n")
    with pytest.raises(ValueError, match=r"payoff must be finite"):
        gc.MatrixGame.from_file(tmp_path / "nan.csv")
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(ValueError, match=r"dir\.npy' is a folder; give a \.npy or \.csv"):
        gc.MatrixGame.from_file(tmp_path / "dir.npy")
    for junk, text in (("junk.npy", "not numpy"), ("words.csv", "a,b\nc,d\n")):
        (tmp_path / junk).write_text(text)
        with pytest.raises(ValueError, match=rf"{junk}' is not a readable payoff file"):
            gc.MatrixGame.from_file(tmp_path / junk)


def test_bad_openspiel_games():
    with pytest.raises(ValueError, match=r"game 'no_such_game' is not a game OpenSpiel can load"):
        gc.MatrixGame.from_openspiel("no_such_game")
    with pytest.raises(
        TypeError,
        match=r"game must be an OpenSpiel game name or pyspiel\.Game, got 42",
    ):
        gc.MatrixGame.from_openspiel(42)
    with pytest.raises(ValueError, match=r"game 'kuhn_poker' has 3 players; need exactly 2"):
        gc.MatrixGame.from_openspiel("kuhn_poker(players=3)")
    # General-sum: the prisoner's dilemma.
    with pytest.raises(
        ValueError,
        match=r"game 'matrix_pd' is not zero-sum .*only models zero-sum",
    ):
        gc.MatrixGame.from_openspiel("matrix_pd")


# ------------------------------------------------------------------------- rule factories
@pytest.mark.parametrize("factory", [gc.hedge, gc.mmd, gc.constant])
@pytest.mark.parametrize(
    ("eta", "error", "match"),
    [
        (0.0, ValueError, r"eta must be a finite number > 0, got 0\.0"),
        (-0.1, ValueError, r"eta must be a finite number > 0, got -0\.1"),
        (np.nan, ValueError, r"eta must be a finite number > 0, got nan"),
        (np.inf, ValueError, r"eta must be a finite number > 0, got inf"),
        ("0.1", TypeError, r"eta must be a real number > 0, got '0\.1'"),
        (True, TypeError, r"eta must be a real number > 0, got True"),
        (None, TypeError, r"eta must be a real number > 0, got None"),
    ],
)
def test_bad_step_sizes(factory, eta, error, match):
    with pytest.raises(error, match=match):
        factory(eta)


@pytest.mark.parametrize("factory", [gc.hedge, gc.mmd])
def test_bad_schedules(factory):
    with pytest.raises(
        ValueError,
        match=r"eta must be a number > 0 or a schedule .*<lambda> returned -0\.5 at t=1$",
    ):
        factory(lambda t: -0.5)
    with pytest.raises(ValueError, match=r"returned 0\.0 at t=1$"):
        factory(lambda t: 0.0)
    with pytest.raises(ValueError, match=r"returned nan at t=1$"):
        factory(lambda t: float("nan"))
    # Passing the schedule factory instead of a schedule: constant(1) is not a number.
    with pytest.raises(TypeError, match=r"returned Constant\(eta=1\.0\) at t=1: return a float"):
        factory(gc.constant)


RULES_WITH_SCHEDULES = {
    "hedge": gc.hedge,
    "mmd": lambda eta: gc.mmd(eta, alpha=0.1),
    "optimistic hedge": lambda eta: gc.optimistic(gc.hedge(eta)),
}


@pytest.mark.parametrize("rule", sorted(RULES_WITH_SCHEDULES))
@pytest.mark.parametrize(
    ("bad", "error", "shown"),
    [
        (-1.0, ValueError, "-1.0"),
        (0.0, ValueError, "0.0"),
        (float("nan"), ValueError, "nan"),
        (float("inf"), ValueError, "inf"),
        (np.float64(-2.0), ValueError, "-2.0"),
        ("0.1", TypeError, "'0.1'"),
        (None, TypeError, "None"),
    ],
)
def test_schedules_are_checked_at_every_step(rule, bad, error, shown, kernels):
    """A schedule that goes bad at t = 5 raises there, in play (the C players and numpy's) and
    in rule.step, naming the schedule and t; before, it ran silently or blamed the payoffs."""

    def late(t):
        return 0.1 if t < 5 else bad

    match = rf"eta must be a number > 0 or a schedule .*late.* returned {re.escape(shown)} at t=5"
    with pytest.raises(error, match=match):
        gc.play(RPS, RULES_WITH_SCHEDULES[rule](late), steps=20)
    made = RULES_WITH_SCHEDULES[rule](late)
    state = made.init(np.zeros(3))
    with pytest.raises(error, match=match):
        for _ in range(10):
            state = made.step(state, np.array([1.0, 0.0, -1.0]))


def test_a_good_schedule_runs_as_before():
    """The check changes no value: a schedule and the same steps as constants give one run."""
    wrapped = gc.play(RPS, gc.mmd(lambda t: 0.1, alpha=0.1), steps=50, x0=[0.6, 0.3, 0.1])
    plain = gc.play(RPS, gc.mmd(0.1, alpha=0.1), steps=50, x0=[0.6, 0.3, 0.1])
    np.testing.assert_array_equal(wrapped.average.row, plain.average.row)
    assert gc.hedge(lambda t: 0.1).name == "hedge(eta=function)"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Constant(-1.0), ValueError, r"eta must be a finite number > 0, got -1\.0"),
        (lambda: Constant("0.1"), TypeError, r"eta must be a real number > 0, got '0\.1'"),
        (lambda: InverseSqrt(float("nan")), ValueError, r"c must be a finite number > 0"),
    ],
)
def test_schedule_classes_check_their_parameter(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(alpha=-0.1), ValueError, r"alpha must be a finite number >= 0, got -0\.1"),
        (dict(alpha=np.inf), ValueError, r"alpha must be a finite number >= 0, got inf"),
        (dict(alpha="a"), TypeError, r"alpha must be a real number >= 0, got 'a'"),
        (dict(magnet=[0.5, 0.6]), ValueError, r"magnet must sum to 1"),
        (dict(magnet=[1.5, -0.5]), ValueError, r"magnet must be a probability vector"),
        (dict(magnet=[np.nan, 1.0]), ValueError, r"magnet must be finite"),
        (dict(magnet="uniform"), TypeError, r"magnet must be a real numeric array"),
    ],
)
def test_bad_mmd_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        gc.mmd(0.1, **kwargs)


def test_mmd_magnet_of_the_wrong_length_fails_at_init():
    rule = gc.mmd(0.1, 0.1, magnet=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"magnet must have 3 entries on its last axis"):
        rule.init(np.zeros(3))
    with pytest.raises(ValueError, match=r"magnet must have 3 entries"):
        gc.play(RPS, rule, steps=1)


def test_bad_optimistic_base():
    with pytest.raises(TypeError, match=r"rule must be an UpdateRule .*got 'hedge'"):
        gc.optimistic("hedge")
    with pytest.raises(TypeError, match=r"rule must be an UpdateRule"):
        gc.optimistic(gc.hedge)  # the factory, not a rule


@pytest.mark.parametrize(
    "rule",
    [gc.hedge(0.1), gc.mmd(0.1, 0.1), gc.optimistic(gc.hedge(0.1)), gc.regret_matching_plus()],
    ids=lambda r: r.name,
)
def test_bad_rule_inputs(rule):
    with pytest.raises(ValueError, match=r"logits must have at least one action on the last axis"):
        rule.init(np.zeros(0))
    with pytest.raises(ValueError, match=r"logits must be finite"):
        rule.init([0.0, np.nan])
    with pytest.raises(ValueError, match=r"logits must have at least 1 dimension"):
        rule.init(0.0)
    with pytest.raises(TypeError, match=r"logits must be a real numeric array"):
        rule.init("abc")
    state = rule.init(np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"utilities must have 3 entries on the last axis .*\(2,\)",
    ):
        rule.step(state, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"utilities must be finite"):
        rule.step(state, [1.0, np.nan, 0.0])
    with pytest.raises(ValueError, match=r"utilities must be finite"):
        rule.step(state, [1.0, np.inf, 0.0])
    with pytest.raises(TypeError, match=r"utilities must be a real numeric array, got the string"):
        rule.step(state, "abc")
    with pytest.raises(TypeError, match=r"utilities must be a real numeric array"):
        rule.step(state, [1.0, "x", 0.0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(eta=0.0), ValueError, r"eta must be > 0 \(or math\.inf\), got 0\.0"),
        (dict(eta=-1.0), ValueError, r"eta must be > 0 \(or math\.inf\), got -1\.0"),
        (dict(eta=np.nan), ValueError, r"eta must be > 0"),
        (dict(eta="1"), TypeError, r"eta must be a real number > 0 \(or math\.inf\), got '1'"),
        (dict(eta=1.0, alpha=-1.0), ValueError, r"alpha must be a finite number >= 0, got -1\.0"),
        (dict(eta=np.inf, alpha=0.0), ValueError, r"eta=inf needs alpha > 0"),
    ],
)
def test_bad_mirror_step_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        gc.mirror_step(np.zeros(2), np.ones(2), **kwargs)


# ------------------------------------------------------------------------------ schedules
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: gc.inverse_sqrt(0.0), ValueError, r"c must be a finite number > 0, got 0\.0"),
        (lambda: gc.inverse_sqrt("1"), TypeError, r"c must be a real number > 0"),
        (
            lambda: gc.horizon_tuned(0, 3, 1.0),
            ValueError,
            r"horizon must be an integer >= 1, got 0",
        ),
        (lambda: gc.horizon_tuned(10.5, 3, 1.0), TypeError, r"horizon must be an integer >= 1"),
        (lambda: gc.horizon_tuned(10, 0, 1.0), ValueError, r"num_actions must be an integer >= 1"),
        (lambda: gc.horizon_tuned(10, 1, 1.0), ValueError, r"num_actions must be >= 2"),
        (
            lambda: gc.horizon_tuned(10, 3, 0.0),
            ValueError,
            r"payoff_range must be a finite number > 0",
        ),
        (
            lambda: gc.horizon_tuned(10, 3, -2.0),
            ValueError,
            r"payoff_range must be a finite number > 0",
        ),
        (lambda: gc.uniform_logits(0), ValueError, r"n must be an integer >= 1, got 0"),
        (lambda: gc.uniform_logits(2.0), TypeError, r"n must be an integer >= 1, got 2\.0"),
    ],
)
def test_bad_schedule_and_simplex_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------- play
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(steps=0), ValueError, r"steps must be an integer >= 1, got 0"),
        (dict(steps=-5), ValueError, r"steps must be an integer >= 1, got -5"),
        (dict(steps=10.0), TypeError, r"steps must be an integer >= 1, got 10\.0"),
        (dict(record_every=0), ValueError, r"record_every must be an integer >= 1, got 0"),
        (
            dict(averaging="cubic"),
            ValueError,
            r"averaging must be one of \['linear', 'quadratic', 'uniform'\], got 'cubic'",
        ),
        (dict(averaging=None), ValueError, r"averaging must be one of"),
        (dict(alternating="yes"), TypeError, r"alternating must be a bool, got 'yes'"),
        (dict(tol=0.0), ValueError, r"tol must be a finite number > 0, got 0\.0"),
        (dict(tol=-1e-3), ValueError, r"tol must be a finite number > 0"),
        (dict(tol="small"), TypeError, r"tol must be a real number > 0"),
        (dict(x0=[0.5, 0.5]), ValueError, r"x0 must have 3 entries on its last axis"),
        (dict(y0=[0.5, 0.6, 0.1]), ValueError, r"y0 must sum to 1"),
        (dict(x0=[-0.5, 1.0, 0.5]), ValueError, r"x0 must be a probability vector"),
        (
            dict(x0=np.full((2, 3), 1 / 3)),
            ValueError,
            r"x0 must broadcast to the game's batch: shape \(3,\).*got shape \(2, 3\)",
        ),
    ],
)
def test_bad_play_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gc.play(RPS, gc.hedge(0.1), **{"steps": 3, **kwargs})


def test_bad_play_game_and_rules():
    with pytest.raises(
        TypeError,
        match=r"game must be a gpo_core\.MatrixGame or a payoff array .*got 'rps'; load a "
        r"named game with gpo_core\.MatrixGame\.from_openspiel",
    ):
        gc.play("rps", gc.hedge(0.1))
    with pytest.raises(TypeError, match=r"game must be a gpo_core\.MatrixGame or a payoff array"):
        gc.play({"payoff": [[0, 1]]}, gc.hedge(0.1))
    with pytest.raises(ValueError, match=r"game must have at least 2 dimension\(s\), got shape"):
        gc.play([0.0, 1.0], gc.hedge(0.1))
    with pytest.raises(ValueError, match=r"game must be finite"):
        gc.play([[0.0, np.nan]], gc.hedge(0.1))
    with pytest.raises(TypeError, match=r"row_rule must be an UpdateRule .*got 'hedge'"):
        gc.play(RPS, "hedge")
    with pytest.raises(TypeError, match=r"col_rule must be an UpdateRule .*got 0\.1"):
        gc.play(RPS, gc.hedge(0.1), 0.1)


# ---------------------------------------------------------------------------- diagnostics
def test_bad_diagnostic_arguments():
    with pytest.raises(TypeError, match=r"game must be a gpo_core\.MatrixGame or a payoff"):
        gc.nash_gap(None, THIRD, THIRD)
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0, got 0\.0"):
        gc.regularized_gap(RPS, THIRD, THIRD, 0.0)
    with pytest.raises(ValueError, match=r"magnet_row must sum to 1"):
        gc.regularized_gap(RPS, THIRD, THIRD, 0.1, magnet_row=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"magnet_col must have 3 entries"):
        gc.regularized_gap(RPS, THIRD, THIRD, 0.1, magnet_col=[1.0])
    with pytest.raises(ValueError, match=r"player must be 'row' or 'col', got 'both'"):
        gc.best_response(RPS, THIRD, player="both")
    with pytest.raises(ValueError, match=r"opponent must have 3 entries"):
        gc.best_response(RPS, [1.0], player="col")
    with pytest.raises(TypeError, match=r"game must be a gpo_core\.MatrixGame"):
        gc.best_response("rps", THIRD)
    with pytest.raises(ValueError, match=r"utilities must hold at least one step"):
        gc.external_regret(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"utilities must have at least 2 dimension"):
        gc.external_regret([1.0, 2.0], [0.5, 0.5])
    with pytest.raises(
        ValueError,
        match=r"strategies must have the same shape as utilities \(2, 3\), got \(1, 3\)",
    ):
        gc.external_regret(np.zeros((2, 3)), [THIRD])
    with pytest.raises(ValueError, match=r"strategies must sum to 1"):
        gc.external_regret(np.zeros((1, 3)), [[1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"utilities must be finite"):
        gc.external_regret([[np.nan, 0.0]], [[0.5, 0.5]])


# ---------------------------------------------------------------------------------- exact
def test_bad_solver_arguments():
    for solver in (gc.solve_lp, gc.solve_pivot, gc.solve, lambda g: gc.solve_qre(g, 0.1)):
        with pytest.raises(TypeError, match=r"game must be a gpo_core\.MatrixGame or a payoff"):
            solver("matrix_rps")
        with pytest.raises(ValueError, match=r"game must have at least one row and one column"):
            solver(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0, got 0\.0"):
        gc.solve_qre(RPS, 0.0)
    with pytest.raises(TypeError, match=r"alpha must be a real number > 0"):
        gc.solve_qre(RPS, None)
    with pytest.raises(ValueError, match=r"tol must be a finite number > 0"):
        gc.solve_qre(RPS, 0.1, tol=-1.0)
    with pytest.raises(ValueError, match=r"max_iter must be an integer >= 1, got 0"):
        gc.solve_qre(RPS, 0.1, max_iter=0)
    with pytest.raises(ValueError, match=r"magnet_row must sum to 1"):
        gc.solve_qre(RPS, 0.1, magnet_row=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"magnet_col must have 3 entries"):
        gc.solve_qre(RPS, 0.1, magnet_col=[0.5, 0.5])
