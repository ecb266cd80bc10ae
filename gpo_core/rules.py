r"""Update rules: pure ``(init, step)`` pairs made by factories (optax's shape).

The interface the rules share (what a state holds, batching, which arrays a rule computes in)
is :mod:`gpo_core.rule_api`'s; regret matching+ is :mod:`gpo_core.regret_matching`'s (both
re-exported here).

The mirror-descent rules, in closed form (:math:`z` = logits, :math:`u` = utilities,
:math:`\rho` = magnet):

* :func:`hedge` (multiplicative weights; GPO's KL-to-previous-iterate step, Zheng et al. 2024 §3)

  .. math:: z' = z + \eta u - \log Z \quad\Longleftrightarrow\quad
            \pi' = \arg\max_\pi \langle \pi, u\rangle - \tfrac1\eta \mathrm{KL}(\pi\,\|\,\pi_t)

  Regret :math:`\le \ln n/\eta + \eta T B^2/8` for payoffs of range :math:`B`
  (Cesa-Bianchi & Lugosi 2006, Thm. 2.2); with a decreasing schedule it runs in dual-averaging
  form :math:`z_{t+1} = z_1 + \eta_{t+1} \sum_{s\le t} u_s` (ibid. Thm. 2.3).
* :func:`mmd` (magnetic mirror descent, the entropy-regularised variant; Sokota et al. 2023)

  .. math:: z' = \frac{z + \eta\alpha\log\rho + \eta u}{1 + \eta\alpha} - \log Z
            \quad\Longleftrightarrow\quad
            \pi' = \arg\max_\pi \langle\pi,u\rangle - \alpha\mathrm{KL}(\pi\|\rho)
                   - \tfrac1\eta\mathrm{KL}(\pi\|\pi_t)

  Its last iterate converges linearly to the :math:`\alpha`-regularised (quantal-response)
  equilibrium for :math:`\eta \le \alpha / L^2`, :math:`L = \max|A|` (Sokota et al. 2023, Thm. 3.4).
* :func:`optimistic` (optimistic mirror descent; Rakhlin & Sridharan 2013): plays a look-ahead
  step that treats the last utility as a prediction of the next one.

:func:`mirror_step` is the one formula shared by every mirror rule and by the LLM backends,
which fit a network to the same target on samples.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from gpo_core import _fused, _xp
from gpo_core._validate import check_mirror_params, check_nonnegative, check_strategy
from gpo_core.regret_matching import (  # re-exported
    RMPlusState,
    _in_place_takes,  # noqa: F401
    _instant_regret,  # noqa: F401
    _is_vector,  # noqa: F401
    _normalise_or_keep,  # noqa: F401
    _regret_matching_into,  # noqa: F401
    _regret_matching_plus_rule,  # noqa: F401
    regret_matching_plus,
)
from gpo_core.rule_api import (  # RuleState, UpdateRule and the checks: re-exported
    RuleState,
    UpdateRule,
    _check_utilities,
    _convert,
    _init_logits,
    _non_finite,
    _unchecked,
)
from gpo_core.schedules import Constant, Schedule, as_schedule
from gpo_core.simplex import _broadcasts, _floating, _log_softmax, _safe_log, _softmax
from gpo_core.simplex import softmax  # noqa: F401  (the doctests below use it)

__all__ = [
    "RuleState",
    "UpdateRule",
    "HedgeState",
    "MMDState",
    "OptimisticState",
    "RMPlusState",
    "mirror_step",
    "hedge",
    "mmd",
    "optimistic",
    "regret_matching_plus",
]


class HedgeState(NamedTuple):
    """State of :func:`hedge`."""

    logits: np.ndarray  # (..., n) normalised log-probabilities played now
    prior: np.ndarray  # (..., n) initial logits (dual-averaging anchor)
    cum_utility: np.ndarray  # (..., n) sum of utilities seen so far
    count: int  # updates made so far
    # (..., n) the probabilities played now: softmax(logits), to rounding (the C kernel computes
    # both from one exp pass); play reads it instead of taking the softmax again
    strategy: np.ndarray


class MMDState(NamedTuple):
    """State of :func:`mmd`."""

    logits: np.ndarray  # (..., n)
    log_magnet: np.ndarray  # (n,) or (..., n)
    count: int
    # (..., n) the probabilities played now: softmax(logits), to rounding (the C kernel computes
    # both from one exp pass, as for Hedge)
    strategy: np.ndarray


class OptimisticState(NamedTuple):
    """State of :func:`optimistic`: the base rule's state plus the look-ahead strategy played."""

    logits: np.ndarray  # (..., n) strategy played (look-ahead of `base`)
    base: Any  # the wrapped rule's state
    count: int
    # (..., n) the probabilities played now: the look-ahead state's own strategy where the
    # wrapped rule keeps one (Hedge, MMD, regret matching), else softmax(logits)
    strategy: np.ndarray


def mirror_step(
    logits: np.ndarray,
    utilities: np.ndarray,
    eta: float,
    alpha: float = 0.0,
    log_magnet: np.ndarray | float = 0.0,
) -> np.ndarray:
    r"""The closed-form KL-regularised step every mirror rule and LLM backend shares.

    Returns the normalised logits of
    :math:`\arg\max_\pi \langle\pi,u\rangle - \alpha\mathrm{KL}(\pi\|\rho) - \mathrm{KL}(\pi\|\pi_t)/\eta`,
    i.e. :math:`(z + \eta\alpha\log\rho + \eta u)/(1+\eta\alpha) - \log Z`. ``eta = inf`` drops the
    proximal term (anchor to the magnet only: :math:`\log\rho + u/\alpha`), which is the fixed
    reference-model KL of standard RLHF and of GPO's released code.

    The result is in ``logits``' library, dtype and device; ``utilities`` and an array
    ``log_magnet`` are converted to it (``log_magnet`` may hold ``-inf`` for actions the magnet
    never plays).

    Examples:
        >>> z = mirror_step(np.zeros(2), np.array([1.0, 0.0]), eta=np.log(3.0))
        >>> softmax(z).round(6).tolist()
        [0.75, 0.25]
    """
    _check_mirror_params(eta, alpha)
    xp, logits = _floating(logits, "logits")
    utilities = _fits(_convert(utilities, logits, "utilities"), "utilities", logits)
    if not isinstance(log_magnet, numbers.Real):
        log_magnet = _fits(_convert(log_magnet, logits, "log_magnet"), "log_magnet", logits)
    return _mirror_step(logits, utilities, eta, alpha, log_magnet, xp)


def _fits(value: Any, name: str, logits: Any) -> Any:
    """``value`` if it has one entry per action of ``logits`` and leading axes that broadcast."""
    if value.ndim == 0 or value.shape[-1] != logits.shape[-1] or not _broadcasts(
        tuple(value.shape[:-1]), tuple(logits.shape[:-1])
    ):
        raise ValueError(
            f"{name} must have {logits.shape[-1]} entries on its last axis (one per action of "
            f"logits, shape {tuple(logits.shape)}) and leading axes that broadcast with them, "
            f"got shape {tuple(value.shape)}"
        )
    return value


def _mirror_step(logits, utilities, eta, alpha=0.0, log_magnet=0.0, xp=None):
    """:func:`mirror_step` without the checks: the rules' hot path (their factories checked)."""
    if xp is None:
        xp = _xp.namespace(logits)
    if math.isinf(eta):
        return _log_softmax(xp, log_magnet + utilities / alpha)
    if alpha == 0.0:
        return _log_softmax(xp, logits + eta * utilities)
    return _log_softmax(
        xp, (logits + (eta * alpha) * log_magnet + eta * utilities) / (1.0 + eta * alpha)
    )


def _check_mirror_params(eta: Any, alpha: Any) -> None:
    """The scalar checks of :func:`mirror_step` (the same as ``protocols.MirrorStep``'s)."""
    check_mirror_params(eta, alpha)


def hedge(eta: float | Schedule = 0.1) -> UpdateRule:
    r"""Hedge / multiplicative weights: :math:`\pi' \propto \pi\, e^{\eta u}`.

    Args:
        eta: a step size > 0 (GPO's :math:`1/\beta`), or a schedule ``t -> eta_t`` such as
            :func:`gpo_core.inverse_sqrt`. A constant step runs the KL-proximal form exactly; a
            varying one runs the dual-averaging (FTRL) form, which keeps the anytime bound.

    The state keeps the strategy played (``strategy``) beside the logits. With gpo_core's C
    kernels a numpy step is one C call with one ``exp`` pass: the new logits as numpy's
    log-softmax computes them and the strategy as ``e / sum(e)``, ``e = exp(z - max z)``, equal
    to ``softmax(logits)`` to rounding (the sums accumulate in double); without them, or for
    other arrays, it is numpy's (or the array library's) log-softmax and softmax.

    Examples:
        >>> rule = hedge(eta=np.log(2.0))
        >>> state = rule.step(rule.init(np.zeros(2)), np.array([1.0, 0.0]))
        >>> softmax(state.logits).round(6).tolist()
        [0.666667, 0.333333]
    """
    schedule = as_schedule(eta)
    fixed = isinstance(schedule, Constant)

    def init(logits: Any) -> HedgeState:
        xp, z = _init_logits(logits)
        return HedgeState(z, z, xp.zeros_like(z), 0, _softmax(xp, z))

    def eta_after(count: int) -> float:
        """The step size of the update made from a state with ``count`` updates."""
        return schedule.eta if fixed else float(schedule(count + 2))

    def step(state: HedgeState, utilities: Any) -> HedgeState:
        count = state.count + 1
        base = state.logits if fixed else state.prior
        if _fused.KERNELS is not None and _fused.kernel_arrays(
            utilities, base, state.cum_utility
        ):  # numpy, one dtype and shape: the step in one C call (any batch shape)
            z, p, cum = np.empty_like(base), np.empty_like(base), np.empty_like(base)
            eta = eta_after(state.count)
            if _fused.KERNELS.hedge(utilities, base, state.cum_utility, z, p, cum, eta, not fixed):
                raise _non_finite(utilities)
            return HedgeState(z, state.prior, cum, count, p)
        xp, u = _check_utilities(state.logits, utilities)
        return generic(state, u, xp)

    def generic(state: HedgeState, u: Any, xp: Any) -> HedgeState:
        cum = state.cum_utility + u
        if fixed:
            z = _mirror_step(state.logits, u, schedule.eta, xp=xp)
        else:
            z = _log_softmax(xp, state.prior + eta_after(state.count) * cum)
        return HedgeState(z, state.prior, cum, state.count + 1, _softmax(xp, z))

    # what play runs on one game with its own buffers (the same C call and arithmetic)
    step.hedge = (eta_after, not fixed)
    step.unchecked = _unchecked(generic)

    return UpdateRule(init, step, f"hedge(eta={_label(schedule)})")


def mmd(eta: float | Schedule = 0.1, alpha: float = 0.05, magnet: Any = None) -> UpdateRule:
    r"""Magnetic mirror descent: entropy/KL-regularised Hedge pulled toward ``magnet``.

    Args:
        eta: step size > 0 or a schedule.
        alpha: regularisation weight >= 0 (0 gives :func:`hedge`); the regularised equilibrium is
            the logit QRE with temperature ``alpha``, see :func:`gpo_core.solve_qre`.
        magnet: a probability vector over the actions, uniform if ``None``.

    The state keeps the strategy played (``strategy``) beside the logits. With gpo_core's C
    kernels a numpy step (``alpha > 0``, a finite step size) is one C call with one ``exp``
    pass, as for :func:`hedge`: the logits as :func:`mirror_step` rounds them and the strategy
    equal to ``softmax(logits)`` to rounding.

    Examples:
        >>> rule = mmd(eta=1.0, alpha=1.0)
        >>> state = rule.step(rule.init(np.log([0.9, 0.1])), np.zeros(2))
        >>> softmax(state.logits).round(4).tolist()  # halfway (geometrically) to uniform
        [0.75, 0.25]
    """
    schedule = as_schedule(eta)
    alpha = check_nonnegative(alpha, "alpha")
    magnet_arr = None if magnet is None else _xp.as_float_array(magnet, "magnet", min_ndim=1)
    if magnet_arr is not None:  # on the simplex now; its length is checked against the logits
        magnet_arr = check_strategy(magnet_arr, "magnet", magnet_arr.shape[-1], like=magnet_arr)

    def init(logits: Any) -> MMDState:
        xp, z = _init_logits(logits)
        n = z.shape[-1]
        if magnet_arr is None:
            log_magnet = _xp.full(xp, (n,), -math.log(n), z)
        else:
            log_magnet = _safe_log(xp, check_strategy(magnet_arr, "magnet", n, like=z))
        return MMDState(z, log_magnet, 0, _softmax(xp, z))

    def step(state: MMDState, utilities: Any) -> MMDState:
        count = state.count + 1
        z0 = state.logits
        if alpha > 0 and _fused.KERNELS is not None and _fused.kernel_arrays(utilities, z0):
            eta = float(schedule(count))
            m = state.log_magnet
            if m.shape != z0.shape:  # one magnet for a batch: a copy per game, for the kernel
                m = np.ascontiguousarray(np.broadcast_to(m, z0.shape))
            if math.isfinite(eta) and _fused.kernel_arrays(z0, m):  # the step in one C call
                z, p = np.empty_like(z0), np.empty_like(z0)
                if _fused.KERNELS.mirror(utilities, z0, m, z, p, eta, eta * alpha,
                                         1.0 + eta * alpha):
                    raise _non_finite(utilities)
                return MMDState(z, state.log_magnet, count, p)
        xp, u = _check_utilities(state.logits, utilities)
        return generic(state, u, xp)

    def generic(state: MMDState, u: Any, xp: Any) -> MMDState:
        count = state.count + 1
        z = _mirror_step(state.logits, u, float(schedule(count)), alpha, state.log_magnet, xp)
        return MMDState(z, state.log_magnet, count, _softmax(xp, z))

    # what play runs on one game or a batch with its own buffers (the same C call)
    step.mirror = (schedule, alpha)
    step.unchecked = _unchecked(generic)
    return UpdateRule(init, step, f"mmd(eta={_label(schedule)}, alpha={alpha:g})")


def _strategy(state: Any) -> Any:
    """The probabilities a rule's state plays: its ``strategy`` if it keeps one."""
    strategy = getattr(state, "strategy", None)
    if strategy is not None:
        return strategy
    return _softmax(_xp.namespace(state.logits), state.logits)


def optimistic(rule: UpdateRule) -> UpdateRule:
    r"""Optimistic (predictive) version of any rule: play the step the last utility predicts.

    With base states :math:`s_t`, it keeps :math:`s_{t+1} = \mathrm{step}(s_t, u_t)` and plays
    :math:`\pi_{t+1} = \mathrm{step}(s_{t+1}, u_t)`: the last utility serves as the prediction of
    the next (Rakhlin & Sridharan 2013). For Hedge the averaged Nash gap falls as :math:`O(1/T)`
    instead of :math:`O(1/\sqrt T)` (Syrgkanis et al. 2015), and the last iterate converges.

    Examples:
        >>> rule = optimistic(hedge(eta=0.5))
        >>> state = rule.step(rule.init(np.zeros(2)), np.array([1.0, 0.0]))
        >>> softmax(state.logits).round(4).tolist()  # two steps' worth of tilt, e^{2*0.5}
        [0.7311, 0.2689]
    """
    if not isinstance(rule, UpdateRule):
        raise TypeError(f"rule must be an UpdateRule (e.g. gpo_core.hedge(0.1)), got {rule!r}")

    def init(logits: Any) -> OptimisticState:
        base = rule.init(logits)
        return OptimisticState(base.logits, base, 0, _strategy(base))

    def step(state: OptimisticState, utilities: Any) -> OptimisticState:
        base = rule.step(state.base, utilities)
        ahead = rule.step(base, utilities)
        return OptimisticState(ahead.logits, base, state.count + 1, _strategy(ahead))

    base_unchecked = getattr(rule.step, "unchecked", None)
    if base_unchecked is not None:

        def unchecked(state: OptimisticState, utilities: Any) -> OptimisticState:
            base = base_unchecked(state.base, utilities)
            ahead = base_unchecked(base, utilities)
            return OptimisticState(ahead.logits, base, state.count + 1, _strategy(ahead))

        step.unchecked = unchecked
    if getattr(rule.step, "hedge", None) is not None:  # play's C player for optimistic Hedge
        step.optimistic_hedge = rule.step.hedge
    return UpdateRule(init, step, f"optimistic({rule.name})")


def _label(schedule: Schedule) -> str:
    schedule = getattr(schedule, "__wrapped__", schedule)  # a user's schedule, checked
    if isinstance(schedule, Constant):
        return f"{schedule.eta:g}"
    c = getattr(schedule, "c", None)
    return f"{c:g}/sqrt(t)" if c is not None else type(schedule).__name__

