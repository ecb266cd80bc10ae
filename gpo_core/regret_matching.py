r"""Regret matching+ and the in-place step it shares with its predictive and discounted
variants (:mod:`gpo_core.predictive`, :mod:`gpo_core.discounted`).

:func:`regret_matching_plus` (RM+; Tammelin 2014) plays in proportion to clipped cumulative
regrets, :math:`Q' = [Q + u - \langle u, \pi\rangle]^+`. It is parameter-free and invariant to
positive scaling of the payoffs; with alternating updates and linear averaging it is the
matrix-game form of CFR+ (Tammelin 2014; Burch et al. 2019).

``_regret_matching_into`` is the step of RM+, PRM+ and discounted RM+ in place on numpy
arrays (one C call where gpo_core's kernels are built): the same arithmetic as the
library-neutral step, which every other array takes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import numpy as np

from gpo_core import _fused, _xp
from gpo_core.rule_api import UpdateRule, _check_utilities, _init_logits, _non_finite, _unchecked
from gpo_core.simplex import _safe_log, _softmax
from gpo_core.simplex import softmax  # noqa: F401  (the doctests below use it)

__all__ = ["RMPlusState", "regret_matching_plus"]


class RMPlusState(NamedTuple):
    """State of :func:`regret_matching_plus`: the regrets and the strategy they give.

    ``logits`` (``log strategy``, zeros at the log floor) is computed when asked for: regret
    matching never needs it, and taking a log of every strategy cost about 5% of a
    1000x1000 step.
    """

    cum_regret: np.ndarray  # (..., n) clipped cumulative regrets Q >= 0
    count: int
    strategy: np.ndarray  # (..., n) the strategy played, kept exactly (regrets are measured on it)

    @property
    def logits(self) -> np.ndarray:
        """``log(strategy)`` with exact zeros at the finite log floor (see ``gpo_core.simplex``)."""
        return _safe_log(_xp.namespace(self.strategy), self.strategy)


def regret_matching_plus() -> UpdateRule:
    r"""Regret matching+: :math:`Q' = [Q + u - \langle u,\pi\rangle]^+`, :math:`\pi \propto Q`.

    Parameter-free and invariant to positive scaling of the payoffs; with alternating updates and
    linear averaging it is the matrix-game form of CFR+ (Tammelin 2014; Burch et al. 2019).

    Examples:
        >>> rule = regret_matching_plus()
        >>> state = rule.step(rule.init(np.zeros(3)), np.array([3.0, 0.0, 0.0]))
        >>> softmax(state.logits).round(6).tolist()
        [1.0, 0.0, 0.0]
    """
    return _regret_matching_plus_rule(None, "rm+")


def _regret_matching_plus_rule(discount: Callable[[int], float] | None, name: str) -> UpdateRule:
    r"""RM+, or with ``discount(count)`` the discounted RM+ of :mod:`gpo_core.discounted`:
    :math:`Q' = [d\,Q + r]^+` with ``d = discount(updates made so far)``."""
    in_place = _rm_plus_into if discount is None else _regret_matching_into(False, discount)

    def init(logits: Any) -> RMPlusState:
        xp, z = _init_logits(logits)
        return RMPlusState(xp.zeros_like(z), 0, _softmax(xp, z))

    def step(state: RMPlusState, utilities: Any) -> RMPlusState:
        x = state.strategy
        if _in_place_takes(x, utilities, state.cum_regret):  # play's hot path
            q = state.cum_regret.copy()
            strategy = in_place(x, utilities, q, np.empty_like(x), np.empty_like(x), state.count)
            return RMPlusState(q, state.count + 1, strategy)
        xp, u = _check_utilities(x, utilities)
        return generic(state, u, xp)

    def generic(state: RMPlusState, u: Any, xp: Any) -> RMPlusState:
        x = state.strategy
        q = state.cum_regret
        if discount is not None:  # d * Q, then + r: the in-place step's two roundings
            q = q * discount(state.count)
        # a new array: safe to clip in place
        q = _xp.relu_(xp, q + _instant_regret(u, x, xp))
        total = xp.sum(q, axis=-1, keepdims=True)
        # No positive regret yet (or all regrets cancelled): keep playing the current strategy.
        return RMPlusState(q, state.count + 1, _normalise_or_keep(xp, q, total, x))

    step.in_place = in_place  # what play runs on one numpy game, with its own buffers
    step.unchecked = _unchecked(generic)
    return UpdateRule(init, step, name)


def _normalise_or_keep(xp: Any, v: Any, total: Any, x: Any) -> Any:
    """``v / total`` where ``total > 0``; the current strategy ``x`` elsewhere.

    numpy: one test of the smallest total settles the common case (every total positive) with
    one division. Other libraries: both branches, element by element, with no test on the host
    (on a GPU a test waits for the device)."""
    if xp is np and total.min() > 0:
        return v / total
    positive = total > 0
    return xp.where(positive, v / xp.where(positive, total, 1.0), x)


# ufunc methods called directly: np.sum and ndarray.max go through Python wrappers that cost
# more than the reduction itself on a 1000-vector. add.reduce is the same pairwise sum as np.sum.
_SUM = np.add.reduce
_MAX = np.maximum.reduce
_MIN = np.minimum.reduce


def _is_vector(strategy: Any, utilities: Any, cum_regret: Any) -> bool:
    """True for one numpy game whose arrays share one dtype and length: the case the in-place
    regret-matching steps below handle (bit-identical to the general path)."""
    return (
        type(utilities) is np.ndarray
        and type(strategy) is np.ndarray
        and type(cum_regret) is np.ndarray
        and strategy.ndim == 1
        and utilities.shape == strategy.shape == cum_regret.shape
        and utilities.dtype == strategy.dtype == cum_regret.dtype
    )


def _in_place_takes(strategy: Any, utilities: Any, cum_regret: Any) -> bool:
    """The arrays the in-place regret-matching step below handles: one numpy game
    (:func:`_is_vector`), or any batch of them that the C kernel takes; every other case takes
    the library-neutral path (the same arithmetic as the numpy step, in other calls)."""
    return _is_vector(strategy, utilities, cum_regret) or _fused.kernel_arrays(
        strategy, utilities, cum_regret
    )


def _regret_matching_into(
    predictive: bool, discount: Callable[[int], float] | None = None
) -> Callable[..., np.ndarray]:
    """RM+'s step (PRM+'s with ``predictive``; discounted RM+'s with a ``discount(count)``) in
    place, for one game (:func:`_is_vector`), or for any batch the C kernels take
    (:func:`_in_place_takes`).

    The returned ``step_into(x, u, q, out, scratch, count)`` updates the cumulative regrets ``q``
    (``count`` is the number of updates made before this one) and writes the new strategy to
    ``out`` (returned); ``scratch`` is overwritten; ``out`` and ``scratch`` must not alias ``x``,
    ``u`` or ``q``. It is ``_check_utilities``,
    ``_instant_regret`` and the rule's update with the same arithmetic in fewer numpy calls,
    because after each matrix-vector product of a big game every call runs with cold caches:
    ``max |u|`` sets the noise level and settles finiteness (it propagates nan and shows an
    inf), and the noise entries are searched only when the smallest ``|regret|`` is within the
    noise level.
    """

    def step_into(
        x: np.ndarray, u: np.ndarray, q: np.ndarray, out: np.ndarray, scratch: np.ndarray,
        count: int,
    ) -> np.ndarray:
        if _fused.KERNELS is not None:  # the same step in one C call (any batch shape)
            try:
                bad = _fused.KERNELS.regret_matching(
                    u, x, q, out, 1.0 if discount is None else discount(count), predictive
                )
            except (BufferError, TypeError, ValueError):  # not float32/64, or not contiguous
                pass
            else:
                if bad:
                    raise _non_finite(u)
                return out
        size = float(_MAX(np.absolute(u, out=scratch)))  # max(u.max(), -u.min()), exactly
        if not math.isfinite(size):
            raise _non_finite(u)
        regret = np.subtract(u, float(_SUM(np.multiply(u, x, out=scratch))), out=out)
        noise = 16.0 * _xp.eps(np, u.dtype) * size
        if _MIN(np.absolute(regret, out=scratch)) <= noise:
            regret[scratch <= noise] = 0.0
        if discount is not None:  # Q' = [d Q + r]^+: the same two roundings as the batched path
            np.multiply(q, discount(count), out=q)
        np.add(q, regret, out=q)
        np.maximum(q, 0.0, out=q)  # Q' = [Q + r]^+
        if predictive:  # PRM+ plays theta = [Q' + r]^+, written over the regret entry by entry
            played = np.add(q, regret, out=out)
            np.maximum(played, 0.0, out=played)
        else:
            played = q
        total = _SUM(played)
        if total > 0:
            return np.divide(played, total, out=out)
        np.copyto(out, x)  # no positive (predicted) regret: keep playing x, as _normalise_or_keep
        return out

    def fused(
        u: np.ndarray, x: np.ndarray, q: np.ndarray, out: np.ndarray, count: int,
        w: float, total: np.ndarray, acc: np.ndarray, u_total: np.ndarray, *per_game: np.ndarray,
    ) -> tuple[float, float]:
        """``step_into`` plus ``_fused.accumulate(w, x, total, acc, u_total)`` in one C call
        (play's hot path; only when the C kernels are built and take the arrays). Returns
        ``(max(u_total), max(acc))``: the average's gap term and the iterate's; for a batch,
        ``per_game = (tops, nows)`` receive them game by game."""
        tops = _fused.KERNELS.step(
            u, x, q, out, 1.0 if discount is None else discount(count), predictive,
            w, total, acc, u_total, *per_game,
        )
        if tops[0] != tops[0]:  # nan: u was not finite
            raise _non_finite(u)
        return tops

    step_into.fused = fused
    return step_into


_rm_plus_into = _regret_matching_into(predictive=False)


def _instant_regret(u: np.ndarray, x: np.ndarray, xp: Any = np) -> np.ndarray:
    """``u - <u, x>`` with rounding noise set to exactly 0.

    When every action earns the same, ``u - <u, x>`` is 0 in exact arithmetic but ±1 ulp in
    floating point, and regret matching would jump to a pure strategy on that noise (and two
    mathematically equal runs would diverge). Entries within a few ulps (of ``u``'s dtype) of
    ``max |u|`` are zeroed.
    """
    eps = _xp.eps(xp, u.dtype)
    if u.ndim == 1 and xp is np:  # one game: in-place zeroing (hot path)
        # np.sum(u * x), not BLAS's dot: the same pairwise sum as the batched path below, so a
        # game played alone and inside a batch give bit-identical iterates (a dot's different
        # rounding, amplified where RM+ normalises near-zero regrets, reached 3e-9).
        regret = u - float(np.sum(u * x))
        noise = 16.0 * eps * max(float(u.max()), -float(u.min()))
        regret[np.abs(regret) <= noise] = 0.0
        return regret
    # Batched games, or another library: no host round trip (play's steps on a GPU wait for it
    # nowhere: see _unchecked and _normalise_or_keep).
    regret = u - xp.sum(u * x, axis=-1, keepdims=True)
    noise = 16.0 * eps * xp.max(xp.abs(u), axis=-1, keepdims=True)
    return xp.where(xp.abs(regret) <= noise, 0.0, regret)
