r"""The sampling side of :class:`backends.hf.HFPolicy`: :meth:`~SamplingMethods.sample`.

From contexts to outputs: each context goes through the template to its prompt ids
(:mod:`backends.hf_tokens`); each output row gets its random stream's key, from the stream id
of its context and its sample index (:func:`backends.hf_sampling._row_keys`); rows are decoded
``generation_batch_size`` at a time by the sampler (:func:`backends.hf_sampling.generate`) and
their token ids recorded, so that scoring reads what was sampled rather than a re-encoding of the
text. A row's tokens depend on its prompt, its key and the parameters alone, never on the batch
it falls in, which is what data-parallel runs and resumed runs rely on.

A mixin over the policy's parts (its ``_encoder``, ``_scorer``, ``_sampled``, model, tokenizer,
settings and stop ids), as :class:`backends.hf_snapshots.Snapshots` is for snapshots.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np
import torch

from backends._texts import _as_texts
from backends.hf_sampling import _row_keys, check_stream_ids, generate
from gpo_core._validate import check_positive_int, short
from gpo_core.protocols import Samples

__all__ = ["SamplingMethods"]


class SamplingMethods:
    """:meth:`sample` for :class:`backends.hf.HFPolicy` (module docstring)."""

    _encoder: Any
    _scorer: Any
    _sampled: Any
    _model: torch.nn.Module
    _tokenizer: Any
    _generation: Any
    _stop_ids: list[int]
    _pad_id: int
    _gen_batch: int

    def sample(
        self,
        contexts: Sequence[str],
        num_samples: int,
        rng: np.random.Generator,
        *,
        stream_ids: Sequence[int] | None = None,
    ) -> Samples:
        """Draw ``num_samples`` outputs per context, batched with left padding.

        The ``j``-th sample of a context with stream id ``i`` draws from a random stream keyed by
        ``(s, i, j)``, ``s`` one draw from ``rng`` (:mod:`backends.hf_sampling`): not by the
        other rows, the batch it falls in or the process (what data-parallel runs rely on).

        Args:
            contexts: the contexts (seed prompts or prompts).
            num_samples: outputs per context, ``k >= 1``.
            rng: the numpy generator that determines the draws.
            stream_ids: one integer in ``[0, 2**64)`` per context naming its random stream;
                ``None``: the positions ``0, 1, ..., len(contexts) - 1``. Contexts given the same
                id in one call draw the same outputs.

        Returns:
            :class:`~gpo_core.protocols.Samples` with each context repeated ``k`` times in a row,
            the decoded outputs (up to the first eos, special tokens stripped) and weights ``1/k``
            (``1/(k m)`` for a context listed ``m`` times, so each context's weights sum to 1).

        Raises:
            TypeError, ValueError: for bad arguments or prompts longer than the prompt budget.
        """
        ctx = _as_texts(contexts, "contexts")
        k = check_positive_int(num_samples, "num_samples")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator, got {short(rng)}; use "
                "np.random.default_rng(seed)"
            )
        streams = check_stream_ids(stream_ids, len(ctx))
        prompts = self._encoder.prompts(ctx)
        rows = [p for p in prompts for _ in range(k)]
        keys = _row_keys(int(rng.integers(0, 2**63 - 1)), streams, k)
        outputs: list[str] = []
        row_ctx = [c for c in ctx for _ in range(k)]
        for start in range(0, len(rows), self._gen_batch):
            stop = start + self._gen_batch
            for c, (text, ids, ended) in zip(row_ctx[start:stop],
                                             self._generate(rows[start:stop], keys[start:stop])):
                self._sampled.add(c, text, ids, ended)
                outputs.append(text)
        times = collections.Counter(ctx)
        return Samples(
            contexts=tuple(c for c in ctx for _ in range(k)),
            outputs=tuple(outputs),
            weights=np.array([1.0 / (k * times[c]) for c in ctx for _ in range(k)]),
        )

    def _generate(
        self, prompts: list[list[int]], keys: np.ndarray
    ) -> list[tuple[str, list[int], bool]]:
        """One generation batch: each row's text (special tokens stripped), ids, and whether it
        ended on a stop id."""
        ids, mask = self._scorer.left_pad(prompts)
        stops = torch.tensor(self._stop_ids, dtype=torch.long, device=ids.device)
        tokens, ended = generate(self._scorer.step(self._model), ids, mask, keys,
                                 self._generation, stop_ids=stops, pad_id=self._pad_id)
        return [(self._tokenizer.decode(row, skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False), row, end)
                for row, end in zip(tokens, ended)]
