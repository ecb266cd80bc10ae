"""gpo_core's optional C kernels (gpo_core/_kernels.c) against the numpy steps they replace."""

from __future__ import annotations

import os

import numpy as np
import pytest

import gpo_core as gc
import gpo_core._fused as fused
from gpo_core.discounted import _discount
from gpo_core.rules import _regret_matching_into

KERNELS = fused.KERNELS
needs_c = pytest.mark.skipif(
    KERNELS is None, reason="gpo_core._kernels is not built (or GPO_TEST_NUMPY_KERNELS=1 is set)"
)
MAKERS = {
    "rm+": gc.regret_matching_plus,
    "prm+": gc.predictive_regret_matching_plus,
    "drm+": gc.discounted_regret_matching_plus,
}


@pytest.mark.skipif(os.environ.get("GPO_TEST_NUMPY_KERNELS") == "1",
                    reason="this run switches the C kernels off on purpose")
def test_the_install_built_the_c_kernels():
    """The README's install compiles them (gcc is on every machine here); without them every
    step still runs, in numpy, 15-40% slower at 1000 x 1000 (benchmarks/README.md)."""
    assert KERNELS is not None, "gpo_core._kernels was not built: is a C compiler installed?"


def _numpy_step(predictive, discount, u, x, q, count):
    """The numpy step (the fallback the C kernel replaces), on copies."""
    q = q.copy()
    out, scratch = np.empty_like(x), np.empty_like(x)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, "KERNELS", None)
        _regret_matching_into(predictive, discount)(x, u, q, out, scratch, count)
    return out, q


def _c_step(predictive, discount, u, x, q, count):
    q = q.copy()
    out = np.empty_like(x)
    d = 1.0 if discount is None else discount(count)
    assert KERNELS.regret_matching(u, x, q, out, d, predictive) == 0
    return out, q


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", ["rm+", "prm+", "drm+"])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 1000])
def test_one_c_step_equals_the_numpy_step(dtype, variant, n):
    rng = np.random.default_rng(n)
    predictive = variant == "prm+"
    discount = _discount(1.5) if variant == "drm+" else None
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for trial in range(20):
        u = rng.uniform(-3, 3, n).astype(dtype)
        x = rng.dirichlet(np.ones(n)).astype(dtype)
        q = (rng.uniform(0, 2, n) * (rng.random(n) < 0.6)).astype(dtype)
        if trial % 5 == 0:
            q[:] = 0  # no positive regret yet: the strategy is kept where r <= 0 everywhere
        c_out, c_q = _c_step(predictive, discount, u, x, q, trial)
        n_out, n_q = _numpy_step(predictive, discount, u, x, q, trial)
        np.testing.assert_allclose(c_q, n_q, rtol=tol, atol=tol)
        np.testing.assert_allclose(c_out, n_out, rtol=tol, atol=tol)
        assert c_out.dtype == dtype and c_q.dtype == dtype


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ties_are_exact_zeros_in_c_too(dtype):
    """All actions earn the same: u - <u, x> is rounding noise, zeroed, so nothing moves."""
    x = np.array([0.2, 0.3, 0.5], dtype=dtype)
    u = np.full(3, 0.7, dtype=dtype)
    q = np.zeros(3, dtype=dtype)
    out = np.empty_like(x)
    assert KERNELS.regret_matching(u, x, q, out, 1.0, False) == 0
    np.testing.assert_array_equal(q, 0.0)
    np.testing.assert_array_equal(out, x)
    assert not np.signbit(q).any()  # [-0.0]^+ is +0.0: no negative zeros in the strategy


@needs_c
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("pos", [0, 4, 9])
def test_non_finite_utilities_are_reported(bad, pos):
    u = np.linspace(-1, 1, 10)
    u[pos] = bad
    x = np.full(10, 0.1)
    assert KERNELS.regret_matching(u, x, np.zeros(10), np.empty(10), 1.0, False) == 1


@needs_c
def test_a_batch_is_its_rows_one_by_one():
    rng = np.random.default_rng(0)
    u, x = rng.normal(size=(5, 4, 9)), rng.dirichlet(np.ones(9), size=(5, 4))
    q = rng.uniform(0, 1, size=(5, 4, 9))
    q_all, out_all = q.copy(), np.empty_like(x)
    assert KERNELS.regret_matching(u, x, q_all, out_all, 0.5, True) == 0
    for idx in np.ndindex(5, 4):
        q_row, out_row = q[idx].copy(), np.empty(9)
        assert KERNELS.regret_matching(u[idx], x[idx], q_row, out_row, 0.5, True) == 0
        np.testing.assert_array_equal(q_all[idx], q_row)
        np.testing.assert_array_equal(out_all[idx], out_row)


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accumulate_rounds_like_numpy_and_returns_the_max(dtype):
    rng = np.random.default_rng(2)
    x, u = rng.random(37).astype(dtype), rng.normal(size=23).astype(dtype)
    xs, us = rng.random(37).astype(dtype), rng.normal(size=23).astype(dtype)
    xs_c, us_c = xs.copy(), us.copy()
    top = KERNELS.accumulate(7.3, x, xs_c, u, us_c)
    xs += 7.3 * x  # numpy: w * x rounded, then the sum rounded
    us += 7.3 * u
    np.testing.assert_array_equal(xs_c, xs)
    np.testing.assert_array_equal(us_c, us)
    assert top == float(us.max())


@needs_c
def test_arrays_the_kernels_do_not_take_are_refused_before_anything_is_written():
    x = np.full(4, 0.25)
    q = np.ones(4)
    with pytest.raises(TypeError, match="float64 or float32"):
        KERNELS.regret_matching(np.ones(4, dtype=np.float16), x, q, np.empty(4), 1.0, False)
    with pytest.raises(TypeError, match="float64 or float32"):
        KERNELS.regret_matching(np.ones(4, dtype=np.float32), x, q, np.empty(4), 1.0, False)
    with pytest.raises(ValueError, match="different shapes"):
        KERNELS.regret_matching(np.ones(5), x, q, np.empty(4), 1.0, False)
    with pytest.raises(ValueError, match="not C-contiguous"):
        KERNELS.regret_matching(np.ones(8)[::2], x, q, np.empty(4), 1.0, False)
    read_only = np.empty(4)
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        KERNELS.regret_matching(np.ones(4), x, q, read_only, 1.0, False)
    np.testing.assert_array_equal(q, 1.0)


def test_the_rules_fall_back_to_numpy_for_arrays_c_does_not_take():
    """float16 utilities and a strided strategy still step (through numpy), C built or not."""
    rule = gc.regret_matching_plus()
    state = rule.step(rule.init(np.zeros(3)), np.array([1.0, 0.0, -1.0], dtype=np.float16))
    np.testing.assert_allclose(state.strategy, [1.0, 0.0, 0.0])
    strided = gc.RMPlusState(np.zeros(6)[::2], 0, np.full(6, 1 / 3)[::2])
    state = rule.step(strided, np.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(state.strategy, [1.0, 0.0, 0.0])


@needs_c
@pytest.mark.parametrize("rule", sorted(MAKERS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_play_with_and_without_the_c_kernels_agrees_to_rounding(rule, dtype, monkeypatch):
    """The same math summed in another order: iterates and averages agree to rounding (the
    runs are short enough that regret matching's sensitivity has not amplified it)."""
    game = gc.MatrixGame(np.asarray(gc.MatrixGame.random(40, 30, seed=5).payoff, dtype=dtype))
    kwargs = dict(steps=60, alternating=True, averaging="quadratic", record_every=10)
    fast = gc.play(game, MAKERS[rule](), **kwargs)
    monkeypatch.setattr(fused, "KERNELS", None)
    plain = gc.play(game, MAKERS[rule](), **kwargs)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for a, b in ((fast.average.row, plain.average.row), (fast.average.col, plain.average.col),
                 (fast.last.row, plain.last.row), (fast.nash_gap, plain.nash_gap)):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_fused_step_is_regret_matching_then_accumulate(dtype):
    """play's one C call per player equals the two calls it replaces, bit for bit."""
    rng = np.random.default_rng(4)
    u, acc = rng.normal(size=50).astype(dtype), rng.normal(size=50).astype(dtype)
    x = rng.dirichlet(np.ones(50)).astype(dtype)
    q, xs, us = (rng.random(50).astype(dtype) for _ in range(3))
    q1, xs1, us1, out1 = q.copy(), xs.copy(), us.copy(), np.empty_like(x)
    top, now = KERNELS.step(u, x, q1, out1, 0.75, True, 9.0, xs1, acc, us1)
    q2, xs2, us2, out2 = q.copy(), xs.copy(), us.copy(), np.empty_like(x)
    assert KERNELS.regret_matching(u, x, q2, out2, 0.75, True) == 0
    assert top == KERNELS.accumulate(9.0, x, xs2, acc, us2)
    assert now == np.max(acc)  # the iterate's gap term: max(acc), exactly
    for a, b in ((q1, q2), (out1, out2), (xs1, xs2), (us1, us2)):
        np.testing.assert_array_equal(a, b)
    u[3] = np.inf
    assert all(np.isnan(KERNELS.step(u, x, q1, out1, 1.0, False, 1.0, xs1, acc, us1)))
    np.testing.assert_array_equal(xs1, xs2)  # nothing accumulated


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_plays_player_raises_the_rules_error_for_non_finite_utilities(bad, kernels):
    """The fused player raises the rules' own error (C built or not)."""
    from gpo_core.dynamics import _player

    rule = gc.regret_matching_plus()
    state = rule.init(np.zeros(3))
    x = state.strategy
    step, _ = _player(np, rule, state, np.zeros((3, 3)), x, np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="utilities must be finite"):
        step(np.array([0.0, bad, 1.0]), 1.0, np.zeros(3))


@pytest.fixture(params=["libm", "libmvec"])
def exp_source(request):
    """Hedge's C exp pass one entry at a time (libm's exp), then four or eight at a time (glibc's
    libmvec, where it and AVX2 are there: fused.use_vector_exp)."""
    was = fused.VECTOR_EXP
    on = request.param == "libmvec"
    if fused.use_vector_exp(on) != on:
        fused.use_vector_exp(was)
        pytest.skip("glibc's libmvec with AVX2 is not available on this machine")
    yield request.param
    fused.use_vector_exp(was)


def _numpy_hedge(u, base, cum, eta, ftrl):
    """Hedge's step in numpy (the path without the C kernels): logits, strategy, cum."""
    from gpo_core.simplex import _log_softmax, _softmax

    cum = cum + u
    z = _log_softmax(np, base + eta * (cum if ftrl else u))
    return z, _softmax(np, z), cum


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ftrl", [False, True])
@pytest.mark.parametrize("n", [1, 3, 4, 7, 8, 9, 12, 17, 1000])
def test_the_c_hedge_step_equals_the_numpy_step_to_rounding(dtype, ftrl, n, exp_source):
    """One exp pass in C (strategy e / sum e) against numpy's log_softmax, then softmax; spread
    logits reach exp's underflow (entries 200-1500 below the top), which C returns as 0 directly
    and numpy by way of libm: the strategies there are 0 in both."""
    rng = np.random.default_rng(n)
    eps = float(np.finfo(dtype).eps)
    for spread in (1.0, 200.0, 1500.0):
        u = rng.uniform(-3, 3, n).astype(dtype)
        base = (-spread * rng.random(n)).astype(dtype)
        cum = rng.normal(size=n).astype(dtype)
        z, p, c = np.empty_like(u), np.empty_like(u), np.empty_like(u)
        assert KERNELS.hedge(u, base, cum, z, p, c, 0.3, ftrl) == 0
        z_ref, p_ref, c_ref = _numpy_hedge(u, base, cum, dtype(0.3), ftrl)
        np.testing.assert_array_equal(c, c_ref)  # one rounding, the same
        assert z.dtype == p.dtype == dtype
        # |z| up to ~1500: the shift log(sum e) + top rounds relative to the top entry
        np.testing.assert_allclose(z, z_ref, rtol=0, atol=8 * eps * max(1.0, np.abs(z_ref).max()))
        np.testing.assert_allclose(p, p_ref, rtol=16 * eps, atol=16 * eps)
        np.testing.assert_array_equal(p == 0, p_ref == 0)
        assert abs(float(np.sum(p, dtype=np.float64)) - 1.0) <= n * eps


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 3, 4, 8, 9, 17, 1000])
def test_the_c_mirror_step_equals_mmds_numpy_step_to_rounding(dtype, n, exp_source):
    """MMD's step in C (``mirror``): ((z + eta alpha log rho) + eta u) / (1 + eta alpha), then
    the exp pass, against rules._mirror_step and softmax; a magnet that never plays some actions
    (log rho = -inf) gives them probability 0 in both."""
    from gpo_core.rules import _mirror_step
    from gpo_core.simplex import _log_softmax, _softmax

    rng = np.random.default_rng(n + 100)
    eps = float(np.finfo(dtype).eps)
    for eta, alpha in ((0.3, 0.7), (5.0, 0.05)):
        z = _log_softmax(np, rng.normal(size=(2, n)) * 3).astype(dtype)
        u = rng.uniform(-3, 3, (2, n)).astype(dtype)
        m = _log_softmax(np, rng.normal(size=(2, n))).astype(dtype)
        if n > 2:
            m[:, 1] = -np.inf
        out, p = np.empty_like(z), np.empty_like(z)
        assert KERNELS.mirror(u, z, m, out, p, eta, eta * alpha, 1.0 + eta * alpha) == 0
        with np.errstate(invalid="ignore"):  # -inf - (-inf) in numpy's own softmax of -inf
            ref = _mirror_step(z, u, eta, alpha, m, np)
            p_ref = np.nan_to_num(_softmax(np, ref))
        assert out.dtype == p.dtype == dtype
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(np.isfinite(out), finite)
        scale = max(1.0, float(np.abs(ref[finite]).max()))
        np.testing.assert_allclose(out[finite], ref[finite], rtol=0, atol=8 * eps * scale)
        np.testing.assert_allclose(p, p_ref, rtol=16 * eps, atol=16 * eps)
        np.testing.assert_array_equal(p == 0, p_ref == 0)


@needs_c
@pytest.mark.parametrize("make", [lambda: gc.mmd(0.3, alpha=0.2),
                                  lambda: gc.mmd(gc.inverse_sqrt(1.0), alpha=0.1,
                                                 magnet=[0.5, 0.5, 0, 0, 0, 0, 0, 0, 0, 0])],
                         ids=["constant", "schedule and magnet"])
def test_play_runs_mmd_in_one_c_call_per_player_step(make, kernel_calls, monkeypatch):
    game = gc.MatrixGame.random(10, 10, seed=4)
    fast = gc.play(game, make(), steps=50, alternating=True)
    assert kernel_calls == {"mirror_step": 100}
    monkeypatch.setattr(fused, "KERNELS", None)  # numpy's mirror step, log_softmax and softmax
    slow = gc.play(game, make(), steps=50, alternating=True)
    for a, b in ((fast.average.row, slow.average.row), (fast.last.col, slow.last.col),
                 (fast.row_state.strategy, slow.row_state.strategy), (fast.nash_gap, slow.nash_gap)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@needs_c
@pytest.mark.parametrize("eta", [0.2, "schedule"])
def test_play_runs_optimistic_hedge_in_two_c_calls_per_player_step(eta, kernel_calls):
    """The base state's Hedge step, then the look-ahead step with the sums: no numpy softmax."""
    eta = gc.inverse_sqrt(1.0) if eta == "schedule" else eta
    game = gc.MatrixGame.random(12, 9, seed=5)
    gc.play(game, gc.optimistic(gc.hedge(eta)), steps=40, alternating=True)
    assert kernel_calls == {"hedge": 80, "hedge_step": 80}


@needs_c
def test_the_c_hedge_step_reports_non_finite_utilities_and_hedge_step_is_hedge_then_sums(
    exp_source,
):
    rng = np.random.default_rng(2)
    u, base, cum, x, acc = (rng.normal(size=(2, 9)) for _ in range(5))
    outs1 = [np.empty_like(u) for _ in range(3)]
    xs1, us1 = rng.random((2, 9)), rng.random((2, 9))
    xs2, us2 = xs1.copy(), us1.copy()
    top, now = KERNELS.hedge_step(u, base, cum, *outs1, 0.5, True, 3.0, x, xs1, acc, us1)
    outs2 = [np.empty_like(u) for _ in range(3)]
    assert KERNELS.hedge(u, base, cum, *outs2, 0.5, True) == 0
    assert top == KERNELS.accumulate(3.0, x, xs2, acc, us2) and now == np.max(acc)
    for a, b in zip([*outs1, xs1, us1], [*outs2, xs2, us2]):
        np.testing.assert_array_equal(a, b)
    for bad in (np.inf, -np.inf, np.nan):
        v = u.copy()
        v[1, 4] = bad
        assert KERNELS.hedge(v, base, cum, *outs2, 0.5, False) == 1
        assert all(np.isnan(KERNELS.hedge_step(v, base, cum, *outs1, 0.5, False, 1.0, x, xs1,
                                               acc, us1)))
        np.testing.assert_array_equal(xs1, xs2)  # nothing accumulated


@needs_c
@pytest.mark.parametrize("make", [lambda: gc.hedge(0.2), lambda: gc.hedge(gc.inverse_sqrt(1.0))],
                         ids=["constant", "schedule"])
def test_play_runs_hedge_in_one_c_call_per_player_step(make, kernel_calls, monkeypatch):
    game = gc.MatrixGame.random(30, 20, seed=1)
    fast = gc.play(game, make(), steps=50, alternating=True)
    assert kernel_calls == {"hedge_step": 100}
    monkeypatch.setattr(fused, "KERNELS", None)  # numpy's log_softmax and softmax
    slow = gc.play(game, make(), steps=50, alternating=True)
    for a, b in ((fast.average.row, slow.average.row), (fast.last.col, slow.last.col),
                 (fast.row_state.logits, slow.row_state.logits), (fast.nash_gap, slow.nash_gap)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_batched_step_writes_each_games_maxima(dtype):
    """step with per-game outputs: the same arrays as game-by-game calls, and each game's
    max(acc_sum) and max(acc) in tops and nows; outputs of the wrong size are refused."""
    rng = np.random.default_rng(5)
    u, x, q, xs, acc, us = (rng.normal(size=(4, 7)).astype(dtype) for _ in range(6))
    x = np.abs(x) / np.abs(x).sum(axis=1, keepdims=True)
    q1, xs1, us1, out1 = q.copy(), xs.copy(), us.copy(), np.empty_like(x)
    tops, nows = np.empty(4, dtype), np.empty(4, dtype)
    assert KERNELS.step(u, x, q1, out1, 0.5, False, 2.0, xs1, acc, us1, tops, nows) == (0.0, 0.0)
    for b in range(4):
        q2, xs2, us2, out2 = q[b].copy(), xs[b].copy(), us[b].copy(), np.empty_like(x[b])
        top, now = KERNELS.step(u[b], x[b], q2, out2, 0.5, False, 2.0, xs2, acc[b], us2)
        assert (tops[b], nows[b]) == (top, now) == (us2.max(), acc[b].max())
        for a, c in ((q1[b], q2), (out1[b], out2), (xs1[b], xs2), (us1[b], us2)):
            np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="one entry per game"):
        KERNELS.step(u, x, q1, out1, 0.5, False, 2.0, xs1, acc, us1, tops[:3], nows[:3])


@pytest.mark.parametrize("make, kernel", [(gc.regret_matching_plus, "step"),
                                          (lambda: gc.hedge(0.3), "hedge_step")])
def test_batched_play_takes_the_batched_c_step(make, kernel, kernel_calls):
    games = gc.MatrixGame.random(4, seed=2, batch_shape=(5,))
    gc.play(games, make(), steps=30, alternating=True)
    assert kernel_calls == {kernel: 60}


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [5, 11])
def test_the_batched_hedge_step_writes_each_games_maxima(dtype, n, exp_source):
    """Rows of 5 and 11 entries: with the vector exps part of each row takes them and the rest
    libm's, at the same positions in every row, so a game alone gives the batch's bits."""
    rng = np.random.default_rng(6)
    u, base, cum, x, acc = (rng.normal(size=(3, n)).astype(dtype) for _ in range(5))
    xs, us = rng.random((3, n)).astype(dtype), rng.random((3, n)).astype(dtype)
    outs = [np.empty_like(u) for _ in range(3)]
    tops, nows = np.empty(3, dtype), np.empty(3, dtype)
    assert KERNELS.hedge_step(u, base, cum, *outs, 0.4, False, 2.0, x, xs, acc, us,
                              tops, nows) == (0.0, 0.0)
    for b in range(3):
        one = [np.empty_like(u[b]) for _ in range(3)]
        xs_b, us_b = xs[b].copy(), us[b].copy()
        top, now = KERNELS.hedge_step(u[b], base[b], cum[b], *one, 0.4, False, 0.0, x[b], xs_b,
                                      acc[b], us_b)  # w = 0: the sums stay, their maxima are read
        assert (tops[b], nows[b]) == (top, now)
        for a, c in zip(outs, one):
            np.testing.assert_array_equal(a[b], c)


@needs_c
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_vector_exps_are_within_4_ulp_of_libm_and_keep_exp0s_zeros(dtype):
    """glibc documents its vector exps to 4 ulp; the strategies they give stay within a few ulp
    of libm's, entry by entry, and exactly 0 where exp0 returns 0 (far below the top entry),
    subnormal where libm's are. Logits spread from 0 to 800 below the top (past exp's underflow
    in both precisions) over rows of every length up to 20."""
    was = fused.VECTOR_EXP
    if not fused.use_vector_exp(True):
        fused.use_vector_exp(was)
        pytest.skip("glibc's libmvec with AVX2 is not available on this machine")
    rng = np.random.default_rng(8)
    eps = float(np.finfo(dtype).eps)
    try:
        for n in range(1, 21):
            u = np.zeros((50, n), dtype)
            base = (-800.0 * rng.random((50, n)) ** 3).astype(dtype)
            cum = np.zeros_like(u)
            outs = {}
            for on in (False, True):
                fused.use_vector_exp(on)
                z, p, c = np.empty_like(u), np.empty_like(u), np.empty_like(u)
                assert KERNELS.hedge(u, base, cum, z, p, c, 1.0, False) == 0
                outs[on] = z, p
            (z0, p0), (z1, p1) = outs[False], outs[True]
            np.testing.assert_array_equal(p0 == 0, p1 == 0)
            tiny = float(np.finfo(dtype).tiny)
            normal = p0 >= tiny
            np.testing.assert_allclose(p1[normal], p0[normal], rtol=6 * eps, atol=0)
            # subnormal strategies: within 4 ulp of the smallest subnormal's step, in units
            np.testing.assert_allclose(p1[~normal], p0[~normal], rtol=0,
                                       atol=4 * tiny * eps * 2)
            np.testing.assert_allclose(z1, z0, rtol=0, atol=4 * eps * np.abs(z0).max())
    finally:
        fused.use_vector_exp(was)
