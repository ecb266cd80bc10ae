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
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

from gpo_core._validate import as_real_array, check_positive, check_strategy, short
from gpo_core.games import MatrixGame, col_utilities, row_utilities
from gpo_core.simplex import kl, logsumexp, safe_log

__all__ = ["nash_gap", "regularized_gap", "external_regret", "best_response", "BestResponse"]


def _profile(game: Any, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(game, MatrixGame):
        raise TypeError(f"game must be a gpo_core.MatrixGame, got {short(game)}")
    m, n = game.shape
    return game.payoff, check_strategy(x, "x", m), check_strategy(y, "y", n)


def nash_gap(game: MatrixGame, x: Any, y: Any) -> np.ndarray:
    """Duality gap ``max_i (A y)_i - min_j (x^T A)_j`` of the profile ``(x, y)``; ``>= 0``.

    Examples:
        >>> import gpo_core as gc
        >>> rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
        >>> float(gc.nash_gap(rps, [1/3] * 3, [1/3] * 3)), float(gc.nash_gap(rps, [1, 0, 0], [1, 0, 0]))
        (0.0, 2.0)
    """
    payoff, x, y = _profile(game, x, y)
    gap = np.max(row_utilities(payoff, y), axis=-1) + np.max(col_utilities(payoff, x), axis=-1)
    return np.maximum(gap, 0.0)


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
    payoff, x, y = _profile(game, x, y)
    alpha = check_positive(alpha, "alpha")
    m, n = game.shape
    rho_x = np.full(m, 1.0 / m) if magnet_row is None else check_strategy(magnet_row, "magnet_row", m)
    rho_y = np.full(n, 1.0 / n) if magnet_col is None else check_strategy(magnet_col, "magnet_col", n)
    best_row = alpha * logsumexp(safe_log(rho_x) + row_utilities(payoff, y) / alpha)
    best_col = alpha * logsumexp(safe_log(rho_y) + col_utilities(payoff, x) / alpha)
    gap = best_row + best_col + alpha * kl(x, rho_x) + alpha * kl(y, rho_y)
    return np.maximum(gap, 0.0)


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
    u = as_real_array(utilities, "utilities", min_ndim=2)
    if u.shape[0] == 0:
        raise ValueError("utilities must hold at least one step (T >= 1), got an empty sequence")
    p = check_strategy(strategies, "strategies", u.shape[-1])
    if p.shape != u.shape:
        raise ValueError(
            f"strategies must have the same shape as utilities {u.shape}, got {p.shape}"
        )
    return np.max(np.sum(u, axis=0), axis=-1) - np.sum(u * p, axis=(0, -1))


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
        raise TypeError(f"game must be a gpo_core.MatrixGame, got {short(game)}")
    m, n = game.shape
    if player == "row":
        utils = row_utilities(game.payoff, check_strategy(opponent, "opponent", n))
        size = m
    elif player == "col":
        utils = col_utilities(game.payoff, check_strategy(opponent, "opponent", m))
        size = n
    else:
        raise ValueError(f"player must be 'row' or 'col', got {player!r}")
    action = np.argmax(utils, axis=-1)
    strategy = np.eye(size)[action]
    value = np.max(utils, axis=-1)
    return BestResponse(strategy, action, value if player == "row" else -value)
