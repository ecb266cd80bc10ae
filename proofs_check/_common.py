"""Shared validation and numerics for the checks (private)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

import gpo_core as gc
from gpo_core._validate import check_positive_int, check_strategy, short

__all__ = [
    "check_game",
    "check_scale",
    "check_start",
    "label",
    "log_grid",
    "fit_decay_exponent",
]


def check_game(game: Any, name: str = "game") -> gc.MatrixGame:
    """A single (unbatched) MatrixGame with a positive payoff range."""
    if not isinstance(game, gc.MatrixGame):
        raise TypeError(f"{name} must be a gpo_core.MatrixGame, got {short(game)}")
    if game.batch_shape != ():
        raise ValueError(
            f"{name} must be a single game, got batch_shape {game.batch_shape}; "
            f"check each game of the batch separately (e.g. MatrixGame(game.payoff[i]))"
        )
    if not game.payoff_range > 0:
        raise ValueError(
            f"{name} has constant payoffs (range 0): every regret and gap is 0 and no bound "
            "is informative; give a game with max A > min A"
        )
    return game


def check_scale(bound_scale: Any) -> float:
    """``0 < bound_scale <= 1``: a check may only *tighten* a bound (to show it can fail)."""
    if isinstance(bound_scale, bool) or not isinstance(bound_scale, numbers.Real):
        raise TypeError(f"bound_scale must be a real number in (0, 1], got {short(bound_scale)}")
    s = float(bound_scale)
    if not (0.0 < s <= 1.0) or math.isnan(s):
        raise ValueError(
            f"bound_scale must be in (0, 1], got {s!r}: values above 1 would loosen the theory's "
            "bound, which a check never does; use a value below 1 only to show that a check can fail"
        )
    return s


def check_start(value: Any, name: str, size: int) -> np.ndarray | None:
    """``None`` (uniform) or a full-support probability vector of length ``size``."""
    if value is None:
        return None
    p = check_strategy(value, name, size)
    if p.ndim != 1:
        raise ValueError(f"{name} must be one probability vector of length {size}, got shape {p.shape}")
    if np.min(p) <= 0:
        raise ValueError(
            f"{name} must give every action positive probability (Hedge's bound has "
            f"ln(1/min {name}) in it), got min {float(np.min(p))!r}"
        )
    return p


def label(game: gc.MatrixGame) -> str:
    """``name (m x n)`` for reports."""
    m, n = game.shape
    return f"{game.name or 'game'} ({m}x{n})"


def log_grid(T: int, points: int = 60) -> np.ndarray:
    """About ``points`` log-spaced integers from 1 to ``T`` (both included), increasing.

    Examples:
        >>> log_grid(10, 4).tolist()
        [1, 2, 5, 10]
    """
    T = check_positive_int(T, "T")
    points = check_positive_int(points, "points")
    grid = np.unique(np.round(np.geomspace(1, T, max(points, 2))).astype(np.int64))
    return np.unique(np.r_[1, grid, T])


def fit_decay_exponent(
    t: np.ndarray, values: np.ndarray, floor: float
) -> tuple[float, int, str]:
    """Least-squares fit of ``log values = a - p log t``; returns ``(p, points used, note)``.

    Values at or below ``floor`` (floating-point noise) are left out. If fewer than 3 points are
    above it, every value has reached the floor and ``p = inf`` is returned with a note saying so.

    Examples:
        >>> t = np.array([10.0, 100.0, 1000.0])
        >>> p, k, _ = fit_decay_exponent(t, 3.0 / np.sqrt(t), 1e-12)
        >>> round(p, 12), k
        (0.5, 3)
    """
    keep = values > floor
    if np.count_nonzero(keep) < 3:
        return math.inf, int(np.count_nonzero(keep)), "values reached the floating-point floor"
    lt = np.log(t[keep].astype(np.float64))
    lv = np.log(values[keep])
    design = np.c_[np.ones_like(lt), lt]
    coef, *_ = np.linalg.lstsq(design, lv, rcond=None)
    return float(-coef[1]), int(np.count_nonzero(keep)), ""
