"""Every option of the GPO loop (:func:`gpo_core.alignment.run_game`), checked when built."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Mapping

from gpo_core._validate import (
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_step_size,
    short,
)
from gpo_core.protocols import MirrorStep

__all__ = ["GameConfig"]


@dataclasses.dataclass(frozen=True)
class GameConfig:
    """Every option of the GPO loop, with the theory's defaults.

    Attributes:
        rounds: game rounds ``T``.
        schedule: ``"alternating"`` (defender phase, then adversary phase; Algorithm 1) or
            ``"simultaneous"`` (both update on the same rollout; the matrix-game dynamics).
        defender_steps: updates per defender phase (alternating only; paper 200, code 400).
        adversary_steps: updates per adversary phase (alternating only; paper 400, code 200).
        defender_eta: step size ``1/beta`` of the defender's KL-to-previous-iterate step.
        adversary_eta: step size ``1/eta`` of the adversary's step.
        defender_alpha: weight of the defender's KL to its initial (reference) model.
        adversary_alpha: weight of the adversary's KL to its reference: with a uniform reference
            this is the entropy regulariser of the paper's Eq. 3.7 / Algorithm 3.
        kl_anchor: ``"previous"`` (mirror descent, the theory) or ``"initial"`` (the released
            code: a fixed-reference KL with coefficient ``*_alpha``, no proximal term).
        batch_size: contexts per rollout (seed prompts drawn, or unconditional draws).
        responses_per_prompt: defender samples per prompt (>= 2 for a sampling policy: a
            per-context objective, like :class:`backends.hf.HFPolicy`'s, centres each prompt's
            rows on their own mean, so one response per prompt carries no learning signal).
        prompts_per_context: adversary samples per drawn context (seed prompt, or the empty
            context of an unconditional adversary); >= 2 for the same reason.
        beta_div: weight of the diversity reward in the adversary's utility.
        seed_mix: share of each defender batch made of raw seed prompts (0 = only adversarial).
        conditional_adversary: the adversary rewrites seed prompts (True) or writes prompts from
            an empty context (False, the theory's unconditional ``mu``).
        output: which defender :meth:`GameResult.defender_policy` returns: ``"average"`` (the
            mixture of iterates Theorem 3.2 is about) or ``"last"`` (Algorithm 1's output).
        attack_threshold: a response whose reward is below this counts as a successful attack.
        snapshot_every: keep an iterate snapshot every this many rounds for the average.
        max_iterates: 0 keeps every snapshot; ``K > 0`` keeps a uniform reservoir sample of ``K``
            of them (:func:`gpo_core.mixture.reservoir_slot`), whose mixture is an unbiased
            estimate of the mixture of all.
        iterates_on_disk: keep the iterates only in ``checkpoint_dir`` (needs one) and read each
            when the mixture uses it (:class:`gpo_core.mixture.OnDisk`), instead of in memory.
        gap_every: estimate the Nash gap every this many rounds (0 = never; it costs
            ``2 * gap_steps`` extra updates and ``3 * gap_rollouts`` rollouts per profile, see
            :func:`~gpo_core.gap.estimate_gap`). It draws from a stream of its own and puts the
            players back, so the game's rounds are the same with or without it.
        gap_steps: updates a fresh best responder gets in :func:`~gpo_core.gap.estimate_gap`.
        gap_eta: step size of those best-response updates (large: close to a pure best response).
        gap_rollouts: rollouts each value of the estimate averages (its 95% interval needs >= 2).
        gap_of: whose gap: ``"last"`` (the current iterates, keys ``gap/...``), ``"average"``
            (the mixtures of the iterates so far, Theorem 3.2's object, keys ``gap/average/...``)
            or ``"both"``.
        seed: seed of the loop's random generator (sampling of seeds and of outputs), an integer
            in ``[0, 2**63)``.
    """

    rounds: int = 10
    schedule: Literal["alternating", "simultaneous"] = "alternating"
    defender_steps: int = 1
    adversary_steps: int = 1
    defender_eta: float = 1.0
    adversary_eta: float = 1.0
    defender_alpha: float = 0.0
    adversary_alpha: float = 0.0
    kl_anchor: Literal["previous", "initial"] = "previous"
    batch_size: int = 8
    responses_per_prompt: int = 2
    prompts_per_context: int = 2
    beta_div: float = 0.0
    seed_mix: float = 0.0
    conditional_adversary: bool = True
    output: Literal["average", "last"] = "average"
    attack_threshold: float = 0.5
    snapshot_every: int = 1
    max_iterates: int = 0
    iterates_on_disk: bool = False
    gap_every: int = 0
    gap_steps: int = 5
    gap_eta: float = 10.0
    gap_rollouts: int = 4
    gap_of: Literal["last", "average", "both"] = "last"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("gap_every", "seed", "max_iterates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer >= 0, got {short(value)}")
            if not 0 <= value < 2**63:
                raise ValueError(f"{name} must be an integer in [0, 2**63), got {value!r}")
        check_positive(self.gap_eta, "gap_eta")
        for name in ("rounds", "defender_steps", "adversary_steps", "batch_size",
                     "responses_per_prompt", "prompts_per_context", "snapshot_every",
                     "gap_steps", "gap_rollouts"):
            check_positive_int(getattr(self, name), name)
        if self.gap_of not in ("last", "average", "both"):
            raise ValueError(f"gap_of must be 'last', 'average' or 'both', got {short(self.gap_of)}")
        for name in ("defender_eta", "adversary_eta"):
            check_step_size(getattr(self, name), name)
        for name in ("defender_alpha", "adversary_alpha", "beta_div"):
            check_nonnegative(getattr(self, name), name)
        if self.schedule not in ("alternating", "simultaneous"):
            raise ValueError(f"schedule must be 'alternating' or 'simultaneous', got {self.schedule!r}")
        if self.kl_anchor not in ("previous", "initial"):
            raise ValueError(f"kl_anchor must be 'previous' or 'initial', got {self.kl_anchor!r}")
        if not isinstance(self.iterates_on_disk, bool):
            raise TypeError(
                f"iterates_on_disk must be true or false, got {short(self.iterates_on_disk)}"
            )
        if not isinstance(self.conditional_adversary, bool):
            raise TypeError(
                f"conditional_adversary must be true or false, got {short(self.conditional_adversary)}"
            )
        if self.output not in ("average", "last"):
            raise ValueError(f"output must be 'average' or 'last', got {self.output!r}")
        for name in ("seed_mix", "attack_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {short(value)}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if not 0.0 <= self.seed_mix < 1.0:
            raise ValueError(f"seed_mix must be in [0, 1), got {self.seed_mix!r}")
        if self.kl_anchor == "initial":
            for name in ("defender_alpha", "adversary_alpha"):
                if getattr(self, name) <= 0:
                    raise ValueError(
                        f"kl_anchor='initial' needs {name} > 0 (the KL coefficient to the initial "
                        f"model; the released code uses 0.01), got {getattr(self, name)!r}"
                    )

    def defender_step(self) -> MirrorStep:
        """The defender's update target."""
        return self._step(self.defender_eta, self.defender_alpha)

    def adversary_step(self) -> MirrorStep:
        """The adversary's update target."""
        return self._step(self.adversary_eta, self.adversary_alpha)

    def _step(self, eta: float, alpha: float) -> MirrorStep:
        if self.kl_anchor == "initial":
            return MirrorStep(eta=math.inf, alpha=alpha)
        return MirrorStep(eta=float(eta), alpha=float(alpha))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GameConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        if not isinstance(data, Mapping):
            raise TypeError(f"config must be a mapping of field names to values, got {short(data)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys are {sorted(names)}")
        return cls(**dict(data))
