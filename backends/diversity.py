r"""GPO's diversity reward for the adversary, and the diversity metrics of a prompt set.

GPO's adversary is rewarded for prompts that are *new* relative to ``X``, the history of prompts
it generated before (GPO.md §4). Two similarities of a prompt ``x`` to ``X = (r_1, ..., r_m)``
enter, one lexical and one semantic; the diversity reward is their negation (higher = more novel):

* ``SelfBLEU(x; X) = (1/|G|) sum_{n in G} (1/m) sum_j BLEU_n(x; r_j)``, ``G = {2, 3, 4, 5}``
  (paper Eq. 3.4; :mod:`backends.selfbleu` has the formula);
* ``CosSim(x; X) = (1/m) sum_j cos(phi(x), phi(r_j))`` (released code), or the paper's Eq. 3.5
  ``sum_j phi(x).phi(r_j) / (|phi(x)|^2 |phi(r_j)|^2)`` (:mod:`backends.embedders`).

**Combined reward** (:class:`DiversityReward`):

* ``form="code"``: ``R_div = -(bleu_weight * SelfBLEU + embed_weight * CosSim)`` with the script's
  ``bleu_weight = 5``, ``embed_weight = 1`` (the code adds this to the adversary's ``P(unsafe)``);
* ``form="paper"``: ``R_div = (R_SelfBLEU + R_Emb) / 2`` with ``R_SelfBLEU = -SelfBLEU`` and
  ``R_Emb`` = minus the Eq. 3.5 sum (equal weights 1/2, as the reviews quote; the paper's
  ``beta_div`` multiplies it outside).

:class:`DiversityReward` keeps an incremental index of the history
(:mod:`backends.diversity_index`): the loop passes the growing history every round, and only its
new prompts are tokenised and embedded, so a call's cost does not grow with the run the way
re-scoring the whole history would (``benchmarks/bench_diversity.py`` measures it). The values
equal the plain functions' (:func:`self_bleu`, :func:`embedding_similarity`) to rounding.

**Logged metrics** (:func:`diversity_metrics`, as in the code's ``evaluate``), over a set ``S`` of
prompts *scored against itself, self-matches included*:
``diversity/one_minus_self_bleu = 1 - mean_i SelfBLEU(x_i; S)`` and
``diversity/embedding = 1 - mean_{i,j} cos(phi(x_i), phi(x_j)) / 2``; higher = more diverse.
``N`` mutually disjoint prompts of at least five words score ``1 - 1/N``, not 1.

Paper vs code, and where this package departs from the code:

1. Sum (paper) vs mean (code) over the history, and equal 1/2 weights (paper) vs 5/1 (code).
2. Smoothing: the code calls ``fast_bleu.BLEU([ref], weights)`` whose *default*
   ``smoothing_func=1`` is NLTK's ``method1`` (a zero count becomes ``0.1 / max(1, total)``).
   Here the default is ``smoothing="none"``; ``smoothing="epsilon"`` reproduces the code.
3. Tokens: the code uses ``nltk.word_tokenize`` (case-sensitive, Penn-style splits such as
   ``do|n't``); here the default is the lowercase regex ``\w+|[^\w\s]`` (:func:`tokenize`).
4. The code's history is the unbounded list of all earlier prompts with duplicates kept; the
   current batch is added *after* it is scored. Callers of :class:`DiversityReward` pass the history
   explicitly, so that order is theirs to keep.

Everything except :class:`MiniLMEmbedder` is torch-free. The public names of
:mod:`backends.selfbleu`, :mod:`backends.embedders` and :mod:`backends.diversity_index` are
importable from here too.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from backends._texts import _as_ngrams, _as_texts, _check_choice
from backends.diversity_index import EmbeddingIndex, SelfBLEUIndex, _history_list
from backends.embedders import HashingEmbedder, MiniLMEmbedder, embedding_similarity
from backends.selfbleu import _SMOOTHINGS, DEFAULT_NGRAMS, bleu, self_bleu, tokenize
from gpo_core._validate import check_nonnegative, short
from gpo_core.protocols import Embedder

__all__ = [
    "tokenize",
    "bleu",
    "self_bleu",
    "embedding_similarity",
    "DiversityReward",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "SelfBLEUIndex",
    "EmbeddingIndex",
    "diversity_metrics",
    "DEFAULT_NGRAMS",
    "METRIC_ONE_MINUS_SELF_BLEU",
    "METRIC_EMBEDDING",
]

METRIC_ONE_MINUS_SELF_BLEU = "diversity/one_minus_self_bleu"
METRIC_EMBEDDING = "diversity/embedding"
_FORMS = ("code", "paper")


@dataclasses.dataclass(frozen=True)
class DiversityReward:
    r"""GPO's diversity reward for the adversary (:class:`~gpo_core.protocols.Diversity`).

    * ``form="code"``: ``-(bleu_weight * SelfBLEU + embed_weight * CosSim_mean)``;
    * ``form="paper"``: ``(R_SelfBLEU + R_Emb) / 2 = -(SelfBLEU + sum_j phi.phi_j/(|phi|^2
      |phi_j|^2)) / 2`` (Eq. 3.4/3.5 as the reviews quote them); ``bleu_weight`` and
      ``embed_weight`` belong to the code form and must stay at their defaults here.

    Higher = more novel; 0 for an empty history. A weight of 0 skips its term (the embedder is
    then never loaded).

    Attributes:
        embedder: any :class:`~gpo_core.protocols.Embedder`; ``None`` loads
            :class:`MiniLMEmbedder` lazily on the first non-empty history.
        form: ``"code"`` or ``"paper"``.
        bleu_weight: weight of SelfBLEU in the code form (``>= 0``; script value 5).
        embed_weight: weight of the mean cosine in the code form (``>= 0``; script value 1).
        ngrams: the BLEU variants averaged by SelfBLEU.
        bleu_smoothing: ``"none"`` or ``"epsilon"`` (the code's ``fast_bleu`` default).

    Examples:
        >>> div = DiversityReward(embedder=HashingEmbedder(dim=64))
        >>> div(["the cat sat on the mat"], []).tolist()
        [0.0]
        >>> div(["the cat sat on the mat"], ["the cat sat on the mat"]).round(6).tolist()
        [-6.0]
        >>> DiversityReward(embedder=HashingEmbedder(dim=64), form="paper")(
        ...     ["the cat sat on the mat"], ["the cat sat on the mat"] * 2).round(6).tolist()
        [-1.5]
    """

    embedder: Embedder | None = None
    form: str = "code"
    bleu_weight: float = 5.0
    embed_weight: float = 1.0
    ngrams: tuple[int, ...] = DEFAULT_NGRAMS
    bleu_smoothing: str = "none"

    def __post_init__(self) -> None:
        _check_choice(self.form, "form", _FORMS)
        check_nonnegative(self.bleu_weight, "bleu_weight")
        check_nonnegative(self.embed_weight, "embed_weight")
        if self.form == "paper" and (self.bleu_weight != 5.0 or self.embed_weight != 1.0):
            raise ValueError(
                f"bleu_weight/embed_weight apply to form='code' only, got bleu_weight="
                f"{self.bleu_weight!r}, embed_weight={self.embed_weight!r} with form='paper'; "
                "the paper's form averages the two rewards with equal weights 1/2: scale it "
                "with the game's beta_div instead"
            )
        if not isinstance(self.ngrams, tuple):
            raise TypeError(f"ngrams must be a tuple of BLEU orders, got {short(self.ngrams)}")
        _as_ngrams(self.ngrams)
        _check_choice(self.bleu_smoothing, "bleu_smoothing", _SMOOTHINGS)
        if self.embedder is not None and not callable(getattr(self.embedder, "embed", None)):
            raise TypeError(
                f"embedder must implement gpo_core.protocols.Embedder (an .embed(texts) "
                f"method), got {short(self.embedder)}; pass None for MiniLM"
            )

    @functools.cached_property
    def _embedder(self) -> Embedder:
        return self.embedder if self.embedder is not None else MiniLMEmbedder()

    @functools.cached_property
    def _bleu_index(self) -> SelfBLEUIndex:
        return SelfBLEUIndex(self.ngrams, smoothing=self.bleu_smoothing)

    @functools.cached_property
    def _embed_index(self) -> EmbeddingIndex:
        return EmbeddingIndex(self._embedder)

    def _weights(self) -> tuple[float, float]:
        return (0.5, 0.5) if self.form == "paper" else (self.bleu_weight, self.embed_weight)

    def __call__(self, prompts: Sequence[str], history: Sequence[str]) -> np.ndarray:
        """Diversity reward of each prompt against ``history`` (higher = more novel).

        Pass the whole history each call: when it extends the previous call's history, only its
        new prompts are tokenised and embedded (:mod:`backends.diversity_index`); any other
        history is indexed afresh.

        Args:
            prompts: the ``N`` new prompts.
            history: the earlier prompts (not including ``prompts`` unless the caller adds them).

        Returns:
            Shape ``(N,)`` float64.

        Raises:
            TypeError: ``prompts``/``history`` is not a sequence of strings.
            ValueError: the embedder returned a bad array.
        """
        prompts = _as_texts(prompts, "prompts")
        history = _history_list(history)
        w_bleu, w_emb = self._weights()
        out = np.zeros(len(prompts), dtype=np.float64)
        if not prompts or not history:
            return out
        if w_bleu:
            out += w_bleu * self._bleu_index(prompts, history)
        if w_emb:
            reduce = "sum" if self.form == "paper" else "mean"
            out += w_emb * self._embed_index(prompts, history, reduce=reduce)
        return 0.0 - out  # (not -out: keeps +0.0 for a history with nothing in common)


def diversity_metrics(
    prompts: Sequence[str],
    embedder: Embedder | None = None,
    ngrams: Sequence[int] = DEFAULT_NGRAMS,
    *,
    smoothing: str = "none",
) -> dict[str, float]:
    r"""Diversity of a set of prompts, for logging (the released code's ``evaluate``).

    * ``"diversity/one_minus_self_bleu"``: ``1 - mean_i SelfBLEU(x_i; S)`` with the whole set
      ``S`` (``x_i`` included) as references (higher = more diverse);
    * ``"diversity/embedding"``: ``1 - mean_{i,j} cos(phi(x_i), phi(x_j)) / 2`` over all ordered
      pairs, ``i = j`` included; present only when an ``embedder`` is given.

    Both count self-matches, as the code does: a set of ``N`` mutually disjoint prompts of at least
    ``max(ngrams)`` words scores ``1 - 1/N`` on SelfBLEU, and ``N`` orthogonal embeddings score
    ``1 - 1/(2N)``. Compare values only across sets of the same size.

    Args:
        prompts: the set (at least one prompt).
        embedder: an :class:`~gpo_core.protocols.Embedder`, or ``None`` to skip the embedding
            metric.
        ngrams: BLEU variants for SelfBLEU.
        smoothing: ``"none"`` or ``"epsilon"``, see :func:`bleu`.

    Returns:
        ``{metric name: value}``.

    Raises:
        TypeError: ``prompts`` is not a sequence of strings.
        ValueError: ``prompts`` is empty; bad ``ngrams``/``smoothing``; bad embeddings.

    Examples:
        >>> m = diversity_metrics(["alpha beta gamma delta epsilon", "one two three four five"])
        >>> m
        {'diversity/one_minus_self_bleu': 0.5}
    """
    prompts = _as_texts(prompts, "prompts", allow_empty=False)
    bleu_self = self_bleu(prompts, prompts, ngrams, smoothing=smoothing)
    out = {METRIC_ONE_MINUS_SELF_BLEU: float(1.0 - bleu_self.mean())}
    if embedder is not None:
        out[METRIC_EMBEDDING] = float(
            1.0 - embedding_similarity(prompts, prompts, embedder, reduce="mean").mean() / 2.0
        )
    return out
