r"""BLEU and SelfBLEU over word tokens: the lexical half of GPO's diversity reward.

With single-reference BLEU over word tokens

.. math::

    \mathrm{BLEU}_n(h; r) = \mathrm{BP}(|h|, |r|)\,
        \exp\Big(\sum_{k=1}^{n} \tfrac1n \log p_k\Big),\qquad
    p_k = \frac{\sum_g \min(c_h(g), c_r(g))}{\max(1, \sum_g c_h(g))}

(``g`` ranges over the k-grams of ``h``, ``c`` counts them; ``BP = 1`` if ``|h| > |r|``, ``0`` if
``|h| = 0``, else ``exp(1 - |r|/|h|)``; without smoothing ``BLEU_n = 0`` as soon as one
``p_k = 0``), the SelfBLEU of a prompt against the history ``X = (r_1, ..., r_m)`` is

.. math::

    \mathrm{SelfBLEU}(x; X) = \frac{1}{|G|}\sum_{n \in G}\ \frac1m \sum_{j=1}^{m}
        \mathrm{BLEU}_n(x; r_j),\qquad G = \{2, 3, 4, 5\},

and ``0`` for an empty history (paper Eq. 3.4; the released code's ``fast_bleu`` call with
``weights = {n: (1/n,)*n for n in grams}``). ``BLEU_n`` already averages the orders ``1..n``, so
``G`` is a set of BLEU *variants* averaged on top.

:func:`self_bleu` is the plain computation: it tokenises and counts every history prompt on
every call, so its cost is ``O(N m)`` Python work for ``N`` prompts against ``m`` history prompts.
It is the reference that :class:`backends.diversity_index.SelfBLEUIndex` (the incremental index
the game loop uses) is tested against.

Departures from the released code: smoothing is off by default (``smoothing="epsilon"`` is the
code's ``fast_bleu`` default, NLTK's ``method1``), and tokens come from the lowercase regex
``\w+|[^\w\s]`` (:func:`tokenize`) instead of ``nltk.word_tokenize``.
"""

from __future__ import annotations

import collections
import math
import re
from typing import Callable, Sequence

import numpy as np

from backends._texts import _as_ngrams, _as_texts, _check_choice
from gpo_core._validate import check_positive_int, short

__all__ = ["tokenize", "bleu", "self_bleu", "DEFAULT_NGRAMS"]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SMOOTHINGS = ("none", "epsilon")
_EPSILON = 0.1  # NLTK method1 / fast_bleu smoothing_func=1
DEFAULT_NGRAMS = (2, 3, 4, 5)


def tokenize(text: str) -> list[str]:
    r"""Lowercase word tokens: runs of word characters, and single punctuation marks.

    The pattern is ``\w+|[^\w\s]`` on ``text.lower()``.

    Args:
        text: any string.

    Returns:
        The tokens, in order.

    Raises:
        TypeError: ``text`` is not a ``str``.

    Examples:
        >>> tokenize("How do I pick a lock? Don't!")
        ['how', 'do', 'i', 'pick', 'a', 'lock', '?', 'don', "'", 't', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__} {short(text)}")
    return _TOKEN_RE.findall(text.lower())


def _ngram_counts(tokens: Sequence[str], max_n: int) -> list[collections.Counter]:
    """``out[k-1]`` counts the k-grams of ``tokens`` for ``k = 1..max_n``."""
    toks = tuple(tokens)
    return [
        collections.Counter(toks[i : i + k] for i in range(len(toks) - k + 1))
        for k in range(1, max_n + 1)
    ]


def _bleu_from_counts(
    hyp: list[collections.Counter],
    hyp_len: int,
    ref: list[collections.Counter],
    ref_len: int,
    orders: Sequence[int],
    smoothing: str,
) -> list[float]:
    """``[BLEU_n(h; r) for n in orders]`` from precomputed k-gram counts (``k <= max(orders)``)."""
    if hyp_len == 0:
        return [0.0] * len(orders)  # brevity penalty 0
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    max_n = max(orders)
    # cumulative sum of log p_k; -inf once a k-gram precision is 0 and unsmoothed
    cum = [0.0]
    for k in range(max_n):
        h_k, r_k = hyp[k], ref[k]
        total = max(1, sum(h_k.values()))
        matched = sum(min(c, r_k[g]) for g, c in h_k.items() if g in r_k)
        if matched == 0:
            if k == 0 or smoothing == "none":
                cum.extend([-math.inf] * (max_n - k))
                break
            log_p = math.log(_EPSILON / total)
        else:
            log_p = math.log(matched / total)
        cum.append(cum[-1] + log_p)
    return [0.0 if cum[n] == -math.inf else bp * math.exp(cum[n] / n) for n in orders]


def bleu(
    hypothesis: Sequence[str],
    reference: Sequence[str],
    n: int = 4,
    *,
    smoothing: str = "none",
) -> float:
    r"""Single-reference sentence BLEU with uniform weights ``1/n`` over the orders ``1..n``.

    .. math::
        \mathrm{BLEU}_n = \mathrm{BP}\,\exp\Big(\tfrac1n\sum_{k=1}^{n}\log p_k\Big)

    with clipped k-gram precisions ``p_k`` (denominator ``max(1, #k-grams of h)``) and the standard
    brevity penalty. Matches ``nltk.translate.bleu_score.sentence_bleu(..., weights=(1/n,)*n)``
    and ``fast_bleu`` for one reference; with ``smoothing="none"`` a zero precision gives exactly 0
    (NLTK returns a vanishingly small positive number and warns), so identical sentences shorter
    than ``n`` tokens score 0.

    Args:
        hypothesis: tokens of the candidate (e.g. from :func:`tokenize`).
        reference: tokens of the single reference.
        n: the highest n-gram order (``>= 1``).
        smoothing: ``"none"``, or ``"epsilon"`` (NLTK ``method1`` = ``fast_bleu``'s default
            ``smoothing_func=1``: a zero count becomes ``0.1``; a zero *unigram* precision
            still gives 0), which is what GPO's released code computes.

    Returns:
        BLEU in ``[0, 1]``.

    Raises:
        TypeError: a token sequence is a bare string or holds non-strings; ``n`` is not an int.
        ValueError: ``n < 1`` or ``smoothing`` unknown.

    Examples:
        >>> h = tokenize("the cat sat on the mat"); r = tokenize("the cat is on the mat")
        >>> round(bleu(h, r, n=2), 6)  # sqrt(5/6 * 3/5)
        0.707107
        >>> bleu(h, h, n=4), bleu(h, tokenize("dogs bark"), n=4)
        (1.0, 0.0)
    """
    hyp = _as_texts(hypothesis, "hypothesis")
    ref = _as_texts(reference, "reference")
    n = check_positive_int(n, "n")
    smoothing = _check_choice(smoothing, "smoothing", _SMOOTHINGS)
    return _bleu_from_counts(
        _ngram_counts(hyp, n), len(hyp), _ngram_counts(ref, n), len(ref), (n,), smoothing
    )[0]


def _tokenizer_or_default(tokenizer: Callable[[str], Sequence[str]] | None) -> Callable:
    if tokenizer is None:
        return tokenize
    if not callable(tokenizer):
        raise TypeError(
            f"tokenizer must be a callable str -> list of str tokens (or None for the default "
            f"lowercase regex), got {short(tokenizer)}"
        )
    return tokenizer


def _tokens(tokenizer: Callable, text: str, name: str) -> list[str]:
    out = tokenizer(text)
    return _as_texts(out, f"tokenizer output for {name}")


def self_bleu(
    prompts: Sequence[str],
    history: Sequence[str],
    ngrams: Sequence[int] = DEFAULT_NGRAMS,
    *,
    smoothing: str = "none",
    tokenizer: Callable[[str], Sequence[str]] | None = None,
) -> np.ndarray:
    r"""SelfBLEU of each prompt against the history: ``mean_n mean_j BLEU_n(prompt; history_j)``.

    Each prompt is scored against the ``history`` only (not against the other prompts of the
    batch). Duplicates in ``history`` count once per copy, as in the released code.

    Args:
        prompts: the ``N`` new prompts.
        history: the ``m`` earlier prompts (may be empty: every score is then 0).
        ngrams: the BLEU variants ``n`` to average (each ``BLEU_n`` weights orders ``1..n``
            by ``1/n``); the code's ``(2, 3, 4, 5)`` by default.
        smoothing: ``"none"`` (default) or ``"epsilon"`` (the code's ``fast_bleu`` default); see
            :func:`bleu`.
        tokenizer: ``str -> list[str]``; :func:`tokenize` (lowercase regex) by default.

    Returns:
        Shape ``(N,)`` float64 in ``[0, 1]``; higher = more similar to the history.

    Raises:
        TypeError: ``prompts``/``history`` is not a sequence of strings, or a bad ``tokenizer``.
        ValueError: ``ngrams`` is empty or holds an order ``< 1``; ``smoothing`` unknown.

    Examples:
        >>> self_bleu(["the cat sat on the mat"],
        ...           ["the cat sat on the mat", "dogs bark loudly at night"]).round(6)
        array([0.5])
        >>> self_bleu(["anything"], [])
        array([0.])
    """
    prompts = _as_texts(prompts, "prompts")
    history = _as_texts(history, "history")
    orders = _as_ngrams(ngrams)
    smoothing = _check_choice(smoothing, "smoothing", _SMOOTHINGS)
    tok = _tokenizer_or_default(tokenizer)
    out = np.zeros(len(prompts), dtype=np.float64)
    if not prompts or not history:
        return out
    max_n = max(orders)
    refs = []
    for j, text in enumerate(history):
        toks = _tokens(tok, text, f"history[{j}]")
        refs.append((_ngram_counts(toks, max_n), len(toks), frozenset(toks)))
    for i, text in enumerate(prompts):
        toks = _tokens(tok, text, f"prompts[{i}]")
        hyp = _ngram_counts(toks, max_n)
        vocab = frozenset(toks)
        total = 0.0
        for ref_counts, ref_len, ref_vocab in refs:
            if vocab.isdisjoint(ref_vocab):
                continue  # unigram precision 0 => every BLEU_n is 0, smoothed or not
            total += sum(_bleu_from_counts(hyp, len(toks), ref_counts, ref_len, orders, smoothing))
        out[i] = total / (len(refs) * len(orders))
    return out
