r"""Incremental diversity against a growing prompt history: the embedding index, and the
SelfBLEU index of :mod:`backends.selfbleu_index` re-exported.

The game loop scores each batch of ``N`` new prompts against the history of all earlier prompts,
and the history grows by a batch every round. :func:`backends.embedders.embedding_similarity`
embeds the whole history on every call (``m`` embeddings at history size ``m``), so a run's
total is quadratic in its length. Both similarities are linear in the history vectors:

.. math::

    \frac1m\sum_j \cos(p, h_j) = \frac{p}{|p|}\cdot\frac1m\sum_j \frac{h_j}{|h_j|},\qquad
    \sum_j \frac{p\cdot h_j}{|p|^2|h_j|^2} = \frac{p}{|p|^2}\cdot\sum_j \frac{h_j}{|h_j|^2},

so :class:`EmbeddingIndex` keeps the two running sums (``2d`` floats). A call embeds its ``N``
prompts and the new history prompts and costs ``O((N + new) d)`` plus the prefix check (``O(m)``
pointer comparisons in C), whatever ``m``; the mean over the history runs in another order than
the plain function's, so results agree to rounding. It assumes a deterministic embedder (a text
always maps to the same vector; :class:`~backends.embedders.MiniLMEmbedder` batches can differ in
float32's last bits, as the plain function's calls do). Not thread-safe.

**Prefix detection** (shared with :class:`SelfBLEUIndex`): an index keeps the list of texts it
indexed. A history at least that long whose item at the last indexed position equals it (the
cheap first test) and whose prefix equals the list (one C-level list comparison; identical
``str`` objects compare by identity) is an extension, and only its tail is processed. Any other
history rebuilds the index, at about the plain function's cost.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from backends._texts import _as_texts, _check_choice, _history_list, _Prefix
from backends.embedders import _REDUCES, _checked_embeddings
from backends.selfbleu_index import SelfBLEUIndex
from gpo_core._validate import short

__all__ = ["SelfBLEUIndex", "EmbeddingIndex"]


class EmbeddingIndex:
    """Embedding similarity against a growing history, equal to
    :func:`~backends.embedders.embedding_similarity` (both ``reduce`` forms).

    Keeps the running sums ``sum_j h_j/|h_j|`` and ``sum_j h_j/|h_j|^2`` (module docstring):
    each history prompt is embedded once.

    Args:
        embedder: any deterministic :class:`~gpo_core.protocols.Embedder`.

    Raises:
        TypeError: ``embedder`` has no ``embed`` method.

    Examples:
        >>> from backends.embedders import HashingEmbedder
        >>> index = EmbeddingIndex(HashingEmbedder(dim=64))
        >>> index(["a b c"], ["a b c", "a b c"]).round(6), index.indexed
        (array([1.]), 2)
        >>> index(["a b c"], ["a b c", "a b c", "a b c"], reduce="sum").round(6), index.indexed
        (array([3.]), 3)
    """

    def __init__(self, embedder: Any) -> None:
        if not callable(getattr(embedder, "embed", None)):
            raise TypeError(
                f"embedder must implement gpo_core.protocols.Embedder (an .embed(texts) method "
                f"returning an (N, d) array), got {short(embedder)}"
            )
        self.embedder = embedder
        self._prefix = _Prefix()
        self._sums: tuple[np.ndarray, np.ndarray] | None = None  # (sum h/|h|, sum h/|h|^2)

    def __repr__(self) -> str:
        return f"EmbeddingIndex({short(self.embedder)}, indexed={self.indexed})"

    @property
    def indexed(self) -> int:
        """How many history prompts the running sums hold (duplicates counted)."""
        return len(self._prefix.texts)

    def __call__(
        self, prompts: Sequence[str], history: Sequence[str], reduce: str = "mean"
    ) -> np.ndarray:
        """Similarity of each prompt to ``history``, embedding only what is new in it.

        Args:
            prompts: the ``N`` new prompts.
            history: all earlier prompts.
            reduce: ``"mean"`` (mean cosine, the code) or ``"sum"`` (paper Eq. 3.5).

        Returns:
            Shape ``(N,)`` float64; higher = more similar.

        Raises:
            TypeError: bad texts. ValueError: unknown ``reduce``; the embedder returned a wrong
            shape, a non-finite value, a zero vector or a dimension unlike earlier calls'.
        """
        prompts = _as_texts(prompts, "prompts")
        reduce = _check_choice(reduce, "reduce", _REDUCES)
        hist = _history_list(history)
        if not prompts or not hist:
            return np.zeros(len(prompts), dtype=np.float64)
        new, start = self._prefix.new_part(hist)
        p = _checked_embeddings(self.embedder, prompts, "prompts")
        sums = None if start == 0 else self._sums
        if new:
            h = _checked_embeddings(self.embedder, new, "history", start)
            if sums is not None and h.shape[1] != sums[0].size:
                raise ValueError(
                    f"embedder {short(self.embedder)} returned {h.shape[1]}-d vectors for "
                    f"history[{start}:] but {sums[0].size}-d for the history before; it must "
                    "use one dimension"
                )
            sq = np.einsum("ij,ij->i", h, h)
            add = ((h / np.sqrt(sq)[:, None]).sum(axis=0), (h / sq[:, None]).sum(axis=0))
            sums = add if sums is None else (sums[0] + add[0], sums[1] + add[1])
            self._sums = sums
            self._prefix.commit(new, start)
        assert sums is not None  # a non-empty history was embedded now or before
        if p.shape[1] != sums[0].size:
            raise ValueError(
                f"embedder {short(self.embedder)} returned {p.shape[1]}-d vectors for the "
                f"prompts but {sums[0].size}-d for the history; it must use one dimension"
            )
        sq_p = np.einsum("ij,ij->i", p, p)
        if reduce == "mean":
            return (p @ sums[0]) / np.sqrt(sq_p) / len(hist)
        return (p @ sums[1]) / sq_p
