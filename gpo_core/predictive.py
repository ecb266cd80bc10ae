r"""Predictive regret matching+ (PRM+): regret matching+ that plays the regret it predicts.

Farina, Kroer & Sandholm (2021), "Faster game solving via predictive Blackwell approachability:
connecting regret matching and mirror descent" (AAAI 2021), Algorithm 2, in this library's
"higher is better" utility convention. With :math:`Q_t \ge 0` the clipped cumulative regrets,
:math:`\pi_t` the strategy played at step :math:`t` and :math:`u_t` the utilities it then saw:

.. math::
    r_t &= u_t - \langle u_t, \pi_t\rangle \mathbf 1
        && \text{(instantaneous regret)} \\
    Q_t &= [Q_{t-1} + r_t]^+
        && \text{(RM+'s cumulative regret, } Q_0 = 0) \\
    \theta_{t+1} &= [Q_t + m_{t+1}]^+,\quad m_{t+1} = r_t
        && \text{(predict that the next regret repeats the last)} \\
    \pi_{t+1} &= \theta_{t+1} / \lVert\theta_{t+1}\rVert_1
        && \text{(if } \theta_{t+1} = 0 \text{: keep } \pi_t\text{)}

The paper's prediction of the next utility is :math:`m_{t+1} = u_t`, which makes the predicted
regret :math:`u_t - \langle u_t, \pi_t\rangle\mathbf 1 = r_t`; with :math:`m \equiv 0` the rule is
plain RM+ (:func:`gpo_core.regret_matching_plus`). When :math:`\theta = 0` any strategy keeps the
guarantee (the Blackwell decision is the origin of the cone), so we keep the current one, as RM+
does. Also as in RM+, entries of :math:`r_t` within a few ulps of :math:`\max_i |u_{t,i}|` are set
to exactly 0: when all actions tie, rounding noise in :math:`\langle u_t, \pi_t\rangle` must not
move the strategy.

**Guarantee.** PRM+ is predictive online mirror descent (Euclidean) on the positive orthant run by
Blackwell approachability, so each player's external regret is
:math:`O\big(\sqrt{\textstyle\sum_t \lVert r_t - r_{t-1}\rVert_2^2}\big)` (Farina et al. 2021):
never worse than RM+'s :math:`O(B\sqrt{nT})` for payoffs of range :math:`B`, and small when the
utilities change slowly, as they do in self-play. By the folk theorem the averaged profile's Nash
gap is at most the players' summed regrets over :math:`T`. Like RM+ it is parameter-free and
invariant to positive scaling of the payoffs, and it is run as CFR+ is, with alternating updates
(``play(..., alternating=True)``) and a linearly or quadratically weighted average.
``benchmarks/README.md`` measures where it beats RM+ here (small games; simultaneous updates, where
RM+ stalls) and where it does not (random games of 100+ actions with alternation).

The state keeps the played strategy twice, as normalised ``logits`` (every rule's contract; exact
zeros become :func:`gpo_core.simplex.safe_log`'s finite floor) and as probabilities
``strategy`` (so the regret is computed against the exact point played, without a softmax).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gpo_core import _xp
from gpo_core.regret_matching import (
    _instant_regret,
    _in_place_takes,
    _normalise_or_keep,
    _regret_matching_into,
)
from gpo_core.rule_api import UpdateRule, _check_utilities, _init_logits, _unchecked
from gpo_core.simplex import _safe_log, _softmax

__all__ = ["PRMPlusState", "predictive_regret_matching_plus"]


class PRMPlusState(NamedTuple):
    """State of :func:`predictive_regret_matching_plus`.

    ``logits`` (``log strategy``) is computed when asked for, as for
    :class:`gpo_core.RMPlusState`: the rule itself only needs probabilities.
    """

    strategy: np.ndarray  # (..., n) the strategy played now (exact zeros kept)
    cum_regret: np.ndarray  # (..., n) clipped cumulative regrets Q_t >= 0
    count: int  # updates made so far

    @property
    def logits(self) -> np.ndarray:
        """``log(strategy)`` with exact zeros at the finite log floor (see ``gpo_core.simplex``)."""
        return _safe_log(_xp.namespace(self.strategy), self.strategy)


def predictive_regret_matching_plus() -> UpdateRule:
    r"""Predictive regret matching+ (PRM+): :math:`\pi' \propto [Q' + r]^+`, :math:`Q' = [Q + r]^+`.

    Here :math:`r = u - \langle u, \pi\rangle` is the regret of the strategy just played; it is
    both added to the cumulative regrets (as in RM+) and used as the prediction of the next one
    (Farina, Kroer & Sandholm 2021). Parameter-free; use it with ``alternating=True`` and
    ``averaging="linear"`` (or ``"quadratic"``) in :func:`gpo_core.play`.

    Returns:
        An :class:`gpo_core.UpdateRule` named ``"prm+"`` whose state is a :class:`PRMPlusState`.

    Examples:
        >>> rule = predictive_regret_matching_plus()
        >>> state = rule.step(rule.init(np.zeros(3)), np.array([3.0, 0.0, 0.0]))
        >>> state.strategy.tolist(), state.cum_regret.tolist()  # theta = [2 + 2, 0, 0]
        ([1.0, 0.0, 0.0], [2.0, 0.0, 0.0])
        >>> state = rule.step(state, np.array([0.0, 3.0, 0.0]))  # r = [0, 3, 0], Q = [2, 3, 0]
        >>> state.strategy.tolist()  # theta = [Q + r]^+ = [2, 6, 0]
        [0.25, 0.75, 0.0]
    """

    def init(logits: Any) -> PRMPlusState:
        xp, z = _init_logits(logits)
        return PRMPlusState(_softmax(xp, z), xp.zeros_like(z), 0)

    def step(state: PRMPlusState, utilities: Any) -> PRMPlusState:
        x = state.strategy
        if _in_place_takes(x, utilities, state.cum_regret):  # play's hot path
            q = state.cum_regret.copy()
            strategy = _prm_plus_into(
                x, utilities, q, np.empty_like(x), np.empty_like(x), state.count
            )
            return PRMPlusState(strategy, q, state.count + 1)
        xp, u = _check_utilities(x, utilities)
        return generic(state, u, xp)

    def generic(state: PRMPlusState, u: Any, xp: Any) -> PRMPlusState:
        x = state.strategy
        # u - <u, x>, with 1-ulp rounding noise zeroed exactly as RM+ does: when all actions tie
        # the regret (and so the prediction) is 0 and PRM+ keeps its strategy instead of jumping.
        regret = _instant_regret(u, x, xp)  # a new array: the updates below touch no input
        q = _xp.relu_(xp, state.cum_regret + regret)  # Q' = [Q + r]^+
        theta = _xp.relu_(xp, q + regret)  # theta = [Q' + r]^+
        total = xp.sum(theta, axis=-1, keepdims=True)
        # No positive predicted regret: keep playing the current strategy (any point of the
        # simplex keeps the guarantee, see the module docstring).
        return PRMPlusState(_normalise_or_keep(xp, theta, total, x), q, state.count + 1)

    step.in_place = _prm_plus_into  # what play runs on one numpy game, with its own buffers
    step.unchecked = _unchecked(generic)
    return UpdateRule(init, step, "prm+")


_prm_plus_into = _regret_matching_into(predictive=True)
