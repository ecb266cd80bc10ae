"""Data-parallel GPO over ``torch.distributed``: one process per rank, launched by ``torchrun``.

Every rank runs the same :func:`gpo_core.alignment.run_game` with a :class:`TorchComm`:

1. each rank draws the same global batch of seed prompts from the same seeded generator and plays
   its slice (``config.batch_size`` is the global batch);
2. each policy averages its gradients over ranks after every backward pass
   (``HFPolicy(..., grad_sync=comm.average_gradients)``), so every rank takes the same AdamW step
   from the same parameters and the replicas never drift (parameters are broadcast from rank 0
   once at the start, :meth:`TorchComm.broadcast_parameters`);
3. the loop shares the adversary's prompt history (``gather``) and averages the metrics
   (``mean``), and only rank 0 writes checkpoints.

This is DDP's contract (identical replicas, averaged gradients) without wrapping the model, so a
``peft`` model, a reference network and the policy's own sampling loop work unchanged. For models
too large for one device, shard them with FSDP instead (``torch.distributed.fsdp``; wrap the model
before handing it to ``HFPolicy`` and keep ``grad_sync=None``, since FSDP reduces gradients
itself) -- not exercised by the tests here.

    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 your_script.py

``init()`` picks the ``nccl`` backend when CUDA is available (one GPU per local rank) and ``gloo``
on CPU.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import torch
import torch.distributed as dist

__all__ = ["TorchComm", "init"]


@dataclasses.dataclass(frozen=True)
class TorchComm:
    """A :class:`gpo_core.protocols.Communicator` over the default ``torch.distributed`` group."""

    rank: int
    world_size: int

    def mean(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Average every metric over ranks (float64 all-reduce, keys in sorted order)."""
        keys = sorted(metrics)
        names = [None] * self.world_size
        dist.all_gather_object(names, keys)
        if any(n != keys for n in names):
            raise ValueError(f"ranks logged different metric keys: {names}")
        values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, values.tolist())}

    def gather(self, texts: Sequence[str]) -> list[str]:
        """Every rank's texts, concatenated in rank order."""
        parts: list[list[str] | None] = [None] * self.world_size
        dist.all_gather_object(parts, list(texts))
        return [t for part in parts for t in (part or [])]

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over ranks (one flat all-reduce)."""
        grads = [p.grad for p in params if p.grad is not None]
        if len(grads) != len(params):
            raise RuntimeError("every trainable parameter needs a gradient on every rank")
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank."""
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)


def init(backend: str | None = None) -> TorchComm:
    """Join the process group ``torchrun`` set up (env ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "backends.distributed.init() must run under torchrun (RANK and WORLD_SIZE are unset); "
            "launch with: torchrun --standalone --nproc_per_node N script.py"
        )
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return TorchComm(dist.get_rank(), dist.get_world_size())
