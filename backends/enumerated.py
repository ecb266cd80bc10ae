r"""A language model whose completion space is small enough to list: the LLM twin of a table.

With one-token outputs over a closed vocabulary (:func:`backends.tiny.word_tokenizer`), an
:class:`~backends.hf.HFPolicy` has a finite completion space: the empty output (eos at once) and
each word. :class:`EnumeratedPolicy` then plays it exactly, as
:class:`backends.tabular.TabularPolicy`'s ``"enumerate"`` mode plays a table:

* :meth:`~EnumeratedPolicy.sample` returns the whole support of each context with its exact
  probability :math:`\pi(y\mid c)` (read off the network, normalised);
* :meth:`~EnumeratedPolicy.update` hands the network every row weighted by the current
  :math:`\pi_t(y\mid c)` times the opponent's probability, which is how
  :meth:`backends.hf.HFPolicy.update` reads an exact enumeration; a *context-free* player (the
  matrix-game player, whose template ignores the context) first pools the rows of every
  context into one, so the fitted target is the mirror step on the expected utility
  :math:`\bar u(y) = \sum_x \mu(x) r(x, y)`, the same vector :func:`gpo_core.play` feeds its rule.

:func:`lm_matrix_game_players` builds such a defender and adversary (random tiny Llamas) and the
table reward for a :class:`gpo_core.MatrixGame`: run through
:func:`gpo_core.alignment.run_game`, their iterates follow :func:`gpo_core.play`'s within the
bound that the fit's tolerance implies (:mod:`backends.fit`; ``tests/test_lm_twin.py``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from gpo_core import MatrixGame
from gpo_core._validate import short
from gpo_core.protocols import Experience, MirrorStep, Samples

from backends.hf import GenerationSettings, HFPolicy
from backends.tabular import TableReward

__all__ = ["EnumeratedPolicy", "completion_space", "iterate_probabilities", "lm_matrix_game_players"]


def completion_space(policy: HFPolicy) -> list[str]:
    """Every output of a one-token policy: ``""`` (eos first) and each non-special token's text.

    Raises:
        ValueError: if the policy may write more than one token, or a token does not decode to
            a text that encodes back to it alone.
    """
    if policy.generation.max_new_tokens != 1:
        raise ValueError(
            f"completion_space needs generation.max_new_tokens=1 (one-token outputs), got "
            f"{policy.generation.max_new_tokens}; longer outputs are not enumerable here"
        )
    tok = policy.tokenizer
    special = set(tok.all_special_ids)
    outputs = [""]
    for i in range(len(tok)):
        if i in special:
            continue
        text = tok.decode([i], skip_special_tokens=True)
        if not text or list(tok(text, add_special_tokens=False)["input_ids"]) != [i]:
            raise ValueError(
                f"token {i} decodes to {text!r}, which does not encode back to it alone; use a "
                "closed-vocabulary tokenizer (backends.tiny.word_tokenizer)"
            )
        outputs.append(text)
    return outputs


class EnumeratedPolicy:
    """An :class:`~backends.hf.HFPolicy` over one-token outputs, played exactly (module docstring).

    Args:
        policy: the network (``generation.max_new_tokens == 1``).
        context_free: pool every context's rows into one (the policy's template must then ignore
            the context, e.g. ``template=lambda c: ""``), as a matrix-game player does.

    Examples:
        >>> from backends.tiny import tiny_llama, word_tokenizer
        >>> tok = word_tokenizer(["a", "b"])
        >>> hf = HFPolicy(tiny_llama(tok, 16, 1, heads=2), tok, template=lambda c: "",
        ...               generation=GenerationSettings(max_new_tokens=1))
        >>> pi = EnumeratedPolicy(hf, context_free=True)
        >>> pi.outputs, round(float(pi.probabilities().sum()), 6)
        (('', 'a', 'b'), 1.0)
    """

    centres_contexts = False  # it hands every output of a context to the update

    def __init__(self, policy: HFPolicy, *, context_free: bool = False) -> None:
        if not isinstance(policy, HFPolicy):
            raise TypeError(f"policy must be a backends.hf.HFPolicy, got {short(policy)}")
        if not isinstance(context_free, bool):
            raise TypeError(f"context_free must be a bool, got {short(context_free)}")
        self.policy = policy
        self.context_free = context_free
        self.outputs = tuple(completion_space(policy))

    def probabilities(self, context: str = "") -> np.ndarray:
        """The exact :math:`\\pi(\\cdot\\mid c)` over :attr:`outputs` (normalised in float64)."""
        logp = self.policy.log_prob([context] * len(self.outputs), list(self.outputs))
        p = np.exp(logp - logp.max())
        return p / p.sum()

    # ------------------------------------------------------------------------ Policy protocol
    def sample(self, contexts: Sequence[str], num_samples: int, rng: np.random.Generator) -> Samples:
        """Each context's whole support with its probability (``num_samples`` and ``rng`` unused:
        the enumeration is exact). A context listed ``m`` times gets ``1/m`` of its mass each."""
        contexts = list(contexts)
        times = Counter(contexts)
        out_c: list[str] = []
        out_o: list[str] = []
        weights: list[np.ndarray] = []
        cache: dict[str, np.ndarray] = {}
        for c in contexts:
            if c not in cache:
                cache[c] = self.probabilities(c)
            out_c += [c] * len(self.outputs)
            out_o += self.outputs
            weights.append(cache[c] / times[c])
        return Samples(tuple(out_c), tuple(out_o), np.concatenate(weights))

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """The network's log-probabilities."""
        return self.policy.log_prob(contexts, outputs)

    def update(self, experience: Experience, step: MirrorStep) -> Mapping[str, float]:
        """The network's update on the rows, each weighted by its current probability too."""
        ctx = tuple("" for _ in experience.contexts) if self.context_free else tuple(
            experience.contexts
        )
        own = np.exp(self.policy.log_prob(list(ctx), list(experience.outputs)))
        weights = np.asarray(experience.weights, dtype=np.float64) * own
        return self.policy.update(
            Experience(ctx, tuple(experience.outputs), experience.utilities, weights), step
        )

    def snapshot(self) -> Any:
        """The network's snapshot."""
        return self.policy.snapshot()

    def restore(self, snapshot: Any) -> None:
        """Load a snapshot into the network."""
        self.policy.restore(snapshot)

    def save_snapshot(self, snapshot: Any, path: str) -> None:
        """Write a snapshot (see :meth:`backends.hf.HFPolicy.save_snapshot`)."""
        self.policy.save_snapshot(snapshot, path)

    def load_snapshot(self, path: str) -> Any:
        """Read a snapshot (see :meth:`backends.hf.HFPolicy.load_snapshot`)."""
        return self.policy.load_snapshot(path)

    def describe(self) -> str:
        """What defines this player (recorded with checkpoints)."""
        return f"EnumeratedPolicy({self.policy.describe()}, context_free={self.context_free})"


def iterate_probabilities(player: EnumeratedPolicy, snapshots: Sequence[Any],
                          context: str = "") -> list[np.ndarray]:
    """The exact distribution of each snapshot (e.g. a run's iterates); the player is put back."""
    current = player.snapshot()
    try:
        out = []
        for snap in snapshots:
            player.restore(snap)
            out.append(player.probabilities(context))
        return out
    finally:
        player.restore(current)


def lm_matrix_game_players(
    game: MatrixGame,
    *,
    seed: int = 0,
    hidden_size: int = 16,
    init_std: float = 0.3,
    **policy_kwargs: Any,
) -> tuple[EnumeratedPolicy, EnumeratedPolicy, TableReward]:
    """Two random tiny Llamas playing ``game`` exactly: defender = rows, adversary = columns.

    The defender's outputs are ``""`` (row 0), ``"r1"``, ..., ``"r{m-1}"``, written from a prompt
    that ignores the adversary's (a context-free player); the adversary's are ``""`` (column 0),
    ``"p1"``, ..., written from the empty context. The reward of ``(prompt of column j, response
    of row i)`` is ``A[i, j]``.

    Args:
        game: a single (unbatched) matrix game with at least 2 rows and 2 columns.
        seed: the defender's weights come from ``seed``, the adversary's from ``seed + 1``.
        hidden_size: model width (the models have one layer and two heads).
        init_std: initial weight scale (0.3 starts far from uniform).
        policy_kwargs: passed to both :class:`~backends.hf.HFPolicy` (``fit_tol``, ``objective``...).
    """
    from backends.tiny import tiny_llama, word_tokenizer  # noqa: PLC0415

    if not isinstance(game, MatrixGame) or game.batch_shape:
        raise TypeError(f"game must be a single (unbatched) gpo_core.MatrixGame, got {short(game)}")
    m, n = game.shape
    if m < 2 or n < 2:
        raise ValueError(f"game must have at least 2 rows and 2 columns, got shape {(m, n)}")
    players = []
    for k, (name, count, letter) in enumerate((("defender", m, "r"), ("adversary", n, "p"))):
        tok = word_tokenizer([f"{letter}{i}" for i in range(1, count)])
        model = tiny_llama(tok, hidden_size, 1, seed=seed + k, heads=2, init_std=init_std)
        hf = HFPolicy(model, tok, template=lambda c: "",
                      generation=GenerationSettings(max_new_tokens=1), name=name,
                      **policy_kwargs)
        players.append(EnumeratedPolicy(hf, context_free=True))
    defender, adversary = players
    table = {(p, r): float(game.payoff[i, j])
             for i, r in enumerate(defender.outputs) for j, p in enumerate(adversary.outputs)}
    return defender, adversary, TableReward(table)
