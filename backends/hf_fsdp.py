"""FSDP for :class:`backends.hf.HFPolicy`: shard a policy's model over the ranks of a process group.

:func:`shard` applies torch's ``fully_shard`` (FSDP2) to each decoder layer and to the whole
model (and to a separate reference model), and returns a :class:`ShardedPolicy` that plays
:func:`gpo_core.alignment.run_game` under ``comm`` like the data-parallel policies of
:mod:`backends.distributed` do: each rank plays its slice of the global batch, and a run on
``N`` ranks plays the game one process plays (up to floating-point rounding). What changes:

* **what is sharded**: every parameter of a full fine-tuning (``1/N`` per rank, and the AdamW
  moments with them); FSDP averages the gradients itself (reduce-scatter), so the policy's
  ``grad_sync`` is switched off. Under ``peft`` the frozen base is sharded and the adapters stay
  whole on every rank (``ignored_params``): they are averaged by ``comm.average_gradients``, so
  any optimiser works, L-BFGS included. A full fine-tuning needs ``optimizer="adam"``:
  ``torch.optim.LBFGS`` flattens each parameter, which a sharded one refuses ("Cannot flatten
  unevenly sharded tensor").
* **every forward is a collective** (each layer is all-gathered on the way), so every rank must
  run as many forwards as the others, in the same order. :meth:`ShardedPolicy.update` pads each
  rank's rows with rows of weight 0 up to the largest rank's count (they change neither the
  gradient, the fit nor any metric: every sum is weighted); in :meth:`~ShardedPolicy.sample` and
  the scoring calls, where the number of forwards depends on the rows (a batch of sampling ends
  when all its rows have), the ranks vote before each forward and a rank that is done runs
  empty forwards until every rank is (:class:`_Pacer`).
* **snapshots are gathered on rank 0** (:mod:`backends.hf_fsdp_state`): on rank 0 a snapshot is
  the full state (what the unsharded policy's ``snapshot()`` returns, so checkpoints hold full
  weights that a one-process run, or any other number of ranks, loads), on rank ``r > 0`` this
  rank's shards of it. The gather happens on every rank at the end of each update and restore,
  so :meth:`~ShardedPolicy.snapshot` itself communicates nothing (``run_game`` calls it on rank
  0 alone while writing a checkpoint).

Every rank must load the same weights (``from_pretrained`` does; a random initialisation needs
the same seed): :func:`shard` compares a fingerprint of them across ranks and refuses otherwise.
Launch commands, memory per rank and what is tested where: ``docs/fsdp.md``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from backends import hf_checks as _chk
from backends import hf_fsdp_state as _state
from backends.hf import HFPolicy
from backends.hf_update import _merge_repeated_rows
from gpo_core._validate import short
from gpo_core.protocols import Experience, MirrorStep, Samples

__all__ = ["ShardedPolicy", "shard"]


class _Pacer:
    """Keeps the ranks' forwards of one sharded model in step for the length of a call.

    While a call is paced, every forward first takes part in an all-reduce of ``1`` (this rank
    is about to run a forward). When a rank's call is done it all-reduces ``0`` until the sum is
    0, and for each non-zero sum runs one empty forward: a one-token batch that all-gathers the
    same layers in the same order as the others' real forward. So each round of the vote is
    matched by exactly one forward on every rank, and every rank leaves the call together.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.active = self.idle = False
        self.empty_forwards = 0  # how many this rank has run (tests read it)
        # prepend: the vote must come before FSDP's own pre-forward hook, which all-gathers
        model.register_forward_pre_hook(self._before_forward, prepend=True)

    def _vote(self, going: int) -> int:
        flag = torch.tensor([going], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM)
        return int(flag.item())

    def _before_forward(self, module: torch.nn.Module, args: Any) -> None:
        if self.active and not self.idle:
            self._vote(1)

    @contextlib.contextmanager
    def paced(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            # Also after an error: the other ranks are still served until they are done.
            try:
                while self._vote(0):
                    self.idle = True
                    with torch.no_grad():
                        self.model(input_ids=torch.zeros(1, 1, dtype=torch.long,
                                                         device=self.device), use_cache=False)
                    self.idle = False
                    self.empty_forwards += 1
            finally:
                self.active = self.idle = False


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers: modules whose class transformers lists in ``_no_split_modules``."""
    base = model.get_base_model() if _chk.is_peft(model) else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in base.modules() if type(m).__name__ in names]


def _fingerprint(model: torch.nn.Module) -> float:
    """A float64 checksum of the weights (position-weighted, so a permutation changes it)."""
    total = 0.0
    with torch.no_grad():
        for i, p in enumerate(model.state_dict().values()):
            if p.is_floating_point() and p.numel():
                total += (i + 1) * float(p.double().sum()) + float(p.double().abs().max())
    return total


def _check_comm(comm: Any) -> None:
    missing = [a for a in ("rank", "world_size", "device", "mean", "average_gradients")
               if not hasattr(comm, a)]
    if missing:
        raise TypeError(
            f"comm must be a backends.distributed.TorchComm (from backends.distributed.init()), "
            f"got {short(comm)} (no {', '.join(missing)})"
        )
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "shard() needs the torch.distributed process group: call backends.distributed.init() "
            "first, under torchrun (docs/fsdp.md)"
        )
    if dist.get_world_size() != comm.world_size or dist.get_rank() != comm.rank:
        raise ValueError(
            f"comm says rank {comm.rank} of {comm.world_size}, but the process group is rank "
            f"{dist.get_rank()} of {dist.get_world_size()}; pass the comm that init() returned"
        )


def shard(policy: HFPolicy, comm: Any) -> ShardedPolicy:
    """Shard ``policy``'s model (and its separate reference, if any) over the ranks of ``comm``.

    Call it on every rank, right after building the policy and before anything else uses it.
    Build the policy on the CPU (``device="cpu"``) when the model does not fit one device:
    ``fully_shard`` moves one layer at a time to ``comm.device`` and keeps this rank's shards.

    Args:
        policy: an :class:`~backends.hf.HFPolicy`, not yet sharded; a full fine-tuning must use
            ``optimizer="adam"`` (module docstring), a ``peft`` one may use either optimiser.
        comm: the :class:`backends.distributed.TorchComm` of this rank
            (:func:`backends.distributed.init`).

    Returns:
        The :class:`ShardedPolicy` to hand to ``run_game`` (with the same ``comm``).

    Raises:
        TypeError, ValueError: for a wrong argument, a policy already sharded, a full
            fine-tuning with L-BFGS, or ranks that loaded different weights; naming the fix.
        RuntimeError: if there is no process group.
    """
    if not isinstance(policy, HFPolicy):
        raise TypeError(f"policy must be a backends.hf.HFPolicy, got {short(policy)}")
    _check_comm(comm)
    from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
    from torch.distributed.fsdp import FSDPModule, fully_shard  # noqa: PLC0415

    model, peft = policy.model, policy._peft
    if isinstance(model, FSDPModule):
        raise ValueError(f"HFPolicy {policy.name!r} is already sharded; call shard() once")
    if not peft and policy._optimizer_kind == "lbfgs":
        raise ValueError(
            f"HFPolicy {policy.name!r}: a sharded full fine-tuning cannot use optimizer='lbfgs' "
            "(torch.optim.LBFGS flattens each parameter, and FSDP's sharded parameters refuse: "
            "'Cannot flatten unevenly sharded tensor'); build the policy with optimizer='adam', "
            "or train LoRA adapters (peft_config), which stay whole and work with L-BFGS"
        )
    layers = _layers(model)
    if not layers:
        raise ValueError(
            f"HFPolicy {policy.name!r}: found no decoder layers to shard ({type(model).__name__}"
            " lists no _no_split_modules); shard() supports transformers causal LMs"
        )
    prints = [None] * comm.world_size
    dist.all_gather_object(prints, _fingerprint(model))
    if len(set(prints)) > 1:
        raise ValueError(
            f"HFPolicy {policy.name!r}: the ranks hold different weights (fingerprints "
            f"{prints}); load the same checkpoint on every rank, or seed the initialisation "
            "(and peft's adapters) the same way"
        )
    shapes = policy.snapshot_shapes()
    mesh = init_device_mesh(comm.device.type, (comm.world_size,))
    kept = {p for p in model.parameters() if p.requires_grad} if peft else set()
    with torch.no_grad():
        for p in kept:  # the adapters stay whole; fully_shard moves only what it shards
            p.data = p.data.to(comm.device)
    # Every unit, the root included, frees its gathered weights after each forward: between
    # calls the model is always sharded, so a snapshot on rank 0 alone reads shards and changes
    # no unit's state (the ranks' next forwards then all-gather the same units).
    options = {"mesh": mesh, "reshard_after_forward": True}
    for layer in layers:
        fully_shard(layer, ignored_params=kept or None, **options)
    fully_shard(model, ignored_params=kept or None, **options)
    reference = policy._reference
    if reference is not None:
        for layer in _layers(reference):
            fully_shard(layer, **options)
        fully_shard(reference, **options)
    # The policy's parts were built before sharding: point them at the new parameters and device.
    trainer = policy._trainer
    trainer.params = [p for p in model.parameters() if p.requires_grad]
    trainer.optimizer = trainer.new_optimizer()
    trainer.grad_sync = comm.average_gradients if peft else None  # FSDP reduces the shards
    trainer.value_sync = comm.mean
    policy._device = policy._scorer.device = comm.device
    if peft:
        for p in trainer.params:
            dist.broadcast(p.data, src=0)  # peft draws its initial adapters per process
    return ShardedPolicy(policy, comm, shapes)


class ShardedPolicy:
    """A sharded :class:`~backends.hf.HFPolicy` as a :class:`gpo_core.protocols.Policy` (build it
    with :func:`shard`). Each method below is called on every rank (``run_game`` does), except
    :meth:`snapshot` and :meth:`save_snapshot`, which rank 0 may call alone; anything else is
    the wrapped policy's (``.policy``).
    """

    def __init__(self, policy: HFPolicy, comm: Any, shapes: Mapping[str, tuple[int, ...]]):
        self.policy, self.comm = policy, comm
        self._pacer = _Pacer(policy.model, comm.device)
        # peft's adapters are whole on every rank: the policy's own snapshots serve as they are
        self._snaps = None if policy._peft else _state.ShardedSnapshots(
            policy.model, comm, shapes, policy.name)
        self.padded_rows = 0  # zero-weight rows this rank added to its updates (tests read it)
        self._refresh()

    def _refresh(self) -> None:
        if self._snaps is not None:
            self._snaps.refresh()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def __repr__(self) -> str:
        return f"ShardedPolicy({self.policy!r}, rank={self.comm.rank}/{self.comm.world_size})"

    @property
    def empty_forwards(self) -> int:
        """How many empty forwards this rank ran to keep pace with the others."""
        return self._pacer.empty_forwards

    def sample(self, contexts: Sequence[str], num_samples: int, rng: np.random.Generator, *,
               stream_ids: Sequence[int] | None = None) -> Samples:
        """:meth:`backends.hf.HFPolicy.sample`, paced (module docstring)."""
        with self._pacer.paced():
            return self.policy.sample(contexts, num_samples, rng, stream_ids=stream_ids)

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """:meth:`backends.hf.HFPolicy.log_prob`, paced."""
        with self._pacer.paced():
            return self.policy.log_prob(contexts, outputs)

    def token_log_probs(self, contexts: Sequence[str], outputs: Sequence[str]) -> list[np.ndarray]:
        """:meth:`backends.hf.HFPolicy.token_log_probs`, paced."""
        with self._pacer.paced():
            return self.policy.token_log_probs(contexts, outputs)

    def update(self, experience: Experience, step: MirrorStep) -> dict[str, float]:
        """:meth:`backends.hf.HFPolicy.update` on this rank's rows, padded with zero-weight rows
        to the largest rank's count so that every rank runs the same forwards and backwards."""
        ctx, out, u, w = _merge_repeated_rows(*_chk.check_experience(experience))
        most = torch.tensor([len(ctx)], dtype=torch.int64, device=self.comm.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        extra = _padding(self.policy.tokenizer, ctx, out, int(most.item()) - len(ctx))
        self.padded_rows += len(extra)
        rows = Experience(
            contexts=tuple(ctx) + tuple(c for c, _ in extra),
            outputs=tuple(out) + tuple(o for _, o in extra),
            utilities=np.concatenate([u, np.zeros(len(extra))]),
            weights=np.concatenate([w, np.zeros(len(extra))]),
        )
        try:
            return self.policy.update(rows, step)
        finally:
            self._refresh()

    # ------------------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Rank 0: the full trainable state (as the unsharded policy's ``snapshot()``); rank
        ``r > 0``: this rank's shards of it (under ``peft``: the whole adapters on every rank).
        Communicates only if the parameters changed since the last update or restore (then
        every rank must call it)."""
        return self.policy.snapshot() if self._snaps is None else self._snaps.snapshot()

    def snapshot_shapes(self) -> dict[str, tuple[int, ...]]:
        """The full (unsharded) names and shapes."""
        return self.policy.snapshot_shapes() if self._snaps is None else dict(self._snaps.shapes)

    def restore(self, snapshot: Mapping[str, torch.Tensor]) -> None:
        """Load a snapshot: the full state (rank 0 accepts nothing else) or, on rank ``r > 0``,
        this rank's shards; each rank keeps its own shards of a full one."""
        if self._snaps is None:
            self.policy.restore(snapshot)
        else:
            self._snaps.restore(snapshot)

    def save_snapshot(self, snapshot: Mapping[str, torch.Tensor],
                      path: str | os.PathLike[str]) -> None:
        """Write a full snapshot (rank 0's) to ``path`` as the unsharded policy would."""
        if self._snaps is None:
            self.policy.save_snapshot(snapshot, path)
        else:
            self._snaps.save(snapshot, path)

    def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
        """Read a snapshot file (full weights): rank 0 keeps it whole, rank ``r > 0`` its shards."""
        if self._snaps is None:
            return self.policy.load_snapshot(path)
        return self._snaps.load(path)


def _padding(tokenizer: Any, ctx: list[str], out: list[str], n: int) -> list[tuple[str, str]]:
    """``n`` rows ``(context, output)`` that are not among the given rows: the first context
    with the empty output, then with one-token outputs (ordinary tokens, so every row scores a
    finite log-probability and a weight of 0 makes it count for nothing)."""
    if n <= 0:
        return []
    taken = set(zip(ctx, out))
    special = set(tokenizer.all_special_ids)
    # lazily: a large vocabulary is decoded only as far as the padding needs
    texts = itertools.chain([""], (tokenizer.decode([i]) for i in range(len(tokenizer))
                                   if i not in special))
    rows: list[tuple[str, str]] = []
    for text in texts:
        if (ctx[0], text) not in taken:
            taken.add((ctx[0], text))
            rows.append((ctx[0], text))
            if len(rows) == n:
                return rows
    raise ValueError(
        f"cannot pad this rank's update with {n} rows of weight 0 (the tokenizer offers too few "
        "one-token outputs); give every rank the same number of distinct rows"
    )
