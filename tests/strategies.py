"""Hypothesis generators of the library's domain objects (Axelrod's ``tests/property.py`` style).

Every property test draws its games, logits, strategies and step sizes from here, so the edge
cases (non-square games, one-action games, vertices and faces of the simplex, huge logits) are
defined once and reach every test.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpo_core as gc

__all__ = [
    "payoff_matrices",
    "zero_sum_games",
    "logits",
    "strategies",
    "step_sizes",
    "alphas",
    "profiles",
]


def _finite_floats(max_abs: float) -> st.SearchStrategy[float]:
    # Subnormals add nothing to these properties and only slow the shrinker down.
    return st.floats(
        min_value=-max_abs,
        max_value=max_abs,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )


@st.composite
def payoff_matrices(
    draw: st.DrawFn,
    min_actions: int = 1,
    max_actions: int = 6,
    max_abs: float = 1e3,
    batch_shape: tuple[int, ...] = (),
) -> np.ndarray:
    """A float64 payoff array of shape ``(*batch_shape, m, n)``, ``m != n`` allowed.

    Entries lie in ``[-max_abs, max_abs]``; the overall scale is drawn too (from ``1e-3`` to
    ``max_abs``) so that tolerances relative to the payoff scale get exercised at every scale.
    """
    m = draw(st.integers(min_actions, max_actions), label="m")
    n = draw(st.integers(min_actions, max_actions), label="n")
    unit = draw(arrays(np.float64, (*batch_shape, m, n), elements=_finite_floats(1.0)))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, max_abs]).filter(lambda s: s <= max_abs))
    return unit * scale


@st.composite
def zero_sum_games(
    draw: st.DrawFn,
    min_actions: int = 1,
    max_actions: int = 6,
    max_abs: float = 1e3,
    batch_shape: tuple[int, ...] = (),
) -> gc.MatrixGame:
    """A :class:`gpo_core.MatrixGame` with ``min_actions..max_actions`` actions per player."""
    return gc.MatrixGame(
        draw(payoff_matrices(min_actions, max_actions, max_abs, batch_shape)), name="drawn"
    )


def logits(n: int, max_abs: float = 1e3, batch_shape: tuple[int, ...] = ()) -> st.SearchStrategy:
    """Finite logits of shape ``(*batch_shape, n)``, including huge ones (``|z|`` up to 1e3)."""
    return arrays(np.float64, (*batch_shape, n), elements=_finite_floats(max_abs))


@st.composite
def strategies(draw: st.DrawFn, n: int) -> np.ndarray:
    """A point of the simplex over ``n`` actions: a vertex, a point of a face, or an interior one.

    The three kinds are drawn explicitly so that each appears often, not by accident.
    """
    kind = draw(st.sampled_from(["vertex", "face", "interior"]), label="kind")
    if kind == "vertex" or n == 1:
        p = np.zeros(n)
        p[draw(st.integers(0, n - 1), label="vertex")] = 1.0
        return p
    weights = draw(
        arrays(np.float64, n, elements=st.floats(1e-3, 1.0, allow_subnormal=False)),
        label="weights",
    )
    if kind == "face":
        support = draw(
            arrays(np.bool_, n, elements=st.booleans()).filter(lambda s: 0 < s.sum() < n),
            label="support",
        )
        weights = np.where(support, weights, 0.0)
    return weights / weights.sum()


@st.composite
def profiles(draw: st.DrawFn, game: gc.MatrixGame) -> tuple[np.ndarray, np.ndarray]:
    """A mixed-strategy profile ``(x, y)`` of ``game`` (single, unbatched games only)."""
    m, n = game.shape
    return draw(strategies(m), label="x"), draw(strategies(n), label="y")


def step_sizes(min_value: float = 1e-3, max_value: float = 10.0) -> st.SearchStrategy[float]:
    """Step sizes ``eta > 0`` spanning four orders of magnitude."""
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)


def alphas(min_value: float = 1e-2, max_value: float = 10.0) -> st.SearchStrategy[float]:
    """Regularisation weights ``alpha > 0``."""
    return st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)
