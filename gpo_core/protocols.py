r"""The seam between the game loop and any model: small structural ``typing.Protocol``\ s.

A user's own policy, reward model or embedder fits by having the right methods; it never imports
or subclasses anything of ours. Everything here is torch-free.

Data that crosses the seam is plain values:

* :class:`Samples` -- what a policy drew: one row per output, with the ``context`` it answers
  (a seed prompt for the adversary, a prompt for the defender) and an estimate ``weight``: for
  each context the weights of its rows sum to 1 (``1/k`` for ``k`` sampled outputs; the exact
  probability ``pi(output | context)`` for a policy that enumerates its support).
* :class:`Experience` -- what a policy learns from: rows ``(context, output, utility, weight)``
  where ``utility`` is "higher is better" for that policy and ``weight`` is the probability of the
  rest of the row (the opponent's part) given the output, so that a policy that aggregates rows by
  output recovers the exact expected utility ``E[u | context, output]``.
* :class:`MirrorStep` -- the closed-form target the policy must move to:
  :math:`\log\pi' = (\log\pi_t + \eta\alpha\log\rho + \eta u)/(1+\eta\alpha) - \log Z`
  (:func:`gpo_core.mirror_step`), with :math:`\rho` the policy's reference (initial) model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from gpo_core._validate import check_mirror_params

__all__ = [
    "Samples",
    "Experience",
    "MirrorStep",
    "Policy",
    "RewardModel",
    "Embedder",
    "Diversity",
    "Communicator",
]


class Samples(NamedTuple):
    """Outputs drawn by a policy, one row each (see the module docstring for ``weights``)."""

    contexts: tuple[str, ...]
    outputs: tuple[str, ...]
    weights: np.ndarray  # shape (N,), float64


class Experience(NamedTuple):
    """Rows a policy learns from: utilities are "higher is better" for the learning policy."""

    contexts: tuple[str, ...]
    outputs: tuple[str, ...]
    utilities: np.ndarray  # shape (N,)
    weights: np.ndarray  # shape (N,): probability of the row's other parts given the output


@dataclasses.dataclass(frozen=True)
class MirrorStep:
    r"""A KL-regularised update target: maximise
    :math:`E_\pi[u] - \alpha\,\mathrm{KL}(\pi\|\rho) - \mathrm{KL}(\pi\|\pi_t)/\eta`.

    Attributes:
        eta: step size ``> 0`` (GPO's ``1/beta``); ``math.inf`` drops the proximal term, leaving
            the fixed-reference KL of standard RLHF and of GPO's released code.
        alpha: weight ``>= 0`` of the KL to the reference ``rho`` (entropy regularisation when the
            reference is uniform); must be ``> 0`` when ``eta`` is infinite.

    Examples:
        >>> MirrorStep(eta=0.5).alpha
        0.0
    """

    eta: float
    alpha: float = 0.0

    def __post_init__(self) -> None:
        check_mirror_params(self.eta, self.alpha)

    def target(self, logp: np.ndarray, utilities: np.ndarray, log_ref: np.ndarray) -> np.ndarray:
        """Normalised target log-probabilities over an enumerated support (last axis)."""
        from gpo_core.rules import mirror_step  # noqa: PLC0415  (avoid an import cycle)

        return mirror_step(logp, utilities, self.eta, self.alpha, log_ref)


@runtime_checkable
class Policy(Protocol):
    """A conditional generator ``pi(output | context)`` that can take a :class:`MirrorStep`.

    Optional: ``sample`` may accept a keyword ``stream_ids`` (one integer in ``[0, 2**64)`` per
    context; ``backends.hf.HFPolicy`` does). The game loop then passes ids that name each row's
    random stream independently of how the batch is split across processes, and expects a
    context's draws to depend only on the generator, its id and the parameters, not on the
    other contexts in the call. Policies without it work unchanged (see
    :func:`gpo_core.alignment.run_game`'s ``comm``).

    Optional: a true ``centres_contexts`` attribute says that ``update`` compares each context's
    rows with each other (as HFPolicy's objectives do), so one output per context gives it no
    signal; the loop then warns when a batch has that shape.
    """

    def sample(
        self, contexts: Sequence[str], num_samples: int, rng: np.random.Generator
    ) -> Samples:
        """Draw ``num_samples`` outputs per context (an enumerating policy may return its support)."""
        ...

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """``log pi(output_i | context_i)`` for each row, shape ``(N,)``."""
        ...

    def update(self, experience: Experience, step: MirrorStep) -> Mapping[str, float]:
        """Move toward ``step``'s target on ``experience``; return metrics (e.g. ``loss``)."""
        ...

    def snapshot(self) -> Any:
        """An independent copy of the current parameters (for averaging and rollback)."""
        ...

    def restore(self, snapshot: Any) -> None:
        """Load parameters from a value that :meth:`snapshot` returned."""
        ...


@runtime_checkable
class RewardModel(Protocol):
    """Scores ``(prompt, response)`` pairs: one finite float each, higher = better for the defender."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return shape ``(N,)`` rewards."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised vectors, shape ``(N, d)``."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return the embeddings."""
        ...


@runtime_checkable
class Diversity(Protocol):
    """Scores how novel each new prompt is against the history of earlier prompts (higher = newer)."""

    def __call__(self, prompts: Sequence[str], history: Sequence[str]) -> np.ndarray:
        """Return shape ``(N,)`` diversity rewards."""
        ...


@runtime_checkable
class Communicator(Protocol):
    """What the loop needs from a process group to run data-parallel (one process per rank).

    Every rank runs the same loop on its slice of each batch; the policies average their gradients
    themselves (e.g. ``backends.distributed``), and the loop only needs these collectives.
    """

    @property
    def rank(self) -> int:
        """This process's index, ``0 <= rank < world_size``."""
        ...

    @property
    def world_size(self) -> int:
        """Number of processes."""
        ...

    def mean(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """The average of each metric over ranks (every rank passes the same keys)."""
        ...

    def gather(self, texts: Sequence[str]) -> list[str]:
        """Every rank's texts, concatenated in rank order (the same list on every rank)."""
        ...
