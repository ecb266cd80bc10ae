"""gc.solve: an equilibrium within a Nash gap, by pivoting or by discounted RM+ (float32 where
it pays), certified.

Oracles: the gap is recomputed here from its definition, the value is checked against HiGHS's
exact answer (a profile of gap g has a payoff within g of the game's value), and the discounted-RM+
route against gc.play's own iterates.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gpo_core as gc
from gpo_core import approx
from strategies import zero_sum_games


def _check(game: gc.MatrixGame, sol: gc.GapSolution, tol: float) -> None:
    a = np.asarray(game.payoff, dtype=np.float64)
    x, y = np.asarray(sol.row, dtype=np.float64), np.asarray(sol.col, dtype=np.float64)
    scale = float(np.abs(a).max())
    assert (x >= 0).all() and (y >= 0).all()
    # on the simplex in the game's precision (a float32 run's average is renormalised)
    ones = 1e-12 if np.asarray(sol.row).dtype == np.float64 else 1e-6
    np.testing.assert_allclose(x.sum(-1), 1.0, rtol=0, atol=ones)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=0, atol=ones)
    # the gap it reports is the profile's gap, from its definition
    gap = (a @ y[..., None])[..., 0].max(-1) - (x[..., None, :] @ a)[..., 0, :].min(-1)
    np.testing.assert_allclose(np.asarray(sol.gap, dtype=np.float64), gap, atol=1e-6 * scale)
    assert (np.asarray(sol.gap) <= tol).all()
    value = np.asarray(sol.value, dtype=np.float64)
    np.testing.assert_allclose(value, np.einsum("...i,...ij,...j->...", x, a, y), atol=1e-6 * scale)
    # HiGHS's profile, with its own gap: both payoffs lie within their gaps of the game's value
    exact = gc.solve_lp(game)
    lp_value = np.einsum("...i,...ij,...j->...", exact.row, a, exact.col)
    lp_gap = np.asarray(gc.nash_gap(game, exact.row, exact.col))
    assert (np.abs(value - lp_value) <= gap + lp_gap + 1e-12 * scale).all()


@given(
    game=zero_sum_games(max_actions=6),
    method=st.sampled_from(["auto", "pivot", "drm+"]),
    mixed=st.sampled_from([None, True, False]),
)
def test_reaches_tol_and_the_value(game: gc.MatrixGame, method: str, mixed: bool | None) -> None:
    tol = 1e-3 * max(float(np.abs(game.payoff).max()), 1e-3)
    sol = gc.solve(game, tol, method=method, mixed=mixed)
    _check(game, sol, tol)
    if method == "drm+":
        assert sol.method == ("drm+ float32" if mixed else "drm+ float64")
        assert 1 <= sol.iterations <= 100_000
    else:  # small games pivot under "auto"
        assert sol.method in ("pivot", "highs") and sol.iterations >= 0


def test_random_games_and_the_automatic_choices() -> None:
    small = gc.MatrixGame.random(30, seed=1)
    sol = gc.solve(small, 1e-4)
    assert sol.method == "pivot" and float(sol.gap) < 1e-12
    _check(small, sol, 1e-4)
    # pivoting answers exactly, whatever tol asks
    assert float(gc.solve(small, 1e-12, method="pivot").gap) <= 1e-12
    # too small for float32 to pay
    assert gc.solve(small, 1e-4, method="drm+").method == "drm+ float64"
    big = gc.MatrixGame.random(400, 320, seed=2)  # 128,000 entries, 320 on the smaller side
    sol = gc.solve(big, 1e-4)
    assert sol.method == "drm+ float32" and sol.row.dtype == np.float64
    _check(big, sol, 1e-4)
    # a tol too close to float32's rounding for the automatic choice: the game's precision
    with pytest.warns(RuntimeWarning, match="after 50 steps"):
        assert gc.solve(big, 1e-6, max_steps=50).method == "drm+ float64"
    single = gc.MatrixGame(big.payoff.astype(np.float32))
    sol = gc.solve(single, 1e-3)
    assert sol.method == "drm+ float32" and sol.row.dtype == np.float32
    _check(single, sol, 1e-3)


def test_drm_is_play_stopped_at_the_first_step_within_tol() -> None:
    game = gc.MatrixGame.random(40, 30, seed=3)
    sol = gc.solve(game, 1e-5, method="drm+", mixed=False)
    traj = gc.play(game, gc.discounted_regret_matching_plus(), steps=sol.iterations,
                   alternating=True, averaging="quadratic")
    np.testing.assert_allclose(sol.row, traj.average.row, rtol=0, atol=1e-15)
    np.testing.assert_allclose(sol.col, traj.average.col, rtol=0, atol=1e-15)
    assert float(traj.final_gap) <= 1e-5
    shorter = gc.play(game, gc.discounted_regret_matching_plus(), steps=sol.iterations - 1,
                      alternating=True, averaging="quadratic")
    assert float(shorter.final_gap) > 1e-5


def test_huge_payoffs_stay_in_float64() -> None:
    # float32 would overflow: "auto" keeps the game's precision. (HiGHS refuses such payoffs;
    # the oracle is RM+'s invariance to scaling: the unit game's run, step for step.)
    unit = gc.MatrixGame.random(320, seed=8)
    game = gc.MatrixGame(unit.payoff * 1e35)
    sol = gc.solve(game, 1e31)
    assert sol.method == "drm+ float64"
    ref = gc.solve(unit, 1e-4, mixed=False)
    assert sol.iterations == ref.iterations
    np.testing.assert_allclose(sol.row, ref.row, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sol.col, ref.col, rtol=0, atol=1e-12)
    assert float(sol.gap) <= 1e31
    np.testing.assert_allclose(float(sol.gap) / 1e35, float(ref.gap), rtol=1e-9)


def test_a_failed_float64_check_runs_again_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where float32's own sums say tol but the float64 check does not (tol near float32's
    # rounding), the answer comes from a float64 run. Provoked here by spoiling the float32
    # run's average, whatever this machine's float32 rounding does.
    game = gc.MatrixGame.random(60, seed=4)
    real_play = approx.play
    runs = []

    def spoiled_play(work: gc.MatrixGame, *args: object, **kwargs: object) -> gc.Trajectory:
        traj = real_play(work, *args, **kwargs)
        runs.append(work.payoff.dtype)
        if work.payoff.dtype == np.float32:
            pure = np.zeros_like(traj.average.row)
            pure[0] = 1.0
            traj = dataclasses.replace(traj, average=gc.Profile(pure, traj.average.col))
        return traj

    monkeypatch.setattr(approx, "play", spoiled_play)
    sol = gc.solve(game, 1e-4, method="drm+", mixed=True)
    assert runs == [np.float32, np.float64]
    assert sol.method == "drm+ float64"
    _check(game, sol, 1e-4)


def test_out_of_steps_warns_and_returns_the_average_with_its_gap() -> None:
    game = gc.MatrixGame.random(20, seed=5)
    with pytest.warns(RuntimeWarning, match=r"Nash gap .* > tol=1e-08 after 7 steps"):
        sol = gc.solve(game, 1e-8, method="drm+", max_steps=7)
    assert sol.iterations == 7 and float(sol.gap) > 1e-8
    np.testing.assert_allclose(sol.gap, gc.nash_gap(game, sol.row, sol.col), atol=1e-15)
    with warnings.catch_warnings():  # float32 that ran out of steps is not run again
        warnings.simplefilter("ignore", RuntimeWarning)
        out = gc.solve(game, 1e-8, method="drm+", max_steps=7, mixed=True)
    assert out.method == "drm+ float32"


def test_a_batch() -> None:
    games = gc.MatrixGame.random(12, 9, seed=6, batch_shape=(5,))
    for method in ("pivot", "drm+"):
        sol = gc.solve(games, 1e-4, method=method)
        assert sol.row.shape == (5, 12) and sol.col.shape == (5, 9) and sol.gap.shape == (5,)
        _check(games, sol, 1e-4)
    alone = [
        gc.solve(gc.MatrixGame(games.payoff[i]), 1e-4, method="drm+").iterations
        for i in range(5)
    ]
    assert sol.iterations == max(alone)  # the batch runs until its slowest game is done


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"game": "rps"}, TypeError, "game must be a gpo_core.MatrixGame or a payoff array"),
        ({"game": [[1, np.nan]]}, ValueError, "game must be finite"),
        ({"tol": 0.0}, ValueError, "tol must be a finite number > 0"),
        ({"tol": float("nan")}, ValueError, "tol must be a finite number > 0"),
        ({"tol": "small"}, TypeError, "tol must be a real number"),
        ({"method": "lp"}, ValueError, "method must be one of .*'lp'"),
        ({"max_steps": 0}, ValueError, "max_steps must be an integer >= 1"),
        ({"max_steps": 2.5}, TypeError, "max_steps must be an integer"),
        ({"mixed": "yes"}, TypeError, "mixed must be True, False or None"),
        ({"game": gc.MatrixGame([[1e31, -1.0], [-1.0, 1.0]]), "method": "drm+", "mixed": True},
         ValueError, r"mixed=True needs payoffs below 1e\+30 .* got max \|A\| = 1e\+31"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, error: type, match: str) -> None:
    args = {"game": gc.MatrixGame([[1.0, -1.0], [-1.0, 1.0]]), "tol": 1e-3} | kwargs
    game = args.pop("game")
    with pytest.raises(error, match=match):
        gc.solve(game, **args)


def test_torch_tensors_stay_tensors() -> None:
    import torch  # the [all] extra installs it (and array-api-compat): a failure, not a skip

    game = gc.MatrixGame.random(50, 40, seed=7)
    tgame = gc.MatrixGame(torch.tensor(game.payoff))
    ref = gc.solve(game, 1e-5, method="drm+", mixed=False)
    sol = gc.solve(tgame, 1e-5, method="drm+", mixed=False)
    assert isinstance(sol.row, torch.Tensor) and sol.row.dtype == torch.float64
    assert sol.iterations == ref.iterations
    np.testing.assert_allclose(sol.row.numpy(), ref.row, atol=1e-10)
    np.testing.assert_allclose(sol.col.numpy(), ref.col, atol=1e-10)
    for method, mixed in (("drm+", True), ("pivot", None)):
        out = gc.solve(tgame, 1e-4, method=method, mixed=mixed)
        assert isinstance(out.row, torch.Tensor) and out.row.dtype == torch.float64
        host = out._replace(**{f: getattr(out, f).numpy() for f in ("row", "col", "value", "gap")})
        _check(game, host, 1e-4)
