r"""Checks of the no-regret and averaged-gap claims for Hedge (GPO's Theorem 3.2 route).

The chain checked, for a zero-sum game with payoff range :math:`B = \max A - \min A`:

.. math::
    \mathrm{gap}(\bar x_t, \bar y_t) \;=\; \frac{R^x_t + R^y_t}{t}
    \;\le\; \frac{\mathrm{bound}^x(t) + \mathrm{bound}^y(t)}{t} \;=\; O(t^{-1/2}),

* the regret bounds are those of :mod:`gpo_core.bounds` (Cesa-Bianchi & Lugosi 2006, Thm. 2.2
  for a constant or horizon-tuned step; the anytime bound derived there from the proof of
  Thm. 2.3 for :math:`\eta_t = c/\sqrt t`);
* the equality is the folk theorem for uniform averages of the iterates actually played
  (Freund & Schapire 1999): it is checked against the gap that :func:`gpo_core.play` records;
* the rate is fitted: the log-log slope of the averaged gap against :math:`t`.

Step sizes are given as ``eta``: a float (constant step), ``"tuned"`` (the constant
:math:`\sqrt{8\ln n/T}/B` of :func:`gpo_core.horizon_tuned`, per player), ``"anytime"``
(:math:`\eta_t = c/\sqrt t` with the book's :math:`c = \sqrt{8\ln n}/B`, per player), or a
:class:`gpo_core.schedules.Constant` / :class:`gpo_core.schedules.InverseSqrt` schedule.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import numpy as np

import gpo_core as gc
from gpo_core import bounds
from gpo_core._validate import as_real_array, check_positive_int, short
from gpo_core.schedules import Constant, InverseSqrt
from gpo_core.simplex import safe_log
from proofs_check._common import (
    check_game,
    check_scale,
    check_start,
    fit_decay_exponent,
    label,
    log_grid,
)
from proofs_check._result import CheckResult, Curve, make_ratio
from proofs_check._sequences import GainSequence, array_gains

__all__ = [
    "HedgeSpec",
    "hedge_spec",
    "SelfPlayRecord",
    "selfplay_record",
    "check_hedge_regret_bound",
    "check_folk_theorem_gap",
    "check_averaged_gap_rate",
    "check_alternating_schedule",
]

CITE_CONSTANT = "Cesa-Bianchi & Lugosi 2006, Thm. 2.2 (scaled to range B by Hoeffding's lemma)"
CITE_ANYTIME = (
    "Cesa-Bianchi & Lugosi 2006, Thm. 2.3 (proof): R_T <= ln n/eta_{T+1} + B^2/8 sum eta_t; "
    "closed form in gpo_core.bounds.hedge_anytime_regret_bound"
)
CITE_FOLK = "Freund & Schapire 1999 (folk theorem) + Hedge regret bounds (Cesa-Bianchi & Lugosi 2006)"
CITE_RATE = (
    "empirical check of the O(T^-1/2) rate of Zheng et al. 2024 (GPO) Thm. 3.2 (an upper "
    "bound; the fitted exponent must be >= 1/2 - tolerance)"
)
CITE_ALT = (
    "none: no theorem is claimed for GPO's alternating defender-first schedule "
    "(Zheng et al. 2024 Alg. 1); measured rate only"
)


class HedgeSpec(NamedTuple):
    """A Hedge rule for one player and the closed-form bound on its regret.

    Attributes:
        rule: the :func:`gpo_core.hedge` rule.
        kind: ``"tuned"``, ``"constant"`` or ``"anytime"``.
        bound: ``t -> regret bound`` after ``t`` rounds (vectorised over an array of ``t``).
        describe: the step in words, e.g. ``"eta=0.0123"`` or ``"eta_t=1.48/sqrt(t)"``.
        citation: the theorem behind ``bound``.
    """

    rule: gc.UpdateRule
    kind: str
    bound: Callable[[Any], Any]
    describe: str
    citation: str


def hedge_spec(
    eta: Any, T: int, n: int, B: float, prior_min: float | None = None
) -> HedgeSpec:
    """Resolve ``eta`` (see the module docstring) for a player with ``n`` actions and range ``B``.

    Examples:
        >>> spec = hedge_spec("tuned", 800, 2, 1.0)
        >>> spec.kind, round(float(spec.bound(800)), 6)
        ('tuned', 16.651092)
    """
    T = check_positive_int(T, "T")
    one = n == 1  # a single action has no regret; any step works, ln n = 0
    if isinstance(eta, str):
        if eta == "tuned":
            step = 1.0 / B if one else gc.horizon_tuned(T, n, B).eta
            kind = "tuned"
        elif eta == "anytime":
            c = 1.0 / B if one else math.sqrt(8.0 * math.log(n)) / B
            kind = "anytime"
        else:
            raise ValueError(
                f"eta must be a positive float, 'tuned', 'anytime' or a gpo_core schedule, got {eta!r}"
            )
    elif isinstance(eta, Constant):
        step, kind = eta.eta, "constant"
    elif isinstance(eta, InverseSqrt):
        c, kind = eta.c, "anytime"
    elif isinstance(eta, numbers.Real) and not isinstance(eta, bool):
        if not (math.isfinite(float(eta)) and float(eta) > 0):
            raise ValueError(f"eta must be a finite step size > 0, got {eta!r}")
        step, kind = float(eta), "constant"
    else:
        raise TypeError(
            f"eta must be a positive float, 'tuned', 'anytime', gpo_core.constant(...) or "
            f"gpo_core.inverse_sqrt(...) (schedules with a closed-form regret bound), got {short(eta)}"
        )
    if kind == "anytime":
        return HedgeSpec(
            gc.hedge(gc.inverse_sqrt(c)),
            kind,
            lambda t: bounds.hedge_anytime_regret_bound(t, n, B, c, prior_min=prior_min),
            f"eta_t={c:.4g}/sqrt(t)",
            CITE_ANYTIME,
        )
    return HedgeSpec(
        gc.hedge(step),
        kind,
        lambda t: bounds.hedge_regret_bound(t, n, B, step, prior_min=prior_min),
        f"eta={step:.4g}",
        CITE_CONSTANT,
    )


class SelfPlayRecord(NamedTuple):
    """Both players' regrets and the recorded averaged gap of one self-play run.

    Attributes:
        t: the rounds recorded (log-spaced, ``1 .. T``).
        regret_row, regret_col: measured external regrets after ``t`` rounds.
        bound_row, bound_col: their closed-form bounds.
        gap: Nash gap of the uniform average after ``t`` rounds, as :func:`gpo_core.play` records it.
        row, col: the two :class:`HedgeSpec`.
        B: the payoff range used.
        start: ``"uniform"`` or ``"given"``.
        alternating: whether the column player answered the row player's new strategy.
    """

    t: np.ndarray
    regret_row: np.ndarray
    regret_col: np.ndarray
    bound_row: np.ndarray
    bound_col: np.ndarray
    gap: np.ndarray
    row: HedgeSpec
    col: HedgeSpec
    B: float
    start: str
    alternating: bool


def selfplay_record(
    game: gc.MatrixGame,
    eta: Any = "anytime",
    T: int = 10_000,
    *,
    x0: Any = None,
    y0: Any = None,
    alternating: bool = False,
    grid_points: int = 60,
) -> SelfPlayRecord:
    """Run Hedge against Hedge and record regrets (replayed here) and gaps (from ``gc.play``).

    The rules are stepped here exactly as :func:`gpo_core.play` steps them, and the regret of the
    iterates played is accumulated; the averaged Nash gap is taken from ``gc.play`` itself, so the
    folk-theorem identity checks the core's averaging against an independent computation.

    Examples:
        >>> rec = selfplay_record(gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]]), "anytime", 200)
        >>> bool(np.all(rec.regret_row <= rec.bound_row))
        True
    """
    game = check_game(game)
    T = check_positive_int(T, "T")
    m, n = game.shape
    x_start = check_start(x0, "x0", m)
    y_start = check_start(y0, "y0", n)
    B = game.payoff_range
    row = hedge_spec(eta, T, m, B, None if x_start is None else float(np.min(x_start)))
    col = hedge_spec(eta, T, n, B, None if y_start is None else float(np.min(y_start)))
    grid = log_grid(T, grid_points)

    A = game.payoff
    x = np.full(m, 1.0 / m) if x_start is None else x_start.copy()
    y = np.full(n, 1.0 / n) if y_start is None else y_start.copy()
    rs, cs = row.rule.init(safe_log(x)), col.rule.init(safe_log(y))
    cum_x, cum_y = np.zeros(m), np.zeros(n)
    realised = 0.0  # sum_t x_t^T A y_t
    reg_x = np.empty(grid.size)
    reg_y = np.empty(grid.size)
    k = 0
    u_y = -(x @ A)
    for t in range(1, T + 1):
        u_x = A @ y
        u_y_t = u_y
        cum_x += u_x
        cum_y += u_y_t
        realised += float(x @ u_x)
        rs = row.rule.step(rs, u_x)
        x_next = gc.softmax(rs.logits)
        u_y = -(x_next @ A)
        cs = col.rule.step(cs, u_y if alternating else u_y_t)
        if t == grid[k]:
            reg_x[k] = float(np.max(cum_x)) - realised
            reg_y[k] = float(np.max(cum_y)) + realised
            k += 1
        x, y = x_next, gc.softmax(cs.logits)

    traj = gc.play(
        game, row.rule, col.rule, T, x0=x_start, y0=y_start, alternating=alternating, record_every=1
    )
    gap = traj.nash_gap[grid - 1]
    return SelfPlayRecord(
        grid,
        reg_x,
        reg_y,
        np.asarray(row.bound(grid), dtype=np.float64),
        np.asarray(col.bound(grid), dtype=np.float64),
        np.asarray(gap, dtype=np.float64),
        row,
        col,
        B,
        "uniform" if x_start is None and y_start is None else "given",
        alternating,
    )


# ------------------------------------------------------------------------------ regret bound
def _worst(lhs: np.ndarray, rhs: np.ndarray) -> int:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(rhs > 0, lhs / np.where(rhs > 0, rhs, 1.0), np.where(lhs > 0, np.inf, 0.0))
    return int(np.argmax(r))


def _simultaneous(rec: SelfPlayRecord) -> None:
    if rec.alternating:
        raise ValueError(
            "this record is from alternating play: the column player's Hedge then sees each "
            "utility one round early, so the textbook bound is not the theorem for its regret; "
            "record with alternating=False (the alternating schedule has check_alternating_schedule)"
        )


def regret_result_from_record(
    rec: SelfPlayRecord, game_label: str, bound_scale: float = 1.0
) -> CheckResult:
    """The regret check (both players, every recorded round) from a self-play record."""
    _simultaneous(rec)
    scale = check_scale(bound_scale)
    slack = 1e-12 * rec.B * rec.t  # rounding of the t-term sums
    players = [("row", rec.regret_row, scale * rec.bound_row), ("col", rec.regret_col, scale * rec.bound_col)]
    holds = all(bool(np.all(r <= b + slack)) for _, r, b in players)
    worst_player, worst_i, worst_ratio = "row", 0, -math.inf
    for name, r, b in players:
        i = _worst(r, b)
        ratio = make_ratio(float(r[i]), float(b[i]), "<=")
        if ratio > worst_ratio:
            worst_player, worst_i, worst_ratio = name, i, ratio
    r, b = (players[0][1:] if worst_player == "row" else players[1][1:])
    spec = rec.row if worst_player == "row" else rec.col
    detail = (
        f"self-play, {rec.start} start, T={int(rec.t[-1])}, B={rec.B:.4g}; row {rec.row.describe}, "
        f"col {rec.col.describe}; worst: {worst_player} player at t={int(rec.t[worst_i])}"
        + (f"; bound scaled by {scale:g}" if scale != 1.0 else "")
    )
    return CheckResult(
        claim=f"regret/hedge-{spec.kind}",
        game=game_label,
        lhs=float(r[worst_i]),
        rhs=float(b[worst_i]),
        holds=holds,
        citation=spec.citation,
        ratio=worst_ratio,
        detail=detail,
        curve=Curve(rec.t, np.maximum(rec.regret_row, rec.regret_col), np.maximum(rec.bound_row, rec.bound_col), None, "regret (max of both players)"),
    )


def _drive_sequence(
    seq: GainSequence, spec: HedgeSpec, T: int, grid: np.ndarray
) -> tuple[np.ndarray, float]:
    """Run one Hedge learner on ``seq``; regrets at ``grid`` and the largest per-round spread."""
    n = seq.num_actions
    state = spec.rule.init(np.zeros(n))
    cum = np.zeros(n)
    realised = 0.0
    spread = 0.0
    out = np.empty(grid.size)
    k = 0
    for t in range(1, T + 1):
        p = gc.softmax(state.logits)
        u = np.asarray(seq.gains(p.copy(), t), dtype=np.float64)
        if u.shape != (n,) or not np.all(np.isfinite(u)):
            raise ValueError(
                f"sequence {seq.name!r} returned gains of shape {u.shape} (or non-finite) at "
                f"t={t}; it must return {n} finite numbers"
            )
        spread = max(spread, float(u.max() - u.min()))
        cum += u
        realised += float(p @ u)
        state = spec.rule.step(state, u)
        if t == grid[k]:
            out[k] = float(np.max(cum)) - realised
            k += 1
    return out, spread


def check_hedge_regret_bound(
    source: Any,
    eta: Any = "tuned",
    T: int | None = None,
    *,
    x0: Any = None,
    y0: Any = None,
    bound_scale: float = 1.0,
    grid_points: int = 60,
) -> CheckResult:
    r"""Hedge's external regret stays below its textbook bound at every round of a grid.

    Theorem (Cesa-Bianchi & Lugosi 2006, Thm. 2.2; anytime form from the proof of Thm. 2.3,
    derived in :mod:`gpo_core.bounds`): for *any* sequence of gains whose per-round spread is at
    most :math:`B`, even one chosen adaptively against the learner, Hedge started at :math:`\pi_1`
    has :math:`R_t \le \ln(1/\min\pi_1)/\eta + \eta t B^2/8` (constant step; :math:`B\sqrt{T\ln n/2}`
    at the tuned step and ``t = T``) or :math:`R_t \le \sqrt{t+1}\ln(1/\min\pi_1)/c +
    cB^2(2\sqrt t-1)/8` (:math:`\eta_t = c/\sqrt t`, every ``t``).

    Assumptions: per-round gain spread :math:`\le B` (for a matrix game :math:`B = \max A - \min A`,
    checked by construction; for a sequence the realised spread is checked and a violation raises);
    a start with full support; the core's indexing (round ``t`` plays
    :math:`\propto \pi_1 e^{\eta_t U_{t-1}}`).

    Args:
        source: a :class:`gpo_core.MatrixGame` (Hedge against Hedge, both players checked), a
            :class:`~proofs_check.GainSequence` (possibly adaptive), or a ``(T, n)`` array of gains.
        eta: step size: a float, ``"tuned"``, ``"anytime"``, or a Constant/InverseSqrt schedule.
        T: rounds; required for games and adaptive sequences, defaults to the array's length.
        x0, y0: starting strategies for self-play (uniform if ``None``).
        bound_scale: multiply the bound by this factor in ``(0, 1]``; below 1 only to show that
            the check can fail.
        grid_points: about how many log-spaced rounds to check.

    Returns:
        A :class:`~proofs_check.CheckResult` at the round (and player) with the largest
        regret/bound ratio; ``holds`` is whether the bound held at every checked round (with a
        floating-point slack of ``1e-12 * B * t``).

    Examples:
        >>> from proofs_check import least_likely_gains
        >>> res = check_hedge_regret_bound(least_likely_gains(3), "anytime", T=300)
        >>> res.holds, res.claim
        (True, 'regret/hedge-anytime')
    """
    scale = check_scale(bound_scale)
    if isinstance(source, gc.MatrixGame):
        if T is None:
            raise ValueError("T is required when source is a game: pass the number of rounds, e.g. T=10_000")
        rec = selfplay_record(source, eta, T, x0=x0, y0=y0, grid_points=grid_points)
        return regret_result_from_record(rec, label(source), scale)
    if x0 is not None or y0 is not None:
        raise ValueError("x0 and y0 only apply to self-play on a game; a sequence starts uniform")
    if isinstance(source, GainSequence):
        seq = source
    elif isinstance(source, (np.ndarray, list, tuple)):
        seq = array_gains(as_real_array(source, "source", min_ndim=2))
    else:
        raise TypeError(
            f"source must be a gpo_core.MatrixGame, a proofs_check.GainSequence or a (T, n) array "
            f"of gains, got {short(source)}"
        )
    if T is None:
        if seq.horizon is None:
            raise ValueError(f"T is required for the unbounded sequence {seq.name!r}")
        T = seq.horizon
    T = check_positive_int(T, "T")
    if seq.horizon is not None and T > seq.horizon:
        raise ValueError(f"T={T} exceeds the {seq.horizon} rounds that {seq.name!r} holds")
    B = seq.payoff_range
    if not B > 0:
        raise ValueError(f"sequence {seq.name!r} has payoff range 0: regret is 0, no bound to check")
    spec = hedge_spec(eta, T, seq.num_actions, B)
    grid = log_grid(T, grid_points)
    regret, spread = _drive_sequence(seq, spec, T, grid)
    if spread > B * (1 + 1e-12):
        raise ValueError(
            f"sequence {seq.name!r} declared range B={B:g} but produced gains spread by {spread:g}; "
            "the bound assumes the declared range: fix payoff_range"
        )
    bound = scale * np.asarray(spec.bound(grid), dtype=np.float64)
    holds = bool(np.all(regret <= bound + 1e-12 * B * grid))
    i = _worst(regret, bound)
    return CheckResult(
        claim=f"regret/hedge-{spec.kind}",
        game=seq.name,
        lhs=float(regret[i]),
        rhs=float(bound[i]),
        holds=holds,
        citation=spec.citation,
        ratio=make_ratio(float(regret[i]), float(bound[i]), "<="),
        detail=f"sequence, T={T}, n={seq.num_actions}, B={B:.4g}, {spec.describe}; worst at t={int(grid[i])}"
        + (f"; bound scaled by {scale:g}" if scale != 1.0 else ""),
        curve=Curve(grid, regret, bound, None, "regret"),
    )


# ------------------------------------------------------------------------------- folk theorem
def folk_result_from_record(
    rec: SelfPlayRecord, game_label: str, bound_scale: float = 1.0
) -> CheckResult:
    """The folk-theorem chain from a self-play record (see :func:`check_folk_theorem_gap`)."""
    _simultaneous(rec)
    scale = check_scale(bound_scale)
    middle = np.asarray(bounds.folk_theorem_gap_bound(rec.regret_row, rec.regret_col, rec.t))
    closed = scale * np.asarray(bounds.folk_theorem_gap_bound(rec.bound_row, rec.bound_col, rec.t))
    ident_tol = 1e-9 * rec.B
    identity_err = float(np.max(np.abs(rec.gap - np.maximum(middle, 0.0))))
    first = bool(np.all(rec.gap <= middle + ident_tol))
    second = bool(np.all(middle <= closed + 1e-12 * rec.B))
    i = _worst(middle, closed)
    kind = rec.row.kind
    detail = (
        f"self-play, {rec.start} start, T={int(rec.t[-1])}, B={rec.B:.4g}, row {rec.row.describe}, "
        f"col {rec.col.describe}; gap(avg) from gc.play vs (R_x+R_y)/t: max |difference| "
        f"{identity_err:.2g} (identity; tolerance {ident_tol:.2g}); worst ratio at t={int(rec.t[i])}"
        + ("" if first else "; FIRST LINK FAILS: recorded gap exceeds (R_x+R_y)/t")
        + (f"; bound scaled by {scale:g}" if scale != 1.0 else "")
    )
    return CheckResult(
        claim=f"folk/hedge-{kind}",
        game=game_label,
        lhs=float(middle[i]),
        rhs=float(closed[i]),
        holds=first and second,
        citation=CITE_FOLK,
        ratio=make_ratio(float(middle[i]), float(closed[i]), "<="),
        detail=detail,
        curve=Curve(rec.t, rec.gap, closed, middle, "Nash gap of the average"),
    )


def check_folk_theorem_gap(
    game: gc.MatrixGame,
    eta: Any = "anytime",
    T: int = 10_000,
    *,
    x0: Any = None,
    y0: Any = None,
    bound_scale: float = 1.0,
    grid_points: int = 60,
) -> CheckResult:
    r"""Nash gap of the averaged profile :math:`\le (R^x_t+R^y_t)/t \le` the closed form, every ``t``.

    Theorem (Freund & Schapire 1999; Cesa-Bianchi & Lugosi 2006, §7.2): if both players' external
    regrets are :math:`R^x_t, R^y_t`, the uniform averages of the iterates played satisfy
    :math:`\mathrm{gap}(\bar x_t,\bar y_t) \le (R^x_t + R^y_t)/t` (an equality in a zero-sum
    matrix game); with the Hedge bounds of :func:`check_hedge_regret_bound` this is
    :math:`O(t^{-1/2})`, the rate of GPO's Thm. 3.2 (Zheng et al. 2024).

    Assumptions: simultaneous updates, uniform averaging (what :func:`gpo_core.play` does with
    ``averaging="uniform"``), Hedge for both players, payoff range :math:`B = \max A - \min A`.

    Args:
        game: the zero-sum game.
        eta: the step (float, ``"tuned"``, ``"anytime"`` or a Constant/InverseSqrt schedule).
        T: rounds.
        x0, y0: starting strategies (uniform if ``None``; must have full support).
        bound_scale: tighten the closed-form bound by this factor in ``(0, 1]`` (to show failure).
        grid_points: about how many log-spaced rounds to check.

    Returns:
        A :class:`~proofs_check.CheckResult` with ``lhs = (R^x_t+R^y_t)/t`` and ``rhs`` the closed
        form at the worst ``t``; ``holds`` requires both links at every ``t`` (the first up to
        ``1e-9 * B``).

    Examples:
        >>> res = check_folk_theorem_gap(gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]]), "tuned", 500)
        >>> res.holds, res.claim
        (True, 'folk/hedge-tuned')
    """
    rec = selfplay_record(game, eta, T, x0=x0, y0=y0, grid_points=grid_points)
    return folk_result_from_record(rec, label(game), bound_scale)


# ------------------------------------------------------------------------------------- rates
def _check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a real number in [0, 0.5), got {short(tolerance)}")
    tol = float(tolerance)
    if not 0.0 <= tol < 0.5:
        raise ValueError(f"tolerance must be in [0, 0.5) (the exponent must stay > 0), got {tol!r}")
    return tol


def _check_fit_from(fit_from: Any) -> float:
    if isinstance(fit_from, bool) or not isinstance(fit_from, numbers.Real):
        raise TypeError(f"fit_from must be a real number in (0, 1), got {short(fit_from)}")
    f = float(fit_from)
    if not 0.0 < f < 1.0:
        raise ValueError(f"fit_from must be in (0, 1) (a fraction of T), got {f!r}")
    return f


class RateMeasurement(NamedTuple):
    """A fitted decay exponent of the averaged gap and the series it was fitted on."""

    exponent: float
    t: np.ndarray
    gap: np.ndarray
    bound: np.ndarray | None
    points: int
    note: str
    describe: str
    kind: str  # "tuned" or "anytime"


def measure_gap_rate(
    game: gc.MatrixGame,
    eta: Any = "anytime",
    T: int = 20_000,
    *,
    alternating: bool = False,
    fit_from: float = 0.01,
    x0: Any = None,
    y0: Any = None,
    grid_points: int = 60,
) -> RateMeasurement:
    """Fit ``gap(t) ~ t^-p`` on ``t in [fit_from * T, T]`` (see :func:`check_averaged_gap_rate`)."""
    game = check_game(game)
    T = check_positive_int(T, "T")
    fit_from = _check_fit_from(fit_from)
    if not isinstance(alternating, bool):
        raise TypeError(f"alternating must be a bool, got {short(alternating)}")
    m, n = game.shape
    x_start = check_start(x0, "x0", m)
    y_start = check_start(y0, "y0", n)
    B = game.payoff_range
    floor = 1e-12 * B
    pm_x = None if x_start is None else float(np.min(x_start))
    pm_y = None if y_start is None else float(np.min(y_start))
    probe_x = np.full(m, 1.0 / m) if x_start is None else x_start
    probe_y = np.full(n, 1.0 / n) if y_start is None else y_start
    if float(gc.nash_gap(game, probe_x, probe_y)) <= floor:
        raise ValueError(
            f"the start (x0, y0) of {label(game)} is already a Nash equilibrium (gap 0), so the "
            "gap never decays and no rate can be fitted; start elsewhere, e.g. with "
            "proofs_check.tilted_start(game)"
        )
    kind = hedge_spec(eta, T, m, B).kind
    if kind == "constant":
        raise ValueError(
            "a constant step does not make the averaged gap vanish (it levels off near eta*B^2); "
            "use eta='tuned' (one run per horizon) or eta='anytime'"
        )
    if kind == "tuned":
        horizons = np.unique([max(1, T >> k) for k in range(7)])
        horizons = horizons[horizons >= max(16, int(fit_from * T))]
        gaps, bnds = [], []
        for h in horizons:
            h = int(h)
            rs = hedge_spec("tuned", h, m, B, pm_x)
            cs = hedge_spec("tuned", h, n, B, pm_y)
            traj = gc.play(game, rs.rule, cs.rule, h, x0=x_start, y0=y_start, alternating=alternating, record_every=h)
            gaps.append(float(traj.final_gap))
            bnds.append(float(bounds.folk_theorem_gap_bound(rs.bound(h), cs.bound(h), h)))
        t = horizons.astype(np.int64)
        gap = np.array(gaps)
        bound = None if alternating else np.array(bnds)
        describe = f"eta tuned to each horizon T in {t.tolist()}"
        fit_t, fit_g = t, gap
    else:
        rs = hedge_spec(eta, T, m, B, pm_x)
        cs = hedge_spec(eta, T, n, B, pm_y)
        traj = gc.play(game, rs.rule, cs.rule, T, x0=x_start, y0=y_start, alternating=alternating, record_every=1)
        t = log_grid(T, grid_points)
        gap = np.asarray(traj.nash_gap[t - 1], dtype=np.float64)
        bound = None if alternating else np.asarray(bounds.folk_theorem_gap_bound(rs.bound(t), cs.bound(t), t))
        describe = f"row {rs.describe}, col {cs.describe}"
        sel = t >= fit_from * T
        fit_t, fit_g = t[sel], gap[sel]
    exponent, points, note = fit_decay_exponent(fit_t, fit_g, floor)
    return RateMeasurement(exponent, t, gap, bound, points, note, describe, kind)


def rate_from_record(rec: SelfPlayRecord, fit_from: float = 0.01) -> RateMeasurement:
    """The anytime rate measurement from a (simultaneous) self-play record, without rerunning."""
    _simultaneous(rec)
    fit_from = _check_fit_from(fit_from)
    if rec.row.kind != "anytime":
        raise ValueError(
            f"a rate needs the anytime schedule in one run, got a {rec.row.kind!r} record; use "
            "measure_gap_rate(game, 'tuned', T) for horizon-tuned steps"
        )
    if rec.gap[0] <= 1e-12 * rec.B:
        raise ValueError(
            "the record starts at a Nash equilibrium (gap 0 at t=1), so no rate can be fitted; "
            "record from another start, e.g. proofs_check.tilted_start(game)"
        )
    T = int(rec.t[-1])
    sel = rec.t >= fit_from * T
    exponent, points, note = fit_decay_exponent(rec.t[sel], rec.gap[sel], 1e-12 * rec.B)
    bound = np.asarray(bounds.folk_theorem_gap_bound(rec.bound_row, rec.bound_col, rec.t))
    describe = f"row {rec.row.describe}, col {rec.col.describe}"
    return RateMeasurement(exponent, rec.t, rec.gap, bound, points, note, describe, "anytime")


def rate_result(
    game_label: str, meas: RateMeasurement, tolerance: float = 0.05
) -> CheckResult:
    """The simultaneous-rate result from a measurement (see :func:`check_averaged_gap_rate`)."""
    tol = _check_tolerance(tolerance)
    return _rate_result(f"rate/hedge-{meas.kind}", game_label, meas, tol, "empirical", CITE_RATE, "")


def _rate_result(
    claim: str,
    game_label: str,
    meas: RateMeasurement,
    tolerance: float,
    kind: str,
    citation: str,
    extra: str,
    reference: np.ndarray | None = None,
) -> CheckResult:
    need = 0.5 - tolerance
    holds = bool(meas.exponent >= need)
    return CheckResult(
        claim=claim,
        game=game_label,
        lhs=meas.exponent,
        rhs=need,
        holds=holds,
        citation=citation,
        ratio=make_ratio(meas.exponent, need, ">="),
        sense=">=",
        kind=kind,  # type: ignore[arg-type]
        detail=(
            f"fitted gap ~ t^-p, p={meas.exponent:.3f} on {meas.points} points; {meas.describe}"
            + (f"; {meas.note}" if meas.note else "")
            + (f"; {extra}" if extra else "")
        ),
        curve=Curve(meas.t, meas.gap, meas.bound, reference, "Nash gap of the average"),
    )


def check_averaged_gap_rate(
    game: gc.MatrixGame,
    eta: Any = "anytime",
    T: int = 20_000,
    *,
    tolerance: float = 0.05,
    fit_from: float = 0.01,
    x0: Any = None,
    y0: Any = None,
    grid_points: int = 60,
) -> CheckResult:
    r"""The averaged Nash gap decays at least like :math:`T^{-1/2}`: fitted exponent :math:`\ge 1/2 - tol`.

    Claim (Zheng et al. 2024, Thm. 3.2, through the folk theorem and Hedge's regret bounds):
    :math:`\mathrm{gap}(\bar\pi_T, \bar\mu_T) = O(T^{-1/2})` for steps
    :math:`\eta \propto 1/\sqrt T`. The theorem is an upper envelope; this check fits the measured
    curve: the least-squares slope of :math:`\log \mathrm{gap}` against :math:`\log t` over
    :math:`t \in [\text{fit\_from}\cdot T, T]` must be at most :math:`-1/2 + \text{tolerance}`.
    It is empirical (a slope is not a theorem) and is reported as such.

    With ``eta="anytime"`` one run gives the whole curve; with ``eta="tuned"`` each horizon
    :math:`T, T/2, \dots, T/64` gets its own run with its own tuned step (the theorem's
    :math:`\beta,\eta = O(\sqrt T)`), and the fit is over the gaps at those horizons.

    Args:
        game: the zero-sum game; its start must not already be an equilibrium.
        eta: ``"anytime"``, ``"tuned"`` or an InverseSqrt schedule (a constant step has no rate).
        T: the horizon.
        tolerance: allowed shortfall of the exponent below 1/2 (in ``[0, 0.5)``).
        fit_from: the fit starts at ``fit_from * T`` (drops the transient).
        x0, y0: starting strategies (uniform if ``None``).
        grid_points: log-spaced rounds recorded (anytime).

    Returns:
        A :class:`~proofs_check.CheckResult` with ``lhs`` the fitted exponent ``p`` and
        ``rhs = 1/2 - tolerance`` (sense ``">="``).

    Examples:
        >>> res = check_averaged_gap_rate(gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]]), T=2000)
        >>> res.holds, res.sense
        (True, '>=')
    """
    tol = _check_tolerance(tolerance)
    meas = measure_gap_rate(game, eta, T, fit_from=fit_from, x0=x0, y0=y0, grid_points=grid_points)
    return rate_result(label(game), meas, tol)


def check_alternating_schedule(
    game: gc.MatrixGame,
    eta: Any = "anytime",
    T: int = 20_000,
    *,
    tolerance: float = 0.05,
    fit_from: float = 0.01,
    x0: Any = None,
    y0: Any = None,
    grid_points: int = 60,
) -> CheckResult:
    r"""GPO's practical schedule (alternating, defender first) also drives the averaged gap down.

    The defender (row) updates on :math:`Ay_t`; the adversary (column) then answers the *new*
    defender, :math:`-A^\top x_{t+1}` (``gc.play(..., alternating=True)``; Zheng et al. 2024,
    Alg. 1). **No theorem is claimed for this schedule**: the result is the fitted exponent of the
    averaged gap, required to be :math:`\ge 1/2 - \text{tolerance}` like the simultaneous one, and
    the simultaneous exponent on the same game is reported next to it (``detail``; the curve's
    ``reference``).

    Args:
        game, eta, T, tolerance, fit_from, x0, y0, grid_points: as for
            :func:`check_averaged_gap_rate`.

    Returns:
        A :class:`~proofs_check.CheckResult` with ``kind="empirical"`` and the alternating
        exponent as ``lhs``.

    Examples:
        >>> res = check_alternating_schedule(gc.MatrixGame([[2.0, -1.0], [-1.0, 1.0]]), T=2000)
        >>> res.kind, res.holds
        ('empirical', True)
    """
    tol = _check_tolerance(tolerance)
    alt = measure_gap_rate(game, eta, T, alternating=True, fit_from=fit_from, x0=x0, y0=y0, grid_points=grid_points)
    sim = measure_gap_rate(game, eta, T, alternating=False, fit_from=fit_from, x0=x0, y0=y0, grid_points=grid_points)
    return alternating_result(label(game), alt, sim, tol)


def alternating_result(
    game_label: str, alt: RateMeasurement, sim: RateMeasurement, tolerance: float
) -> CheckResult:
    """The alternating-schedule result from two rate measurements on the same game."""
    kind = alt.kind
    extra = (
        f"simultaneous exponent on the same game p={sim.exponent:.3f}; final gap alternating "
        f"{alt.gap[-1]:.3g} vs simultaneous {sim.gap[-1]:.3g}"
    )
    ref = sim.gap if sim.gap.shape == alt.gap.shape else None
    return _rate_result(f"rate/alternating-{kind}", game_label, alt, tolerance, "empirical", CITE_ALT, extra, ref)
