r"""The update-rule interface: :class:`UpdateRule`, :class:`RuleState` and the checks every
rule's step shares (:mod:`gpo_core.rules`, :mod:`gpo_core.regret_matching`,
:mod:`gpo_core.predictive`).

Every rule keeps its current strategy as normalised logits (``state.logits``; probabilities are
``softmax(state.logits)``) and maps ``(state, utilities) -> state`` where ``utilities`` holds one
"higher is better" number per action (``A y`` for the row player, ``-A^T x`` for the column
player). All rules broadcast over leading batch axes and never modify their inputs.

Arrays: a rule computes in the library, dtype and device of the logits it was initialised with
(numpy, float32 or float64; or a torch tensor, see ``gpo_core._xp``), and every state field stays
there; utilities from another library or dtype are converted to the state's.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from gpo_core import _xp
from gpo_core._validate import short
from gpo_core.simplex import _log_softmax

__all__ = ["RuleState", "UpdateRule"]


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


def _convert(value: Any, like: Any, name: str) -> Any:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real numeric array, got the string {short(value)}")
    try:
        return _xp.convert(value, like, name)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array, got {short(value)} ({exc})") from exc


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
