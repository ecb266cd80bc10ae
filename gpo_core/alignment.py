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
import math
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from gpo_core import checkpoint as _ckpt
from gpo_core._validate import short
from gpo_core.checkpoint import Persistent, PolicyError
from gpo_core.game_config import GameConfig
from gpo_core.gap import estimate_gap, gap_stream
from gpo_core.mixture import MixturePolicy, OnDisk, reservoir_slot
from gpo_core.protocols import Communicator, Diversity, Policy, RewardModel
from gpo_core.rollout import (
    adversary_experience,
    checked_rewards,
    defender_experience,
    prefixed,
    rollout,
    rollout_metrics,
    warn_if_no_signal,
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


class RoundLog(NamedTuple):
    """Metrics of one round, under stable namespaced keys."""

    round: int
    metrics: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class GameResult:
    """What :func:`run_game` returns.

    Attributes:
        logs: one :class:`RoundLog` per round.
        defender_iterates: snapshots of the defender's iterates ``pi_1, pi_2, ...`` (every
            ``snapshot_every``-th; a reservoir of ``max_iterates`` of them when that is set, in
            slot order; :class:`~gpo_core.mixture.OnDisk` references with
            ``iterates_on_disk``: read one with :func:`gpo_core.mixture.materialise`).
        adversary_iterates: snapshots of the adversary's iterates, likewise.
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
    overwrite: bool = False,
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
            directory and ``resume=True`` continues where it stopped. What defines the run (the
            config, the seed prompts, the players', reward's and diversity's descriptions, the
            library version) is recorded, and a resume with other arguments is refused, naming
            what differs (``rounds`` may grow). The folder is checked before any work
            (:mod:`gpo_core.checkpoint`); temporary files of an interrupted write are removed.
        resume: continue from ``checkpoint_dir`` if it holds a checkpoint.
        overwrite: with ``resume=False``, clear an earlier run in ``checkpoint_dir`` (only the
            files a run writes; a folder with other files is refused). Without it a fresh run
            refuses a folder that holds anything, so two runs never mix.
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
    for name, fn in (("diversity", diversity), ("diversity_metrics", diversity_metrics),
                     ("on_round", on_round)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a callable or None, got {short(fn)}")
    for name, flag in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {short(flag)}")
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
    if config.iterates_on_disk and ckpt is None:
        raise ValueError(
            "config.iterates_on_disk keeps the iterates in the checkpoint folder, but no "
            "checkpoint_dir was given; pass one, or set iterates_on_disk=False"
        )
    saved = None
    identity = _ckpt.run_identity(config, seeds, defender, adversary, reward, diversity)
    if ckpt is not None:
        for name, obj in (("defender", defender), ("adversary", adversary)):
            if not isinstance(obj, Persistent):
                raise TypeError(
                    f"checkpoint_dir needs the {name} to implement save_snapshot/load_snapshot "
                    f"(gpo_core.alignment.Persistent); {short(obj)} does not"
                )
            if getattr(obj, "stateful_optimizer", False) is True:
                raise ValueError(
                    f"checkpoint_dir with a {name} whose optimiser state carries across updates "
                    "(fresh_optimizer=False) would not resume exactly: its moments are not in the "
                    "checkpoint; use fresh_optimizer=True (the default) or no checkpoint_dir"
                )
        if shard[0] == 0:
            saved = _ckpt.prepare_folder(ckpt, resume=resume, overwrite=overwrite)
        if saved is not None:
            _ckpt.check_identity(ckpt, saved, identity, config.rounds)

    rng = np.random.default_rng(config.seed)
    d_step, a_step = config.defender_step(), config.adversary_step()
    logs: list[RoundLog] = []
    d_iter: list[Any] = []
    a_iter: list[Any] = []
    ids: list[int] = []  # the iterate number held in each slot of d_iter / a_iter
    history: list[str] = []
    start = 1
    if ckpt is not None and comm is not None:
        # every rank loads rank 0's checkpoint; they must see the same folder
        if shard[0] == 0:
            mine = str(saved["round"]) if saved is not None else "0"
        else:
            mine = _visible_round(ckpt, resume)
        found = comm.gather([mine])
        if len(set(found)) > 1:
            raise ValueError(
                f"the ranks found different checkpoints in checkpoint_dir={ckpt!r} (last round "
                f"per rank: {found}; 0 = none); every rank loads rank 0's checkpoint, so "
                "checkpoint_dir must be a folder all ranks see (a shared filesystem)"
            )
        if shard[0] != 0 and found[0] != "0":
            saved = _ckpt.read_state(ckpt)
    if saved is not None:
        start, rng, d_iter, a_iter, ids, history, entries = _ckpt.load(
            ckpt, saved, defender, adversary, lazy=config.iterates_on_disk)
        logs = [RoundLog(e["round"], e["metrics"]) for e in entries]

    warned: set[str] = set()
    for t in range(start, config.rounds + 1):
        metrics: dict[str, float] = {}
        if (t - 1) % config.snapshot_every == 0:
            n = (t - 1) // config.snapshot_every
            slot = reservoir_slot(config.seed, n, config.max_iterates) if config.max_iterates \
                else n
            if slot is not None:
                snaps = (_ckpt.call("defender", "snapshot", defender.snapshot),
                         _ckpt.call("adversary", "snapshot", adversary.snapshot))
                if slot == len(d_iter):
                    d_iter.append(snaps[0])
                    a_iter.append(snaps[1])
                    ids.append(n)
                else:
                    d_iter[slot], a_iter[slot], ids[slot] = snaps[0], snaps[1], n
        if config.schedule == "simultaneous":
            roll = rollout(defender, adversary, reward, config, seeds, rng, shard, comm)
            d_exp = defender_experience(roll)
            a_exp, a_metrics = adversary_experience(roll, config, diversity, history)
            warn_if_no_signal("defender", defender, d_exp, config, warned)
            warn_if_no_signal("adversary", adversary, a_exp, config, warned)
            metrics.update(prefixed("defender", defender.update(d_exp, d_step)))
            metrics.update(prefixed("adversary", adversary.update(a_exp, a_step)))
            metrics.update(rollout_metrics(roll, config))
            metrics.update(a_metrics)
            history.extend(roll.all_prompts)
        else:
            # Each phase's metrics are its updates' means (fit/converged: the share converged).
            phase: list[dict[str, float]] = []
            for _ in range(config.defender_steps):
                roll = rollout(defender, adversary, reward, config, seeds, rng, shard, comm)
                d_exp = defender_experience(roll)
                warn_if_no_signal("defender", defender, d_exp, config, warned)
                phase.append({**prefixed("defender", defender.update(d_exp, d_step)),
                              **prefixed("defender_phase", rollout_metrics(roll, config))})
            metrics.update(_mean(phase))
            phase = []
            for _ in range(config.adversary_steps):
                roll = rollout(defender, adversary, reward, config, seeds, rng, shard, comm)
                a_exp, a_metrics = adversary_experience(roll, config, diversity, history)
                warn_if_no_signal("adversary", adversary, a_exp, config, warned)
                phase.append({**prefixed("adversary", adversary.update(a_exp, a_step)),
                              **rollout_metrics(roll, config), **a_metrics})
                history.extend(roll.all_prompts)
            metrics.update(_mean(phase))
        if diversity_metrics is not None:
            metrics.update({k: float(v) for k, v in diversity_metrics(list(roll.all_prompts)).items()})
        if config.gap_every and t % config.gap_every == 0:
            metrics.update(_gap_metrics(defender, adversary, reward, config, seeds, t, d_iter,
                                        a_iter))
        if comm is not None:
            metrics = dict(comm.mean(metrics))
        log = RoundLog(t, metrics)
        logs.append(log)
        if ckpt is not None:
            _checkpoint(comm, shard[0], ckpt, t, rng, identity, defender, adversary, logs,
                        d_iter, a_iter, ids, history)
            if config.iterates_on_disk:  # from now on read from the folder when needed
                d_iter = [OnDisk(os.path.join(ckpt, _ckpt.iterate_name("defender", n)),
                                 defender.load_snapshot) for n in ids]
                a_iter = [OnDisk(os.path.join(ckpt, _ckpt.iterate_name("adversary", n)),
                                 adversary.load_snapshot) for n in ids]
        if on_round is not None:
            on_round(log)

    return GameResult(tuple(logs), tuple(d_iter), tuple(a_iter), tuple(history), config)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each key's mean over a phase's updates (one update: its own values, bit for bit)."""
    if len(rows) == 1:
        return rows[0]
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[-1]}


def _gap_metrics(defender, adversary, reward, config, seeds, t, d_iter, a_iter) -> dict[str, float]:
    out: dict[str, float] = {}
    rng = gap_stream(config.seed, t)
    if config.gap_of in ("last", "both"):
        out.update(estimate_gap(defender, adversary, reward, config, seed_prompts=seeds, rng=rng))
    if config.gap_of in ("average", "both"):
        est = estimate_gap(defender, adversary, reward, config, seed_prompts=seeds, rng=rng,
                           defender_play=MixturePolicy(defender, d_iter),
                           adversary_play=MixturePolicy(adversary, a_iter))
        out.update({k.replace("gap/", "gap/average/", 1): v for k, v in est.items()})
    return out


def _visible_round(ckpt: str, resume: bool) -> str:
    """The last round a non-zero rank sees in ``ckpt`` ("0": none), without changing anything."""
    if not resume or not os.path.exists(os.path.join(ckpt, _ckpt.STATE)):
        return "0"
    return str(_ckpt.read_state(ckpt)["round"])


def _checkpoint(comm, rank, ckpt, t, *state) -> None:
    """Rank 0 writes the checkpoint; under ``comm`` every rank then waits for it and learns
    whether it worked, so no rank runs (or returns) ahead of a checkpoint being written and a
    failed write stops every rank, not rank 0 alone."""
    error: Exception | None = None
    if rank == 0:
        try:
            _ckpt.save(ckpt, t, *state)
        except Exception as exc:  # re-raised below, after the other ranks heard of it
            error = exc
    if comm is not None:
        status = comm.gather(["" if error is None else f"{type(error).__name__}: {error}"])
        if error is None and status[0]:
            raise PolicyError(f"rank 0 could not write the round-{t} checkpoint: {status[0]}")
    if error is not None:
        raise error


def _protocol_methods(proto: type) -> list[str]:
    return sorted(n for n in vars(proto) if not n.startswith("_") and callable(getattr(proto, n)))


