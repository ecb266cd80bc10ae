"""play(): simultaneous vs alternating, averaging weights, recording, early stop, batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import profiles, zero_sum_games

import gpo_core as gc

# Matching pennies, row player's payoff (von Neumann & Morgenstern; unique equilibrium uniform).
MP = gc.MatrixGame([[1, -1], [-1, 1]], name="mp")
LN2 = float(np.log(2.0))  # hedge(eta=ln 2) multiplies weights by 2**u: hand-computable


def _norm(w):
    w = np.asarray(w, dtype=np.float64)
    return w / w.sum()


def test_simultaneous_one_step_by_hand():
    x1, y1 = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    traj = gc.play(MP, gc.hedge(LN2), steps=1, x0=x1, y0=y1)
    # A y1 = (-1/2, 1/2): x2 = (1/2 * 2**-0.5, 1/2 * 2**0.5) normalised = (1/3, 2/3).
    np.testing.assert_allclose(traj.last.row, [1 / 3, 2 / 3], rtol=1e-14)
    # -A^T x1 = (0, 0): the column player does not move.
    np.testing.assert_allclose(traj.last.col, [0.25, 0.75], rtol=1e-14)
    np.testing.assert_allclose(traj.average.row, x1, rtol=1e-15)
    np.testing.assert_allclose(traj.average.col, y1, rtol=1e-15)


def test_alternating_two_steps_by_hand():
    x1, y1 = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    c = 2.0 ** (1 / 3)
    # Step 1: the row player moves first, to x2 = (1/3, 2/3) (as above). The column player then
    # answers x2: -A^T x2 = (x2[1] - x2[0], x2[0] - x2[1]) = (1/3, -1/3), so
    # y2 = (1/4 * 2**(1/3), 3/4 * 2**(-1/3)) normalised.
    x2 = np.array([1 / 3, 2 / 3])
    y2 = _norm([0.25 * c, 0.75 / c])
    traj1 = gc.play(MP, gc.hedge(LN2), steps=1, x0=x1, y0=y1, alternating=True)
    np.testing.assert_allclose(traj1.last.row, x2, rtol=1e-14)
    np.testing.assert_allclose(traj1.last.col, y2, rtol=1e-14)
    # Step 2: A y2 = (y2[0] - y2[1], y2[1] - y2[0]); x3 = x2 * 2**(A y2); then y3 answers x3.
    d = y2[0] - y2[1]
    x3 = _norm([x2[0] * 2.0**d, x2[1] * 2.0**-d])
    e = x3[1] - x3[0]
    y3 = _norm([y2[0] * 2.0**e, y2[1] * 2.0**-e])
    traj2 = gc.play(MP, gc.hedge(LN2), steps=2, x0=x1, y0=y1, alternating=True)
    np.testing.assert_allclose(traj2.last.row, x3, rtol=1e-14)
    np.testing.assert_allclose(traj2.last.col, y3, rtol=1e-14)
    # The average is over the played iterates (x1, x2) and (y1, y2).
    np.testing.assert_allclose(traj2.average.row, (x1 + x2) / 2, rtol=1e-14)
    np.testing.assert_allclose(traj2.average.col, (y1 + y2) / 2, rtol=1e-14)
    # And simultaneous play differs from alternating play here.
    sim = gc.play(MP, gc.hedge(LN2), steps=2, x0=x1, y0=y1)
    assert not np.allclose(sim.last.col, y3)


def _hedge_iterates(a, x, y, eta, steps):
    """Simultaneous Hedge written out: x <- x * exp(eta A y), y <- y * exp(-eta A^T x)."""
    xs, ys = [], []
    for _ in range(steps):
        xs.append(x)
        ys.append(y)
        x, y = _norm(x * np.exp(eta * (a @ y))), _norm(y * np.exp(-eta * (a.T @ x)))
    return np.array(xs), np.array(ys), x, y


@pytest.mark.parametrize(
    ("averaging", "weights"),
    [("uniform", [1, 1, 1]), ("linear", [1, 2, 3]), ("quadratic", [1, 4, 9])],
)
def test_averaging_weights_by_hand(averaging, weights):
    game = gc.MatrixGame([[2.0, -1.0, 0.5], [-1.0, 1.0, 0.0]])
    x0, y0 = np.array([0.7, 0.3]), np.array([0.2, 0.3, 0.5])
    xs, ys, x_last, y_last = _hedge_iterates(game.payoff, x0, y0, 0.5, 3)
    w = np.array(weights, dtype=float)
    traj = gc.play(game, gc.hedge(0.5), steps=3, x0=x0, y0=y0, averaging=averaging)
    np.testing.assert_allclose(traj.average.row, w @ xs / w.sum(), rtol=1e-13)
    np.testing.assert_allclose(traj.average.col, w @ ys / w.sum(), rtol=1e-13)
    np.testing.assert_allclose(traj.last.row, x_last, rtol=1e-13)
    np.testing.assert_allclose(traj.last.col, y_last, rtol=1e-13)


def test_gaps_recorded_each_step_by_hand():
    game = gc.MatrixGame.random(3, 4, seed=11)
    x0, y0 = np.array([0.5, 0.25, 0.25]), np.array([0.1, 0.2, 0.3, 0.4])
    xs, ys, _, _ = _hedge_iterates(game.payoff, x0, y0, 0.3, 6)
    traj = gc.play(game, gc.hedge(0.3), steps=6, x0=x0, y0=y0)
    np.testing.assert_array_equal(traj.steps, np.arange(1, 7))
    for t in range(1, 7):
        avg_x, avg_y = xs[:t].mean(axis=0), ys[:t].mean(axis=0)
        np.testing.assert_allclose(
            traj.nash_gap[t - 1], gc.nash_gap(game, avg_x, avg_y), rtol=1e-12, atol=1e-14
        )
        np.testing.assert_allclose(
            traj.last_gap[t - 1], gc.nash_gap(game, xs[t - 1], ys[t - 1]), rtol=1e-12, atol=1e-14
        )


RULES = [
    gc.hedge(0.2),
    gc.mmd(0.1, 0.1),
    gc.optimistic(gc.hedge(0.2)),
    gc.regret_matching_plus(),
]


@given(
    data=st.data(),
    game=zero_sum_games(max_actions=4, max_abs=10.0),
    rule=st.sampled_from(RULES),
    alternating=st.booleans(),
    averaging=st.sampled_from(["uniform", "linear", "quadratic"]),
    steps=st.integers(1, 30),
)
def test_recorded_gap_equals_the_gap_of_the_average(
    data, game, rule, alternating, averaging, steps
):
    x0, y0 = data.draw(profiles(game))
    traj = gc.play(
        game, rule, steps=steps, x0=x0, y0=y0, alternating=alternating, averaging=averaging
    )
    scale = 1.0 + np.abs(game.payoff).max()
    # The gap recorded "for free" from averaged utilities equals the gap computed from scratch.
    np.testing.assert_allclose(
        traj.final_gap, gc.nash_gap(game, *traj.average), rtol=1e-9, atol=1e-12 * scale
    )
    assert traj.nash_gap.shape == traj.last_gap.shape == (steps,)
    assert np.all(traj.nash_gap >= 0) and np.all(traj.last_gap >= 0)
    for p in (*traj.average, *traj.last):
        assert np.all(p >= 0) and abs(p.sum() - 1.0) < 1e-12


@given(game=zero_sum_games(max_actions=4, max_abs=10.0), rule=st.sampled_from(RULES))
def test_last_gap_is_the_gap_of_the_played_iterate(game, rule):
    before = gc.play(game, rule, steps=4)
    after = gc.play(game, rule, steps=5)
    # Step 5 plays the iterate that a 4-step run ends on.
    np.testing.assert_allclose(
        after.last_gap[-1],
        gc.nash_gap(game, *before.last),
        rtol=1e-9,
        atol=1e-12 * (1 + np.abs(game.payoff).max()),
    )


@given(
    data=st.data(),
    game=zero_sum_games(max_actions=4, max_abs=10.0),
    rule=st.sampled_from(RULES),
)
def test_uniform_average_gap_is_the_sum_of_regrets_over_t(data, game, rule):
    # Folk theorem, which is an identity in zero-sum games: with simultaneous updates,
    # T * gap(x_bar, y_bar) = R^x_T + R^y_T (Freund & Schapire 1999).
    a = game.payoff
    x0, y0 = data.draw(profiles(game))
    steps = 12
    sx, sy = rule.init(gc.simplex.safe_log(x0)), rule.init(gc.simplex.safe_log(y0))
    xs, ys, uxs, uys = [], [], [], []
    for _ in range(steps):
        x, y = gc.softmax(sx.logits), gc.softmax(sy.logits)
        ux, uy = a @ y, -(a.T @ x)
        xs.append(x), ys.append(y), uxs.append(ux), uys.append(uy)
        sx, sy = rule.step(sx, ux), rule.step(sy, uy)
    regret = gc.external_regret(uxs, xs) + gc.external_regret(uys, ys)
    traj = gc.play(game, rule, steps=steps, x0=x0, y0=y0)
    scale = 1.0 + np.abs(a).max()
    np.testing.assert_allclose(traj.average.row, np.mean(xs, axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(traj.average.col, np.mean(ys, axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(steps * traj.final_gap, regret, rtol=1e-8, atol=1e-9 * scale)


def test_record_every_keeps_every_kth_step_and_the_last():
    game = gc.MatrixGame.random(3, 3, seed=2)
    full = gc.play(game, gc.hedge(0.1), steps=10)
    sparse = gc.play(game, gc.hedge(0.1), steps=10, record_every=3)
    np.testing.assert_array_equal(sparse.steps, [3, 6, 9, 10])
    np.testing.assert_array_equal(sparse.nash_gap, full.nash_gap[[2, 5, 8, 9]])
    np.testing.assert_array_equal(sparse.last_gap, full.last_gap[[2, 5, 8, 9]])
    np.testing.assert_array_equal(sparse.average.row, full.average.row)
    assert sparse.num_steps == 10
    only_last = gc.play(game, gc.hedge(0.1), steps=10, record_every=100)
    np.testing.assert_array_equal(only_last.steps, [10])
    assert only_last.final_gap == full.final_gap


def test_tol_stops_at_the_first_step_below_tol():
    game = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    kwargs = dict(x0=[0.5, 0.3, 0.2], y0=[0.2, 0.3, 0.5])
    full = gc.play(game, gc.optimistic(gc.hedge(0.1)), steps=3000, **kwargs)
    tol = 0.02
    first = int(np.argmax(full.nash_gap <= tol)) + 1  # 1-based step of the first gap <= tol
    assert full.nash_gap[first - 1] <= tol < full.nash_gap[first - 2] and 1 < first < 3000
    early = gc.play(
        game, gc.optimistic(gc.hedge(0.1)), steps=3000, tol=tol, record_every=1000, **kwargs
    )
    assert early.num_steps == first
    assert early.steps[-1] == first and early.final_gap <= tol
    # The stopped run is the first `first` steps of the full one.
    prefix = gc.play(game, gc.optimistic(gc.hedge(0.1)), steps=first, **kwargs)
    np.testing.assert_array_equal(early.average.row, prefix.average.row)


def test_tol_waits_for_every_game_of_a_batch():
    rps = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
    game = gc.MatrixGame(np.stack([rps, 3 * rps]))  # the second game's gap is 3x larger
    rule, kwargs = gc.optimistic(gc.hedge(0.1)), dict(x0=[0.5, 0.3, 0.2], tol=5e-3)
    traj = gc.play(game, rule, steps=3000, **kwargs)
    singles = [gc.play(gc.MatrixGame(game.payoff[b]), rule, steps=3000, **kwargs) for b in range(2)]
    assert singles[0].num_steps < singles[1].num_steps < 3000
    assert traj.num_steps == singles[1].num_steps  # the slowest game decides
    assert np.all(traj.final_gap <= 5e-3)


@pytest.mark.parametrize("alternating", [False, True])
@pytest.mark.parametrize("averaging", ["uniform", "quadratic"])
def test_batched_games_equal_a_loop_over_single_games(alternating, averaging):
    game = gc.MatrixGame.random(3, 4, seed=9, batch_shape=(2, 3))
    rng = np.random.default_rng(3)
    x0 = rng.dirichlet(np.ones(3), size=(2, 3))
    y0 = rng.dirichlet(np.ones(4))  # one y0 broadcast over the batch
    for rule in RULES:
        traj = gc.play(
            game, rule, steps=40, x0=x0, y0=y0, alternating=alternating, averaging=averaging,
            record_every=7,
        )
        assert traj.nash_gap.shape == (6, 2, 3)
        assert traj.average.row.shape == (2, 3, 3) and traj.last.col.shape == (2, 3, 4)
        for idx in np.ndindex(2, 3):
            single = gc.play(
                gc.MatrixGame(game.payoff[idx]), rule, steps=40, x0=x0[idx], y0=y0,
                alternating=alternating, averaging=averaging, record_every=7,
            )
            for got, want in [
                (traj.average.row[idx], single.average.row),
                (traj.average.col[idx], single.average.col),
                (traj.last.row[idx], single.last.row),
                (traj.last.col[idx], single.last.col),
                (traj.nash_gap[(slice(None), *idx)], single.nash_gap),
                (traj.last_gap[(slice(None), *idx)], single.last_gap),
            ]:
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_x0_y0_are_the_first_iterates_and_default_to_uniform():
    game = gc.MatrixGame.random(3, 2, seed=4)
    traj = gc.play(game, gc.hedge(0.5), steps=1, x0=[0.0, 0.25, 0.75], y0=[1.0, 0.0])
    np.testing.assert_array_equal(traj.average.row, [0.0, 0.25, 0.75])
    np.testing.assert_array_equal(traj.average.col, [1.0, 0.0])
    # Hedge keeps the zero probabilities of a face at exactly zero.
    assert traj.last.row[0] == 0.0 and traj.last.col[1] == 0.0
    default = gc.play(game, gc.hedge(0.5), steps=1)
    np.testing.assert_array_equal(default.average.row, np.full(3, 1 / 3))
    np.testing.assert_array_equal(default.average.col, [0.5, 0.5])


def test_col_rule_defaults_to_row_rule_and_players_may_differ():
    game = gc.MatrixGame.random(3, 3, seed=6)
    same = gc.play(game, gc.hedge(0.2), steps=20)
    explicit = gc.play(game, gc.hedge(0.2), gc.hedge(0.2), steps=20)
    np.testing.assert_array_equal(same.average.col, explicit.average.col)
    mixed = gc.play(game, gc.hedge(0.2), gc.regret_matching_plus(), steps=20)
    assert type(mixed.row_state).__name__ == "HedgeState"
    assert type(mixed.col_state).__name__ == "RMPlusState"
    # The final states continue the run: 20 + 1 steps by hand equal a 21-step run's last iterate.
    longer = gc.play(game, gc.hedge(0.2), gc.regret_matching_plus(), steps=21)
    x, y = mixed.last
    row = gc.hedge(0.2).step(mixed.row_state, game.payoff @ y)
    col = gc.regret_matching_plus().step(mixed.col_state, -(game.payoff.T @ x))
    np.testing.assert_allclose(gc.softmax(row.logits), longer.last.row, rtol=1e-12)
    np.testing.assert_allclose(gc.softmax(col.logits), longer.last.col, rtol=1e-12, atol=1e-300)


def test_one_by_one_game_has_zero_gap():
    traj = gc.play(gc.MatrixGame([[3.0]]), gc.hedge(0.1), steps=5)
    np.testing.assert_array_equal(traj.nash_gap, np.zeros(5))
    np.testing.assert_array_equal(traj.average.row, [1.0])
