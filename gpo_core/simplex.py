r"""Log-domain helpers on the probability simplex.

Strategies live as logits :math:`z`; probabilities come only from :func:`softmax`,
:math:`\pi_i = e^{z_i} / \sum_j e^{z_j}`, computed after subtracting the maximum so that logits
of any size (payoffs of 1e6 times thousands of steps) stay finite. Every function works on the
last axis and broadcasts over leading (batch) axes. Underflow to an exact 0 is expected and fine.

Each helper computes in its input's library and dtype (see ``gpo_core._xp``): numpy arrays and
Python data in numpy (float32 stays float32, anything else becomes float64), a torch tensor in
torch on its own device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpo_core import _xp
from gpo_core._validate import check_positive_int, check_strategy, short

__all__ = ["softmax", "log_softmax", "logsumexp", "entropy", "kl", "uniform_logits", "safe_log"]

# Logits of actions with probability 0 (regret matching's zero entries) use this instead of -inf,
# so every rule's state stays finite while softmax still returns an exact 0 for them. It is twice
# log(smallest normal float), about -1416.8: below the log of every positive float64 (the smallest
# subnormal has log -744.4), so exp(floor - max logit) underflows to exactly 0. (log(tiny) itself,
# about -708.4, left a spurious 2.2e-308 probability on those actions.) It serves float32 too:
# it is a finite float32, far below the log of the smallest float32 subnormal (-103.3).
_LOG_TINY = 2.0 * float(np.log(np.finfo(np.float64).tiny))


def logsumexp(z: Any) -> Any:
    """``log(sum(exp(z)))`` over the last axis, stable for any finite ``z``.

    Examples:
        >>> float(logsumexp(np.array([1000.0, 1000.0])) - 1000.0)  # doctest: +ELLIPSIS
        0.693147...
    """
    return _logsumexp(*_floating(z, "z"))


def log_softmax(z: Any) -> Any:
    """Normalised log-probabilities ``z - logsumexp(z)`` over the last axis."""
    return _log_softmax(*_floating(z, "z"))


def softmax(z: Any) -> Any:
    """Probabilities from logits over the last axis; invariant to adding a constant.

    Examples:
        >>> softmax(np.log([1.0, 3.0]))
        array([0.25, 0.75])
    """
    return _softmax(*_floating(z, "z"))


def safe_log(p: Any) -> Any:
    """``log(p)`` with exact zeros mapped to a finite floor (``log`` of the smallest float)."""
    return _safe_log(*_floating(p, "p", min_ndim=0))


def entropy(p: Any) -> Any:
    r"""Shannon entropy :math:`-\sum_i p_i \log p_i` (nats) over the last axis; ``0 log 0 = 0``.

    ``p`` must be a probability vector (or a batch of them): entries >= 0 summing to 1.

    Examples:
        >>> round(float(entropy([0.5, 0.5])), 6)
        0.693147
    """
    xp, p = _distribution(p, "p")
    return -xp.sum(xp.where(p > 0, p * _safe_log(xp, p), 0.0), axis=-1)


def kl(p: Any, q: Any) -> Any:
    r"""Kullback-Leibler divergence :math:`\sum_i p_i \log(p_i / q_i)` over the last axis.

    Returns ``inf`` where ``p`` puts mass on an action that ``q`` gives probability 0. ``q`` is
    moved to ``p``'s library and device; the result is float32 only when both are float32.

    Examples:
        >>> float(kl(np.array([0.5, 0.5]), np.array([0.5, 0.5])))
        0.0
    """
    xp, p = _distribution(p, "p")
    xq, q = _distribution(q, "q")
    if xq is not xp:
        q = _xp.convert(q, p, "q")
    if q.shape[-1] != p.shape[-1] or not _broadcasts(p.shape[:-1], q.shape[:-1]):
        raise ValueError(
            f"p and q must be distributions over the same actions (the same last axis, leading "
            f"axes that broadcast), got shapes {tuple(p.shape)} and {tuple(q.shape)}"
        )
    with _xp.errstate(xp, divide="ignore", invalid="ignore"):
        terms = xp.where(p > 0, p * (xp.log(xp.where(p > 0, p, 1.0)) - xp.log(q)), 0.0)
    return xp.sum(terms, axis=-1)


def uniform_logits(n: int, batch_shape: tuple[int, ...] = (), *, like: Any = None) -> Any:
    """All-zero logits: the uniform strategy over ``n`` actions.

    float64 numpy by default; with ``like`` (an array) in its library, dtype and device.
    """
    shape = (*batch_shape, check_positive_int(n, "n"))
    if like is None:
        return np.zeros(shape, dtype=np.float64)
    xp, like = _xp.floating(like)
    return _xp.full(xp, shape, 0.0, like)


def _floating(value: Any, name: str, min_ndim: int = 1) -> tuple[Any, Any]:
    """``_xp.floating(value)`` with errors naming ``name``: a real array with at least one entry
    on its last axis (unless ``min_ndim`` is 0). Shapes and types only: no pass over the data."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a real numeric array, got the string {short(value)}")
    try:
        xp, arr = _xp.floating(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real numeric array, got {short(value)} ({exc})") from exc
    if min_ndim and (arr.ndim == 0 or arr.shape[-1] == 0):
        raise ValueError(
            f"{name} must have at least one entry on its last axis (one per action), got shape "
            f"{tuple(arr.shape)}"
        )
    return xp, arr


def _distribution(value: Any, name: str) -> tuple[Any, Any]:
    """``(xp, p)``: ``value`` checked to be probability vectors over its last axis (finite,
    >= 0, summing to 1 up to rounding), in its own library and float dtype."""
    xp, arr = _floating(value, name)
    return xp, check_strategy(arr, name, arr.shape[-1], like=arr)


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(x == y or 1 in (x, y) for x, y in zip(reversed(a), reversed(b)))


# Kernels without conversion: the rules and play() resolve the namespace ``xp`` once and call these.
# numpy keeps its exact former calls (np.errstate silences the expected underflow); other
# libraries never warn, so they need no error-state context.
def _logsumexp(xp: Any, z: Any) -> Any:
    top = xp.max(z, axis=-1, keepdims=True)
    with _xp.errstate(xp, under="ignore"):
        return xp.log(xp.sum(xp.exp(z - top), axis=-1)) + top[..., 0]


def _log_softmax(xp: Any, z: Any) -> Any:
    return z - _logsumexp(xp, z)[..., None]


def _softmax(xp: Any, z: Any) -> Any:
    with _xp.errstate(xp, under="ignore"):
        e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _safe_log(xp: Any, p: Any) -> Any:
    if xp is np:
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(np.maximum(p, 0.0)), _LOG_TINY)
    return xp.clip(xp.log(xp.clip(p, min=0.0)), min=_LOG_TINY)
