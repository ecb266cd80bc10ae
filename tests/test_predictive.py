"""Predictive regret matching+ (gpo_core.predictive): closed-form steps, contract, convergence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpo_core as gc
from gpo_core.predictive import PRMPlusState, predictive_regret_matching_plus
from gpo_core.simplex import safe_log, softmax

RPS = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], name="rps")


def _prm_reference(a: np.ndarray, steps: int, *, alternating: bool, power: int):
    """PRM+ self-play written out plainly from Farina, Kroer & Sandholm (2021), Alg. 2.

    Loss convention as in the paper: predicted loss ``m`` is the last loss seen, the decision is
    ``theta = [R + <m, x_prev> 1 - m]^+`` and ``R' = [R + <l, x> 1 - l]^+``. Returns the weighted
    averages of the strategies played and the strategies played at each step.
    """
    m_rows, n_cols = a.shape
    x, y = np.full(m_rows, 1.0 / m_rows), np.full(n_cols, 1.0 / n_cols)
    rx, ry = np.zeros(m_rows), np.zeros(n_cols)
    x_sum, y_sum, w_sum = np.zeros(m_rows), np.zeros(n_cols), 0.0
    played = []
    for t in range(1, steps + 1):
        played.append((x.copy(), y.copy()))
        w = float(t) ** power
        x_sum, y_sum, w_sum = x_sum + w * x, y_sum + w * y, w_sum + w
        loss_x = -(a @ y)  # the row player's loss
        rx = np.maximum(rx + loss_x @ x - loss_x, 0.0)
        theta = np.maximum(rx + loss_x @ x - loss_x, 0.0)  # prediction m = last loss
        x_new = theta / theta.sum() if theta.sum() > 0 else x
        loss_y = a.T @ (x_new if alternating else x)  # the column player's loss
        ry = np.maximum(ry + loss_y @ y - loss_y, 0.0)
        theta = np.maximum(ry + loss_y @ y - loss_y, 0.0)
        y = theta / theta.sum() if theta.sum() > 0 else y
        x = x_new
    return x_sum / w_sum, y_sum / w_sum, played


# ----------------------------------------------------------------------------- closed form
def test_first_steps_by_hand():
    rule = predictive_regret_matching_plus()
    assert isinstance(rule, gc.UpdateRule) and rule.name == "prm+"
    state = rule.init(np.zeros(3))
    assert isinstance(state, PRMPlusState)
    np.testing.assert_allclose(state.strategy, [1 / 3] * 3, atol=1e-15)
    # u = [3, 0, 0] against uniform: <u, x> = 1, r = [2, -1, -1], Q = [2, 0, 0],
    # theta = [Q + r]^+ = [4, 0, 0].
    state = rule.step(state, np.array([3.0, 0.0, 0.0]))
    np.testing.assert_allclose(state.cum_regret, [2.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_array_equal(state.strategy, [1.0, 0.0, 0.0])
    assert state.count == 1
    # u = [0, 3, 0] against [1, 0, 0]: r = [0, 3, 0], Q = [2, 3, 0], theta = [2, 6, 0].
    state = rule.step(state, np.array([0.0, 3.0, 0.0]))
    np.testing.assert_allclose(state.cum_regret, [2.0, 3.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(state.strategy, [0.25, 0.75, 0.0], atol=1e-15)
    # u = [1, 0, 5] against [.25, .75, 0]: <u, x> = .25, r = [.75, -.25, 4.75],
    # Q = [2.75, 2.75, 4.75], theta = [3.5, 2.5, 9.5] / 15.5.
    state = rule.step(state, np.array([1.0, 0.0, 5.0]))
    np.testing.assert_allclose(state.cum_regret, [2.75, 2.75, 4.75], atol=1e-14)
    np.testing.assert_allclose(state.strategy, np.array([3.5, 2.5, 9.5]) / 15.5, atol=1e-15)
    np.testing.assert_allclose(state.logits, np.log(np.array([3.5, 2.5, 9.5]) / 15.5), atol=1e-14)
    assert state.count == 3


def test_prediction_differs_from_rm_plus():
    """Same cumulative regrets as RM+, but PRM+ plays [Q + r]^+ where RM+ plays Q."""
    prm, rmp = predictive_regret_matching_plus(), gc.regret_matching_plus()
    u = np.array([1.0, 0.5, 0.0])
    s_p, s_r = prm.step(prm.init(np.zeros(3)), u), rmp.step(rmp.init(np.zeros(3)), u)
    np.testing.assert_allclose(s_p.cum_regret, s_r.cum_regret, atol=1e-15)  # [.5, 0, 0]
    np.testing.assert_allclose(softmax(s_r.logits), [1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(s_p.strategy, [1.0, 0.0, 0.0], atol=1e-15)  # theta = [1, 0, 0]


def test_no_positive_prediction_keeps_the_current_strategy():
    rule = predictive_regret_matching_plus()
    start = rule.init(np.log([0.2, 0.8]))
    state = rule.step(start, np.array([1.0, 1.0]))  # r = 0, Q = 0, theta = 0
    np.testing.assert_array_equal(state.strategy, start.strategy)
    np.testing.assert_array_equal(state.logits, start.logits)
    one = rule.step(rule.init(np.zeros(1)), np.array([4.0]))  # a single action never regrets
    np.testing.assert_array_equal(one.strategy, [1.0])


def test_ties_do_not_move_the_strategy():
    """All utilities equal: the regret is exactly 0 (not ±1 ulp), so PRM+ keeps its strategy."""
    # the input on which an unguarded <u, x> rounds to a +1 ulp regret everywhere (test_rules.py)
    x0 = np.array(
        [0.19555676270025504, 0.22976466013144112, 0.5460200098197726, 0.028658567348531273]
    )
    u = np.full(4, 1.4305966145952187)
    rule = predictive_regret_matching_plus()
    state = rule.init(np.log(x0))
    for _ in range(5):
        state = rule.step(state, u)
    np.testing.assert_allclose(state.strategy, x0, rtol=1e-12)
    np.testing.assert_allclose(softmax(state.logits), x0, rtol=1e-12)
    assert np.all(state.cum_regret == 0.0)


def test_fallback_is_per_game_in_a_batch():
    rule = predictive_regret_matching_plus()
    state = rule.init(np.log([[0.5, 0.5], [0.2, 0.8]]))
    state = rule.step(state, np.array([[1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(state.strategy[0], [1.0, 0.0])
    np.testing.assert_allclose(state.strategy[1], [0.2, 0.8], atol=1e-15)


# ---------------------------------------------------------------------------- the contract
@given(
    arrays(np.float64, (12, 2, 5), elements=st.floats(-1e3, 1e3, allow_subnormal=False)),
    arrays(np.float64, (2, 5), elements=st.floats(-30, 30, allow_subnormal=False)),
)
def test_stays_on_the_simplex_with_finite_logits(utilities, logits):
    rule = predictive_regret_matching_plus()
    state = rule.init(logits)
    for u in utilities:
        state = rule.step(state, u)
        assert np.all(state.strategy >= 0.0)
        np.testing.assert_allclose(state.strategy.sum(axis=-1), 1.0, atol=1e-12)
        assert np.all(np.isfinite(state.logits)) and np.all(state.cum_regret >= 0.0)
        np.testing.assert_allclose(softmax(state.logits), state.strategy, atol=1e-12)
        np.testing.assert_allclose(state.logits, safe_log(state.strategy), atol=1e-12)


def test_does_not_mutate_its_inputs():
    rule = predictive_regret_matching_plus()
    logits = np.log(np.array([[0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]))
    logits_before = logits.copy()
    state = rule.init(logits)
    np.testing.assert_array_equal(logits, logits_before)
    u = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    for arr in (*state[:2], u):
        arr.setflags(write=False)  # any write into an input would raise
    before = [arr.copy() for arr in (*state[:2], u)]
    new = rule.step(state, u)
    new = rule.step(new, u)
    for arr, old in zip((*state[:2], u), before):
        np.testing.assert_array_equal(arr, old)
    assert all(np.shares_memory(a, b) is False for a in new[:2] for b in (*state[:2], u))


def test_scale_invariant():
    rule = predictive_regret_matching_plus()
    rng = np.random.default_rng(3)
    s1 = s2 = rule.init(np.zeros(6))
    for _ in range(20):
        u = rng.uniform(-1, 1, 6)
        s1, s2 = rule.step(s1, u), rule.step(s2, 37.5 * u)
        np.testing.assert_allclose(s1.strategy, s2.strategy, atol=1e-12)


@pytest.mark.parametrize("alternating", [True, False])
@pytest.mark.parametrize("power,averaging", [(1, "linear"), (2, "quadratic")])
def test_play_matches_the_papers_algorithm(alternating, power, averaging):
    """The fast step, run by gc.play, gives the plain loop's iterates and averages to 1e-10."""
    game = gc.MatrixGame.random(7, 5, seed=11)
    steps = 60
    x_ref, y_ref, played = _prm_reference(game.payoff, steps, alternating=alternating, power=power)
    rule = predictive_regret_matching_plus()
    traj = gc.play(game, rule, steps=steps, alternating=alternating, averaging=averaging)
    np.testing.assert_allclose(traj.average.row, x_ref, atol=1e-10)
    np.testing.assert_allclose(traj.average.col, y_ref, atol=1e-10)
    for t in (1, 17, steps - 1):  # x_{t+1}, y_{t+1}: the last iterate of a t-step run
        short = gc.play(game, rule, steps=t, alternating=alternating)
        np.testing.assert_allclose(short.last.row, played[t][0], atol=1e-10)
        np.testing.assert_allclose(short.last.col, played[t][1], atol=1e-10)


def test_batched_equals_loop():
    games = gc.MatrixGame.random(6, 4, seed=5, batch_shape=(3, 2))
    rule = predictive_regret_matching_plus()
    batched = gc.play(games, rule, steps=150, alternating=True, averaging="linear")
    for idx in np.ndindex(3, 2):
        one = gc.play(gc.MatrixGame(games.payoff[idx]), rule, steps=150, alternating=True,
                      averaging="linear")
        np.testing.assert_allclose(batched.average.row[idx], one.average.row, atol=1e-12)
        np.testing.assert_allclose(batched.average.col[idx], one.average.col, atol=1e-12)
        np.testing.assert_allclose(batched.last.row[idx], one.last.row, atol=1e-12)
        np.testing.assert_allclose(batched.nash_gap[(slice(None), *idx)], one.nash_gap, atol=1e-12)


# ------------------------------------------------------------------------------ convergence
def _check_near_lp(game: gc.MatrixGame, traj: gc.Trajectory, tol: float) -> None:
    x_bar, y_bar = traj.average
    gap = float(gc.nash_gap(game, x_bar, y_bar))
    assert gap <= tol
    np.testing.assert_allclose(float(traj.final_gap), gap, atol=1e-12)  # play's running gap
    exact = gc.solve_lp(game)
    # The row player's guarantee and the column player's are within `gap` of each other and
    # bracket the game's value from the LP.
    low, high = float(np.min(x_bar @ game.payoff)), float(np.max(game.payoff @ y_bar))
    assert low - 1e-9 <= float(exact.value) <= high + 1e-9
    assert float(gc.nash_gap(game, exact.row, exact.col)) <= 1e-7


def test_rps_gap_below_1e_4():
    traj = gc.play(RPS, predictive_regret_matching_plus(), steps=5000, alternating=True,
                   averaging="linear", tol=1e-4)
    _check_near_lp(RPS, traj, 1e-4)
    np.testing.assert_allclose(traj.average.row, [1 / 3] * 3, atol=1e-4)


@pytest.mark.parametrize("shape,seed", [((10, 10), 0), ((30, 30), 1), ((20, 50), 2), ((7, 3), 3)])
@pytest.mark.parametrize("alternating", [True, False])
def test_random_games_gap_below_1e_4(shape, seed, alternating):
    game = gc.MatrixGame.random(*shape, seed=seed)
    traj = gc.play(game, predictive_regret_matching_plus(), steps=20000, alternating=alternating,
                   averaging="quadratic", tol=1e-4, record_every=100)
    assert traj.num_steps < 20000
    _check_near_lp(game, traj, 1e-4)


# ------------------------------------------------------------------------------- validation
def test_validation_errors():
    rule = predictive_regret_matching_plus()
    with pytest.raises(ValueError, match="at least one action"):
        rule.init(np.zeros(0))
    with pytest.raises(ValueError, match="finite"):
        rule.init(np.array([0.0, np.inf]))
    with pytest.raises(TypeError, match="real numbers"):
        rule.init(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="at least 1 dimension"):
        rule.init(0.0)
    state = rule.init(np.zeros(3))
    with pytest.raises(ValueError, match="3 entries on the last axis"):
        rule.step(state, np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        rule.step(state, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(TypeError, match="real numeric array"):
        rule.step(state, "abc")
    with pytest.raises(TypeError):
        predictive_regret_matching_plus(1.0)  # parameter-free: no step size to pass


def test_a_game_played_alone_and_inside_a_batch_gives_the_same_iterates_bit_for_bit(kernels):
    """Game 8601 of this batch once differed by 3e-9 after 100 steps, when a single game's
    instantaneous regret used a BLAS dot and the batch a pairwise sum: PRM+ divides by the sum of
    near-zero predicted regrets, which amplifies a last-bit difference. Both paths now add up
    the same way.

    The averages once differed in the last bit on an AMD EPYC: they were BLAS axpy sums, and
    OpenBLAS's Haswell kernel fuses the multiply-add in its vector body but not in its scalar
    tail (a 10-action game alone is all tail, inside a batch mostly body). The running sums now
    round twice everywhere (``gpo_core._fused.accumulate``)."""
    games = gc.MatrixGame.random(10, seed=0, batch_shape=(10000,))
    picked = [8601, 8613, 301, 0]
    batch = gc.MatrixGame(games.payoff[picked])
    for make, averaging in ((predictive_regret_matching_plus, "quadratic"),
                            (gc.regret_matching_plus, "linear")):
        together = gc.play(batch, make(), steps=100, alternating=True, averaging=averaging)
        for k, i in enumerate(picked):
            alone = gc.play(gc.MatrixGame(games.payoff[i]), make(), steps=100, alternating=True,
                            averaging=averaging)
            np.testing.assert_array_equal(together.last.row[k], alone.last.row)
            np.testing.assert_array_equal(together.last.col[k], alone.last.col)
            np.testing.assert_array_equal(together.row_state.cum_regret[k],
                                          alone.row_state.cum_regret)
            np.testing.assert_array_equal(together.average.row[k], alone.average.row)
            np.testing.assert_array_equal(together.nash_gap[:, k], alone.nash_gap)
