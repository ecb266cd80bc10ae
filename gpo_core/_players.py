"""How :func:`gpo_core.play` steps one player: ``_player`` gives the ``(step, final)`` pair the
loop calls, each step the rule's update plus the running sums of the averages.

With gpo_core's C kernels built, the built-in rules (RM+, PRM+, DRM+, Hedge, MMD, optimistic
Hedge) step in C on buffers owned here, one call per step with both sums, bit-identical to
``rule.step``; any other rule or array library runs ``rule.step`` itself (on a GPU without its
per-step finiteness test, ``rule.step.unchecked``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpo_core import _fused, _xp
from gpo_core.regret_matching import _is_vector
from gpo_core.rule_api import UpdateRule, _non_finite
from gpo_core.rules import HedgeState, MMDState, OptimisticState
from gpo_core.simplex import _softmax


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


def _probabilities(xp: Any, state: Any) -> np.ndarray:
    """The strategy a state plays: its ``strategy`` field if it keeps one, else softmax(logits)."""
    strategy = getattr(state, "strategy", None)
    return _softmax(xp, state.logits) if strategy is None else strategy
