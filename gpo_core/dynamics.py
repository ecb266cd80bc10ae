r"""Self-play of two update rules on a matrix game: the learning dynamics and their averages.

Each step, with :math:`x_t = \mathrm{softmax}(z^x_t)` and :math:`y_t = \mathrm{softmax}(z^y_t)`:

1. the row player (defender) updates on :math:`u^x_t = A y_t`;
2. the column player (adversary) updates on :math:`u^y_t = -A^\top x_t` (simultaneous), or on
   :math:`-A^\top x_{t+1}` after seeing the row player's new strategy (alternating, defender first:
   GPO's practical schedule, Zheng et al. 2024 Alg. 1);
3. the averages :math:`\bar x_T = \sum_t w_t x_t / \sum_t w_t` (and :math:`\bar y_T`) accumulate
   with uniform (:math:`w_t = 1`), linear (:math:`t`) or quadratic (:math:`t^2`) weights.

By the folk theorem, if the players' external regrets are :math:`R^x_T, R^y_T`, the uniform
average satisfies :math:`\mathrm{gap}(\bar x_T, \bar y_T) \le (R^x_T + R^y_T)/T` (Freund &
Schapire 1999): Hedge's :math:`O(\sqrt T)` regret gives the :math:`O(T^{-1/2})` Nash gap of the
averaged policies that GPO's Theorem 3.2 states.

Because utilities are linear in the opponent's strategy, :math:`A\bar y_T` and
:math:`A^\top\bar x_T` are weighted sums of utilities already computed (divided by the total
weight), so the Nash gap of the
average is recorded at every step for free: one step costs the two matrix-vector products.

:func:`play` runs in the library, dtype and device of ``game.payoff``: a float32 game runs in
float32, and a game built from a torch tensor runs in torch on the tensor's device (a GPU for big
games), with no change to the call. See :class:`Trajectory` for which fields follow the game. (On
the CPU, one tensor game's regret-matching players step in gpo_core's C kernel, on the tensors'
memory through numpy views: the same arithmetic as a numpy game, without torch's per-operation
dispatch; the matrix-vector products stay in torch.) On a GPU the built-in rules step without
their per-step finiteness test (``rule.step.unchecked``; play's utilities are mixtures of the
checked payoffs, and play checks its running sums once at the end), so no step waits for the
device unless ``tol`` asks for a stop test.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, NamedTuple

import numpy as np

from gpo_core import _fused, _xp
from gpo_core._players import _player, _probabilities  # _player: re-exported
from gpo_core._validate import check_positive, check_positive_int, check_strategy, short
from gpo_core.games import MatrixGame, as_game, col_utilities, row_utilities
from gpo_core.rule_api import UpdateRule
from gpo_core.simplex import _safe_log

__all__ = ["Profile", "Trajectory", "play"]

Averaging = Literal["uniform", "linear", "quadratic"]
_POWERS = {"uniform": 0, "linear": 1, "quadratic": 2}


class Profile(NamedTuple):
    """A strategy profile: ``row`` (shape ``(..., m)``) and ``col`` (shape ``(..., n)``)."""

    row: np.ndarray
    col: np.ndarray


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """What :func:`play` returns.

    Attributes:
        last: the final iterate ``(x_{T+1}, y_{T+1})``.
        average: the weighted average of the played iterates ``x_1..x_T``, ``y_1..y_T``.
        steps: the step counts ``t`` at which the gaps below were recorded, shape ``(k,)``.
        nash_gap: Nash gap of the average after ``t`` steps, shape ``(k, *batch_shape)``.
        last_gap: Nash gap of the iterate ``(x_t, y_t)`` played at step ``t``, same shape.
        num_steps: steps actually run (fewer than asked when ``tol`` was reached).
        row_state: the row rule's final state (continue with ``row_rule.step``).
        col_state: the column rule's final state.

    ``last``, ``average``, ``nash_gap``, ``last_gap`` and the rule states are arrays of the game's
    library, dtype and device (numpy arrays of the payoff's dtype, float64 or float32, for a numpy
    game; torch tensors on the payoff's device for a torch game); ``steps`` is always a numpy
    int64 array and ``num_steps`` an int.
    """

    last: Profile
    average: Profile
    steps: np.ndarray
    nash_gap: np.ndarray
    last_gap: np.ndarray
    num_steps: int
    row_state: Any
    col_state: Any

    @property
    def final_gap(self) -> np.ndarray:
        """Nash gap of ``average`` at the end of the run (last recorded entry)."""
        return self.nash_gap[-1]


def play(
    game: MatrixGame,
    row_rule: UpdateRule,
    col_rule: UpdateRule | None = None,
    steps: int = 1000,
    *,
    x0: Any = None,
    y0: Any = None,
    alternating: bool = False,
    averaging: Averaging = "uniform",
    record_every: int = 1,
    tol: float | None = None,
) -> Trajectory:
    """Run ``row_rule`` against ``col_rule`` on ``game`` for ``steps`` updates.

    Args:
        game: the zero-sum game (row maximises ``x^T A y``); may be batched.
        row_rule: update rule of the row player (the defender).
        col_rule: update rule of the column player (the adversary); ``row_rule`` if ``None``.
        steps: number of updates ``T >= 1``.
        x0, y0: initial strategies (probability vectors); uniform if ``None``. They may come from
            another library than the game (a numpy array for a torch game, or the reverse):
            they are converted to the game's library, dtype and device.
        alternating: update the row player first and let the column player answer the new
            strategy (GPO's defender-first schedule) instead of updating both at once.
        averaging: weights of the average: ``"uniform"`` (the theory's), ``"linear"`` or
            ``"quadratic"`` (faster in practice, e.g. for regret matching+).
        record_every: record the gaps every this many steps (the last step is always recorded).
        tol: stop early once the averaged Nash gap of every game is ``<= tol``.

    Returns:
        A :class:`Trajectory`.

    Examples:
        >>> import gpo_core as gc
        >>> rps = gc.MatrixGame([[0, -1, 1], [1, 0, -1], [-1, 1, 0]])
        >>> traj = gc.play(rps, gc.hedge(0.1), steps=2000)
        >>> bool(traj.final_gap < 1e-2), traj.average.row.round(2).tolist()
        (True, [0.33, 0.33, 0.33])
    """
    if not isinstance(game, MatrixGame):
        game = as_game(game)
    if not isinstance(row_rule, UpdateRule):
        raise TypeError(f"row_rule must be an UpdateRule (e.g. gpo_core.hedge(0.1)), got {short(row_rule)}")
    col_rule = row_rule if col_rule is None else col_rule
    if not isinstance(col_rule, UpdateRule):
        raise TypeError(f"col_rule must be an UpdateRule (e.g. gpo_core.hedge(0.1)), got {short(col_rule)}")
    steps = check_positive_int(steps, "steps")
    record_every = check_positive_int(record_every, "record_every")
    if averaging not in _POWERS:
        raise ValueError(f"averaging must be one of {sorted(_POWERS)}, got {averaging!r}")
    if not isinstance(alternating, bool):
        raise TypeError(f"alternating must be a bool, got {short(alternating)}")
    tol = None if tol is None else check_positive(tol, "tol")

    payoff = game.payoff
    xp = _xp.namespace(payoff)  # numpy, or the tensor library: resolved once for the whole run
    m, n = game.shape
    batch = game.batch_shape
    row_state = row_rule.init(_safe_log(xp, _initial(xp, x0, "x0", m, batch, payoff)))
    col_state = col_rule.init(_safe_log(xp, _initial(xp, y0, "y0", n, batch, payoff)))
    # x_1, y_1: the strategies the rules play (x0 and y0 up to the rounding of softmax(log))
    x = _probabilities(xp, row_state)
    y = _probabilities(xp, col_state)
    power = _POWERS[averaging]

    # Weighted sums, updated in place (no temporaries on the hot path); averages = sums / weight.
    x_sum = xp.zeros_like(x)
    y_sum = xp.zeros_like(y)
    ux_sum = xp.zeros_like(x)  # sum_t w_t A y_t    = W * A y_bar
    uy_sum = xp.zeros_like(y)  # sum_t w_t -A^T x_t = W * (-A^T x_bar)
    weight_sum = 0.0
    uy = col_utilities(payoff, x)  # -A^T x_1 (carried forward: alternating needs x_t's utility)
    n_rec = (steps + record_every - 1) // record_every
    rec_steps = np.zeros(n_rec, dtype=np.int64)
    # One game of another library on the CPU (a torch tensor) steps in C through numpy views of
    # its memory, and its gaps are taken and recorded on the host: no library call per entry.
    views = _host_views(xp, payoff)
    if views is None:
        # The recorded gaps stay on the game's device: no host round trip per step.
        rec_gap = _xp.full(xp, (n_rec, *batch), 0.0, payoff)
        rec_last = _xp.full(xp, (n_rec, *batch), 0.0, payoff)
        # a max from the C kernel is a float: the gap is computed in the game's dtype all the same
        scalar = payoff.dtype.type if xp is np else None
        sums = (ux_sum, uy_sum)
        # np.max's Python wrapper costs more than the reduction: call the ufunc (the same result)
        top = functools.partial(np.maximum.reduce if xp is np else xp.max, axis=-1)
    else:
        scalar = _host_scalar(xp, payoff.dtype)
        rec_gap = np.zeros(n_rec, dtype=scalar)
        rec_last = np.zeros(n_rec, dtype=scalar)
        sums = (_fused.host_view(ux_sum), _fused.host_view(uy_sum))

        def top(a: Any) -> Any:
            return np.maximum.reduce(a if type(a) is np.ndarray else views(a))

    k = 0
    t = 0
    col_product = _col_product(xp, payoff)
    # Each player step also adds w_t x_t to its strategy sum and w_t u_t to its utility sum
    # (one C call where the kernels run; then it also returns max(ux_sum) and max(u_t) for one
    # game: both gaps without another pass over the vectors).
    row_step, row_final = _player(xp, row_rule, row_state, payoff, x, x_sum, ux_sum, views)
    col_step, col_final = _player(xp, col_rule, col_state, payoff, y, y_sum, uy_sum, views)
    for t in range(1, steps + 1):
        w = float(t) ** power
        weight_sum += w
        ux = row_utilities(payoff, y)  # A y_t
        uy_t = uy  # -A^T x_t
        x_next, top_x, now_x = row_step(ux, w, ux)  # x_sum += w x_t, ux_sum += w A y_t
        uy = col_product(x_next)  # -A^T x_{t+1}
        y_next, top_y, now_y = col_step(uy if alternating else uy_t, w, uy_t)

        last = t == steps
        if t % record_every == 0 or last or tol is not None:
            if top_x is not None and top_y is not None:  # from the C kernels
                if type(top_x) is np.ndarray:  # a batch: each game's maxima
                    gap = (top_x + top_y) / weight_sum
                else:
                    gap = (scalar(top_x) + scalar(top_y)) / weight_sum
            else:
                gap = (top(sums[0]) + top(sums[1])) / weight_sum
            if tol is None:
                stop = False
            else:  # one game: a scalar test, not np.all's wrapper
                stop = bool(gap <= tol) if gap.ndim == 0 else bool(xp.all(gap <= tol))
            if t % record_every == 0 or last or stop:
                rec_steps[k] = t
                rec_gap[k] = gap
                if type(now_x) is np.ndarray and type(now_y) is np.ndarray:
                    rec_last[k] = now_x + now_y  # each game's max(A y_t) + max(-A^T x_t)
                elif now_x is not None and now_y is not None:
                    rec_last[k] = scalar(now_x) + scalar(now_y)
                else:
                    rec_last[k] = top(ux) + top(uy_t)
                k += 1
            if stop:
                x, y = x_next, y_next
                break
        x, y = x_next, y_next

    if xp is not np and views is None:
        _check_finite_sums(xp, ux_sum, uy_sum)
    return Trajectory(
        last=Profile(_xp.copy(xp, x), _xp.copy(xp, y)),
        average=Profile(x_sum / weight_sum, y_sum / weight_sum),
        steps=rec_steps[:k],
        nash_gap=_records(xp, rec_gap[:k], payoff),
        last_gap=_records(xp, rec_last[:k], payoff),
        num_steps=t,
        row_state=row_final(),
        col_state=col_final(),
    )


def _check_finite_sums(xp: Any, ux_sum: Any, uy_sum: Any) -> None:
    """Raise if the running sums of ``w_t A y_t`` and ``-w_t A^T x_t`` are not finite: they
    keep any inf or nan a step's utilities had (the rules' per-step test, skipped on this path:
    see ``rule_api._unchecked``) and they overflow where ``|A|`` times the total weight (up to
    ``T^3 / 3``) passes the dtype's range, which torch, unlike numpy, does not warn about. One
    wait for the device per run."""
    if not bool(xp.all(xp.isfinite(ux_sum)) & xp.all(xp.isfinite(uy_sum))):
        raise ValueError(
            "play's running sums of the utilities A y and -A^T x are not finite (nan or inf): "
            "the payoffs are too large for the dtype over this many steps (the sums reach "
            "max |A| times the total weight); scale the game down (its equilibria do not "
            "change) or use float64"
        )


def _col_product(xp: Any, payoff: Any) -> Any:
    """``x -> -A^T x`` (``col_utilities``), negated in place for a single numpy game."""
    if xp is not np or payoff.ndim != 2:
        return lambda x: col_utilities(payoff, x)

    def product(x: np.ndarray) -> np.ndarray:
        if x.ndim != 1:
            return col_utilities(payoff, x)
        u = x @ payoff
        return np.negative(u, out=u)

    return product


def _host_views(xp: Any, payoff: Any) -> _fused.HostViews | None:
    """Host views for one game of another library on the CPU when the C kernels are built."""
    if xp is np or _fused.KERNELS is None or payoff.ndim != 2:
        return None
    return None if _fused.host_view(payoff) is None else _fused.HostViews()


def _records(xp: Any, rec: Any, payoff: Any) -> Any:
    """Recorded gaps, floored at 0 (rounding), in the game's library and device."""
    if type(rec) is np.ndarray and xp is not np:  # recorded on the host
        return _xp.convert(np.maximum(rec, 0.0), payoff)
    return _xp.maximum(xp, rec, 0.0)


def _host_scalar(xp: Any, dtype: Any) -> Any:
    """The numpy scalar type of a float32 or float64 dtype of another library: the gap from the C
    kernel's maxima is computed in the game's precision on every path."""
    return np.float32 if dtype == xp.float32 else np.float64


def _initial(
    xp: Any, value: Any, name: str, size: int, batch: tuple[int, ...], payoff: Any
) -> np.ndarray:
    if value is None:
        return _xp.full(xp, (*batch, size), 1.0 / size, payoff)
    arr = check_strategy(value, name, size, like=payoff)
    try:
        return _xp.copy(xp, xp.broadcast_to(arr, (*batch, size)))
    except (ValueError, RuntimeError) as exc:  # torch reports a bad broadcast as RuntimeError
        raise ValueError(
            f"{name} must broadcast to the game's batch: shape {(*batch, size)} or (..., {size}), "
            f"got shape {tuple(arr.shape)}; give one strategy, or one per game"
        ) from exc
