"""The one-numpy-game fast path of RM+/PRM+/DRM+ (rules._regret_matching_into, play's in-place
player, with and without the C kernels), Hedge's, MMD's and optimistic Hedge's (the C
kernel's steps, play's own buffers) give bit-identical results to the general path that batches and other libraries take."""

import numpy as np
import pytest

import gpo_core as gc
from gpo_core.predictive import predictive_regret_matching_plus

RULES = {
    "rm+": gc.regret_matching_plus,
    "prm+": predictive_regret_matching_plus,
    "drm+": gc.discounted_regret_matching_plus,
    "hedge": lambda: gc.hedge(0.7),
    "hedge schedule": lambda: gc.hedge(gc.inverse_sqrt(1.5)),  # the dual-averaging form
    "mmd": lambda: gc.mmd(0.4, alpha=0.3),
    "mmd schedule": lambda: gc.mmd(gc.inverse_sqrt(0.8), alpha=0.1),
    "optimistic hedge": lambda: gc.optimistic(gc.hedge(0.5)),
    "optimistic hedge schedule": lambda: gc.optimistic(gc.hedge(gc.inverse_sqrt(1.0))),
}

GAMES = {
    "random": np.random.default_rng(0).normal(size=(7, 5)),
    "ties": np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),  # noise zeroing
    "zero": np.zeros((3, 4)),  # no positive regret: the current strategy is kept
    # every column the same: the column player's regrets are rounding noise, zeroed
    "equal columns": np.repeat(np.random.default_rng(1).normal(size=(6, 1)), 7, axis=1),
    "rps": np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]),
}


def _arrays(state):
    """A state's arrays, nested states' (optimistic's base) included, but MMD's log-magnet (one
    (n,) array for every game of a batch)."""
    out = []
    for k, v in state._asdict().items():
        if isinstance(v, tuple):
            out += _arrays(v)
        elif isinstance(v, np.ndarray) and k != "log_magnet":
            out.append(v)
    return out


def _fields(traj):
    """The arrays of a run; the gaps last (their batch axis comes second)."""
    return [traj.last.row, traj.last.col, traj.average.row, traj.average.col,
            *_arrays(traj.row_state), *_arrays(traj.col_state), traj.nash_gap, traj.last_gap]


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("game", sorted(GAMES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("alternating", [True, False])
def test_a_game_alone_equals_the_same_game_as_a_batch_of_one(
    rule, game, dtype, alternating, kernels
):
    payoff = GAMES[game].astype(dtype)
    kwargs = dict(steps=60, alternating=alternating, averaging="quadratic", record_every=7)
    alone = gc.play(gc.MatrixGame(payoff), RULES[rule](), **kwargs)
    batch = gc.play(gc.MatrixGame(payoff[None]), RULES[rule](), **kwargs)
    assert alone.row_state.count == batch.row_state.count == 60
    one, many = _fields(alone), _fields(batch)
    for a, b in zip(one[:-2], many[:-2]):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b[0])
    for a, b in zip(one[-2:], many[-2:]):
        np.testing.assert_array_equal(a, b[:, 0])


@pytest.mark.parametrize("rule", sorted(RULES))
def test_play_in_place_equals_the_pure_steps(rule, kernels):
    make = RULES[rule]
    base = make()
    hidden = gc.UpdateRule(base.init, lambda state, u: base.step(state, u), "no in-place")
    game = gc.MatrixGame.random(40, 30, seed=3)
    fast = gc.play(game, make(), steps=80, alternating=True, averaging="linear", tol=1e-9)
    pure = gc.play(game, hidden, steps=80, alternating=True, averaging="linear", tol=1e-9)
    for a, b in zip(_fields(fast), _fields(pure)):
        np.testing.assert_array_equal(a, b)
    # the returned states continue the run exactly: 80 + 20 steps by hand equal 100 in play
    state = fast.row_state
    longer = gc.play(game, hidden, steps=81, alternating=True, averaging="linear")
    assert state.count == 80
    np.testing.assert_array_equal(longer.row_state.strategy, base.step(
        state, game.payoff @ fast.last.col).strategy)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_utilities_raise_the_same_error_alone_and_batched(rule, bad, kernels):
    step = RULES[rule]()
    x = np.log(np.array([0.0, 0.5, 0.5]) + 1e-300)  # an exact zero: inf * 0 would be nan
    u = np.array([1.0, 2.0, 3.0])
    for pos in range(3):
        v = u.copy()
        v[pos] = bad
        messages = []
        for logits, utilities in ((x, v), (x[None], v[None])):
            with pytest.raises(ValueError, match="utilities must be finite") as err:
                step.step(step.init(logits), utilities)
            messages.append(str(err.value).split(" in array")[0])
        assert messages[0] == messages[1]


def test_the_rule_step_never_mutates_its_inputs():
    for make in RULES.values():
        rule = make()
        state = rule.step(rule.init(np.zeros(4)), np.array([1.0, -2.0, 0.5, 0.0]))
        before = [np.array(v, copy=True) for v in _leaves(state)]
        u = np.array([0.5, 0.5, -1.0, 2.0])
        u_before = u.copy()
        rule.step(state, u)
        np.testing.assert_array_equal(u, u_before)
        for value, kept in zip(_leaves(state), before, strict=True):
            np.testing.assert_array_equal(value, kept)


def _leaves(state):
    """Every array and count of a state, nested states (optimistic's base) included."""
    for value in state:
        if isinstance(value, tuple):
            yield from _leaves(value)
        else:
            yield value


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_batch_of_different_games_equals_each_game_alone(rule, dtype, kernels):
    """A (2, 3) batch of different games (the batched C step writes each game's gap terms) gives
    every game's run alone, bit for bit, stopping where the slowest game reaches tol."""
    payoff = np.random.default_rng(7).normal(size=(2, 3, 6, 5)).astype(dtype)
    kwargs = dict(steps=90, alternating=True, averaging="linear", record_every=4, tol=1e-9)
    batch = gc.play(gc.MatrixGame(payoff), RULES[rule](), **kwargs)
    assert batch.num_steps == 90 and batch.nash_gap.shape == (len(batch.steps), 2, 3)
    for i in range(2):
        for j in range(3):
            alone = gc.play(gc.MatrixGame(payoff[i, j]), RULES[rule](), **kwargs)
            one, many = _fields(alone), _fields(batch)
            for a, b in zip(one[:-2], many[:-2]):
                np.testing.assert_array_equal(a, b[i, j])
            for a, b in zip(one[-2:], many[-2:]):
                np.testing.assert_array_equal(a, b[:, i, j])
