r"""Gain sequences for regret checks outside self-play, including adversarial ones.

A no-regret bound holds for *every* gain sequence, even one chosen adaptively against the
learner, so the checks drive a rule with sequences built to hurt it, not only with self-play:

* :func:`random_gains` -- i.i.d. uniform gains in :math:`[0, B]` (oblivious, seeded);
* :func:`least_likely_gains` -- gain :math:`B` on the action the learner currently plays with the
  smallest probability, 0 elsewhere (adaptive: the learner's mass is always on the wrong actions);
* :func:`switching_gains` -- gain :math:`B` on action :math:`\lfloor (t-1)/P\rfloor \bmod n`: the
  best action changes every ``period`` rounds, so a learner that has committed must unlearn (this
  is the sequence that comes closest to the constant-step bound);
* :func:`array_gains` -- any fixed ``(T, n)`` array.

Each is a :class:`GainSequence`: a value holding its declared per-round range ``B`` and a pure
function ``(probabilities, t) -> gains`` (``t`` is 1-based).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from gpo_core._validate import as_real_array, check_positive, check_positive_int

__all__ = [
    "GainSequence",
    "random_gains",
    "least_likely_gains",
    "switching_gains",
    "array_gains",
]


@dataclasses.dataclass(frozen=True)
class GainSequence:
    """A (possibly adaptive) sequence of gain vectors for one learner.

    Attributes:
        name: label for reports.
        num_actions: ``n``.
        payoff_range: declared bound ``B`` on ``max_i u_t[i] - min_i u_t[i]`` in every round.
        gains: ``(p_t, t) -> u_t``: the gains of round ``t`` (1-based), given the learner's
            current strategy ``p_t`` (oblivious sequences ignore ``p_t``).
        horizon: the largest ``t`` it can produce (``None``: unbounded).
    """

    name: str
    num_actions: int
    payoff_range: float
    gains: Callable[[np.ndarray, int], np.ndarray]
    horizon: int | None = None


def random_gains(n: int, B: float = 1.0, *, seed: int = 0) -> GainSequence:
    """I.i.d. uniform gains in ``[0, B]``, reproducible from ``seed``.

    The round-``t`` gains depend only on ``(seed, t)``, so the sequence is a pure function.

    Examples:
        >>> seq = random_gains(3, 2.0, seed=1)
        >>> bool(np.all(seq.gains(np.ones(3) / 3, 5) == seq.gains(np.zeros(3), 5)))
        True
    """
    n = check_positive_int(n, "n")
    B = check_positive(B, "B")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")

    def gains(p: np.ndarray, t: int) -> np.ndarray:
        del p
        return np.random.default_rng((seed, t)).uniform(0.0, B, size=n)

    return GainSequence(f"random(n={n},seed={seed})", n, B, gains)


def least_likely_gains(n: int, B: float = 1.0) -> GainSequence:
    """Gain ``B`` on the learner's least likely action (lowest index on ties), 0 elsewhere.

    Examples:
        >>> least_likely_gains(3).gains(np.array([0.5, 0.2, 0.3]), 1).tolist()
        [0.0, 1.0, 0.0]
    """
    n = check_positive_int(n, "n")
    B = check_positive(B, "B")

    def gains(p: np.ndarray, t: int) -> np.ndarray:
        del t
        u = np.zeros(n)
        u[int(np.argmin(p))] = B
        return u

    return GainSequence(f"least_likely(n={n})", n, B, gains)


def switching_gains(n: int, B: float = 1.0, *, period: int = 100) -> GainSequence:
    """Gain ``B`` on action ``((t - 1) // period) % n``: the best action switches every ``period``.

    Examples:
        >>> seq = switching_gains(2, period=3)
        >>> [int(np.argmax(seq.gains(np.ones(2) / 2, t))) for t in range(1, 8)]
        [0, 0, 0, 1, 1, 1, 0]
    """
    n = check_positive_int(n, "n")
    B = check_positive(B, "B")
    period = check_positive_int(period, "period")

    def gains(p: np.ndarray, t: int) -> np.ndarray:
        del p
        u = np.zeros(n)
        u[((t - 1) // period) % n] = B
        return u

    return GainSequence(f"switching(n={n},period={period})", n, B, gains)


def array_gains(gains: Any, name: str = "array") -> GainSequence:
    """A fixed ``(T, n)`` array of gains; ``B`` is its largest per-round spread.

    Examples:
        >>> seq = array_gains([[1.0, 0.0], [0.0, 3.0]])
        >>> seq.payoff_range, seq.horizon
        (3.0, 2)
    """
    u = as_real_array(gains, "gains", min_ndim=2)
    if u.ndim != 2 or u.shape[0] == 0 or u.shape[1] == 0:
        raise ValueError(f"gains must have shape (T, n) with T, n >= 1, got shape {u.shape}")
    u.setflags(write=False)
    spread = float(np.max(u.max(axis=1) - u.min(axis=1)))

    def at(p: np.ndarray, t: int) -> np.ndarray:
        del p
        return u[t - 1]

    return GainSequence(f"{name}(T={u.shape[0]},n={u.shape[1]})", u.shape[1], spread, at, u.shape[0])
