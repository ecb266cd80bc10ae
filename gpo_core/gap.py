r"""An estimate of the Nash gap of the LLM game, with its uncertainty.

The Nash gap of a profile :math:`(\pi, \mu)` of the alignment game is

.. math:: \mathrm{gap}(\pi, \mu) = \max_{\pi'} J(\pi', \mu) - \min_{\mu'} J(\pi, \mu') \ge 0,

zero exactly at an equilibrium. Neither extremum is computable for language models, so each is
approached by a best responder: a copy of the other player, trained from its current iterate with
``gap_steps`` mirror steps of size ``gap_eta`` (no reference KL) against the fixed profile. Each
best response is then evaluated on ``gap_rollouts`` fresh rollouts; rollout :math:`k` gives
:math:`\hat g_k = \hat J(\pi'_k, \mu) - \hat J(\pi, \mu'_k)` and the estimate is their mean with a
95% Student-t interval. It is a *lower* estimate of the gap (a best responder of finite training
is not a best response), exact for enumerated policies as ``gap_steps * gap_eta`` grows.

The estimate measures the game, not itself: it draws from a random stream of its own (so a run
that estimates the gap plays exactly the rounds of one that does not), and both players get back
their parameters and, where they have one, their optimiser state.

The profile may be the last iterates, or the averaged policies
(:class:`~gpo_core.mixture.MixturePolicy`: the object of Theorem 3.2's :math:`O(T^{-1/2})`
bound): pass them as ``defender_play`` / ``adversary_play``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from gpo_core.protocols import MirrorStep, Policy, RewardModel
from gpo_core.rollout import adversary_experience, defender_experience, rollout, rollout_metrics

__all__ = ["estimate_gap", "gap_stream"]

_STREAM = 0x6A9  # names the estimate's own random stream (any constant apart from the loop's)


def gap_stream(seed: int, t: int) -> np.random.Generator:
    """The generator of the gap estimate after round ``t`` of a run seeded ``seed``."""
    return np.random.default_rng([seed, _STREAM, t])


def _state(policy: Any) -> tuple[Any, Any]:
    getter = getattr(policy, "optimizer_state_dict", None)
    return policy.snapshot(), (getter() if callable(getter) else None)


def _put_back(policy: Any, state: tuple[Any, Any]) -> None:
    policy.restore(state[0])
    if state[1] is not None:
        policy.load_optimizer_state_dict(state[1])


def estimate_gap(
    defender: Policy,
    adversary: Policy,
    reward: RewardModel,
    config: Any,
    *,
    seed_prompts: tuple[str, ...] | list[str] = (),
    rng: np.random.Generator | None = None,
    defender_play: Policy | None = None,
    adversary_play: Policy | None = None,
) -> dict[str, float]:
    """Estimate the Nash gap of ``(defender_play, adversary_play)`` (module docstring).

    Args:
        defender, adversary: the players; each is trained as the best responder against the
            other's fixed policy and put back exactly as it was.
        reward: the reward model.
        config: a :class:`~gpo_core.alignment.GameConfig` (``gap_steps``, ``gap_eta``,
            ``gap_rollouts`` and the rollout sizes; diversity and seed mixing are left out).
        seed_prompts: the seed prompts (for a conditional adversary).
        rng: the generator to draw from; by default :func:`gap_stream` ``(config.seed, 0)``.
        defender_play, adversary_play: the fixed profile to evaluate; by default the current
            iterates ``defender`` and ``adversary`` themselves.

    Returns:
        ``gap/estimated`` (the mean over rollouts), ``gap/estimated_ci_low`` and
        ``gap/estimated_ci_high`` (its 95% Student-t interval; ``nan`` with one rollout),
        ``gap/adversary_gain`` and ``gap/defender_gain`` (how far each best responder moved the
        reward from the profile's own, means over rollouts).
    """
    rng = gap_stream(config.seed, 0) if rng is None else rng
    seeds = tuple(seed_prompts)
    d_fixed = defender if defender_play is None else defender_play
    a_fixed = adversary if adversary_play is None else adversary_play
    br = MirrorStep(eta=config.gap_eta)
    plain = dataclasses.replace(config, beta_div=0.0, seed_mix=0.0)
    k = config.gap_rollouts

    def value(d: Any, a: Any) -> np.ndarray:
        return np.array([rollout_metrics(rollout(d, a, reward, plain, seeds, rng), plain)
                         ["reward/mean"] for _ in range(k)])

    base = value(d_fixed, a_fixed)
    d_state, a_state = _state(defender), _state(adversary)
    try:
        for _ in range(config.gap_steps):
            roll = rollout(d_fixed, adversary, reward, plain, seeds, rng)
            adversary.update(adversary_experience(roll, plain, None, [])[0], br)
        low = value(d_fixed, adversary)
        _put_back(adversary, a_state)
        for _ in range(config.gap_steps):
            roll = rollout(defender, a_fixed, reward, plain, seeds, rng)
            defender.update(defender_experience(roll), br)
        high = value(defender, a_fixed)
    finally:
        _put_back(defender, d_state)
        _put_back(adversary, a_state)
    gaps = high - low
    mean = float(np.mean(gaps))
    if k > 1:
        half = float(stats.t.ppf(0.975, k - 1) * np.std(gaps, ddof=1) / math.sqrt(k))
        low_ci, high_ci = mean - half, mean + half
    else:
        low_ci = high_ci = math.nan
    return {
        "gap/adversary_gain": float(np.mean(base - low)),
        "gap/defender_gain": float(np.mean(high - base)),
        "gap/estimated": mean,
        "gap/estimated_ci_low": low_ci,
        "gap/estimated_ci_high": high_ci,
    }
