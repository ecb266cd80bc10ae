r"""Exact softmax-table policies: the LLM game loop in miniature, solvable exactly.

A :class:`TabularPolicy` holds logits over a finite set of outputs, either one table shared by
every context (an unconditional policy: the matrix-game player) or one table per context
(GPO's defender ``pi(y|x)``, which answers each prompt separately). Its :meth:`update` applies
the rule's closed form exactly, with the very function the core's rules use
(:func:`gpo_core.mirror_step`):

.. math:: \log\pi'(\cdot|c) = \frac{\log\pi_t + \eta\alpha\log\rho + \eta\,\bar u(\cdot|c)}{1+\eta\alpha} - \log Z,

where :math:`\bar u(o|c)` is the expected utility of output ``o``: in ``"enumerate"`` mode (the
policy returns its whole support with exact probabilities) it is the weighted mean of the
experience rows for ``o``, which is exact; in ``"sample"`` mode it is the importance-weighted
estimate :math:`\sum_{r: o_r = o} w_r u_r / (\pi(o|c) \sum_r w_r)`.

:func:`matrix_game_players` turns a :class:`gpo_core.MatrixGame` into a defender, an adversary
and a reward model: run through :func:`gpo_core.alignment.run_game` with simultaneous updates it
reproduces :func:`gpo_core.play` with the same rules to floating-point precision.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np

from gpo_core import MatrixGame, log_softmax, softmax
from gpo_core._io import atomic_path
from gpo_core._validate import as_real_array, check_positive_int, check_strategy, short
from gpo_core.protocols import Experience, MirrorStep, Samples
from gpo_core.simplex import safe_log

__all__ = ["TabularPolicy", "TableReward", "matrix_game_players"]


class TabularPolicy:
    """A softmax table over ``outputs``, shared by all contexts or one per context.

    Args:
        outputs: the finite output set (distinct strings).
        contexts: ``None`` for one table used for every context, or the finite context set.
        logits: initial logits, shape ``(n,)`` or ``(len(contexts), n)``; uniform if ``None``.
        reference: the magnet ``rho`` of KL-regularised steps (probabilities); the initial policy
            if ``None``.
        mode: ``"enumerate"`` (sample returns the support with exact probabilities) or
            ``"sample"`` (draws outputs at random).

    Examples:
        >>> import numpy as np
        >>> from gpo_core.protocols import Experience, MirrorStep
        >>> pi = TabularPolicy(["a", "b"])
        >>> _ = pi.update(Experience(("",) * 2, ("a", "b"), np.array([1.0, 0.0]), np.ones(2)),
        ...               MirrorStep(eta=float(np.log(3.0))))
        >>> pi.probabilities().round(6).tolist()
        [0.75, 0.25]
    """

    def __init__(
        self,
        outputs: Sequence[str],
        contexts: Sequence[str] | None = None,
        logits: Any = None,
        reference: Any = None,
        mode: Literal["enumerate", "sample"] = "enumerate",
    ) -> None:
        if isinstance(outputs, str) or not outputs:
            raise ValueError(f"outputs must be a non-empty sequence of strings, got {short(outputs)}")
        self.outputs = tuple(outputs)
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError("outputs must be distinct strings")
        self.contexts = None if contexts is None else tuple(contexts)
        if self.contexts is not None and (not self.contexts or len(set(self.contexts)) != len(self.contexts)):
            raise ValueError("contexts must be None or a non-empty sequence of distinct strings")
        if mode not in ("enumerate", "sample"):
            raise ValueError(f"mode must be 'enumerate' or 'sample', got {mode!r}")
        self.mode = mode
        n = len(self.outputs)
        shape = (n,) if self.contexts is None else (len(self.contexts), n)
        if logits is None:
            z = np.zeros(shape)
        else:
            z = as_real_array(logits, "logits")
            if z.shape != shape:
                raise ValueError(f"logits must have shape {shape}, got {z.shape}")
        self.logits = log_softmax(z)
        if reference is None:
            self.log_reference = self.logits.copy()
        else:
            self.log_reference = safe_log(np.broadcast_to(check_strategy(reference, "reference", n), shape))
        self._out_index = {o: i for i, o in enumerate(self.outputs)}
        self._ctx_index = None if self.contexts is None else {c: i for i, c in enumerate(self.contexts)}

    def __repr__(self) -> str:
        ctx = "shared" if self.contexts is None else f"{len(self.contexts)} contexts"
        return f"TabularPolicy({len(self.outputs)} outputs, {ctx}, mode={self.mode!r})"

    # ------------------------------------------------------------------ helpers
    def _row(self, context: str) -> int | None:
        if self._ctx_index is None:
            return None
        try:
            return self._ctx_index[context]
        except KeyError:
            raise ValueError(f"context {short(context, 60)} is not one of this policy's contexts") from None

    def _logits_for(self, context: str) -> np.ndarray:
        row = self._row(context)
        return self.logits if row is None else self.logits[row]

    def probabilities(self, context: str = "") -> np.ndarray:
        """The current distribution over ``outputs`` for ``context``."""
        return softmax(self._logits_for(context))

    # ------------------------------------------------------------------ Policy protocol
    def sample(self, contexts: Sequence[str], num_samples: int, rng: np.random.Generator) -> Samples:
        """Enumerate the support (exact probabilities) or draw ``num_samples`` per context."""
        num_samples = check_positive_int(num_samples, "num_samples")
        ctx_out: list[str] = []
        out: list[str] = []
        weights: list[np.ndarray] = []
        for c in contexts:
            p = self.probabilities(c)
            if self.mode == "enumerate":
                ctx_out += [c] * len(self.outputs)
                out += self.outputs
                weights.append(p)
            else:
                draws = rng.choice(len(self.outputs), size=num_samples, p=p)
                ctx_out += [c] * num_samples
                out += [self.outputs[i] for i in draws]
                weights.append(np.full(num_samples, 1.0 / num_samples))
        w = np.concatenate(weights) if weights else np.zeros(0)
        return Samples(tuple(ctx_out), tuple(out), w)

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """``log pi(output | context)`` per row."""
        if len(contexts) != len(outputs):
            raise ValueError(f"contexts ({len(contexts)}) and outputs ({len(outputs)}) must have equal length")
        return np.array([self._logits_for(c)[self._index(o)] for c, o in zip(contexts, outputs)])

    def _index(self, output: str) -> int:
        try:
            return self._out_index[output]
        except KeyError:
            raise ValueError(f"output {short(output, 60)} is not one of this policy's outputs") from None

    def update(self, experience: Experience, step: MirrorStep) -> Mapping[str, float]:
        """Apply ``step``'s closed form exactly, per context table, on the expected utilities."""
        if not isinstance(step, MirrorStep):
            raise TypeError(f"step must be a gpo_core.protocols.MirrorStep, got {short(step)}")
        n_rows = len(experience.outputs)
        u_rows = np.asarray(experience.utilities, dtype=np.float64)
        w_rows = np.asarray(experience.weights, dtype=np.float64)
        if not (len(experience.contexts) == n_rows == u_rows.shape[0] == w_rows.shape[0]):
            raise ValueError(
                "experience fields must have equal lengths, got contexts "
                f"{len(experience.contexts)}, outputs {n_rows}, utilities {u_rows.shape[0]}, "
                f"weights {w_rows.shape[0]}"
            )
        n = len(self.outputs)
        groups: dict[int | None, tuple[np.ndarray, np.ndarray, float]] = {}
        for c, o, u, w in zip(experience.contexts, experience.outputs, u_rows, w_rows):
            row = self._row(c)
            num, den, tot = groups.get(row, (np.zeros(n), np.zeros(n), 0.0))
            i = self._index(o)
            num[i] += w * u
            den[i] += w
            groups[row] = (num, den, tot + w)
        old = self.logits.copy()
        new = self.logits.copy()
        for row, (num, den, tot) in groups.items():
            z = self.logits if row is None else self.logits[row]
            ref = self.log_reference if row is None else self.log_reference[row]
            if self.mode == "enumerate":
                if np.any(den <= 0):
                    missing = [self.outputs[i] for i in np.flatnonzero(den <= 0)][:3]
                    raise ValueError(
                        f"experience has no weighted row for outputs {missing} of an enumerating "
                        "policy; pass the whole support (mode='enumerate') or use mode='sample'"
                    )
                u = num / den
            else:
                # importance-weighted E[u | o]; an output never drawn has num = 0 and gets 0, also
                # where its probability underflowed to 0 (0/0 would turn every logit into NaN)
                u = np.divide(num, max(tot, 1e-300) * softmax(z), out=np.zeros(n), where=num != 0)
            target = step.target(z, u, ref)
            if not np.all(np.isfinite(target)):
                raise FloatingPointError(
                    f"TabularPolicy update: the target logits are not finite (max |u| = "
                    f"{float(np.max(np.abs(u))):.3g} after importance weighting an output of "
                    "probability near 0); use mode='enumerate', a smaller eta, or alpha > 0"
                )
            if row is None:
                new = target
            else:
                new[row] = target
        self.logits = new
        p_new = softmax(new)
        kl_prev = float(np.mean(np.sum(p_new * (new - old), axis=-1)))
        kl_ref = float(np.mean(np.sum(p_new * (new - self.log_reference), axis=-1)))
        return {"kl/previous": kl_prev, "kl/reference": kl_ref}

    def describe(self) -> str:
        """What defines this policy (recorded with checkpoints): its outputs, contexts and mode."""
        return (f"TabularPolicy(outputs={list(self.outputs)}, contexts="
                f"{None if self.contexts is None else list(self.contexts)}, mode={self.mode!r})")

    def snapshot(self) -> np.ndarray:
        """A copy of the logits."""
        return self.logits.copy()

    def restore(self, snapshot: Any) -> None:
        """Load logits from a snapshot."""
        z = as_real_array(snapshot, "snapshot")
        if z.shape != self.logits.shape:
            raise ValueError(f"snapshot must have shape {self.logits.shape}, got {z.shape}")
        if not np.all(np.isfinite(z) | (z == -np.inf)) or np.any(np.all(z == -np.inf, axis=-1)):
            raise ValueError(
                "snapshot must hold finite logits (or -inf for outputs of probability 0, not all "
                f"of a row), got {short(z.tolist())}"
            )
        # Logits that are already normalised (every snapshot() is) are kept bit for bit, so a
        # resumed run equals an uninterrupted one; others are normalised.
        norm = log_softmax(z)
        self.logits = z.copy() if np.all(np.abs(norm - z)[np.isfinite(z)] <= 1e-12) else norm

    # ------------------------------------------------------------------ Persistent protocol
    def save_snapshot(self, snapshot: Any, path: str) -> None:
        """Write ``snapshot`` as ``.npy`` to exactly ``path``, atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(snapshot, dtype=np.float64), allow_pickle=False)

    def load_snapshot(self, path: str) -> np.ndarray:
        """Read a snapshot written by :meth:`save_snapshot`."""
        with open(path, "rb") as fh:
            return np.load(fh, allow_pickle=False)


class TableReward:
    """Reward looked up in a table ``r(prompt, response)``."""

    def __init__(self, table: Mapping[tuple[str, str], float]) -> None:
        if not table:
            raise ValueError("table must map at least one (prompt, response) pair to a reward")
        self.table = dict(table)

    def describe(self) -> str:
        """What defines this reward (recorded with checkpoints): a hash of its table."""
        import hashlib  # noqa: PLC0415

        text = repr(sorted(self.table.items())).encode("utf-8")
        return f"TableReward({len(self.table)} pairs, blake2b {hashlib.blake2b(text, digest_size=8).hexdigest()})"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Look up each pair; unknown pairs raise ``ValueError``."""
        out = np.empty(len(prompts))
        for i, pair in enumerate(zip(prompts, responses)):
            if pair not in self.table:
                raise ValueError(f"no reward for the pair {short(pair, 80)} in this TableReward")
            out[i] = self.table[pair]
        return out


def matrix_game_players(
    game: MatrixGame, *, mode: Literal["enumerate", "sample"] = "enumerate"
) -> tuple[TabularPolicy, TabularPolicy, TableReward]:
    """A defender (rows), adversary (columns) and reward ``A[i, j]`` for a single matrix game.

    The defender's outputs are ``"r0".."r{m-1}"`` and ignore the prompt (one shared table), the
    adversary's are ``"p0".."p{n-1}"`` written from an empty context; reward = ``A[i, j]``.
    """
    if not isinstance(game, MatrixGame) or game.batch_shape:
        raise TypeError(f"game must be a single (unbatched) gpo_core.MatrixGame, got {short(game)}")
    m, n = game.shape
    responses = [f"r{i}" for i in range(m)]
    prompts = [f"p{j}" for j in range(n)]
    table = {(prompts[j], responses[i]): float(game.payoff[i, j]) for i in range(m) for j in range(n)}
    return TabularPolicy(responses, mode=mode), TabularPolicy(prompts, mode=mode), TableReward(table)
