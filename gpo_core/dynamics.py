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
import math
from typing import Any, Literal, NamedTuple

import numpy as np

from gpo_core import _fused, _xp
from gpo_core._validate import check_positive, check_positive_int, check_strategy, short
from gpo_core.games import MatrixGame, as_game, col_utilities, row_utilities
from gpo_core.rules import (
    HedgeState,
    MMDState,
    OptimisticState,
    UpdateRule,
    _is_vector,
    _non_finite,
)
from gpo_core.simplex import _safe_log, _softmax

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


def _player(
    xp: Any, rule: UpdateRule, state: Any, payoff: Any, played: Any, total: Any, u_total: Any,
    views: _fused.HostViews | None = None,
) -> tuple[Any, Any]:
    """``(step, final)`` for one player whose current strategy is ``played``.

    ``step(u, w, acc)`` updates the player on utilities ``u``, adds ``w`` times the strategy it
    had played to ``total`` and ``w * acc`` to ``u_total`` (the running sums of the averages),
    and returns ``(the strategy it plays next, max(u_total), max(acc))``: the maxima as floats
    from the C kernels for one game, as arrays (one entry per game) for a batch, or ``None``;
    ``final()`` is the rule state after the last step.

    With gpo_core's C kernels built, the rules that offer one (RM+, PRM+, DRM+:
    ``rule.step.in_place``; Hedge: ``rule.step.hedge``; MMD: ``rule.step.mirror``; optimistic
    Hedge: ``rule.step.optimistic_hedge``, two calls) run their C step and both sums in one
    call, on buffers owned here, bit-identical to ``rule.step``: for a numpy game or batch, and
    for one game of another library on the CPU through ``views``. After each matrix-vector
    product of a big game every call runs with cold caches, and the state tuples, the checks and
    the fresh arrays of the pure step cost about 5% of a 1000x1000 step. Without the kernels
    one numpy game still runs RM+'s in-place numpy step. A strategy returned by ``step`` stays
    valid until the next call but one (two buffers take turns).
    """
    in_place = getattr(rule.step, "in_place", None)
    hedge = getattr(rule.step, "hedge", None)
    mirror = getattr(rule.step, "mirror", None)
    ahead = getattr(rule.step, "optimistic_hedge", None)
    if (in_place, hedge, mirror, ahead) != (None, None, None, None) and (
        xp is np or (views is not None and payoff.ndim == 2)
    ):
        if in_place is not None:
            on_kernel = _regret_matching_player(xp, in_place, state, payoff, total, u_total, views)
        elif hedge is not None:
            on_kernel = _hedge_player(xp, hedge, state, payoff, total, u_total, views)
        elif mirror is not None:
            on_kernel = _mirror_player(xp, mirror, state, payoff, total, u_total, views)
        else:
            on_kernel = _optimistic_hedge_player(xp, ahead, state, payoff, total, u_total, views)
        if on_kernel is not None:
            return on_kernel

    strategy = getattr(state, "strategy", None)
    if (
        in_place is not None
        and xp is np
        and payoff.ndim == 2
        and _is_vector(strategy, strategy, getattr(state, "cum_regret", None))
        and strategy.dtype == payoff.dtype
    ):  # one numpy game without the C kernels: the in-place numpy step
        x = strategy.copy()
        q = state.cum_regret.copy()
        spare = np.empty_like(x)
        scratch = np.empty_like(x)
        count = state.count

        def step_in_place(u: np.ndarray, w: float, acc: np.ndarray) -> tuple[np.ndarray, Any, Any]:
            nonlocal x, spare, count
            top = _fused.accumulate(w, x, total, acc, u_total)
            x, spare = in_place(x, u, q, spare, scratch, count), x
            count += 1
            return x, top, None

        return step_in_place, lambda: state._replace(strategy=x, cum_regret=q, count=count)

    # Another library's arrays (a GPU's): the built-in rules' step without the finiteness test,
    # which waits for the device every step; play checks its running sums once at the end.
    rule_step = rule.step if xp is np else getattr(rule.step, "unchecked", rule.step)

    def step(u: Any, w: float, acc: Any) -> tuple[Any, Any, Any]:
        nonlocal state, played
        top = _fused.accumulate(w, played, total, acc, u_total)
        state = rule_step(state, u)
        played = _probabilities(xp, state)
        return played, top, None

    return step, lambda: state


def _check_finite_sums(xp: Any, ux_sum: Any, uy_sum: Any) -> None:
    """Raise if the running sums of ``w_t A y_t`` and ``-w_t A^T x_t`` are not finite: they
    keep any inf or nan a step's utilities had (the rules' per-step test, skipped on this path:
    see ``rules._unchecked``) and they overflow where ``|A|`` times the total weight (up to
    ``T^3 / 3``) passes the dtype's range, which torch, unlike numpy, does not warn about. One
    wait for the device per run."""
    if not bool(xp.all(xp.isfinite(ux_sum)) & xp.all(xp.isfinite(uy_sum))):
        raise ValueError(
            "play's running sums of the utilities A y and -A^T x are not finite (nan or inf): "
            "the payoffs are too large for the dtype over this many steps (the sums reach "
            "max |A| times the total weight); scale the game down (its equilibria do not "
            "change) or use float64"
        )


def _kernel_buffers(
    xp: Any, arrays: list[Any], total: Any, views: _fused.HostViews | None
) -> tuple[list[np.ndarray], Any, tuple[np.ndarray, ...]] | None:
    """What a C player works on: numpy views of ``arrays`` (the player's own buffers, the
    state's and the running sums ``total``...; themselves for numpy, host views for another
    library's CPU arrays), how a step's utilities are seen, and for a batch the arrays the kernel
    writes each game's two gap terms into. ``None`` where the kernels do not take them."""
    if xp is np:
        held, see = arrays, (lambda a: a)
    else:
        held, see = [_fused.host_view(a) for a in arrays], views
        if total.ndim != 1 or any(v is None for v in held):
            return None
    if not _fused.kernel_arrays(*held):
        return None
    per_game: tuple[np.ndarray, ...] = ()
    if total.ndim > 1:  # a batch: each game's max(u_total) and max(acc), written by the kernel
        tops = np.empty(total.shape[:-1], dtype=total.dtype)
        per_game = (tops, np.empty_like(tops))
    return held, see, per_game


def _regret_matching_player(
    xp: Any, in_place: Any, state: Any, payoff: Any, total: Any, u_total: Any,
    views: _fused.HostViews | None,
) -> tuple[Any, Any] | None:
    """:func:`_player` for RM+, PRM+ and DRM+ with the C kernels (``in_place.fused``) on a numpy
    game or batch, or on one game of another library on the CPU through host views (torch
    spends several microseconds per operation on a 1000-vector on a 2-core CPU, and the
    library-neutral step is about 20 operations: at 1000 x 1000 that doubled the step's time in
    float64 and tripled it in float32; the products stay in the game's library). ``None`` where
    it does not apply (no C kernels, a GPU, mixed dtypes)."""
    strategy = getattr(state, "strategy", None)
    q = getattr(state, "cum_regret", None)
    if _fused.KERNELS is None or strategy is None or q is None:
        return None
    if strategy.shape != total.shape or q.shape != total.shape:
        return None
    if strategy.dtype != payoff.dtype or q.dtype != payoff.dtype:
        return None
    x, q, spare = _xp.copy(xp, strategy), _xp.copy(xp, q), _xp.copy(xp, strategy)
    buffers = _kernel_buffers(xp, [x, q, spare, total, u_total], total, views)
    if buffers is None:
        return None
    (xv, qv, sv, total_v, u_total_v), see, per_game = buffers
    count = state.count

    def step_rm(u: Any, w: float, acc: Any) -> tuple[Any, Any, Any]:
        nonlocal x, spare, xv, sv, count
        top, now = in_place.fused(see(u), xv, qv, sv, count, w, total_v, see(acc), u_total_v,
                                  *per_game)
        x, spare, xv, sv = spare, x, sv, xv
        count += 1
        return (x, *per_game) if per_game else (x, top, now)

    return step_rm, lambda: state._replace(strategy=x, cum_regret=q, count=count)


def _hedge_player(
    xp: Any, hedge: Any, state: Any, payoff: Any, total: Any, u_total: Any,
    views: _fused.HostViews | None,
) -> tuple[Any, Any] | None:
    """:func:`_player` for Hedge with the C kernels on one game or a batch of numpy games, or on
    one game of another library on the CPU through host views: the rule's own C step
    (``rule.step.hedge``: the step size of each update and whether it is the dual-averaging
    form) and both running sums in one call, on buffers owned here, bit-identical to
    ``rule.step``; for a batch the call writes each game's gap terms into arrays returned in
    place of the floats. ``None`` where it does not apply."""
    if _fused.KERNELS is None or not isinstance(state, HedgeState):
        return None
    eta_after, ftrl = hedge
    arrays = (state.logits, state.prior, state.cum_utility, state.strategy)
    if any(a.shape != total.shape or a.dtype != payoff.dtype for a in arrays):
        return None
    # two of each: a step reads one and writes the other
    z, p, cum = (_xp.copy(xp, a) for a in (state.logits, state.strategy, state.cum_utility))
    z2, p2, cum2 = (_xp.copy(xp, a) for a in (z, p, cum))
    buffers = _kernel_buffers(
        xp, [z, p, cum, z2, p2, cum2, state.prior, total, u_total], total, views
    )
    if buffers is None:
        return None
    (zv, pv, cv, z2v, p2v, c2v, prior_v, total_v, u_total_v), see, per_game = buffers
    count = state.count
    kernel = _fused.KERNELS.hedge_step

    def step_hedge(u: Any, w: float, acc: Any) -> tuple[Any, Any, Any]:
        nonlocal z, p, cum, z2, p2, cum2, zv, pv, cv, z2v, p2v, c2v, count
        uv = see(u)
        top, now = kernel(
            uv, prior_v if ftrl else zv, cv, z2v, p2v, c2v, eta_after(count), ftrl,
            w, pv, total_v, see(acc), u_total_v, *per_game,
        )
        if top != top:  # nan: u was not finite
            raise _non_finite(uv)
        z, z2, p, p2, cum, cum2 = z2, z, p2, p, cum2, cum
        zv, z2v, pv, p2v, cv, c2v = z2v, zv, p2v, pv, c2v, cv
        count += 1
        return (p, *per_game) if per_game else (p, top, now)

    return step_hedge, lambda: HedgeState(z, state.prior, cum, count, p)


def _optimistic_hedge_player(
    xp: Any, hedge: Any, state: Any, payoff: Any, total: Any, u_total: Any,
    views: _fused.HostViews | None,
) -> tuple[Any, Any] | None:
    """:func:`_player` for ``optimistic(hedge(...))`` with the C kernels: each step is the base
    state's Hedge step (``hedge``) and the look-ahead step from it with the running sums
    (``hedge_step``), two C calls on buffers owned here, bit-identical to ``rule.step`` (which
    makes the same two calls through Hedge's own ``rule.step``). ``None`` where it does not
    apply."""
    base = getattr(state, "base", None)
    if _fused.KERNELS is None or not isinstance(base, HedgeState):
        return None
    eta_after, ftrl = hedge
    arrays = (base.logits, base.prior, base.cum_utility, base.strategy, state.logits,
              state.strategy)
    if any(a.shape != total.shape or a.dtype != payoff.dtype for a in arrays):
        return None
    # the base state (two of each: a step reads one and writes the other), the look-ahead's
    # logits and strategy (two of each: the strategy played stays valid until the next call but
    # one) and its cumulative utility (written, never read: the base keeps the sum)
    zb, pb, cb = (_xp.copy(xp, a) for a in (base.logits, base.strategy, base.cum_utility))
    zb2, pb2, cb2 = (_xp.copy(xp, a) for a in (zb, pb, cb))
    za, pa = _xp.copy(xp, state.logits), _xp.copy(xp, state.strategy)
    za2, pa2, ca = _xp.copy(xp, za), _xp.copy(xp, pa), _xp.copy(xp, cb)
    buffers = _kernel_buffers(
        xp, [zb, pb, cb, zb2, pb2, cb2, za, pa, za2, pa2, ca, base.prior, total, u_total],
        total, views,
    )
    if buffers is None:
        return None
    (zbv, pbv, cbv, zb2v, pb2v, cb2v, zav, pav, za2v, pa2v, cav, prior_v, total_v,
     u_total_v), see, per_game = buffers
    count, base_count = state.count, base.count
    kernels = _fused.KERNELS

    def step_optimistic(u: Any, w: float, acc: Any) -> tuple[Any, Any, Any]:
        nonlocal zb, pb, cb, zb2, pb2, cb2, za, pa, za2, pa2
        nonlocal zbv, pbv, cbv, zb2v, pb2v, cb2v, zav, pav, za2v, pa2v, count, base_count
        uv = see(u)
        if kernels.hedge(uv, prior_v if ftrl else zbv, cbv, zb2v, pb2v, cb2v,
                         eta_after(base_count), ftrl):
            raise _non_finite(uv)
        zb, zb2, pb, pb2, cb, cb2 = zb2, zb, pb2, pb, cb2, cb
        zbv, zb2v, pbv, pb2v, cbv, cb2v = zb2v, zbv, pb2v, pbv, cb2v, cbv
        top, now = kernels.hedge_step(
            uv, prior_v if ftrl else zbv, cbv, za2v, pa2v, cav, eta_after(base_count + 1), ftrl,
            w, pav, total_v, see(acc), u_total_v, *per_game,
        )
        za, za2, pa, pa2 = za2, za, pa2, pa
        zav, za2v, pav, pa2v = za2v, zav, pa2v, pav
        count += 1
        base_count += 1
        return (pa, *per_game) if per_game else (pa, top, now)

    def final() -> Any:
        return OptimisticState(za, HedgeState(zb, base.prior, cb, base_count, pb), count, pa)

    return step_optimistic, final


def _mirror_player(
    xp: Any, mirror: Any, state: Any, payoff: Any, total: Any, u_total: Any,
    views: _fused.HostViews | None,
) -> tuple[Any, Any] | None:
    """:func:`_player` for MMD (``alpha > 0``, finite steps) with the C kernels: as
    :func:`_hedge_player`, with the rule's ``(schedule, alpha)`` (``rule.step.mirror``) and the
    log-magnet copied once to every game's row. ``None`` where it does not apply."""
    if _fused.KERNELS is None or not isinstance(state, MMDState):
        return None
    schedule, alpha = mirror
    if not alpha > 0 or not math.isfinite(float(schedule(state.count + 1))):
        return None
    arrays = (state.logits, state.strategy)
    if any(a.shape != total.shape or a.dtype != payoff.dtype for a in arrays):
        return None
    if state.log_magnet.dtype != payoff.dtype:
        return None
    magnet = _xp.copy(xp, xp.broadcast_to(state.log_magnet, total.shape))
    z, p = (_xp.copy(xp, a) for a in arrays)  # two of each: a step reads one, writes the other
    z2, p2 = _xp.copy(xp, z), _xp.copy(xp, p)
    buffers = _kernel_buffers(xp, [z, p, z2, p2, magnet, total, u_total], total, views)
    if buffers is None:
        return None
    (zv, pv, z2v, p2v, mv, total_v, u_total_v), see, per_game = buffers
    count = state.count
    kernel = _fused.KERNELS.mirror_step

    def step_mirror(u: Any, w: float, acc: Any) -> tuple[Any, Any, Any]:
        nonlocal z, p, z2, p2, zv, pv, z2v, p2v, count
        uv = see(u)
        eta = float(schedule(count + 1))
        top, now = kernel(uv, zv, mv, z2v, p2v, eta, eta * alpha, 1.0 + eta * alpha,
                          w, pv, total_v, see(acc), u_total_v, *per_game)
        if top != top:  # nan: u was not finite
            raise _non_finite(uv)
        z, z2, p, p2 = z2, z, p2, p
        zv, z2v, pv, p2v = z2v, zv, p2v, pv
        count += 1
        return (p, *per_game) if per_game else (p, top, now)

    return step_mirror, lambda: MMDState(z, state.log_magnet, count, p)


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


def _probabilities(xp: Any, state: Any) -> np.ndarray:
    """The strategy a state plays: its ``strategy`` field if it keeps one, else softmax(logits)."""
    strategy = getattr(state, "strategy", None)
    return _softmax(xp, state.logits) if strategy is None else strategy


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
