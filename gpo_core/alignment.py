r"""The GPO game loop (Zheng et al. 2024, Algorithm 1 and its averaged variant) over protocols.

The alignment game is the zero-sum game

.. math:: \max_\pi \min_\mu\; J(\pi,\mu) = E_{x\sim\mu}\big[E_{y\sim\pi(\cdot|x)} r(x,y)
          - \beta_{div} R_{div}(x)\big]

between a defender :math:`\pi` (the row player, maximising reward) and an adversary :math:`\mu`
(the column player). Each round:

1. the adversary writes prompts (rewriting seed prompts, or unconditionally);
2. the defender answers; the reward model scores each ``(prompt, response)``;
3. the defender takes a :class:`~gpo_core.protocols.MirrorStep` on utility :math:`r(x,y)`;
4. the adversary takes one on :math:`-r(x,y) + \beta_{div} R_{div}(x)`, where :math:`R_{div}`
   scores novelty against the history of its earlier prompts;
5. a snapshot of every iterate is kept: the **averaged policy** (the uniform mixture over
   iterates: draw an iterate, then sample from it) is what Theorem 3.2's
   :math:`O(T^{-1/2})` Nash gap is about; the last iterate is what Algorithm 1 returns.

Every choice on which the paper and its released code differ is an option of
:class:`GameConfig`: alternating phases (defender first, steps per phase; the paper's 200/400,
the code's 400/200) or simultaneous updates; KL anchor = previous iterate (the theory) or the
initial model (the code); conditional (rewrite) or unconditional adversary; a share of seed
prompts mixed into the defender's batches; last-iterate or averaged output.

With exact tabular policies (``backends.tabular``) on a matrix game, simultaneous updates and
one step per phase, this loop reproduces :func:`gpo_core.play` to floating-point precision: the
backends only estimate the terms of the rule the core derives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import warnings
from typing import Any, Callable, Literal, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from gpo_core._io import atomic_write_json
from gpo_core._validate import check_nonnegative, check_positive, check_positive_int, short
from gpo_core.protocols import (
    Communicator,
    Diversity,
    Experience,
    MirrorStep,
    Policy,
    RewardModel,
    Samples,
)

__all__ = [
    "GameConfig",
    "RoundLog",
    "GameResult",
    "Persistent",
    "MixturePolicy",
    "run_game",
    "estimate_gap",
    "checked_rewards",
    "PolicyError",
]



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
        gap_every: estimate the Nash gap of the current iterates every this many rounds
            (0 = never; it costs ``2 * gap_steps`` extra updates, see :func:`estimate_gap`).
        gap_steps: updates a fresh best responder gets in :func:`estimate_gap`.
        gap_eta: step size of those best-response updates (large: close to a pure best response).
        seed: seed of the loop's random generator (sampling of seeds and of outputs).
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
    gap_every: int = 0
    gap_steps: int = 5
    gap_eta: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.gap_every, bool) or not isinstance(self.gap_every, int) or self.gap_every < 0:
            raise ValueError(f"gap_every must be an integer >= 0 (0 = never), got {self.gap_every!r}")
        check_positive(self.gap_eta, "gap_eta")
        for name in ("rounds", "defender_steps", "adversary_steps", "batch_size",
                     "responses_per_prompt", "prompts_per_context", "snapshot_every",
                     "gap_steps"):
            check_positive_int(getattr(self, name), name)
        for name in ("defender_eta", "adversary_eta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise TypeError(f"{name} must be a number > 0 (or inf), got {short(value)}")
            if math.isnan(value) or value <= 0:
                raise ValueError(f"{name} must be > 0 (or inf), got {value!r}")
        for name in ("defender_alpha", "adversary_alpha", "beta_div"):
            check_nonnegative(getattr(self, name), name)
        if self.schedule not in ("alternating", "simultaneous"):
            raise ValueError(f"schedule must be 'alternating' or 'simultaneous', got {self.schedule!r}")
        if self.kl_anchor not in ("previous", "initial"):
            raise ValueError(f"kl_anchor must be 'previous' or 'initial', got {self.kl_anchor!r}")
        if not isinstance(self.conditional_adversary, bool):
            raise TypeError(
                f"conditional_adversary must be true or false, got {short(self.conditional_adversary)}"
            )
        if self.output not in ("average", "last"):
            raise ValueError(f"output must be 'average' or 'last', got {self.output!r}")
        if not (0.0 <= float(self.seed_mix) < 1.0):
            raise ValueError(f"seed_mix must be in [0, 1), got {self.seed_mix!r}")
        if not isinstance(self.attack_threshold, (int, float)) or not math.isfinite(self.attack_threshold):
            raise ValueError(f"attack_threshold must be a finite number, got {self.attack_threshold!r}")
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


class RoundLog(NamedTuple):
    """Metrics of one round, under stable namespaced keys."""

    round: int
    metrics: Mapping[str, float]


@runtime_checkable
class Persistent(Protocol):
    """A policy whose snapshots can be written to and read from files (for checkpoints)."""

    def save_snapshot(self, snapshot: Any, path: str) -> None:
        """Write ``snapshot`` to ``path`` atomically."""
        ...

    def load_snapshot(self, path: str) -> Any:
        """Read a snapshot written by :meth:`save_snapshot`."""
        ...


@dataclasses.dataclass(frozen=True)
class GameResult:
    """What :func:`run_game` returns.

    Attributes:
        logs: one :class:`RoundLog` per round.
        defender_iterates: snapshots of the defender's iterates ``pi_1, pi_2, ...``.
        adversary_iterates: snapshots of the adversary's iterates.
        history: every prompt the adversary wrote, in order (the diversity reference set).
        config: the configuration that produced it.
    """

    logs: tuple[RoundLog, ...]
    defender_iterates: tuple[Any, ...]
    adversary_iterates: tuple[Any, ...]
    history: tuple[str, ...]
    config: GameConfig

    def metric(self, key: str) -> np.ndarray:
        """One metric over rounds (``nan`` where a round did not log it)."""
        return np.array([log.metrics.get(key, math.nan) for log in self.logs])

    def defender_policy(self, defender: Policy) -> Policy:
        """The defender ``config.output`` asks for: the mixture of its iterates, or ``defender``
        itself (its last iterate) -- pass the policy object the game trained."""
        if self.config.output == "last":
            return defender
        return MixturePolicy(defender, self.defender_iterates)


class MixturePolicy:
    """The uniform mixture over snapshots of a policy: draw an iterate, then sample from it.

    This is the averaged policy :math:`\\hat\\pi_T = \\frac1T\\sum_t \\pi_t` of Theorem 3.2. It
    restores each snapshot into ``policy`` while sampling and puts the original parameters back
    afterwards. It is for evaluation: :meth:`update` raises.
    """

    def __init__(self, policy: Policy, snapshots: Sequence[Any]) -> None:
        if not snapshots:
            raise ValueError("snapshots must hold at least one iterate, got none")
        self.policy = policy
        self.snapshots = tuple(snapshots)

    def sample(self, contexts: Sequence[str], num_samples: int, rng: np.random.Generator) -> Samples:
        """Per context, draw ``num_samples`` iterate indices uniformly, then sample from each."""
        contexts = tuple(contexts)
        num_samples = check_positive_int(num_samples, "num_samples")
        picks = rng.integers(len(self.snapshots), size=(len(contexts), num_samples))
        current = self.policy.snapshot()
        out_c: list[str] = []
        out_o: list[str] = []
        out_w: list[float] = []
        try:
            for k in np.unique(picks):
                self.policy.restore(self.snapshots[int(k)])
                for i, ctx in enumerate(contexts):
                    count = int(np.sum(picks[i] == k))
                    if count == 0:
                        continue
                    s = self.policy.sample([ctx], count, rng)
                    out_c += s.contexts
                    out_o += s.outputs
                    # weights of each draw sum to count/num_samples within the context
                    out_w += list(np.asarray(s.weights) * count / num_samples)
        finally:
            self.policy.restore(current)
        return Samples(tuple(out_c), tuple(out_o), np.asarray(out_w, dtype=np.float64))

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """``log mean_k pi_k(output | context)``."""
        current = self.policy.snapshot()
        try:
            rows = []
            for snap in self.snapshots:
                self.policy.restore(snap)
                rows.append(np.asarray(self.policy.log_prob(contexts, outputs), dtype=np.float64))
        finally:
            self.policy.restore(current)
        stacked = np.stack(rows)
        top = stacked.max(axis=0)
        with np.errstate(under="ignore"):
            return top + np.log(np.mean(np.exp(stacked - top), axis=0))

    def update(self, experience: Experience, step: MirrorStep) -> Mapping[str, float]:
        """A mixture of iterates is not trained: update the underlying policy instead."""
        raise TypeError("MixturePolicy is an evaluation policy; update the underlying policy")

    def snapshot(self) -> Any:
        """The tuple of iterate snapshots."""
        return self.snapshots

    def restore(self, snapshot: Any) -> None:
        """Replace the iterate snapshots."""
        self.snapshots = tuple(snapshot)


def checked_rewards(model: RewardModel, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Call ``model.score`` and check it returned one finite float per pair, naming the model."""
    scores = model.score(list(prompts), list(responses))
    try:
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"reward model {short(model)} returned {short(scores)}, not numbers; "
            "score() must return one float per (prompt, response) pair"
        ) from exc
    if arr.shape[0] != len(prompts):
        raise ValueError(
            f"reward model {short(model)} returned {arr.shape[0]} scores for {len(prompts)} "
            "(prompt, response) pairs; score() must return exactly one float per pair"
        )
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"reward model {short(model)} returned {arr[i]} for pair {i} "
            f"(prompt {short(prompts[i], 60)}); rewards must be finite"
        )
    return arr


class _Rollout(NamedTuple):
    seeds: tuple[str, ...]  # context of each prompt occurrence (seed prompt or "")
    prompts: tuple[str, ...]  # each prompt occurrence, as the adversary wrote it
    all_prompts: tuple[str, ...]  # the global batch's prompts, every rank's in rank order
    prompt_weights: np.ndarray  # probability mass of each occurrence (sums to 1)
    occ_uniq: np.ndarray  # index of each occurrence's prompt among the unique prompts
    uniq_weights: np.ndarray  # mass of each unique prompt
    contexts: tuple[str, ...]  # context of each response row (unique prompt, then mixed seeds)
    responses: tuple[str, ...]
    response_weights: np.ndarray
    row_uniq: np.ndarray  # unique-prompt index of each response row; -1 for mixed seeds
    rewards: np.ndarray


def run_game(
    defender: Policy,
    adversary: Policy,
    reward: RewardModel,
    config: GameConfig = GameConfig(),
    *,
    seed_prompts: Sequence[str] = (),
    diversity: Diversity | None = None,
    diversity_metrics: Callable[[Sequence[str]], Mapping[str, float]] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    on_round: Callable[[RoundLog], None] | None = None,
    comm: Communicator | None = None,
) -> GameResult:
    """Play the GPO game between ``defender`` and ``adversary`` for ``config.rounds`` rounds.

    Args:
        defender: the defensive policy ``pi(response | prompt)``.
        adversary: the adversarial policy ``mu(prompt | seed)`` (``seed = ""`` if unconditional).
        reward: scores ``(prompt, response)``; higher is better for the defender.
        config: every option of the loop (see :class:`GameConfig`).
        seed_prompts: seed prompts the adversary rewrites (required if it is conditional, or if
            ``config.seed_mix > 0``).
        diversity: novelty reward ``R_div(prompts, history)`` for the adversary (needed when
            ``config.beta_div > 0``).
        diversity_metrics: optional ``prompts -> {"diversity/...": value}`` logged per round.
        checkpoint_dir: if given, the state after every round is written there atomically
            (both policies must implement :class:`Persistent`), and a later call with the same
            directory and ``resume=True`` continues where it stopped.
        resume: continue from ``checkpoint_dir`` if it holds a checkpoint.
        on_round: called with each round's :class:`RoundLog` (progress bars, logging).
        comm: run data-parallel over a process group (``backends.distributed``): every rank
            draws the same global batch from the same seeded generator and plays its slice
            (``config.batch_size`` is the global batch and must divide by the world size), the
            prompt history and the metrics are shared across ranks, and only rank 0 writes
            checkpoints (to a folder every rank sees; all ranks load it on resume). The policies
            must average their gradients across ranks themselves. Each policy call takes one
            draw from the shared generator; a policy whose ``sample`` accepts ``stream_ids``
            (see :class:`~gpo_core.protocols.Policy`) is given the adversary rows' global
            indices and hashes of the defender's prompts, so its rows draw exactly what one
            process would. Then a run on ``N`` ranks plays the same game as one process, and
            its metrics agree up to floating-point rounding, provided no adversary context has
            rows on two ranks (distinct seed prompts per batch, ``batch_size <=
            len(seed_prompts)``; an unconditional adversary's single context spans the batch)
            and ``seed_mix == 0`` (each rank mixes in its own share of seed prompts): the
            policies' per-context baselines are computed per rank.

    Returns:
        A :class:`GameResult`.
    """
    for name, obj, proto in (("defender", defender, Policy), ("adversary", adversary, Policy),
                             ("reward", reward, RewardModel)):
        if not isinstance(obj, proto):
            raise TypeError(
                f"{name} must implement gpo_core.protocols.{proto.__name__} "
                f"(methods: {', '.join(_protocol_methods(proto))}), got {short(obj)}"
            )
    if not isinstance(config, GameConfig):
        raise TypeError(f"config must be a GameConfig, got {short(config)}")
    if isinstance(seed_prompts, str):
        raise TypeError("seed_prompts must be a sequence of strings, got a single string; wrap it in a list")
    seeds = tuple(seed_prompts)
    if any(not isinstance(s, str) for s in seeds):
        raise TypeError("seed_prompts must contain only strings")
    if (config.conditional_adversary or config.seed_mix > 0) and not seeds:
        raise ValueError(
            "seed_prompts is empty, but the adversary is conditional (it rewrites seed prompts) "
            "or seed_mix > 0; pass seed prompts, or set conditional_adversary=False and seed_mix=0"
        )
    if config.beta_div > 0 and diversity is None:
        raise ValueError(
            f"config.beta_div={config.beta_div} but no diversity reward was given; pass "
            "diversity=backends.diversity.DiversityReward() or set beta_div=0"
        )
    shard = (0, 1)
    if comm is not None:
        if not isinstance(comm, Communicator):
            raise TypeError(f"comm must implement gpo_core.protocols.Communicator, got {short(comm)}")
        shard = (int(comm.rank), int(comm.world_size))
        if config.batch_size % shard[1]:
            raise ValueError(
                f"config.batch_size={config.batch_size} is the global batch and must divide by "
                f"the world size {shard[1]}; use a multiple of {shard[1]}"
            )
    ckpt = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
    if ckpt is not None:
        for name, obj in (("defender", defender), ("adversary", adversary)):
            if not isinstance(obj, Persistent):
                raise TypeError(
                    f"checkpoint_dir needs the {name} to implement save_snapshot/load_snapshot "
                    f"(gpo_core.alignment.Persistent); {short(obj)} does not"
                )

    rng = np.random.default_rng(config.seed)
    d_step, a_step = config.defender_step(), config.adversary_step()
    logs: list[RoundLog] = []
    d_iter: list[Any] = []
    a_iter: list[Any] = []
    history: list[str] = []
    start = 1
    if ckpt is not None and resume and os.path.exists(os.path.join(ckpt, _STATE)):
        start, rng = _load_checkpoint(ckpt, config, defender, adversary, logs, d_iter, a_iter, history)
    if ckpt is not None and comm is not None:
        found = comm.gather([str(start - 1)])
        if len(set(found)) > 1:
            raise ValueError(
                f"the ranks found different checkpoints in checkpoint_dir={ckpt!r} (last round "
                f"per rank: {found}; 0 = none); every rank loads rank 0's checkpoint, so "
                "checkpoint_dir must be a folder all ranks see (a shared filesystem)"
            )

    warned: set[str] = set()
    for t in range(start, config.rounds + 1):
        metrics: dict[str, float] = {}
        if (t - 1) % config.snapshot_every == 0:
            d_iter.append(_call("defender", "snapshot", defender.snapshot))
            a_iter.append(_call("adversary", "snapshot", adversary.snapshot))
        if config.schedule == "simultaneous":
            roll = _rollout(defender, adversary, reward, config, seeds, rng, shard, comm)
            d_exp = _defender_experience(roll)
            a_exp, a_metrics = _adversary_experience(roll, config, diversity, history)
            _warn_if_no_signal("defender", defender, d_exp, config, warned)
            _warn_if_no_signal("adversary", adversary, a_exp, config, warned)
            metrics.update(_prefixed("defender", defender.update(d_exp, d_step)))
            metrics.update(_prefixed("adversary", adversary.update(a_exp, a_step)))
            metrics.update(_rollout_metrics(roll, config))
            metrics.update(a_metrics)
            history.extend(roll.all_prompts)
            last_prompts = roll.all_prompts
        else:
            for _ in range(config.defender_steps):
                roll = _rollout(defender, adversary, reward, config, seeds, rng, shard, comm)
                d_exp = _defender_experience(roll)
                _warn_if_no_signal("defender", defender, d_exp, config, warned)
                metrics.update(_prefixed("defender", defender.update(d_exp, d_step)))
            metrics.update({f"defender_phase/{k}": v for k, v in _rollout_metrics(roll, config).items()})
            for _ in range(config.adversary_steps):
                roll = _rollout(defender, adversary, reward, config, seeds, rng, shard, comm)
                a_exp, a_metrics = _adversary_experience(roll, config, diversity, history)
                _warn_if_no_signal("adversary", adversary, a_exp, config, warned)
                metrics.update(_prefixed("adversary", adversary.update(a_exp, a_step)))
                history.extend(roll.all_prompts)
            metrics.update(_rollout_metrics(roll, config))
            metrics.update(a_metrics)
            last_prompts = roll.all_prompts
        if diversity_metrics is not None:
            metrics.update({k: float(v) for k, v in diversity_metrics(list(last_prompts)).items()})
        if config.gap_every and t % config.gap_every == 0:
            metrics.update(estimate_gap(defender, adversary, reward, config, seed_prompts=seeds, rng=rng))
        if comm is not None:
            metrics = dict(comm.mean(metrics))
        log = RoundLog(t, metrics)
        logs.append(log)
        if ckpt is not None:
            _checkpoint(comm, shard[0], ckpt, t, rng, config, defender, adversary, logs, d_iter,
                        a_iter, history)
        if on_round is not None:
            on_round(log)

    return GameResult(tuple(logs), tuple(d_iter), tuple(a_iter), tuple(history), config)


def estimate_gap(
    defender: Policy,
    adversary: Policy,
    reward: RewardModel,
    config: GameConfig,
    *,
    seed_prompts: Sequence[str] = (),
    rng: np.random.Generator | None = None,
    defender_play: Policy | None = None,
    adversary_play: Policy | None = None,
) -> dict[str, float]:
    r"""Estimate the Nash gap by letting a fresh best responder train against each player.

    The Nash gap of :math:`(\pi,\mu)` is :math:`\max_{\pi'} J(\pi',\mu) - \min_{\mu'} J(\pi,\mu')`.
    We estimate each term with ``config.gap_steps`` updates of step ``config.gap_eta`` (no KL to
    a reference) of a copy of the other player, then put both players back exactly as they were:

    * ``gap/adversary_gain`` -- how much a best-responding adversary lowers the reward;
    * ``gap/defender_gain`` -- how much a best-responding defender raises it;
    * ``gap/estimated`` -- their sum, a lower estimate of the Nash gap (exact for tabular
      policies as ``gap_steps * gap_eta`` grows).

    ``defender_play`` / ``adversary_play`` (e.g. a :class:`MixturePolicy` of the iterates) are the
    fixed opponents to evaluate; by default the current iterates themselves.
    """
    rng = np.random.default_rng(config.seed) if rng is None else rng
    seeds = tuple(seed_prompts)
    d_fixed = defender if defender_play is None else defender_play
    a_fixed = adversary if adversary_play is None else adversary_play
    br = MirrorStep(eta=config.gap_eta)
    no_div = dataclasses.replace(config, beta_div=0.0, seed_mix=0.0)
    base = _rollout_metrics(_rollout(d_fixed, a_fixed, reward, no_div, seeds, rng), no_div)["reward/mean"]
    d_snap, a_snap = defender.snapshot(), adversary.snapshot()
    try:
        for _ in range(config.gap_steps):
            roll = _rollout(d_fixed, adversary, reward, no_div, seeds, rng)
            adversary.update(_adversary_experience(roll, no_div, None, [])[0], br)
        low = _rollout_metrics(_rollout(d_fixed, adversary, reward, no_div, seeds, rng), no_div)["reward/mean"]
        adversary.restore(a_snap)
        for _ in range(config.gap_steps):
            roll = _rollout(defender, a_fixed, reward, no_div, seeds, rng)
            defender.update(_defender_experience(roll), br)
        high = _rollout_metrics(_rollout(defender, a_fixed, reward, no_div, seeds, rng), no_div)["reward/mean"]
    finally:
        defender.restore(d_snap)
        adversary.restore(a_snap)
    return {
        "gap/adversary_gain": base - low,
        "gap/defender_gain": high - base,
        "gap/estimated": high - low,
    }


def _protocol_methods(proto: type) -> list[str]:
    return sorted(n for n in vars(proto) if not n.startswith("_") and callable(getattr(proto, n)))


def _prefixed(prefix: str, metrics: Mapping[str, float] | None) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in (metrics or {}).items()}


def _takes_stream_ids(policy: Policy) -> bool:
    """Whether ``policy.sample`` accepts the optional ``stream_ids`` keyword (see Policy)."""
    try:
        param = inspect.signature(policy.sample).parameters.get("stream_ids")
    except (TypeError, ValueError):  # a builtin or C-implemented sample with no signature
        return False
    return param is not None and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


def _text_stream(text: str) -> int:
    """A stream id fixed by the text alone (64 bits of BLAKE2b), the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _sample(policy, contexts, k, rng, rank, streams) -> Samples:
    """``policy.sample`` with exactly one draw from the shared generator ``rng``.

    Whatever the policy does with the generator it is given, ``rng`` advances the same on every
    rank, so the ranks keep drawing the same global batches. A policy that takes ``stream_ids``
    gets the same generator on every rank and split-independent stream ids (its rows then draw
    what one process would draw); any other policy gets a generator of its rank's own.
    """
    draw = int(rng.integers(2**63))
    if _takes_stream_ids(policy):
        return policy.sample(contexts, k, np.random.default_rng(draw), stream_ids=list(streams))
    return policy.sample(contexts, k, np.random.default_rng([draw, rank]))


def _rollout(defender, adversary, reward, config, seeds, rng, shard=(0, 1), comm=None) -> _Rollout:
    # Every rank draws the same global batch from the same generator and keeps its slice, so the
    # ranks' slices together are exactly the batch a single process would play. Sampling keeps
    # them together too: each policy call takes one draw from rng (_sample), the adversary's
    # rows are keyed by their global row index and the defender's by the prompt's text, so with
    # stream-keyed policies every row draws what it would draw in one process.
    if config.conditional_adversary:
        idx = rng.choice(len(seeds), size=config.batch_size, replace=len(seeds) < config.batch_size)
        contexts = [seeds[int(i)] for i in idx]
    else:
        contexts = [""] * config.batch_size
    rank, world = shard
    local = config.batch_size // world
    rows = range(rank * local, (rank + 1) * local)
    contexts = contexts[rows.start : rows.stop]
    ps = _sample(adversary, contexts, config.prompts_per_context, rng, rank, rows)
    # Each context's weights sum to 1; spread the batch's mass evenly over its contexts.
    p_weights = np.asarray(ps.weights, dtype=np.float64) / local
    # The defender answers each distinct prompt once, so rows map back to prompts unambiguously.
    index: dict[str, int] = {}
    occ_uniq = np.array([index.setdefault(p, len(index)) for p in ps.outputs], dtype=np.int64)
    uniq = list(index)
    uniq_w = np.bincount(occ_uniq, weights=p_weights, minlength=len(uniq))
    rs = _sample(defender, uniq, config.responses_per_prompt, rng, rank, map(_text_stream, uniq))
    row_uniq = np.array([_lookup(index, c) for c in rs.contexts], dtype=np.int64)
    ctx, out, w = list(rs.contexts), list(rs.outputs), list(np.asarray(rs.weights, dtype=np.float64))
    n_mix = int(round(config.seed_mix * len(uniq)))
    # One draw whatever n_mix is (it depends on the rank's own prompts); each rank mixes in its
    # own seed prompts from a generator of its own.
    mix_rng = np.random.default_rng([int(rng.integers(2**63)), rank]) if config.seed_mix else None
    if n_mix:
        mixed = [seeds[int(i)] for i in mix_rng.choice(len(seeds), size=n_mix)]
        ms = _sample(defender, mixed, config.responses_per_prompt, mix_rng, rank, range(n_mix))
        ctx += ms.contexts
        out += ms.outputs
        w += list(np.asarray(ms.weights, dtype=np.float64))
        row_uniq = np.r_[row_uniq, np.full(len(ms.outputs), -1, dtype=np.int64)]
    rewards = checked_rewards(reward, ctx, out)
    prompts = tuple(ps.outputs)
    return _Rollout(
        seeds=tuple(ps.contexts),
        prompts=prompts,
        all_prompts=prompts if comm is None else tuple(comm.gather(list(prompts))),
        prompt_weights=p_weights,
        occ_uniq=occ_uniq,
        uniq_weights=uniq_w,
        contexts=tuple(ctx),
        responses=tuple(out),
        response_weights=np.asarray(w, dtype=np.float64),
        row_uniq=row_uniq,
        rewards=rewards,
    )


def _warn_if_no_signal(
    player: str, policy: Any, exp: Experience, config: GameConfig, warned: set[str]
) -> None:
    """Warn once per run when a context-centring policy gets one distinct output per context.

    A policy whose update centres each context's rows on their own mean (it says so with a true
    ``centres_contexts`` attribute, as :class:`backends.hf.HFPolicy` does) then has exactly zero
    gradient: it never moves. Other policies (an importance-weighted table) learn from single
    samples and are not warned about.
    """
    field = "responses_per_prompt" if player == "defender" else "prompts_per_context"
    if (getattr(config, field) > 1 or player in warned or len(exp.contexts) == 0
            or getattr(policy, "centres_contexts", False) is not True):
        return
    if len(set(zip(exp.contexts, exp.outputs))) > len(set(exp.contexts)):
        return  # some context compares two different outputs
    warned.add(player)
    warnings.warn(
        f"every context in the {player}'s batch has one sampled output ({field}=1): its update "
        f"centres each context on its own mean, so it gets no learning signal and the {player} "
        f"will not move; set {field} >= 2",
        UserWarning,
        stacklevel=3,
    )


def _lookup(index: Mapping[str, int], ctx: str) -> int:
    try:
        return index[ctx]
    except KeyError:
        raise ValueError(
            f"defender.sample returned a row for context {short(ctx, 60)} that was not asked for; "
            "Samples.contexts must repeat the given contexts"
        ) from None


def _defender_experience(roll: _Rollout) -> Experience:
    adv = roll.row_uniq >= 0
    n_adv = max(1, int(np.sum(adv)))
    # The row's weight is the probability of its prompt (the adversary's part); a mixed-in seed
    # prompt weighs like one sampled row.
    w = np.where(adv, roll.uniq_weights[np.maximum(roll.row_uniq, 0)], 1.0 / n_adv)
    return Experience(roll.contexts, roll.responses, roll.rewards, w)


def _adversary_experience(roll, config, diversity, history) -> tuple[Experience, dict[str, float]]:
    metrics: dict[str, float] = {}
    div = np.zeros(len(roll.prompts))
    if config.beta_div > 0:
        div = np.asarray(diversity(list(roll.prompts), list(history)), dtype=np.float64).reshape(-1)
        if div.shape[0] != len(roll.prompts) or not np.all(np.isfinite(div)):
            raise ValueError(
                f"diversity reward {short(diversity)} must return one finite float per prompt "
                f"({len(roll.prompts)}), got {short(div)}"
            )
        metrics["diversity/reward"] = float(np.sum(roll.prompt_weights * div))
    seeds, prompts, utils, weights, mass = [], [], [], [], []
    for occ, u in enumerate(roll.occ_uniq):
        rows = np.flatnonzero(roll.row_uniq == u)
        seeds += [roll.seeds[occ]] * len(rows)
        prompts += [roll.prompts[occ]] * len(rows)
        utils.append(-roll.rewards[rows] + config.beta_div * div[occ])
        weights.append(roll.response_weights[rows])
        mass.append(roll.prompt_weights[occ] * roll.response_weights[rows])
    utilities = np.concatenate(utils)
    w = np.concatenate(weights)
    m = np.concatenate(mass)
    metrics["adversary/utility"] = float(np.sum(m * utilities) / np.sum(m))
    return Experience(tuple(seeds), tuple(prompts), utilities, w), metrics


def _rollout_metrics(roll: _Rollout, config: GameConfig) -> dict[str, float]:
    adv = roll.row_uniq >= 0
    w = roll.uniq_weights[roll.row_uniq[adv]] * roll.response_weights[adv]
    r = roll.rewards[adv]
    total = float(np.sum(w))
    return {
        "reward/mean": float(np.sum(w * r) / total),
        "attack/success_rate": float(np.sum(w * (r < config.attack_threshold)) / total),
        "prompts/unique": float(len(set(roll.all_prompts))),  # in the global batch
    }


# ----------------------------------------------------------------------------- checkpoints
_STATE = "state.json"


def _checkpoint(comm, rank, ckpt, t, *state) -> None:
    """Rank 0 writes the checkpoint; under ``comm`` every rank then waits for it and learns
    whether it worked, so no rank runs (or returns) ahead of a checkpoint being written and a
    failed write stops every rank, not rank 0 alone."""
    error: Exception | None = None
    if rank == 0:
        try:
            _save_checkpoint(ckpt, t, *state)
        except Exception as exc:  # re-raised below, after the other ranks heard of it
            error = exc
    if comm is not None:
        status = comm.gather(["" if error is None else f"{type(error).__name__}: {error}"])
        if error is None and status[0]:
            raise PolicyError(f"rank 0 could not write the round-{t} checkpoint: {status[0]}")
    if error is not None:
        raise error


def _save_checkpoint(ckpt, t, rng, config, defender, adversary, logs, d_iter, a_iter, history) -> None:
    os.makedirs(ckpt, exist_ok=True)
    state_path = os.path.join(ckpt, _STATE)
    old = _read_state(state_path)
    files: dict[str, Any] = {"defender": f"defender_r{t}", "adversary": f"adversary_r{t}"}
    for name, policy in (("defender", defender), ("adversary", adversary)):
        snap = _call(name, "snapshot", policy.snapshot)
        _call(name, "save_snapshot", policy.save_snapshot, snap, os.path.join(ckpt, files[name]))
    # Iterates are immutable once taken: keep the files already written, add only new ones.
    d_files = list(old.get("defender_iterates", [])) if old else []
    a_files = list(old.get("adversary_iterates", [])) if old else []
    for k in range(len(d_files), len(d_iter)):
        d_files.append(f"iterate_defender_{k}")
        a_files.append(f"iterate_adversary_{k}")
        _call("defender", "save_snapshot", defender.save_snapshot, d_iter[k], os.path.join(ckpt, d_files[-1]))
        _call("adversary", "save_snapshot", adversary.save_snapshot, a_iter[k], os.path.join(ckpt, a_files[-1]))
    state = {
        "format": 1,
        "round": t,
        "config": config.to_dict(),
        "rng": rng.bit_generator.state,
        "files": files,
        "defender_iterates": d_files,
        "adversary_iterates": a_files,
        "history": list(history),
        "logs": [{"round": log.round, "metrics": dict(log.metrics)} for log in logs],
    }
    atomic_write_json(state_path, state)  # the commit point: before it, the old state stays valid
    if old:
        for key in ("defender", "adversary"):
            stale = os.path.join(ckpt, old["files"][key])
            if old["files"][key] != files[key] and os.path.exists(stale):
                _remove(stale)


class PolicyError(RuntimeError):
    """A policy method failed inside the loop; the message names the player, the method and the fix."""


def _call(player: str, method: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:
        raise PolicyError(
            f"the {player}'s {method}() failed: {type(exc).__name__}: {exc}. Nothing on disk was "
            f"changed (the last checkpoint, if any, is intact); fix the {player}'s {method} "
            "(disk space, permissions, device memory) and rerun to resume"
        ) from exc


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _read_state(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _load_checkpoint(ckpt, config, defender, adversary, logs, d_iter, a_iter, history):
    state = _read_state(os.path.join(ckpt, _STATE))
    if state is None or state.get("format") != 1:
        raise ValueError(f"checkpoint_dir {ckpt!r} holds no readable gpo checkpoint (state.json)")
    saved = dict(state["config"])
    mine = config.to_dict()
    differ = {k for k in mine if k != "rounds" and saved.get(k) != mine[k]}
    if differ:
        raise ValueError(
            f"checkpoint in {ckpt!r} was made with a different config ({sorted(differ)} differ); "
            "use another checkpoint_dir or the same config (only 'rounds' may change)"
        )
    defender.restore(defender.load_snapshot(os.path.join(ckpt, state["files"]["defender"])))
    adversary.restore(adversary.load_snapshot(os.path.join(ckpt, state["files"]["adversary"])))
    d_iter.extend(defender.load_snapshot(os.path.join(ckpt, f)) for f in state["defender_iterates"])
    a_iter.extend(adversary.load_snapshot(os.path.join(ckpt, f)) for f in state["adversary_iterates"])
    history.extend(state["history"])
    logs.extend(RoundLog(e["round"], e["metrics"]) for e in state["logs"])
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return int(state["round"]) + 1, rng
