r"""Incremental SelfBLEU against a prompt history that only grows.

The game loop scores each batch of ``N`` new prompts against the history of all earlier prompts,
and the history grows by a batch every round. :func:`backends.selfbleu.self_bleu` tokenises and
counts the whole history on every call: ``O(m)`` Python work per call at history size ``m``, so a
run's total is quadratic in its length. :class:`SelfBLEUIndex` keeps what the history contributes
and, when a call's history extends the one it has indexed, processes only the new tail.

**What is kept.** BLEU is not linear in the reference (clipped counts, the
brevity penalty, a geometric mean), so the mean over references cannot fold into one sum; what is
kept is each *distinct* reference's n-gram counts (with its multiplicity) as rows of sparse 0/1
matrices, one per count level, ``R_t[j, g] = [c_{r_j}(g) >= t]`` for the k-grams ``g`` of orders
``1..max(ngrams)``. Since ``min(a, b) = sum_{t >= 1} [a >= t][b >= t]``, the clipped matches of
every (reference, prompt, order) are exact integers

.. math::

    M = \sum_t R_t Q_t,\qquad Q_t[g, (k, i)] = [c_{x_i}(g) \ge t],

one sparse product per level up to the prompts' largest n-gram count. ``BLEU_n(x; r) > 0`` needs
a shared n-gram of order ``k0 = min(ngrams)`` (of order 1 with ``smoothing="epsilon"``), so the
BLEU formula runs, vectorised, on those pairs only.

**Cost of a call** (``L`` tokens per prompt, ``K = max(ngrams)``): Python work ``O((N + new) L K)``
(tokenise and count the prompts and the new history prompts; nothing per old history prompt), and
C/numpy work ``O(m)`` pointer comparisons for the prefix check below, ``O(nnz R)`` for the sparse
product and ``O(P K)`` for the ``P <= N m_distinct`` pairs sharing an order-``k0`` n-gram.
Memory: ``O(distinct n-grams)`` (about 100 bytes each in the id dictionary, 4 per matrix entry).
``benchmarks/bench_diversity.py`` measures a call at 1,000 to 16,000 history prompts.

**Prefix detection** (:mod:`backends.diversity_index` says how): a history that extends the
indexed one adds only its tail; any other history rebuilds the index, at about the plain
function's cost.

**Equality with the plain function.** Match counts are exact integers and each pair runs the
same float operations in the same order as :func:`backends.selfbleu.self_bleu` (numpy's
``log``/``exp`` may differ from ``math``'s in the last bit); sums over the history run in
another order. Results agree to rounding (tests: ``1e-12``). The tokenizer must be deterministic
(a text always maps to the same tokens). Not thread-safe.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from backends._texts import _as_ngrams, _as_texts, _check_choice, _history_list, _Prefix
from backends.selfbleu import (
    _EPSILON,
    _SMOOTHINGS,
    DEFAULT_NGRAMS,
    _tokenizer_or_default,
    _tokens,
)

__all__ = ["SelfBLEUIndex"]

_INT32_MAX = np.iinfo(np.int32).max
_CHUNK_CELLS = 1 << 22  # dense match cells per block of references (16 MiB of int32)


class _Grow:
    """A 1-d numpy array that grows by appending (capacity doubling)."""

    def __init__(self, dtype: Any, first: Sequence[int] = ()) -> None:
        self.buf = np.zeros(16, dtype=dtype)
        self.n = 0
        self.extend(first)

    def extend(self, values: Any) -> None:
        values = np.asarray(values, dtype=self.buf.dtype)
        need = self.n + values.size
        if need > self.buf.size:
            bigger = np.zeros(max(need, 2 * self.buf.size), dtype=self.buf.dtype)
            bigger[: self.n] = self.buf[: self.n]
            self.buf = bigger
        self.buf[self.n : need] = values
        self.n = need

    @property
    def view(self) -> np.ndarray:
        return self.buf[: self.n]


class SelfBLEUIndex:
    """SelfBLEU against a growing history, equal to :func:`~backends.selfbleu.self_bleu`.

    Call it as ``index(prompts, history)`` each round with the whole history; see the module
    docstring for what it keeps and what a call costs.

    Args:
        ngrams: the BLEU variants averaged (the code's ``(2, 3, 4, 5)`` by default).
        smoothing: ``"none"`` or ``"epsilon"`` (see :func:`~backends.selfbleu.bleu`).
        tokenizer: ``str -> list[str]`` (deterministic); the lowercase regex by default.

    Raises:
        TypeError, ValueError: bad ``ngrams``, ``smoothing`` or ``tokenizer``.

    Examples:
        >>> index = SelfBLEUIndex()
        >>> history = ["the cat sat on the mat", "dogs bark loudly at night"]
        >>> index(["the cat sat on the mat"], history).round(6)
        array([0.5])
        >>> history.append("the cat sat on the mat")  # an extension: one new prompt indexed
        >>> index(["the cat sat on the mat"], history).round(6), index.indexed
        (array([0.666667]), 3)
    """

    def __init__(
        self,
        ngrams: Sequence[int] = DEFAULT_NGRAMS,
        *,
        smoothing: str = "none",
        tokenizer: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.orders = _as_ngrams(ngrams)
        self.smoothing = _check_choice(smoothing, "smoothing", _SMOOTHINGS)
        self._tok = _tokenizer_or_default(tokenizer)
        self._max_n = max(self.orders)
        self._k0 = 1 if self.smoothing == "epsilon" else min(self.orders)
        self._prefix = _Prefix()
        self._reset()

    def __repr__(self) -> str:
        return f"SelfBLEUIndex(ngrams={self.orders}, smoothing={self.smoothing!r}, indexed={self.indexed})"

    @property
    def indexed(self) -> int:
        """How many history prompts the index holds (duplicates counted)."""
        return len(self._prefix.texts)

    def _reset(self) -> None:
        self._words: dict[str, int] = {}  # token -> word id
        self._grams: dict[int, int] = {}  # ((prefix column + 1) << 32) | word id -> column
        self._rows: dict[tuple[int, ...], int] = {}  # a distinct reference's word ids -> row
        self._mult = _Grow(np.int64)  # copies of each distinct reference in the history
        self._ref_len = _Grow(np.int64)
        self._levels: list[tuple[_Grow, _Grow]] = []  # (indices, indptr) of R_1, R_2, ...
        self._ones = np.ones(0, dtype=np.int32)

    def _columns(self, word_ids: list[int], create: bool) -> list[list[int]]:
        """Column ids of the k-grams of one text for ``k = 1..K`` (-1: a k-gram never indexed)."""
        grams, out = self._grams, []
        prev = [-1] * len(word_ids)  # the (k-1)-gram's column at each start (-1 before k = 1)
        for k in range(1, self._max_n + 1):
            cur = []
            for i in range(len(word_ids) - k + 1):
                w = word_ids[i + k - 1]
                if w < 0 or (k > 1 and prev[i] < 0):
                    cur.append(-1)
                    continue
                key = ((prev[i] + 1) << 32) | w
                col = grams.get(key, -1)
                if col < 0 and create:
                    col = grams[key] = len(grams)
                cur.append(col)
            out.append(cur)
            prev = cur
        return out

    def _add(self, texts: list[str], start: int) -> None:
        """Index ``texts`` (history positions ``start, start + 1, ...``)."""
        words, rows = self._words, self._rows
        seen, new_rows, new_cols, new_lens = [], [], [], []
        row0 = len(rows)
        for j, text in enumerate(texts):
            toks = _tokens(self._tok, text, f"history[{start + j}]")
            wids = [words.setdefault(t, len(words)) for t in toks]
            key = tuple(wids)
            row = rows.get(key)
            if row is None:
                row = rows[key] = len(rows)
                cols = [c for per_k in self._columns(wids, create=True) for c in per_k]
                new_rows.append(np.full(len(cols), row - row0, dtype=np.int64))
                new_cols.append(np.asarray(cols, dtype=np.int64))
                new_lens.append(len(toks))
            seen.append(row)
        n_new = len(rows) - row0
        self._ref_len.extend(new_lens)
        self._mult.extend(np.zeros(n_new, dtype=np.int64))
        np.add.at(self._mult.buf, np.asarray(seen, dtype=np.int64), 1)
        if not n_new:
            return
        n_cols = max(1, len(self._grams))
        code = np.concatenate(new_rows) * n_cols + np.concatenate(new_cols)
        code, counts = np.unique(code, return_counts=True)  # sorted by row, then column
        local, cols = code // n_cols, code % n_cols
        top = int(counts.max()) if counts.size else 0
        while len(self._levels) < top:  # a new level: every row indexed so far is empty in it
            self._levels.append((_Grow(np.int32), _Grow(np.int32, np.zeros(row0 + 1, dtype=np.int32))))
        for t, (indices, indptr) in enumerate(self._levels, start=1):
            sel = counts >= t
            if indices.n + int(sel.sum()) > _INT32_MAX:
                raise MemoryError(
                    f"SelfBLEUIndex holds more than {_INT32_MAX} n-gram entries at count level {t}; "
                    "score against a window of the history (e.g. its last 100,000 prompts)"
                )
            indices.extend(cols[sel])
            per_row = np.bincount(local[sel], minlength=n_new)
            indptr.extend(indptr.view[-1] + np.cumsum(per_row))

    def _query(self, prompts: list[str]) -> tuple[list[sp.csr_matrix], np.ndarray]:
        """``Q_1, Q_2, ...`` for the prompts (shape ``(columns, K * N)``) and their lengths."""
        n, kmax = len(prompts), self._max_n
        qrows, qcols, lens = [], [], []
        for i, text in enumerate(prompts):
            toks = _tokens(self._tok, text, f"prompts[{i}]")
            lens.append(len(toks))
            wids = [self._words.get(t, -1) for t in toks]
            for k, per_k in enumerate(self._columns(wids, create=False)):
                known = [c for c in per_k if c >= 0]
                qrows += known
                qcols += [k * n + i] * len(known)
        n_cols = max(1, len(self._grams))
        code, counts = np.unique(
            np.asarray(qcols, dtype=np.int64) * n_cols + np.asarray(qrows, dtype=np.int64),
            return_counts=True,
        )
        qs = []
        for t in range(1, min(len(self._levels), int(counts.max()) if counts.size else 0) + 1):
            sel = code[counts >= t]
            ones = np.ones(sel.size, dtype=np.int32)
            qs.append(sp.csr_matrix((ones, (sel % n_cols, sel // n_cols)), shape=(n_cols, kmax * n)))
        return qs, np.asarray(lens, dtype=np.int64)

    def _level(self, t: int, a: int, b: int) -> sp.csr_matrix:
        """Rows ``a:b`` of ``R_t`` as a CSR matrix over views of the index's buffers."""
        indices, indptr = self._levels[t]
        ptr = indptr.view[a : b + 1]
        lo, hi = int(ptr[0]), int(ptr[-1])
        if self._ones.size < hi - lo:
            self._ones = np.ones(max(hi - lo, 2 * self._ones.size), dtype=np.int32)
        shape = (b - a, max(1, len(self._grams)))
        return sp.csr_matrix((self._ones[: hi - lo], indices.view[lo:hi], ptr - lo), shape=shape)

    def _scores(self, qs: list[sp.csr_matrix], lens: np.ndarray) -> np.ndarray:
        n, kmax = lens.size, self._max_n
        out = np.zeros(n, dtype=np.float64)
        if not qs:
            return out
        n_rows = len(self._rows)
        ref_len, mult = self._ref_len.view, self._mult.view
        block = max(1, _CHUNK_CELLS // (kmax * n))
        ks = np.arange(kmax)
        for a in range(0, n_rows, block):
            b = min(n_rows, a + block)
            dense = (self._level(0, a, b) @ qs[0]).toarray()
            for t in range(1, len(qs)):  # a product has each cell once: += is exact here
                extra = (self._level(t, a, b) @ qs[t]).tocoo()
                dense[extra.row, extra.col] += extra.data
            dense = dense.reshape(b - a, kmax, n)
            r, i = np.nonzero(dense[:, self._k0 - 1, :])
            if not r.size:
                continue
            matched = dense[r, :, i]  # (pairs, K)
            hl, rl = lens[i], ref_len[a + r]
            total = np.maximum(1, hl[:, None] - ks[None, :])
            logp = np.full(matched.shape, -np.inf)
            pos = matched > 0
            logp[pos] = np.log(matched[pos] / total[pos])
            if self.smoothing == "epsilon":
                zero = ~pos
                zero[:, 0] = False  # a zero unigram precision stays 0
                logp[zero] = np.log(_EPSILON / total[zero])
            cum = np.cumsum(logp, axis=1)
            bp = np.where(hl > rl, 1.0, np.exp(1.0 - rl / hl))
            acc = np.zeros(r.size)
            for order in self.orders:
                acc += bp * np.exp(cum[:, order - 1] / order)
            out += np.bincount(i, weights=acc * mult[a + r], minlength=n)
        return out

    def __call__(self, prompts: Sequence[str], history: Sequence[str]) -> np.ndarray:
        """SelfBLEU of each prompt against ``history``, indexing only what is new in it.

        Args:
            prompts: the ``N`` new prompts.
            history: all earlier prompts (usually the previous call's history plus new ones).

        Returns:
            Shape ``(N,)`` float64 in ``[0, 1]``, as :func:`~backends.selfbleu.self_bleu`.

        Raises:
            TypeError: ``prompts``/``history`` is not a sequence of strings, or the tokenizer
                returned something else than a list of strings.
        """
        prompts = _as_texts(prompts, "prompts")
        hist = _history_list(history)
        if not prompts or not hist:
            return np.zeros(len(prompts), dtype=np.float64)
        new, start = self._prefix.new_part(hist)
        try:
            if start == 0:
                self._reset()
            self._add(new, start)
            self._prefix.commit(new, start)
        except BaseException:
            self._prefix.commit([], 0)  # a half-built index is dropped; the next call rebuilds
            self._reset()
            raise
        qs, lens = self._query(prompts)
        return self._scores(qs, lens) / (len(hist) * len(self.orders))
