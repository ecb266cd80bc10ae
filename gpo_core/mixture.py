r"""The averaged policy: the uniform mixture of a player's iterates, kept within memory.

:math:`\hat\pi_T = \frac1T\sum_{t=1}^T \pi_t` is what Theorem 3.2 of Zheng et al. (2024)
bounds (its Nash gap is :math:`O(T^{-1/2})` with :math:`\eta \propto T^{-1/2}`): draw an iterate
uniformly, then sample from it.

Keeping every iterate of a large model in memory does not scale (16 GB per iterate per player
for an 8B model in bf16), so the loop can keep less:

* under ``peft`` a snapshot is the adapters alone (``backends.hf.HFPolicy.snapshot``);
* ``GameConfig.iterates_on_disk``: iterates live in the checkpoint folder as :class:`OnDisk`
  references and are read only when the mixture uses them, each once per call;
* ``GameConfig.max_iterates = K``: a uniform *reservoir sample* of ``K`` of the iterates
  (:func:`reservoir_slot`, Vitter's Algorithm R). Every iterate is in the reservoir with the same
  probability, so the uniform mixture over the reservoir is an unbiased estimate of
  :math:`\hat\pi_T`: :math:`E[\frac1K\sum_{k\in R}\pi_k] = \frac1T\sum_t \pi_t` (as
  distributions, for every context and output); its spread shrinks as ``K`` grows.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gpo_core._validate import check_positive_int
from gpo_core.protocols import Experience, MirrorStep, Policy, Samples

__all__ = ["MixturePolicy", "OnDisk", "materialise", "reservoir_slot"]

_RESERVOIR_STREAM = 0x5E5


@dataclasses.dataclass(frozen=True)
class OnDisk:
    """An iterate's snapshot stored in a file: ``load(path)`` reads it (the policy's loader)."""

    path: str
    load: Callable[[str], Any] = dataclasses.field(repr=False, compare=False)


def materialise(snapshot: Any) -> Any:
    """The snapshot itself, read from its file when it is an :class:`OnDisk` reference."""
    return snapshot.load(snapshot.path) if isinstance(snapshot, OnDisk) else snapshot


def reservoir_slot(seed: int, n: int, size: int) -> int | None:
    """Where candidate ``n`` (0-based) goes in a reservoir of ``size``: its slot, or ``None``.

    Algorithm R with a stateless draw per candidate (a generator keyed by ``(seed, n)``), so a
    resumed run keeps the same reservoir. The first ``size`` candidates fill the slots; candidate
    ``n`` then replaces a uniform slot with probability ``size / (n + 1)``.

    Examples:
        >>> [reservoir_slot(0, n, 2) for n in range(2)]
        [0, 1]
        >>> kept = np.zeros(6)
        >>> for seed in range(3000):
        ...     slots = [None, None]
        ...     for n in range(6):
        ...         j = reservoir_slot(seed, n, 2)
        ...         if j is not None:
        ...             slots[j] = n
        ...     kept[slots] += 1
        >>> bool(np.all(np.abs(kept / 3000 - 2 / 6) < 0.04))  # each kept with probability 1/3
        True
    """
    if n < size:
        return n
    j = int(np.random.default_rng([seed, _RESERVOIR_STREAM, n]).integers(n + 1))
    return j if j < size else None


class MixturePolicy:
    """The uniform mixture over snapshots of a policy: draw an iterate, then sample from it.

    This is the averaged policy :math:`\\hat\\pi_T = \\frac1T\\sum_t \\pi_t` of Theorem 3.2. It
    restores each snapshot into ``policy`` while sampling and puts the original parameters back
    afterwards; a call restores (and, for :class:`OnDisk` snapshots, reads) each iterate it needs
    once, and samples all the contexts that drew it in one batch. It is for evaluation:
    :meth:`update` raises.
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
                self.policy.restore(materialise(self.snapshots[int(k)]))
                counts = np.sum(picks == k, axis=1)
                # one batch per (count, repeat): a context listed twice goes to two batches, so
                # each listing keeps its own mass, as when every listing is sampled alone
                groups: dict[tuple[int, int], list[str]] = defaultdict(list)
                seen: dict[str, int] = defaultdict(int)
                for ctx, count in zip(contexts, counts):
                    if count:
                        groups[(int(count), seen[ctx])].append(ctx)
                        seen[ctx] += 1
                for (count, _), group in sorted(groups.items()):
                    s = self.policy.sample(group, count, rng)
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
                self.policy.restore(materialise(snap))
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
