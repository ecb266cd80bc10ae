r"""Diagnostics: pure functions of a game and a profile; none of them mutates its inputs.

* :func:`nash_gap` -- the duality gap
  :math:`\max_i (A y)_i - \min_j (x^\top A)_j \ge 0`, zero exactly at a Nash equilibrium. It equals
  OpenSpiel's ``nash_conv`` (the sum of both players' best-response gains) and twice its
  ``exploitability``.
* :func:`regularized_gap` -- the same gap in the :math:`\alpha`-regularised game
  :math:`f(x,y) = x^\top A y - \alpha\mathrm{KL}(x\|\rho_x) + \alpha\mathrm{KL}(y\|\rho_y)`; with the
  best responses in closed form (Gibbs distributions) it is

  .. math:: \alpha\,\mathrm{LSE}(\log\rho_x + A y/\alpha) + \alpha\,\mathrm{LSE}(\log\rho_y - A^\top x/\alpha)
            + \alpha\mathrm{KL}(x\|\rho_x) + \alpha\mathrm{KL}(y\|\rho_y),

  jointly convex, :math:`\ge 0`, and zero exactly at the quantal-response equilibrium
  (:func:`gpo_core.solve_qre`).
* :func:`external_regret` -- :math:`\max_i \sum_t u_{t,i} - \sum_t \langle u_t, x_t\rangle`.
* :func:`best_response` -- a pure best response and its value.

Each diagnostic computes in the game's library, dtype and device (a torch game gives torch
results; strategies from another library are converted to the game's); :func:`external_regret`
in that of its ``utilities``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

from gpo_core import _xp
from gpo_core._validate import check_positive, check_strategy
from gpo_core.games import (
    MatrixGame,
    as_game,
    check_profile_shape,
    col_utilities,
    row_utilities,
)
from gpo_core.simplex import _logsumexp, _safe_log, kl

__all__ = ["nash_gap", "regularized_gap", "external_regret", "best_response", "BestResponse"]


def _profile(game: Any, x: Any, y: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """``(xp, payoff, x, y)`` with ``x`` and ``y`` checked and moved to the payoff's library."""
    game = as_game(game)
    m, n = game.shape
    a, batch = game.payoff, game.batch_shape
    x = check_profile_shape(check_strategy(x, "x", m, like=a), "x", batch)
    y = check_profile_shape(check_strategy(y, "y", n, like=a), "y", batch)
    return _xp.namespace(a), a, x, y


def nash_gap(game: MatrixGame, x: Any, y: Any) -> np.ndarray:
    """Duality gap ``max_i (A y)_i - min_j (x^T A)_j`` of the profile ``(x, y)``; ``>= 0``.

    Examples:
        >>> import gpo_core as gc
        >>> rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
        >>> float(gc.nash_gap(rps, [1/3] * 3, [1/3] * 3)), float(gc.nash_gap(rps, [1, 0, 0], [1, 0, 0]))
        (0.0, 2.0)
    """
    xp, payoff, x, y = _profile(game, x, y)
    gap = xp.max(row_utilities(payoff, y), axis=-1) + xp.max(col_utilities(payoff, x), axis=-1)
    return _xp.maximum(xp, gap, 0.0)


def regularized_gap(
    game: MatrixGame,
    x: Any,
    y: Any,
    alpha: float,
    magnet_row: Any = None,
    magnet_col: Any = None,
) -> np.ndarray:
    """Duality gap of the ``alpha``-entropy-regularised game; zero exactly at the QRE.

    Args:
        game: the game.
        x, y: the profile.
        alpha: regularisation weight ``> 0``.
        magnet_row, magnet_col: reference distributions (uniform if ``None``).
    """
    game = as_game(game)
    xp, payoff, x, y = _profile(game, x, y)
    alpha = check_positive(alpha, "alpha")
    m, n = game.shape
    rho_x = (
        _xp.full(xp, (m,), 1.0 / m, payoff)
        if magnet_row is None
        else check_profile_shape(check_strategy(magnet_row, "magnet_row", m, like=payoff),
                                 "magnet_row", game.batch_shape)
    )
    rho_y = (
        _xp.full(xp, (n,), 1.0 / n, payoff)
        if magnet_col is None
        else check_profile_shape(check_strategy(magnet_col, "magnet_col", n, like=payoff),
                                 "magnet_col", game.batch_shape)
    )
    best_row = alpha * _logsumexp(xp, _safe_log(xp, rho_x) + row_utilities(payoff, y) / alpha)
    best_col = alpha * _logsumexp(xp, _safe_log(xp, rho_y) + col_utilities(payoff, x) / alpha)
    gap = best_row + best_col + alpha * kl(x, rho_x) + alpha * kl(y, rho_y)
    return _xp.maximum(xp, gap, 0.0)


def external_regret(utilities: Any, strategies: Any) -> np.ndarray:
    """External regret of a sequence of play: best fixed action in hindsight minus realised.

    Args:
        utilities: shape ``(T, ..., n)``, the utility of every action at each step.
        strategies: shape ``(T, ..., n)``, the mixed strategy played at each step.

    Returns:
        ``max_i sum_t u[t, i] - sum_t <u[t], x[t]>``, shape ``(...)``.

    Examples:
        >>> float(external_regret([[1.0, 0.0], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]))
        1.0
    """
    u = _xp.as_float_array(utilities, "utilities", min_ndim=2)
    if u.shape[0] == 0:
        raise ValueError("utilities must hold at least one step (T >= 1), got an empty sequence")
    p = check_strategy(strategies, "strategies", u.shape[-1], like=u)
    if p.shape != u.shape:
        raise ValueError(
            f"strategies must have the same shape as utilities {tuple(u.shape)}, "
            f"got {tuple(p.shape)}"
        )
    xp = _xp.namespace(u)
    return xp.max(xp.sum(u, axis=0), axis=-1) - xp.sum(u * p, axis=(0, -1))


class BestResponse(NamedTuple):
    """A pure best response: ``strategy`` (one-hot), its ``action`` index and its ``value``."""

    strategy: np.ndarray
    action: np.ndarray
    value: np.ndarray


def best_response(
    game: MatrixGame, opponent: Any, player: Literal["row", "col"] = "row"
) -> BestResponse:
    """Best pure response of ``player`` to the opponent's mixed strategy.

    ``value`` is the payoff ``x^T A y`` it achieves (maximal for the row player, minimal for the
    column player).

    Examples:
        >>> import gpo_core as gc
        >>> mp = gc.MatrixGame([[1, -1], [-1, 1]])
        >>> br = gc.best_response(mp, [0.7, 0.3], player="row")
        >>> br.strategy.tolist(), round(float(br.value), 6)
        ([1.0, 0.0], 0.4)
    """
    if not isinstance(game, MatrixGame):
        game = as_game(game)
    m, n = game.shape
    a = game.payoff
    batch = game.batch_shape
    if player == "row":
        opp = check_strategy(opponent, "opponent", n, like=a)
        utils, size = row_utilities(a, check_profile_shape(opp, "opponent", batch)), m
    elif player == "col":
        opp = check_strategy(opponent, "opponent", m, like=a)
        utils, size = col_utilities(a, check_profile_shape(opp, "opponent", batch)), n
    else:
        raise ValueError(f"player must be 'row' or 'col', got {player!r}")
    xp = _xp.namespace(a)
    action = xp.argmax(utils, axis=-1)
    if xp is np:
        strategy = np.eye(size, dtype=a.dtype)[action]
    else:  # one-hot by comparison: integer-array indexing is not in every array-API version
        hot = xp.arange(size, device=_xp.device(a)) == action[..., None]
        strategy = xp.astype(hot, a.dtype)
    value = xp.max(utils, axis=-1)
    return BestResponse(strategy, action, value if player == "row" else -value)
