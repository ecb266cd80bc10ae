r"""Exact oracles: the Nash equilibrium by linear programming and the QRE by Newton's method.

**solve_lp** (von Neumann's minimax theorem as an LP; Shoham & Leyton-Brown 2009, §4.1):

.. math::
    \max_{x, v}\; v \;\;\text{s.t.}\;\; A^\top x \ge v\mathbf 1,\; \mathbf 1^\top x = 1,\; x \ge 0
    \qquad
    \min_{y, w}\; w \;\;\text{s.t.}\;\; A y \le w\mathbf 1,\; \mathbf 1^\top y = 1,\; y \ge 0

solved as one LP by scipy's HiGHS: the column player's strategy is the dual solution of the row
player's LP (its constraint marginals), and :math:`v = w` is the value of the game.

**solve_qre**: the :math:`\alpha`-regularised (logit quantal-response) equilibrium, the unique
fixed point of

.. math:: x = \mathrm{softmax}(\log\rho_x + A y/\alpha),\qquad
          y = \mathrm{softmax}(\log\rho_y - A^\top x/\alpha),

which is also the fixed point of :func:`gpo_core.mmd` and the zero of
:func:`gpo_core.regularized_gap` (McKelvey & Palfrey 1995; Sokota et al. 2023). We solve it by
Newton's method on the logits with a backtracking line search; if a Newton step fails to reduce
the residual, a block of MMD steps with the provably convergent step
:math:`\eta = \alpha/L^2` (:math:`L = \max|A|`) moves the iterate closer first. If that still
falls short (:math:`L/\alpha` of order :math:`10^4`, where MMD's rate :math:`\alpha^2/L^2` crawls),
the QRE is traced from the temperature :math:`L` down to :math:`\alpha`, halving it and
warm-starting each Newton solve at the previous answer. The Jacobian is
always invertible: it is :math:`I + NM` with :math:`NM` similar to a product of two PSD matrices.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import linprog

from gpo_core._xp import to_numpy
from gpo_core._validate import check_positive, check_positive_int, check_strategy
from gpo_core.games import MatrixGame, as_game
from gpo_core.rules import _mirror_step
from gpo_core.simplex import log_softmax, safe_log, softmax

__all__ = ["Solution", "QRESolution", "solve_lp", "solve_qre"]


class Solution(NamedTuple):
    """A Nash equilibrium ``(row, col)`` and the game's ``value`` (to the row player)."""

    row: np.ndarray
    col: np.ndarray
    value: np.ndarray


class QRESolution(NamedTuple):
    """The regularised equilibrium, its payoff ``x^T A y`` and the fixed-point residual reached."""

    row: np.ndarray
    col: np.ndarray
    value: np.ndarray
    residual: np.ndarray


def _check_game(game: Any) -> MatrixGame:
    """``game`` as a :class:`MatrixGame` (a payoff array is accepted: see ``games.as_game``)."""
    return game if isinstance(game, MatrixGame) else as_game(game)


def _host_payoff(game: MatrixGame) -> np.ndarray:
    """The payoff as numpy float64 on the host: the exact solvers are scipy/numpy code, so a
    torch (CPU or CUDA) or float32 game is solved on a float64 copy of its matrix."""
    return np.asarray(to_numpy(game.payoff), dtype=np.float64)


def solve_lp(game: MatrixGame) -> Solution:
    """Solve the zero-sum game exactly with one LP (scipy HiGHS); batched games are looped.

    Games of any array library and dtype are solved on a float64 numpy copy of the payoff; the
    solution is numpy float64.

    Examples:
        >>> import gpo_core as gc
        >>> sol = gc.solve_lp(gc.MatrixGame([[2, -1], [-1, 1]]))
        >>> sol.row.round(6).tolist(), sol.col.round(6).tolist(), round(float(sol.value), 6)
        ([0.4, 0.6], [0.4, 0.6], 0.2)
    """
    game = _check_game(game)
    payoff = _host_payoff(game)
    m, n = game.shape
    batch = game.batch_shape
    rows = np.empty((*batch, m))
    cols = np.empty((*batch, n))
    values = np.empty(batch)
    for idx in np.ndindex(*batch):
        rows[idx], cols[idx], values[idx] = _solve_one(payoff[idx])
    return Solution(rows, cols, values)


def _solve_one(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    m, n = a.shape
    # HiGHS refuses matrix entries above 1e15 ("Model error") and drops those below 1e-9 (a game
    # of 1e-12 payoffs came back "solved" at a pure profile): solve A / s for s the power of two
    # at or below max |A|, exact in binary floating point and changing no equilibrium, and
    # scale the value back.
    top = float(np.max(np.abs(a)))
    scale = math.ldexp(1.0, math.frexp(top)[1] - 1) if top > 0 else 1.0
    a = a / scale
    # Row player: minimise -v  s.t.  v - (A^T x)_j <= 0,  sum x = 1. The column player's
    # equilibrium strategy is the dual of the n inequality constraints (HiGHS's marginals are
    # d(-v)/d b_ub <= 0), so one LP gives both players (strong duality: the column LP's value
    # equals v).
    res = linprog(
        c=np.r_[np.zeros(m), -1.0],
        A_ub=np.c_[-a.T, np.ones(n)],
        b_ub=np.zeros(n),
        A_eq=np.r_[np.ones(m), 0.0][None, :],
        b_eq=[1.0],
        bounds=[(0, None)] * m + [(None, None)],
        method="highs",
    )
    if res.status != 0:  # pragma: no cover - HiGHS never fails on a bounded feasible LP
        raise RuntimeError(
            f"HiGHS failed on a {m}x{n} game (payoffs scaled by 1/{scale:g} to max |A| near 1): "
            f"{res.message}; try gpo_core.solve_pivot(game), which does not use HiGHS"
        )
    x = np.clip(res.x[:m], 0.0, None)
    y = np.clip(-np.asarray(res.ineqlin.marginals), 0.0, None)
    return x / x.sum(), y / y.sum(), float(res.x[m]) * scale


def solve_qre(
    game: MatrixGame,
    alpha: float,
    magnet_row: Any = None,
    magnet_col: Any = None,
    *,
    tol: float = 1e-13,
    max_iter: int = 200,
) -> QRESolution:
    """The unique ``alpha``-regularised equilibrium, to a fixed-point residual ``<= tol``.

    Like :func:`solve_lp`, it works on a float64 numpy copy of any game and returns numpy float64.

    Args:
        game: the game (batched games are looped).
        alpha: temperature / regularisation weight ``> 0``.
        magnet_row, magnet_col: reference distributions of the KL regulariser (uniform if
            ``None``; with uniform magnets this is the logit QRE).
        tol: target max-norm residual of ``x - softmax(log rho_x + A y / alpha)`` (and for ``y``).
        max_iter: Newton iterations allowed.

    Raises:
        RuntimeError: if the residual stays above ``max(tol, 64 eps max|A| / alpha)`` (the
            rounding floor of ``A y / alpha``; ~1e-12 at ``max|A|/alpha = 1e5``) after
            ``max_iter`` iterations.

    Examples:
        >>> import gpo_core as gc
        >>> qre = gc.solve_qre(gc.MatrixGame([[1, -1], [-1, 1]]), alpha=0.1)
        >>> qre.row.round(12).tolist(), bool(qre.residual < 1e-12)
        ([0.5, 0.5], True)
    """
    game = _check_game(game)
    alpha = check_positive(alpha, "alpha")
    tol = check_positive(tol, "tol")
    max_iter = check_positive_int(max_iter, "max_iter")
    m, n = game.shape
    payoff = _host_payoff(game)
    # like=payoff (numpy float64): a magnet of any library is checked in its own and comes back
    # as numpy float64
    rho_x = (np.full(m, 1.0 / m) if magnet_row is None
             else check_strategy(magnet_row, "magnet_row", m, like=payoff))
    rho_y = (np.full(n, 1.0 / n) if magnet_col is None
             else check_strategy(magnet_col, "magnet_col", n, like=payoff))
    batch = game.batch_shape
    rows, cols = np.empty((*batch, m)), np.empty((*batch, n))
    values, residuals = np.empty(batch), np.empty(batch)
    for idx in np.ndindex(*batch):
        a = payoff[idx]
        x, y, res = _qre_one(a, alpha, safe_log(rho_x), safe_log(rho_y), tol, max_iter)
        rows[idx], cols[idx], residuals[idx] = x, y, res
        values[idx] = x @ a @ y
    return QRESolution(rows, cols, values, residuals)


def _qre_residual(a, alpha, lrx, lry, s, t):
    """Logit-space residual (centred) and the probabilities it was computed at."""
    x, y = softmax(s), softmax(t)
    r1 = s - log_softmax(lrx + (a @ y) / alpha)
    r2 = t - log_softmax(lry - (a.T @ x) / alpha)
    r1 -= r1.mean()
    r2 -= r2.mean()
    return np.r_[r1, r2], x, y


def _prob_residual(a, alpha, lrx, lry, x, y) -> float:
    ex = np.max(np.abs(x - softmax(lrx + (a @ y) / alpha)))
    ey = np.max(np.abs(y - softmax(lry - (a.T @ x) / alpha)))
    return float(max(ex, ey))


def _qre_one(a, alpha, lrx, lry, tol, max_iter):
    x, y, s, t = _newton(a, alpha, lrx, lry, lrx.copy(), lry.copy(), tol, max_iter)
    res = _prob_residual(a, alpha, lrx, lry, x, y)
    big = float(np.max(np.abs(a)))
    if res > tol and res > 1e-12 and big > alpha:
        # Far from the magnet (|A| / alpha large, e.g. 1e4) Newton's basin is small and the MMD
        # blocks crawl (their rate is alpha^2 / |A|^2). Trace the QRE instead from a high
        # temperature, where it is close to the magnet, down to alpha, warm-starting each
        # Newton solve at the previous temperature's answer (McKelvey & Palfrey 1995's branch).
        temp = big
        while temp > alpha:
            temp = max(0.5 * temp, alpha)
            x, y, s, t = _newton(a, temp, lrx, lry, s, t, tol, max_iter)
        res = _prob_residual(a, alpha, lrx, lry, x, y)
    # Rounding bounds what any solver can reach: A y / alpha carries an error of about
    # eps * |A| / alpha in the logits, hence in the probabilities. Accept that floor.
    floor = max(tol, 1e-12, 64.0 * np.finfo(np.float64).eps * max(big, 1e-300) / alpha)
    if res > floor:
        raise RuntimeError(
            f"solve_qre did not reach the residual tol={tol:g} in max_iter={max_iter} "
            f"iterations (reached {res:.3g}); raise max_iter or alpha"
        )
    return x, y, res


def _newton(a, alpha, lrx, lry, s, t, tol, max_iter):
    """Damped Newton on the logits from ``(s, t)``, MMD blocks when a step fails; best effort."""
    m, n = a.shape
    big2 = float(np.max(np.abs(a))) ** 2  # 0 for A = 0, and underflows for |A| < ~1e-154
    cap = 1e100 / max(alpha, 1.0)  # any step below alpha / L^2 converges: cap it for tiny |A|
    eta = min(alpha / big2, cap) if big2 > 0 else cap  # MMD's step (Sokota et al. 2023, Thm. 3.4)
    r, x, y = _qre_residual(a, alpha, lrx, lry, s, t)
    norm = float(np.linalg.norm(r))
    for _ in range(max_iter):
        if _prob_residual(a, alpha, lrx, lry, x, y) <= tol:
            break
        jx = np.diag(x) - np.outer(x, x)
        jy = np.diag(y) - np.outer(y, y)
        top = np.c_[np.eye(m), -(a @ jy) / alpha]
        bottom = np.c_[(a.T @ jx) / alpha, np.eye(n)]
        jac = np.r_[top, bottom]
        jac[:m] -= jac[:m].mean(axis=0)  # the residual is centred, so is its Jacobian
        jac[m:] -= jac[m:].mean(axis=0)
        jac[:m, :m] += 1.0 / m  # fix the free additive constant of each logit vector
        jac[m:, m:] += 1.0 / n
        try:
            d = np.linalg.solve(jac, -r)
        except np.linalg.LinAlgError:  # pragma: no cover - invertible in exact arithmetic
            d = np.linalg.lstsq(jac, -r, rcond=None)[0]
        step, improved = 1.0, False
        for _ in range(40):
            s_new, t_new = s + step * d[:m], t + step * d[m:]
            r_new, x_new, y_new = _qre_residual(a, alpha, lrx, lry, s_new, t_new)
            norm_new = float(np.linalg.norm(r_new))
            if np.isfinite(norm_new) and norm_new < norm * (1 - 1e-4 * step):
                improved = True
                break
            step *= 0.5
        if improved:
            s, t, r, x, y, norm = s_new, t_new, r_new, x_new, y_new, norm_new
            continue
        if norm < 1e-14:  # at machine precision: nothing left to gain
            break
        for _ in range(200):  # globalisation: MMD contracts toward the QRE
            s, t = (
                _mirror_step(s, a @ y, eta, alpha, lrx),
                _mirror_step(t, -(a.T @ x), eta, alpha, lry),
            )
            x, y = softmax(s), softmax(t)
        r, x, y = _qre_residual(a, alpha, lrx, lry, s, t)
        norm = float(np.linalg.norm(r))
    return x, y, s, t
