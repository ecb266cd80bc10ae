r"""Scoring for :class:`backends.hf.HFPolicy`: left padding, the forward, log-probabilities, and
the micro-batched backward.

One job: from token rows (:class:`backends.hf_tokens.Rows`) to float32 log-probabilities
:math:`\log\pi(y\mid x)` (summed, or per token) and their gradients. The rules:

* rows are left-padded with position ids counted over the attention mask, so a row scores the
  same alone or batched;
* never-generated ids (special tokens other than the stop ids, ids past the tokenizer) have
  logit :math:`-\infty`, so the scored distribution is the one the sampler draws from;
* the stop term of a row that ended by itself is :math:`\log\sum_{s\in S} p(s\mid x, y)` over
  the stop ids :math:`S` (any of them ends the row, and the output text is the same);
* micro-batches sort rows by length (less padding); the backward of
  :math:`\sum_i c_i \log\pi_i` runs one micro-batch at a time, accumulating exactly the gradient
  of the whole batch.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from backends.hf_tokens import Rows

__all__ = ["Scorer", "micro_batches"]


def micro_batches(lengths: Sequence[int], size: int) -> Iterator[list[int]]:
    """Row indices in batches of at most ``size``, shortest rows first (less padding).

    Examples:
        >>> list(micro_batches([5, 1, 3, 2], 3))
        [[1, 3, 2], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), size):
        yield order[start : start + size]


class Scorer:
    """Forwards and log-probabilities for one policy's networks (module docstring).

    Args:
        model: the trained network (its ``forward`` signature says which arguments it takes).
        device: where the rows go.
        pad_id: the padding id (always masked).
        excluded: ids never generated (their logits are ``-inf``).
        vocab: the tokenizer's length (ids at or past it are excluded too).
        stop_ids: the ids that end a row.
        micro: rows per micro-batch for scoring and training.
        autocast: the dtype forwards run under ``torch.autocast`` (``None``: no autocast).
    """

    def __init__(self, model: torch.nn.Module, *, device: torch.device, pad_id: int,
                 excluded: Sequence[int], vocab: int, stop_ids: Sequence[int], micro: int,
                 autocast: torch.dtype | None = None) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        sig = inspect.signature(base.forward).parameters
        self.pass_positions = "position_ids" in sig
        self.pass_keep = "logits_to_keep" in sig
        self.cache_arg = "cache" if "cache" in sig else "past_key_values"
        self.device, self.pad_id, self.micro, self.autocast = device, pad_id, micro, autocast
        self.excluded, self.vocab = sorted(set(excluded)), vocab
        self.stop_ids = sorted(set(stop_ids))
        self._mask_cache: dict[str, Any] = {}

    def left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, attention_mask)``, each row right-aligned."""
        width = max(len(s) for s in seqs)
        # numpy fills the rows far faster than one small torch.tensor per row (a hot path)
        ids = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = s
                mask[i, width - len(s) :] = 1
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def precision(self) -> contextlib.AbstractContextManager:
        """The autocast context forwards run in (a null context without autocast)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def forward(self, module: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                positions: torch.Tensor, *, keep: int, use_cache: bool = False,
                cache: Any = None) -> Any:
        """The model's output for a left-padded batch (``keep``: last positions with logits)."""
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
        if self.pass_positions:
            kwargs["position_ids"] = positions
        if self.pass_keep:
            kwargs["logits_to_keep"] = keep
        if cache is not None:
            kwargs[self.cache_arg] = cache
        with self.precision():
            return module(**kwargs)

    def mask_excluded(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits with never-generated ids set to ``-inf``."""
        vocab = logits.shape[-1]
        key = (vocab, logits.device)
        if self._mask_cache.get("key") != key:
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[[i for i in self.excluded if i < vocab]] = True
            mask[self.vocab :] = True
            self._mask_cache = {"key": key, "mask": mask.to(logits.device)}
        return logits.masked_fill(self._mask_cache["mask"], -math.inf)

    def step(self, module: torch.nn.Module) -> Callable:
        """The sampler's step (:func:`backends.hf_sampling.generate`) on ``module``."""

        def run(ids, mask, positions, cache):
            out = self.forward(module, ids, mask, positions, keep=1, use_cache=True, cache=cache)
            new = getattr(out, "cache", None)
            if new is None:
                new = getattr(out, "past_key_values", None)
            return self.mask_excluded(out.logits[:, -1, :].float()), new

        return run

    def tokens(self, module: torch.nn.Module, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the last ``max(scored)`` positions and which are scored."""
        ids, mask = self.left_pad(rows.seqs)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        width, top = ids.shape[1], max(rows.scored)
        logits = self.forward(module, ids, mask, positions, keep=top + 1).logits
        logits = logits[:, logits.shape[1] - top - 1 : logits.shape[1] - 1].float()
        logp = torch.log_softmax(self.mask_excluded(logits), dim=-1)
        targets = ids[:, width - top :]
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        if len(self.stop_ids) > 1 and any(rows.ended):
            # the stop term: any stop id ends the row with the same text
            stop = torch.logsumexp(logp[:, -1, self.stop_ids], dim=-1)
            ended = torch.tensor(rows.ended, device=ids.device)
            last = torch.where(ended, stop, picked[:, -1])
            picked = torch.cat([picked[:, :-1], last[:, None]], 1)
        n = torch.tensor(rows.scored, device=ids.device)
        valid = torch.arange(top, device=ids.device)[None, :] >= (top - n)[:, None]
        return picked, valid

    def per_row(self, module: torch.nn.Module, rows: Rows) -> list[np.ndarray]:
        """Each row's scored tokens' log-probabilities, float64 arrays, in the rows' order."""
        result: list[np.ndarray] = [np.zeros(0)] * len(rows.seqs)
        for start in range(0, len(rows.seqs), self.micro):
            idx = list(range(start, min(start + self.micro, len(rows.seqs))))
            picked, valid = self.tokens(module, rows.take(idx))
            for i, p, v in zip(idx, picked.double().cpu().numpy(), valid.cpu().numpy()):
                result[i] = p[v]
        return result

    def batch(self, module: torch.nn.Module, rows: Rows) -> torch.Tensor:
        """Float32 ``(N,)`` sums of the scored tokens' log-probabilities of one micro-batch."""
        picked, valid = self.tokens(module, rows)
        return torch.where(valid, picked, torch.zeros_like(picked)).sum(-1)

    def score(self, module: torch.nn.Module, rows: Rows,
              batch: Callable[[torch.nn.Module, Rows], torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`batch` over micro-batches, in the rows' order (``batch`` may stand in for it)."""
        batch = batch or self.batch
        out = torch.empty(len(rows.seqs), dtype=torch.float32, device=self.device)
        for idx in micro_batches([len(s) for s in rows.seqs], self.micro):
            out[torch.tensor(idx, device=self.device)] = batch(module, rows.take(idx))
        return out

    def backward(self, module: torch.nn.Module, rows: Rows, coeff: torch.Tensor,
                 batch: Callable[[torch.nn.Module, Rows], torch.Tensor] | None = None) -> None:
        """Accumulate ``d sum_i coeff_i logp_i`` one micro-batch at a time."""
        batch = batch or self.batch
        for idx in micro_batches([len(s) for s in rows.seqs], self.micro):
            lp = batch(module, rows.take(idx))
            (lp * coeff[torch.tensor(idx, device=coeff.device)].to(lp.dtype)).sum().backward()
