r"""Update rules: pure ``(init, step)`` pairs made by factories (optax's shape).

Every rule keeps its current strategy as normalised logits (``state.logits``; probabilities are
``softmax(state.logits)``) and maps ``(state, utilities) -> state`` where ``utilities`` holds one
"higher is better" number per action (``A y`` for the row player, ``-A^T x`` for the column
player). All rules broadcast over leading batch axes and never modify their inputs.

The rules, in closed form (:math:`z` = logits, :math:`u` = utilities, :math:`\rho` = magnet):

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
* :func:`regret_matching_plus` (RM+; Tammelin 2014): play in proportion to clipped cumulative
  regrets :math:`Q' = [Q + u - \langle u, \pi\rangle]^+`; parameter-free.

:func:`mirror_step` is the one formula shared by every mirror rule and by the LLM backends,
which fit a network to the same target on samples.

Arrays: a rule computes in the library, dtype and device of the logits it was initialised with
(numpy, float32 or float64; or a torch tensor, see ``gpo_core._xp``), and every state field stays
there; utilities from another library or dtype are converted to the state's.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from gpo_core import _fused, _xp
from gpo_core._validate import check_mirror_params, check_nonnegative, check_strategy, short
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


class RuleState(Protocol):
    """What every rule state exposes: the strategy it plays now, as normalised logits."""

    @property
    def logits(self) -> np.ndarray:  # pragma: no cover - protocol
        """Log-probabilities of the current strategy, shape ``(..., n)``."""
        ...


class UpdateRule(NamedTuple):
    """A pure update rule: ``state = init(logits)``; ``state = step(state, utilities)``.

    Attributes:
        init: maps initial logits ``(..., n)`` to the rule's state.
        step: maps ``(state, utilities)`` to the next state; never mutates either input.
        name: a short label for reports (``"hedge(eta=0.1)"``).
    """

    init: Callable[[np.ndarray], Any]
    step: Callable[[Any, np.ndarray], Any]
    name: str


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


def _convert(value: Any, like: Any, name: str) -> Any:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real numeric array, got the string {short(value)}")
    try:
        return _xp.convert(value, like, name)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array, got {short(value)} ({exc})") from exc


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


def _check_utilities(like: np.ndarray, utilities: Any) -> tuple[Any, np.ndarray]:
    """``(xp, u)``: ``like``'s namespace (a state's logits or strategy) and ``utilities`` checked
    and converted to it (its library, dtype and device; one entry per action of ``like``)."""
    if type(like) is np.ndarray and type(utilities) is np.ndarray:  # play()'s hot path
        try:
            xp, u = np, np.asarray(utilities, dtype=like.dtype)
        except (TypeError, ValueError) as exc:  # strings, objects
            raise TypeError(
                f"utilities must be a real numeric array, got {short(utilities)} ({exc})"
            ) from exc
    else:
        xp, u = _xp.namespace(like), _convert(utilities, like, "utilities")
    if u.shape[-1:] != like.shape[-1:]:
        raise ValueError(
            f"utilities must have {like.shape[-1]} entries on the last axis (one per "
            f"action, matching the state), got shape {tuple(u.shape)}"
        )
    # numpy: a sum is finite only if every entry is, so one reduction settles the common case;
    # a non-finite sum (an inf or nan, or finite entries that overflow together) gets the full check.
    finite = (
        math.isfinite(float(u.sum())) or bool(np.all(np.isfinite(u)))
        if xp is np
        else xp.all(xp.isfinite(u))
    )
    if not finite:
        raise _non_finite(utilities)
    return xp, u


def _non_finite(utilities: Any) -> ValueError:
    return ValueError(
        f"utilities must be finite, got non-finite entries (nan or inf) in {short(utilities)}; "
        "check the payoffs or rewards that produced them"
    )


def _unchecked(generic: Callable[[Any, Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``rule.step.unchecked``: the rule's library-neutral step ``generic(state, u, xp)`` without
    ``_check_utilities``, for :func:`gpo_core.play` on arrays of another library (a GPU's).

    play's utilities are ``A y`` and ``-A^T x`` of a checked game: already in the state's
    library, dtype, device and shape, and finite unless the products overflow, which play
    detects once at the end from its running sums. The finiteness test costs a wait for the
    device at every step (the answer must reach the host to raise), which on a GPU idles it
    while the next operations are launched."""

    def unchecked(state: Any, utilities: Any) -> Any:
        return generic(state, utilities, _xp.namespace(utilities))

    return unchecked


def _init_logits(logits: Any) -> tuple[Any, np.ndarray]:
    """``(xp, z)``: the logits' namespace and the checked, normalised logits (a new array)."""
    z = _xp.as_float_array(logits, "logits", min_ndim=1)
    if z.shape[-1] == 0:
        raise ValueError("logits must have at least one action on the last axis, got 0")
    xp = _xp.namespace(z)
    return xp, _log_softmax(xp, z)


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


def _label(schedule: Schedule) -> str:
    schedule = getattr(schedule, "__wrapped__", schedule)  # a user's schedule, checked
    if isinstance(schedule, Constant):
        return f"{schedule.eta:g}"
    c = getattr(schedule, "c", None)
    return f"{c:g}/sqrt(t)" if c is not None else type(schedule).__name__

