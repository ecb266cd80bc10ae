"""Snapshots of a sharded full fine-tuning (:mod:`backends.hf_fsdp`): full on rank 0, shards
elsewhere.

Guarantees:

* rank 0's snapshot is the full state dict, the names and shapes the unsharded policy's
  ``snapshot()`` returns, as CPU tensors: so a checkpoint rank 0 writes holds full weights that
  any number of ranks (or one process) loads;
* rank ``r > 0``'s snapshot is its own shards of the same state (``1/N`` of the memory);
* :meth:`ShardedSnapshots.snapshot` communicates nothing as long as the parameters did not change
  since the last :meth:`~ShardedSnapshots.refresh` (the sharded policy refreshes, on every rank,
  at the end of each update and restore), since ``run_game`` calls it on rank 0 alone while
  writing a checkpoint; loading a full snapshot re-shards it locally (each rank cuts its own
  chunk, no communication).

A parameter is sharded along one dimension in ``torch.chunk`` pieces (FSDP2's ``Shard(dim)``):
:func:`_chunk` cuts a full tensor the same way, checked against the live shard's shape.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from backends import hf_snapshots as _snap
from gpo_core._validate import short

__all__ = ["ShardedSnapshots"]


def _is_dtensor(t: Any) -> bool:
    from torch.distributed.tensor import DTensor  # noqa: PLC0415

    return isinstance(t, DTensor)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if _is_dtensor(t) else t


class ShardedSnapshots:
    """The snapshot state of one sharded model (module docstring).

    Args:
        model: the sharded model (every trainable parameter a ``DTensor``).
        comm: the rank's communicator (``rank``, ``world_size``).
        shapes: the full names and shapes (the unsharded policy's ``snapshot_shapes()``).
        name: the policy's name, for errors.
    """

    def __init__(self, model: torch.nn.Module, comm: Any, shapes: Mapping[str, tuple[int, ...]],
                 name: str) -> None:
        self.model, self.comm, self.name = model, comm, name
        self.shapes = dict(shapes)
        self.dims: dict[str, int] = {}  # the sharded names and their sharded dimension
        state = self._state()
        if set(state) != set(self.shapes):
            raise RuntimeError(
                f"HFPolicy {name!r}: sharding changed the state dict's names (missing "
                f"{short(sorted(set(self.shapes) - set(state)))}, new "
                f"{short(sorted(set(state) - set(self.shapes)))})"
            )
        self.local_shapes = {k: tuple(_local(v).shape) for k, v in state.items()}
        for k, v in state.items():
            if _is_dtensor(v):
                dim = getattr(v.placements[0], "dim", None)
                want = (tuple(_chunk(torch.empty(self.shapes[k], device="meta"), dim, comm).shape)
                        if dim is not None else None)
                if want != self.local_shapes[k]:
                    raise RuntimeError(
                        f"HFPolicy {name!r}: {k} is sharded as {v.placements} with local shape "
                        f"{self.local_shapes[k]}; snapshots support one Shard(dim) placement in "
                        "torch.chunk pieces (fully_shard's default)"
                    )
                self.dims[k] = dim
        self._cache: dict[str, torch.Tensor] = {}
        self._stamp: tuple[int, ...] | None = None

    def _state(self) -> dict[str, torch.Tensor]:
        state = self.model.state_dict()
        loose = [k for k, v in state.items() if k in self.dims and not _is_dtensor(v)]
        if loose:  # a layer left gathered: reading it would mix full tensors into the shards
            raise RuntimeError(
                f"HFPolicy {self.name!r}: {short(loose)} are gathered (not sharded) outside a "
                "forward; keep reshard_after_forward=True on every unit (what shard() sets)"
            )
        return state

    def _now(self) -> tuple[int, ...]:
        """The version counters of the state's local tensors (any in-place change bumps one)."""
        return tuple(_local(v)._version for v in self._state().values())

    def refresh(self) -> None:
        """Gather the full state to rank 0's CPU and keep it (collective: every rank calls it)."""
        from torch.distributed.checkpoint.state_dict import (  # noqa: PLC0415
            StateDictOptions,
            get_model_state_dict,
        )

        full = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.comm.rank == 0:
            # sharded entries arrive as fresh gathered copies; clone the others (buffers alias)
            self._cache = {k: full[k] if k in self.dims else full[k].detach().clone()
                           for k in self.shapes}
        else:
            self._cache = {k: _local(v).detach().to("cpu", copy=True)
                           for k, v in self._state().items()}
        self._stamp = self._now()

    def snapshot(self) -> dict[str, torch.Tensor]:
        if self._stamp != self._now():
            self.refresh()  # changed outside update/restore: every rank must be here
        return dict(self._cache)

    def _check(self, snapshot: Any, action: str, *, finite: bool = False,
               shards: bool = False) -> None:
        """Raise unless ``snapshot`` holds every name in its full shape (or, with ``shards``,
        in its full shape or this rank's shard's)."""
        expected = dict(self.shapes)
        if shards and isinstance(snapshot, Mapping):
            for k, v in snapshot.items():
                if k in expected and tuple(getattr(v, "shape", ())) == self.local_shapes[k]:
                    expected[k] = self.local_shapes[k]
        rank = self.comm.rank
        fix = ("pass a value from this policy's snapshot() on rank 0, or a file saved from a "
               "policy built the same way" if rank == 0 or not shards else
               "pass this rank's snapshot() or a full snapshot (a file saved from rank 0)")
        if not shards and rank > 0:
            fix = (f"rank {rank}'s snapshots hold this rank's shards only; the full weights are "
                   "gathered on rank 0: call save_snapshot there")
        _snap.check_snapshot(snapshot, expected, who=f"HFPolicy {self.name!r}: {action}",
                             what="state_dict", fix=fix, finite=finite)

    def restore(self, snapshot: Mapping[str, torch.Tensor]) -> None:
        """Load a full snapshot (each rank cuts its own chunks) or, on rank ``r > 0``, this rank's
        shards; then keep it as the current snapshot (no communication)."""
        self._check(snapshot, "restore failed", finite=True, shards=self.comm.rank > 0)
        state = self._state()
        with torch.no_grad():
            for k, v in snapshot.items():
                target = _local(state[k])
                if k in self.dims and tuple(v.shape) == self.shapes[k]:
                    v = _chunk(v, self.dims[k], self.comm)
                target.copy_(v.to(target.device))
        if self.comm.rank == 0:
            self._cache = dict(snapshot)
        else:
            self._cache = {k: _local(v).detach().to("cpu", copy=True)
                           for k, v in self._state().items()}
        self._stamp = self._now()

    def save(self, snapshot: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
        self._check(snapshot, "save_snapshot failed")
        _snap.save_snapshot(snapshot, path)

    def load(self, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
        try:
            snap = _snap.load_snapshot(path)
        except ValueError as exc:
            raise ValueError(f"HFPolicy {self.name!r}: load_snapshot failed: {exc}") from exc
        self._check(snap, f"load_snapshot failed for {str(path)!r}")
        if self.comm.rank == 0:
            return snap
        # rank r > 0 keeps only its chunks: an iterate read from a file costs 1/N of the weights
        return {k: _chunk(v, self.dims[k], self.comm).clone() if k in self.dims else v
                for k, v in snap.items()}


def _chunk(full: torch.Tensor, dim: int, comm: Any) -> torch.Tensor:
    """This rank's ``torch.chunk`` piece of ``full`` along ``dim`` (empty past the last piece)."""
    pieces = torch.chunk(full, comm.world_size, dim=dim)
    if comm.rank < len(pieces):
        return pieces[comm.rank]
    return full.narrow(dim, full.shape[dim], 0)
