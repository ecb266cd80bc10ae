r"""Log-domain helpers on the probability simplex.

Strategies live as logits :math:`z`; probabilities come only from :func:`softmax`,
:math:`\pi_i = e^{z_i} / \sum_j e^{z_j}`, computed after subtracting the maximum so that logits
of any size (payoffs of 1e6 times thousands of steps) stay finite. Every function works on the
last axis and broadcasts over leading (batch) axes. Underflow to an exact 0 is expected and fine.
"""

from __future__ import annotations

import numpy as np

from gpo_core._validate import check_positive_int

__all__ = ["softmax", "log_softmax", "logsumexp", "entropy", "kl", "uniform_logits", "safe_log"]

# Logits of actions with probability 0 (regret matching's zero entries) use this instead of -inf,
# so every rule's state stays finite while softmax still returns an exact 0 for them. It is twice
# log(smallest normal float), about -1416.8: below the log of every positive float64 (the smallest
# subnormal has log -744.4), so exp(floor - max logit) underflows to exactly 0. (log(tiny) itself,
# about -708.4, left a spurious 2.2e-308 probability on those actions.)
_LOG_TINY = 2.0 * float(np.log(np.finfo(np.float64).tiny))


def logsumexp(z: np.ndarray) -> np.ndarray:
    """``log(sum(exp(z)))`` over the last axis, stable for any finite ``z``.

    Examples:
        >>> float(logsumexp(np.array([1000.0, 1000.0])) - 1000.0)  # doctest: +ELLIPSIS
        0.693147...
    """
    z = np.asarray(z, dtype=np.float64)
    top = np.max(z, axis=-1, keepdims=True)
    with np.errstate(under="ignore"):
        return np.log(np.sum(np.exp(z - top), axis=-1)) + top[..., 0]


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Normalised log-probabilities ``z - logsumexp(z)`` over the last axis."""
    z = np.asarray(z, dtype=np.float64)
    return z - logsumexp(z)[..., None]


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities from logits over the last axis; invariant to adding a constant.

    Examples:
        >>> softmax(np.log([1.0, 3.0]))
        array([0.25, 0.75])
    """
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(under="ignore"):
        e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def safe_log(p: np.ndarray) -> np.ndarray:
    """``log(p)`` with exact zeros mapped to a finite floor (``log`` of the smallest float)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(np.maximum(p, 0.0)), _LOG_TINY)


def entropy(p: np.ndarray) -> np.ndarray:
    r"""Shannon entropy :math:`-\sum_i p_i \log p_i` (nats) over the last axis; ``0 log 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    return -np.sum(np.where(p > 0, p * safe_log(p), 0.0), axis=-1)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Kullback-Leibler divergence :math:`\sum_i p_i \log(p_i / q_i)` over the last axis.

    Returns ``inf`` where ``p`` puts mass on an action that ``q`` gives probability 0.

    Examples:
        >>> float(kl(np.array([0.5, 0.5]), np.array([0.5, 0.5])))
        0.0
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return np.sum(terms, axis=-1)


def uniform_logits(n: int, batch_shape: tuple[int, ...] = ()) -> np.ndarray:
    """All-zero logits: the uniform strategy over ``n`` actions."""
    return np.zeros((*batch_shape, check_positive_int(n, "n")), dtype=np.float64)
