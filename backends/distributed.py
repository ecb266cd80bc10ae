"""Data-parallel GPO over ``torch.distributed``: one process per rank, launched by ``torchrun``
or ``accelerate launch``.

Every rank runs the same :func:`gpo_core.alignment.run_game` with a communicator
(:class:`TorchComm` from :func:`init`, or :class:`AccelerateComm` from :func:`init_accelerate`):

1. each rank draws the same global batch of seed prompts from the same seeded generator and plays
   its slice (``config.batch_size`` is the global batch); ``HFPolicy`` keys each row's sampling
   stream by its global row (adversary) or its prompt's text (defender), so a row draws the
   same tokens whichever rank samples it;
2. each policy averages its gradients over ranks after every backward pass
   (``HFPolicy(..., grad_sync=comm.average_gradients)``), so every rank takes the same AdamW step
   from the same parameters and the replicas never drift (parameters are broadcast from rank 0
   once at the start, :meth:`TorchComm.broadcast_parameters`);
3. the loop shares the adversary's prompt history (``gather``) and averages the metrics
   (``mean``); only rank 0 writes checkpoints, and every rank loads them on resume.

This is DDP's contract (identical replicas, averaged gradients) without wrapping the model, so a
``peft`` model, a reference network and the policy's own sampling loop work unchanged. With the
same global batch, a run on ``N`` ranks plays the game one process plays (see ``run_game``'s
``comm`` for the conditions) and its metrics agree up to floating-point rounding.

Launching (``script.py`` calls :func:`init` or :func:`init_accelerate` first and :func:`shutdown`
last, see the README):

    torchrun --standalone --nproc_per_node 8 script.py                         # one machine
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 \\
             --nproc_per_node 8 script.py                                      # each machine
    accelerate launch --multi_gpu --num_processes 8 script.py

Models too large for one device: :func:`backends.hf_fsdp.shard` shards a policy with torch's
FSDP2 (``fully_shard`` per decoder layer and root) under the same launch and the same
communicator; FSDP then averages the gradients (``grad_sync`` is switched off), rank 0's
snapshots are the gathered full state, and the ranks are kept in step through sampling and
updates. Tested on 2 CPU ranks (gloo) against this module's data-parallel run; see
``docs/fsdp.md``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

from gpo_core._validate import short

__all__ = ["TorchComm", "AccelerateComm", "init", "init_accelerate", "shutdown"]

_BACKENDS = ("gloo", "nccl", "mpi", "ucc", "xccl")


@dataclasses.dataclass(frozen=True)
class TorchComm:
    """A :class:`gpo_core.protocols.Communicator` over the default ``torch.distributed`` group.

    Attributes:
        rank: this process's rank.
        world_size: the number of processes.
        device: where the collectives' own tensors live: ``cpu`` for gloo, this rank's GPU for
            nccl (which only moves CUDA tensors).
    """

    rank: int
    world_size: int
    device: torch.device = torch.device("cpu")

    # The three collectives everything else is built on; AccelerateComm swaps in accelerate's.
    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def _gather_lists(self, items: list[Any]) -> list[Any]:
        parts: list[list[Any] | None] = [None] * self.world_size
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in (part or [])]

    def _broadcast(self, tensor: torch.Tensor) -> None:
        dist.broadcast(tensor, src=0)

    def mean(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Average every metric over ranks (float64 all-reduce, keys in sorted order)."""
        keys = sorted(metrics)
        names = self._gather_lists([keys])
        if any(n != keys for n in names):
            raise ValueError(f"ranks logged different metric keys: {names}")
        values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                              device=self.device)
        total = self._all_reduce_sum(values)
        return {k: float(v) / self.world_size for k, v in zip(keys, total.tolist())}

    def gather(self, texts: Sequence[str]) -> list[str]:
        """Every rank's texts, concatenated in rank order."""
        return self._gather_lists(list(texts))

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (one flat all-reduce)."""
        grads = [p.grad for p in params if p.grad is not None]
        if len(grads) != len(params):
            raise RuntimeError("every trainable parameter needs a gradient on every rank")
        # float32 at least (bf16 gradients are summed in float32), float64 gradients stay float64
        wide = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        flat = self._all_reduce_sum(torch.cat([g.reshape(-1).to(wide) for g in grads]))
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        if not isinstance(module, torch.nn.Module):
            raise TypeError(
                f"module must be a torch.nn.Module (e.g. HFPolicy.model), got {short(module)}"
            )
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                self._broadcast(tensor.data)


@dataclasses.dataclass(frozen=True)
class AccelerateComm(TorchComm):
    """The same communicator over the processes ``accelerate`` set up, through
    ``accelerate.utils`` (``reduce``, ``gather_object``, ``broadcast``).

    Build it with :func:`init_accelerate` or :meth:`from_state`. The loop does not use
    ``Accelerator.prepare``/``backward``: the policies keep their own models and optimisers and
    average gradients through :meth:`average_gradients`; accelerate provides the launch, the
    process group and the device (``state.device``, where the policies should be put).
    """

    @classmethod
    def from_state(cls, state: Any) -> AccelerateComm:
        """From an ``accelerate.Accelerator`` or ``accelerate.PartialState``."""
        missing = [a for a in ("process_index", "num_processes", "device") if not hasattr(state, a)]
        if missing:
            raise TypeError(
                f"state must be an accelerate.Accelerator or accelerate.PartialState, got "
                f"{short(state)} (no {', '.join(missing)})"
            )
        return cls(int(state.process_index), int(state.num_processes), torch.device(state.device))

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        from accelerate.utils import reduce  # noqa: PLC0415  (optional dependency)

        return reduce(tensor, reduction="sum")

    def _gather_lists(self, items: list[Any]) -> list[Any]:
        from accelerate.utils import gather_object  # noqa: PLC0415

        if self.world_size == 1:
            return list(items)
        return list(gather_object(items))

    def _broadcast(self, tensor: torch.Tensor) -> None:
        from accelerate.utils import broadcast  # noqa: PLC0415

        broadcast(tensor, from_process=0)


def init(backend: str | None = None) -> TorchComm:
    """Join the process group ``torchrun`` set up (env ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``).

    Args:
        backend: ``None`` picks ``"nccl"`` when CUDA is available, else ``"gloo"``. With nccl
            each process uses GPU ``LOCAL_RANK`` (``torch.cuda.set_device``, as DDP requires);
            put the policies there too (``HFPolicy(..., device=comm.device)``).

    Returns:
        A :class:`TorchComm` (also when the group was already initialised by the caller).
    """
    if backend is not None and (not isinstance(backend, str) or backend not in _BACKENDS):
        raise ValueError(
            f"backend must be one of {list(_BACKENDS)} or None (nccl on GPUs, gloo on CPU), "
            f"got {short(backend)}"
        )
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "backends.distributed.init() must run under torchrun (RANK and WORLD_SIZE are unset); "
            "launch with: torchrun --standalone --nproc_per_node N script.py"
        )
    if dist.is_initialized():
        existing = str(dist.get_backend())
        if backend is not None and backend != existing:
            raise ValueError(
                f"backend={backend!r}, but the process group was already initialised with "
                f"{existing!r}; pass backend=None (or {existing!r}) to join it"
            )
        backend = existing
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError(
                "backend='nccl' needs CUDA, but torch.cuda.is_available() is False; use "
                "backend='gloo' on CPU"
            )
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return TorchComm(dist.get_rank(), dist.get_world_size(), device)


def init_accelerate(state: Any = None) -> AccelerateComm:
    """A communicator over the processes ``accelerate launch`` (or ``torchrun``) started.

    Args:
        state: an ``accelerate.Accelerator`` or ``PartialState``; ``None`` makes a
            ``PartialState``, on the CPU when CUDA is unavailable (accelerate only forms a
            multi-process CPU group when asked for the CPU).

    Returns:
        An :class:`AccelerateComm`; its ``device`` is where this rank's policies belong.
    """
    if state is None:
        from accelerate import PartialState  # noqa: PLC0415

        state = PartialState(cpu=not torch.cuda.is_available())
    comm = AccelerateComm.from_state(state)
    if comm.world_size > 1 and not dist.is_initialized():
        raise RuntimeError(
            f"accelerate reports {comm.world_size} processes but no torch.distributed process "
            "group; create the Accelerator/PartialState under accelerate launch or torchrun"
        )
    return comm


def shutdown() -> None:
    """Leave the process group at the end of a run (a no-op when there is none).

    Call it last on every rank. A process that exits with its group still alive can abort
    while the interpreter shuts down ("terminate called without an active exception", SIGABRT
    under gloo: its worker threads outlive Python) and fail the launcher's run after the work
    is done; nccl warns. The barrier first lets every rank finish its last collective.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
