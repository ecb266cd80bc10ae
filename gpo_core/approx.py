r"""An equilibrium within a Nash gap you name, by the fastest route this library has.

:func:`solve` returns a profile :math:`(x, y)` with
:math:`\max_i (A y)_i - \min_j (x^\top A)_j \le` ``tol``, computed from two full products in
the game's precision: the answer is checked, never trusted. Two routes get there:

* **Exact pivoting** (``method="pivot"``, :func:`gpo_core.solve_pivot`): an equilibrium to
  rounding, certified, with HiGHS as its fallback. Fastest on small and mid-size games, where
  a pivot is cheap.
* **Discounted RM+** (``method="drm+"``, :func:`gpo_core.discounted_regret_matching_plus`,
  :math:`\alpha = 3/2`) with alternating updates and quadratic averaging,

  .. math::
      x_{t+1} = \mathrm{DRM}^+(x_t;\ A y_t), \qquad
      y_{t+1} = \mathrm{DRM}^+(y_t;\ -A^\top x_{t+1}), \qquad
      \bar x_T = \frac{\sum_t t^2 x_t}{\sum_t t^2},

  stopped at the first step whose averaged gap (which :func:`gpo_core.play` keeps from running
  sums at no extra product) is at most ``tol``. Its guarantee is RM+'s: a gap of at most
  :math:`3 B (\sqrt m + \sqrt n) / \sqrt T` for simultaneous updates, :math:`B` the payoff
  range (proof in :mod:`gpo_core.discounted`); with alternation it is close to :math:`1/T` on
  random games, and it took the fewest iterations of the library's rules to 1e-4 on games of
  100 to 3000 actions (``benchmarks/README.md``). On some small games pushed far (a 2 x 2 game
  to 1e-6) it crawls, which is one reason small games go to the pivoting.

``method="auto"`` pivots when the smaller side has at most 300 actions (an exact answer in at
most a few milliseconds on this project's machine, where discounted RM+ to 1e-4 takes as long or
longer) and runs discounted RM+ above, where each pivot reads the whole matrix (at 1000 x 1000:
pivoting 85-111 ms, discounted RM+ on float32 to 1e-4 28-37 ms).

**Mixed precision for discounted RM+.** Each of its steps is two matrix-vector products that
stream the whole matrix from memory, so on a float32 copy a step costs about half. The
iteration needs no more than float32's resolution to reach a gap far above it; the returned
average is renormalised in the game's precision and certified there. If float32 reached ``tol``
by its own running sums but the float64 check does not confirm it (``tol`` too close to
float32's rounding), the game is run again in float64. ``mixed=None`` uses float32 for float64
games of at least 40,000 entries with ``tol`` at least ``1e-5`` times ``max |A|`` (and
``max |A| < 1e30``, far from float32's overflow). The float32 copy adds half the matrix to the
memory a run needs.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np

from gpo_core import _xp
from gpo_core._validate import check_positive, check_positive_int, short
from gpo_core.diagnostics import nash_gap
from gpo_core.discounted import discounted_regret_matching_plus
from gpo_core.dynamics import play
from gpo_core.games import MatrixGame, as_game, row_utilities
from gpo_core.pivot import solve_pivot

__all__ = ["GapSolution", "solve"]

METHODS = ("auto", "pivot", "drm+")
# "auto" pivots up to this many actions on the smaller side (benchmarks/README.md, 2026-12-05:
# at 300 x 300 pivoting took 5.5 ms, discounted RM+ on float32 to 1e-4 7.5-12 ms; at 500 x 500
# 20 ms against 12 ms)
_PIVOT_MAX_ACTIONS = 300
# float32 pays where the products stream the matrix from memory; below this many entries a step
# is dominated by fixed costs and the copy would not pay for itself
_MIXED_MIN_ENTRIES = 40_000
# float32's running sums resolve gaps far below this (relative to max |A|); nearer to its
# rounding the float64 check may fail and the game be run twice
_MIXED_MIN_REL_TOL = 1e-5
# float32 holds up to 3.4e38; sums of products of entries this large stay well below it
_MIXED_MAX_ABS = 1e30
# solve_pivot's own certificate (relative to max |A|) when tol does not ask for more
_PIVOT_REL_TOL = 1e-9


class GapSolution(NamedTuple):
    """A profile ``(row, col)`` whose Nash ``gap`` (computed in the game's precision from full
    products) is at most the ``tol`` asked for, unless :func:`solve` warned; ``value`` is
    ``row^T A col``; ``method`` says which route produced it (``"pivot"``, ``"highs"`` where the
    pivoting fell back to HiGHS, ``"drm+ float32"`` or ``"drm+ float64"``) and ``iterations``
    how much work it took: discounted RM+ steps (the whole batch's), or pivots (summed over a
    batch). For a batched game the array fields have the batch shape in front."""

    row: Any
    col: Any
    value: Any
    gap: Any
    method: str
    iterations: int


def solve(
    game: Any,
    tol: float = 1e-4,
    *,
    method: str = "auto",
    max_steps: int = 100_000,
    mixed: bool | None = None,
) -> GapSolution:
    """An equilibrium of the zero-sum game within Nash gap ``tol``, certified (see the module).

    Args:
        game: a :class:`gpo_core.MatrixGame`: numpy or a tensor library's (discounted RM+
            computes in that library, on its device; the pivoting on a float64 host copy), one
            game or a batch (discounted RM+ stops when every game is done).
        tol: the Nash gap to reach, in the payoff's units (``max |A|`` sets the scale).
        method: ``"auto"`` (pivoting when the smaller side has at most 300 actions, else
            discounted RM+), ``"pivot"`` or ``"drm+"``.
        max_steps: discounted RM+ iterations at most; if the gap is still above ``tol`` then,
            the last average is returned with a ``RuntimeWarning``.
        mixed: discounted RM+ on a float32 copy, certified in float64 (``True``), in the game's
            own precision (``False``), or decided by the game's size and ``tol`` (``None``).
            Has no effect on float32 games.

    Returns:
        A :class:`GapSolution` in the game's library and dtype.

    Examples:
        >>> import gpo_core as gc
        >>> sol = gc.solve(gc.MatrixGame([[2, -1], [-1, 1]]))
        >>> sol.row.round(6).tolist(), sol.col.round(6).tolist(), sol.method
        ([0.4, 0.6], [0.4, 0.6], 'pivot')
        >>> sol = gc.solve(gc.MatrixGame.random(500, seed=0), tol=1e-4)
        >>> sol.method, bool(sol.gap <= 1e-4)
        ('drm+ float32', True)
    """
    if not isinstance(game, MatrixGame):
        game = as_game(game)
    tol = check_positive(tol, "tol")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {short(method)}")
    max_steps = check_positive_int(max_steps, "max_steps")
    if mixed is not None and not isinstance(mixed, bool):
        raise TypeError(f"mixed must be True, False or None (decide by size), got {short(mixed)}")

    m, n = game.shape
    if method == "pivot" or (method == "auto" and min(m, n) <= _PIVOT_MAX_ACTIONS):
        return _finish(_pivot(game, tol), tol, "")
    payoff = game.payoff
    xp = _xp.namespace(payoff)
    if payoff.dtype == xp.float32:
        mixed = False
    elif mixed is not False:
        # max |A| without an |A| temporary (as big as the matrix)
        scale = max(float(xp.max(payoff)), -float(xp.min(payoff)))
        if mixed is None:
            mixed = (m * n >= _MIXED_MIN_ENTRIES and tol >= _MIXED_MIN_REL_TOL * scale
                     and scale < _MIXED_MAX_ABS)
        elif scale >= _MIXED_MAX_ABS:
            raise ValueError(
                f"mixed=True needs payoffs below {_MIXED_MAX_ABS:g} in absolute value (float32's "
                f"products overflow near 3.4e38), got max |A| = {scale:g}; use mixed=False or "
                "rescale the game"
            )
    limit = f" (max_steps={max_steps})"
    if mixed:
        # adopted, not copied again: the copy is ours and finite (|A| < 1e30), and a second
        # copy would raise the peak memory of a big game by half the matrix
        low = MatrixGame._adopt(
            payoff.astype(np.float32) if xp is np else xp.astype(payoff, xp.float32)
        )
        sol, reached = _drm(game, low, tol, max_steps, "drm+ float32")
        if reached or sol.iterations >= max_steps:
            # certified; or float32 ran out of steps, where the game's precision (the same
            # iterates up to rounding) would not do better
            return _finish(sol, tol, limit)
    sol, _ = _drm(game, game, tol, max_steps, f"drm+ {_name(payoff.dtype)}")
    return _finish(sol, tol, limit)


def _pivot(game: MatrixGame, tol: float) -> GapSolution:
    """:func:`gpo_core.solve_pivot`, certified to ``tol`` as well as to its own 1e-9."""
    payoff = game.payoff
    xp = _xp.namespace(payoff)
    scale = max(float(xp.max(payoff)), -float(xp.min(payoff)))
    rel = _PIVOT_REL_TOL if scale == 0 else min(_PIVOT_REL_TOL, tol / scale)
    exact = solve_pivot(game, tol=rel)
    x, y = (_xp.convert(v, payoff) for v in (exact.row, exact.col))
    methods = set(np.asarray(exact.method).ravel().tolist())
    return _certify(game, x, y, "highs" if "highs" in methods else "pivot",
                    int(np.sum(exact.pivots)))


def _drm(
    game: MatrixGame, work: MatrixGame, tol: float, max_steps: int, method: str
) -> tuple[GapSolution, bool]:
    """Discounted RM+ on ``work`` (the game or its float32 copy) to ``tol`` by its running
    sums, certified on ``game``; returns the solution and whether every gap is <= ``tol``."""
    traj = play(
        work,
        discounted_regret_matching_plus(),
        steps=max_steps,
        alternating=True,
        averaging="quadratic",
        tol=tol,
        record_every=max_steps,
    )
    payoff = game.payoff
    xp = _xp.namespace(payoff)
    x, y = (_back(xp, v, payoff.dtype) for v in (traj.average.row, traj.average.col))
    sol = _certify(game, x, y, method, int(traj.num_steps))
    return sol, bool(xp.all(sol.gap <= tol))


def _certify(game: MatrixGame, x: Any, y: Any, method: str, iterations: int) -> GapSolution:
    payoff = game.payoff
    xp = _xp.namespace(payoff)
    value = xp.sum(x * row_utilities(payoff, y), axis=-1)
    return GapSolution(x, y, value, nash_gap(game, x, y), method, iterations)


def _back(xp: Any, v: Any, dtype: Any) -> Any:
    """``v`` in ``dtype``, renormalised there (a float32 average's sum is 1 only to float32)."""
    v = v.astype(dtype) if xp is np else xp.astype(v, dtype)
    return v / xp.sum(v, axis=-1, keepdims=True)


def _name(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1]  # numpy's "float64", torch's "torch.float64"


def _finish(sol: GapSolution, tol: float, limit: str) -> GapSolution:
    xp = _xp.namespace(sol.gap)
    if not bool(xp.all(sol.gap <= tol)):
        worst = float(xp.max(sol.gap))
        advice = ("raise max_steps, or use method='pivot' for an exact answer" if limit
                  else "tol is below what float64 rounding resolves on this game")
        warnings.warn(
            f"gpo_core.solve: Nash gap {worst:.3g} > tol={tol:g} after {sol.iterations} "
            f"{'steps' if limit else 'pivots'}{limit} ({sol.method}); {advice}",
            RuntimeWarning,
            stacklevel=3,
        )
    return sol
