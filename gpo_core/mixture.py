r"""The averaged policy: the uniform mixture of a player's iterates.

:math:`\hat\pi_T = \frac1T\sum_{t=1}^T \pi_t` is what Theorem 3.2 of Zheng et al. (2024)
bounds (its Nash gap is :math:`O(T^{-1/2})` with :math:`\eta \propto T^{-1/2}`): draw an iterate
uniformly, then sample from it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from gpo_core._validate import check_positive_int
from gpo_core.protocols import Experience, MirrorStep, Policy, Samples

__all__ = ["MixturePolicy"]


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
