r"""Step-size schedules :math:`\eta_t` for the mirror-descent rules.

A schedule is any callable ``t -> eta_t`` for ``t = 1, 2, ...`` (``t`` counts updates already
made plus one). Three are provided:

* :func:`constant` -- :math:`\eta_t = \eta`. Hedge with a constant step is exactly GPO's
  KL-to-previous-iterate step (Zheng et al. 2024, Sec. 3; digest Sec. 2.4).
* :func:`inverse_sqrt` -- :math:`\eta_t = c/\sqrt{t}`, the anytime schedule (no horizon needed);
  regret :math:`O(\sqrt{T})` (Cesa-Bianchi & Lugosi 2006, Thm. 2.3).
* :func:`horizon_tuned` -- the constant :math:`\eta = \sqrt{8 \ln n / T} / B` that minimises
  Hedge's regret bound :math:`\ln n/\eta + \eta T B^2/8` for a known horizon ``T`` and payoff range
  ``B`` (Cesa-Bianchi & Lugosi 2006, Thm. 2.2), giving :math:`B\sqrt{T \ln n / 2}`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Protocol, runtime_checkable

from gpo_core._validate import check_positive, check_positive_int, short

__all__ = ["Schedule", "Constant", "InverseSqrt", "constant", "inverse_sqrt", "horizon_tuned"]


@runtime_checkable
class Schedule(Protocol):
    """A step size as a function of the (1-based) update count ``t``."""

    def __call__(self, t: int) -> float:  # pragma: no cover - protocol
        """Step size used for update number ``t``."""
        ...


@dataclasses.dataclass(frozen=True)
class Constant:
    """:math:`\\eta_t = \\eta` for every ``t``."""

    eta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", check_positive(self.eta, "eta"))

    def __call__(self, t: int) -> float:
        """Return ``eta`` whatever ``t`` is."""
        del t
        return self.eta


@dataclasses.dataclass(frozen=True)
class InverseSqrt:
    """:math:`\\eta_t = c / \\sqrt{t}`."""

    c: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", check_positive(self.c, "c"))

    def __call__(self, t: int) -> float:
        """Return ``c / sqrt(t)``."""
        return self.c / math.sqrt(t)


def constant(eta: float) -> Constant:
    """A constant step size ``eta > 0``.

    Examples:
        >>> constant(0.1)(7)
        0.1
    """
    return Constant(check_positive(eta, "eta"))


def inverse_sqrt(c: float) -> InverseSqrt:
    """The anytime schedule ``c / sqrt(t)``, ``c > 0``.

    Examples:
        >>> inverse_sqrt(1.0)(4)
        0.5
    """
    return InverseSqrt(check_positive(c, "c"))


def horizon_tuned(horizon: int, num_actions: int, payoff_range: float) -> Constant:
    """The constant step ``sqrt(8 ln n / T) / B`` that is optimal for Hedge's regret bound.

    Args:
        horizon: number of updates ``T`` the run will make.
        num_actions: number of actions ``n`` of the player (``n >= 2`` for a non-zero step).
        payoff_range: width ``B = max payoff - min payoff`` of the utilities it will see.

    Examples:
        >>> round(horizon_tuned(100, 3, 2.0)(1), 5)
        0.14823
    """
    horizon = check_positive_int(horizon, "horizon")
    num_actions = check_positive_int(num_actions, "num_actions")
    payoff_range = check_positive(payoff_range, "payoff_range")
    if num_actions < 2:
        raise ValueError("num_actions must be >= 2 for a tuned step (one action has no regret)")
    return Constant(math.sqrt(8.0 * math.log(num_actions) / horizon) / payoff_range)


def as_schedule(eta: float | Schedule, name: str = "eta") -> Schedule:
    """Accept a positive number (made constant) or any ``Schedule``; raise on anything else.

    A callable is probed at ``t = 1``, so that a schedule returning a non-positive or
    non-numeric step fails here, naming ``name``, instead of deep inside a run; and unless it is
    one of this module's (their values are positive by construction) it comes back wrapped in
    :class:`Checked`, which tests every value it returns, so one that goes bad at ``t = 5``
    raises there, naming ``name`` and ``t``, instead of running on silently or surfacing as
    non-finite utilities.

    Examples:
        >>> rule_eta = as_schedule(lambda t: 1.0 if t < 5 else -1.0)
        >>> rule_eta(4)
        1.0
        >>> rule_eta(5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: eta must be a number > 0 or a schedule t -> eta_t > 0; the schedule <lambda> returned -1.0 at t=5
    """
    if isinstance(eta, (Constant, InverseSqrt, Checked)):
        return eta
    if callable(eta):
        checked = Checked(eta, name)
        checked(1)
        return checked
    return Constant(check_positive(eta, name))


class Checked:
    """A user's schedule whose every value is tested: a finite float > 0 passes in one
    comparison (the per-step cost of a run), anything else raises naming the schedule and ``t``.
    ``__wrapped__`` is the schedule itself."""

    __slots__ = ("__wrapped__", "name")

    def __init__(self, schedule: Schedule, name: str = "eta") -> None:
        self.__wrapped__ = schedule
        self.name = name

    def __call__(self, t: int) -> float:
        """``schedule(t)``, checked."""
        value = self.__wrapped__(t)
        if type(value) is float and 0.0 < value < math.inf:  # the common case: one comparison
            return value
        return self._slow(value, t)

    def _slow(self, value: object, t: int) -> float:
        name = self.name
        fn = self.__wrapped__
        which = f"the schedule {fn.__qualname__ if hasattr(fn, '__code__') else short(fn, 60)}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"{name} must be a number > 0 or a schedule t -> eta_t > 0 (e.g. "
                f"gpo_core.inverse_sqrt(0.5)); {which} returned {short(value)} at t={t}: "
                "return a float"
            )
        out = float(value)
        if not (math.isfinite(out) and out > 0):
            raise ValueError(
                f"{name} must be a number > 0 or a schedule t -> eta_t > 0; {which} returned "
                f"{out!r} at t={t}"
            )
        return out

    def __repr__(self) -> str:
        return f"Checked({self.__wrapped__!r})"
