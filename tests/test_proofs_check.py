"""Tests of proofs_check: each check holds on hypothesis games and known cases, each CAN fail, the
exact oracles agree with the closed forms, and the quick run exits 0 and writes its PNGs."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gpo_core as gc

import proofs_check as pc
from proofs_check._common import fit_decay_exponent  # noqa: E402
from proofs_check._hedge import folk_result_from_record, regret_result_from_record  # noqa: E402
from proofs_check._result import make_ratio  # noqa: E402

FEW = settings(max_examples=8, deadline=None)

MP = gc.MatrixGame([[1.0, -1.0], [-1.0, 1.0]], name="mp")
BIASED = gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]], name="biased")  # NE (0.4, 0.6), value 0.2


@st.composite
def small_games(draw, max_actions: int = 4):
    """Zero-sum games up to ``max_actions`` a side (non-square allowed), entries in [-10, 10]."""
    m = draw(st.integers(1, max_actions))
    n = draw(st.integers(1, max_actions))
    a = draw(hnp.arrays(np.float64, (m, n), elements=st.floats(-10, 10, allow_nan=False, width=64)))
    assume(float(a.max() - a.min()) > 1e-2)
    return gc.MatrixGame(a, name="hyp")


# ---------------------------------------------------------------------- holds on generated games
@given(game=small_games(), eta=st.sampled_from(["tuned", "anytime", 0.05]))
@FEW
def test_regret_bound_holds_in_self_play(game, eta):
    res = pc.check_hedge_regret_bound(game, eta, T=150, grid_points=20)
    assert res.holds, res.line()
    assert res.ratio <= 1 + 1e-9


@given(game=small_games(), eta=st.sampled_from(["tuned", "anytime"]))
@FEW
def test_folk_chain_holds_and_the_identity_is_exact(game, eta):
    res = pc.check_folk_theorem_gap(game, eta, T=150, grid_points=20)
    assert res.holds, res.line()
    rec = pc.selfplay_record(game, eta, 150, grid_points=20)
    # gc.play's recorded gap equals (R_x + R_y)/t computed independently here
    np.testing.assert_allclose(rec.gap, np.maximum((rec.regret_row + rec.regret_col) / rec.t, 0), atol=1e-9 * game.payoff_range)


@given(game=small_games(), frac=st.sampled_from([0.2, 1.0]))
@FEW
def test_mmd_linear_rate_holds(game, frac):
    res = pc.check_mmd_linear_rate(game, frac * game.payoff_range, T=200)
    assert res.holds, res.line()


@given(game=small_games(), frac=st.sampled_from([0.05, 0.5]), sharp=st.booleans())
@FEW
def test_qre_gap_bound_holds(game, frac, sharp):
    res = pc.check_qre_gap_bound(game, frac * game.payoff_range, sharp=sharp)
    assert res.holds, res.line()


@given(seed=st.integers(0, 10**6), n=st.integers(2, 6), eta=st.sampled_from(["tuned", "anytime"]))
@FEW
def test_regret_bound_holds_on_adversarial_sequences(seed, n, eta):
    T = 300
    for seq in (
        pc.random_gains(n, 2.0, seed=seed),
        pc.least_likely_gains(n, 2.0),
        pc.switching_gains(n, 2.0, period=1 + seed % 60),
    ):
        res = pc.check_hedge_regret_bound(seq, eta, T, grid_points=20)
        assert res.holds, res.line()


@given(u=hnp.arrays(np.float64, (40, 3), elements=st.floats(-3, 3, allow_nan=False, width=64)))
@FEW
def test_regret_bound_holds_on_arrays(u):
    assume(float(np.max(u.max(axis=1) - u.min(axis=1))) > 1e-3)
    assert pc.check_hedge_regret_bound(u, "anytime").holds


def test_rates_hold_on_a_known_game():
    res = pc.check_averaged_gap_rate(BIASED, "anytime", T=3000)
    assert res.holds and res.sense == ">=" and res.kind == "empirical", res.line()
    assert pc.check_averaged_gap_rate(BIASED, "tuned", T=3000).holds


def test_alternating_reports_both_rates():
    res = pc.check_alternating_schedule(BIASED, T=3000)
    assert res.claim == "rate/alternating-anytime"
    assert res.citation.startswith("none: no theorem")
    assert "simultaneous exponent" in res.detail
    assert res.curve is not None and res.curve.reference is not None and res.curve.bound is None


# ---------------------------------------------------------------------------- each check CAN fail
def test_regret_check_fails_with_a_smaller_constant():
    seq = pc.switching_gains(2, 1.0, period=1000)
    assert pc.check_hedge_regret_bound(seq, "tuned", 2000).holds
    res = pc.check_hedge_regret_bound(seq, "tuned", 2000, bound_scale=0.9)
    assert not res.holds and res.ratio > 1


def test_folk_check_fails_with_a_smaller_constant():
    game = gc.MatrixGame.random(3, 3, seed=2)
    res = pc.check_folk_theorem_gap(game, "tuned", 2000)
    assert res.holds
    assert not pc.check_folk_theorem_gap(game, "tuned", 2000, bound_scale=0.5 * res.ratio).holds


def test_rate_check_fails_for_a_non_converging_run():
    """Steps so small the players barely move: the gap stays flat, the fitted exponent is ~0."""
    frozen = gc.inverse_sqrt(1e-6)
    res = pc.check_averaged_gap_rate(BIASED, frozen, T=2000)
    assert not res.holds and res.lhs < 0.1, res.line()
    assert not pc.check_alternating_schedule(BIASED, frozen, T=2000).holds


def test_fitted_exponent_of_a_flat_series_is_zero_and_of_a_floor_series_is_inf():
    t = np.arange(1, 101, dtype=float)
    p, k, _ = fit_decay_exponent(t, np.full(100, 0.3), 1e-12)
    assert p == pytest.approx(0.0, abs=1e-12) and k == 100
    assert fit_decay_exponent(t, np.zeros(100), 1e-12)[0] == math.inf


def test_mmd_check_fails_with_a_smaller_constant_on_matching_pennies():
    """On matching pennies at eta = alpha/L^2 the KL contracts at exactly (1+eta alpha)^-1 near
    the QRE, so the theorem's constant cannot be improved: 0.9 x bound is violated."""
    res = pc.check_mmd_linear_rate(MP, 0.1)
    assert res.holds and res.ratio > 0.95, res.line()
    assert not pc.check_mmd_linear_rate(MP, 0.1, bound_scale=0.9).holds


def test_qre_check_fails_with_a_smaller_constant():
    game = gc.MatrixGame.random(2, 2, seed=0)
    res = pc.check_qre_gap_bound(game, 0.05 * game.payoff_range, sharp=True)
    assert res.holds and res.ratio > 0.5
    assert not pc.check_qre_gap_bound(game, 0.05 * game.payoff_range, sharp=True, bound_scale=0.5).holds


def test_diversity_checks_fail_for_a_wrong_claim():
    reward = np.random.default_rng(1).uniform(size=(4, 3))
    V = pc.prompt_values(reward)
    assert pc.check_diversity_equilibrium(reward, 0.0, 1000).holds
    best = np.eye(4)[int(np.argmax(V))]  # the *best* prompt, not the worst
    assert not pc.check_diversity_equilibrium(reward, 0.0, 1000, claimed=best).holds
    tau = 0.1
    assert pc.check_diversity_equilibrium(reward, tau, 1000).holds
    wrong_sign = gc.softmax(V / tau)
    assert not pc.check_diversity_equilibrium(reward, tau, 1000, claimed=wrong_sign).holds
    wrong_temperature = gc.softmax(-V / (2 * tau))
    assert not pc.check_diversity_equilibrium(reward, tau, 1000, claimed=wrong_temperature).holds


# --------------------------------------------------------------------------- exact oracles
def test_point_mass_is_the_exact_equilibrium_of_the_explicit_form():
    reward = np.random.default_rng(3).uniform(size=(3, 3))
    V = pc.prompt_values(reward)
    sol = gc.solve_lp(pc.explicit_normal_form(reward))
    np.testing.assert_allclose(sol.col, np.eye(3)[int(np.argmin(V))], atol=1e-8)
    assert float(sol.value) == pytest.approx(float(V.min()), abs=1e-9)


@pytest.mark.parametrize("tau", [0.05, 0.3])
def test_gibbs_is_the_exact_regularised_equilibrium_of_the_explicit_form(tau):
    """Independent oracle: cvxpy solves min_mu max_map J(map, mu) - tau H(mu) on all q^p maps."""
    import cvxpy as cp  # the [all] extra installs it: missing is a failure, not a skip

    reward = np.random.default_rng(4).uniform(size=(4, 2))
    M = pc.explicit_normal_form(reward).payoff  # (maps, prompts)
    mu = cp.Variable(4, nonneg=True)
    s = cp.Variable()
    problem = cp.Problem(cp.Minimize(s - tau * cp.sum(cp.entr(mu))), [M @ mu <= s, cp.sum(mu) == 1])
    with np.errstate(all="ignore"):  # the conic solver's own float handling
        problem.solve(solver=cp.ECOS, abstol=1e-10, reltol=1e-10, feastol=1e-10)
    np.testing.assert_allclose(mu.value, pc.gibbs_adversary(pc.prompt_values(reward), tau), atol=2e-6)


def test_openspiel_enumeration_keeps_zero_sum_and_reports_the_rest():
    import pyspiel  # the [all] extra installs it

    games, skips = pc.openspiel_matrix_games()
    names = [n for n in pyspiel.registered_names() if n.startswith("matrix_")]
    zero_sum = {
        n for n in names if pyspiel.load_game(n).get_type().utility == pyspiel.GameType.Utility.ZERO_SUM
    }
    assert {g.name for g in games} == zero_sum
    assert {s.game for s in skips} == set(names) - zero_sum
    assert all("not zero-sum" in s.reason for s in skips)


# ------------------------------------------------------------------------------ values, validation
def test_results_are_frozen_values():
    res = pc.check_qre_gap_bound(BIASED, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.holds = False  # type: ignore[misc]
    assert {"claim", "game", "lhs", "rhs", "holds", "citation", "ratio"} <= {f.name for f in dataclasses.fields(res)}


def test_ratio_is_at_most_one_exactly_when_the_claim_holds():
    assert make_ratio(1.0, 2.0, "<=") == 0.5 and make_ratio(3.0, 2.0, "<=") == 1.5
    assert make_ratio(0.8, 0.45, ">=") < 1 < make_ratio(0.3, 0.45, ">=")
    assert make_ratio(math.inf, 0.45, ">=") == 0.0
    assert make_ratio(1.0, 0.0, "<=") == math.inf


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: pc.check_hedge_regret_bound(BIASED, "tuned", 100, bound_scale=1.5), ValueError, "bound_scale"),
        (lambda: pc.check_hedge_regret_bound(BIASED, "fast", 100), ValueError, "eta must be"),
        (lambda: pc.check_hedge_regret_bound(BIASED, lambda t: 0.1, 100), TypeError, "eta must be"),
        (lambda: pc.check_hedge_regret_bound(BIASED, "tuned"), ValueError, "T is required"),
        (lambda: pc.check_hedge_regret_bound("rps", "tuned", 10), TypeError, "source must be"),
        (lambda: pc.check_hedge_regret_bound(BIASED, "tuned", 10, x0=[1.0, 0.0]), ValueError, "x0 must give"),
        (lambda: pc.check_folk_theorem_gap(gc.MatrixGame(np.ones((2, 2))), "tuned", 10), ValueError, "constant payoffs"),
        (lambda: pc.check_folk_theorem_gap(gc.MatrixGame.random(2, batch_shape=(3,)), "tuned", 10), ValueError, "single game"),
        (lambda: pc.check_averaged_gap_rate(gc.MatrixGame.from_openspiel("matrix_rps"), T=100), ValueError, "already a Nash equilibrium"),
        (lambda: pc.check_averaged_gap_rate(BIASED, 0.1, T=100), ValueError, "constant step"),
        (lambda: pc.check_averaged_gap_rate(BIASED, T=100, tolerance=0.7), ValueError, "tolerance"),
        (lambda: pc.check_mmd_linear_rate(MP, 0.1, eta=1.0), ValueError, "exceeds alpha/L"),
        (lambda: pc.check_qre_gap_bound(MP, -1.0), ValueError, "alpha must be"),
        (lambda: pc.check_diversity_equilibrium([[1.0, 1.0], [1.0, 0.0]], 0.0), ValueError, "not unique"),
        (lambda: pc.check_diversity_equilibrium([[1.0, 0.0]], 0.1), ValueError, "at least 2 prompts"),
        (lambda: pc.check_diversity_equilibrium(np.eye(2), 0.1, claimed=[0.5, 0.6]), ValueError, "claimed must sum"),
        (lambda: pc.run(quick="yes"), TypeError, "quick must be a bool"),
    ],
)
def test_checks_validate_their_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_alternating_records_are_not_checked_against_the_simultaneous_theorems():
    rec = pc.selfplay_record(BIASED, "anytime", 50, alternating=True)
    for derive in (folk_result_from_record, regret_result_from_record):
        with pytest.raises(ValueError, match="alternating play"):
            derive(rec, "biased")


def test_a_sequence_that_exceeds_its_declared_range_is_rejected():
    bad = pc.GainSequence("liar", 2, 1.0, lambda p, t: np.array([5.0, 0.0]))
    with pytest.raises(ValueError, match="declared range"):
        pc.check_hedge_regret_bound(bad, "anytime", 10)


# ------------------------------------------------------------------------------ the runner
def test_run_with_a_tiny_config_returns_a_report(tmp_path):
    tiny = dataclasses.replace(
        pc.QUICK,
        T=300, T_large=300, random_shapes=((3, 2, 0),), openspiel_names=(), extensive=False,
        seq_T=200, seq_actions=(2,), seq_kinds=("least_likely",), mmd_games=1, diversity=((3, 2, 0),),
        diversity_T=200,
    )
    report = pc.run(out_dir=tmp_path, config=tiny, progress=False)
    assert isinstance(report, pc.Report)
    assert report.ok == all(r.holds for r in report.results)  # (T=300 is too short for the rates)
    claims = {r.claim for r in report.results}
    assert {"regret/hedge-tuned", "folk/hedge-anytime", "rate/alternating-anytime", "mmd/linear-rate",
            "qre/gap-log", "diversity/point-mass", "diversity/gibbs"} <= claims
    assert len(report.skipped) >= 1  # the general-sum OpenSpiel games are listed, not dropped
    assert "worst ratio" in report.table()


def test_quick_mode_exits_zero_and_writes_the_plots(tmp_path, capsys):
    out = tmp_path / "quick"
    assert pc.main(["--quick", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "claim" in printed and "worst ratio" in printed and "ALL CLAIMS HOLD" in printed
    files = sorted(os.listdir(out))
    pngs = [f for f in files if f.endswith(".png")]
    assert {"folk_hedge-anytime.png", "rate_hedge-tuned.png", "mmd_linear-rate.png"} <= set(pngs)
    for f in pngs:
        with open(out / f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "report.txt" in files
    assert not [f for f in files if _is_atomic_temp(f)]  # atomic writes leave no temp files


def _is_atomic_temp(name: str) -> bool:
    """A temporary file of gpo_core._io.atomic_path: ".<target>.<32 hex>[suffix].tmp"."""
    return re.fullmatch(r"\..+\.[0-9a-f]{32}.*\.tmp", name) is not None


def test_the_temp_file_check_sees_what_atomic_path_leaves(tmp_path):
    """The check above looked for a ".tmp-" prefix that the writer never uses, so it could not
    fail; here it sees atomic_path's own temporary file while a write is under way."""
    from gpo_core._io import atomic_path

    with atomic_path(tmp_path / "report.txt", suffix=".png") as tmp:
        pathlib.Path(tmp).write_text("half")
        assert [f for f in os.listdir(tmp_path) if _is_atomic_temp(f)] == [os.path.basename(tmp)]
    assert os.listdir(tmp_path) == ["report.txt"]
