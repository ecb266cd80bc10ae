r"""The sampler of :class:`backends.hf.HFPolicy`: its token loop and its counter-based streams.

Why its own loop rather than ``model.generate``: every output row draws its tokens from its own
random stream, a counter-based generator keyed by ``(seed, stream id, sample index)`` and
indexed by the token position, so a row's tokens depend on the parameters, its prompt and that
key only (not on the other rows of the batch, the batch size, or which process samples it), and
torch's global generator is never touched. Each token is drawn by inverse-CDF sampling with one
uniform, so with temperature 1 and ``top_p`` 1 the draw follows exactly the distribution that
scoring computes (:mod:`backends.hf_scoring`).

The settings are :class:`GenerationSettings`. The seam is :func:`generate`: it asks a ``step``
callable for the next-token logits of a batch and returns token ids, so another engine (a served
model) can replace it by returning the same ``(tokens, ended)`` pair.

The streams are splitmix64 (Steele, Lea and Flood 2014): outputs are a strong 64-bit mix of
``key + n * gamma``; numpy's uint64 array arithmetic wraps modulo ``2**64`` silently.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gpo_core._validate import check_positive, check_positive_int, short

__all__ = ["GenerationSettings", "generate", "pick", "check_stream_ids"]


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How :meth:`backends.hf.HFPolicy.sample` draws outputs.

    Attributes:
        max_new_tokens: the most tokens an output may have (eos included when it stops by itself);
            also part of the policy's definition (see :mod:`backends.hf`).
        temperature: divides the logits before sampling (``> 0``); 1 samples the policy itself.
        top_p: nucleus sampling mass in ``(0, 1]``; 1 keeps every token.
        do_sample: draw at random (``True``) or take the most likely token (``False``, greedy).
        repetition_penalty: CTRL-style penalty ``> 0`` on tokens already in the prompt or output;
            1 disables it.

    Examples:
        >>> GenerationSettings(max_new_tokens=8).on_policy
        True
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        check_positive_int(self.max_new_tokens, "max_new_tokens")
        check_positive(self.temperature, "temperature")
        top_p = check_positive(self.top_p, "top_p")
        if top_p > 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}; use 1.0 to keep every token")
        if not isinstance(self.do_sample, bool):
            raise TypeError(f"do_sample must be a bool, got {short(self.do_sample)}")
        check_positive(self.repetition_penalty, "repetition_penalty")

    @property
    def on_policy(self) -> bool:
        """Whether samples are draws from the distribution that
        :meth:`backends.hf.HFPolicy.log_prob` scores."""
        return (
            self.do_sample
            and self.temperature == 1.0
            and self.top_p == 1.0
            and self.repetition_penalty == 1.0
        )


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function, elementwise on a 1-D uint64 array."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _row_keys(seed: int, streams: np.ndarray, k: int) -> np.ndarray:
    """One uint64 stream key per output row (contexts in order, ``k`` samples each).

    Examples:
        >>> keys = _row_keys(7, np.array([0, 1], dtype=np.uint64), 2)
        >>> keys.shape, len(set(keys.tolist()))
        ((4,), 4)
    """
    base = _mix64(np.array([seed], dtype=np.uint64) + _GAMMA)
    per_context = _mix64(base ^ _mix64(streams + _GAMMA))
    sample = np.arange(1, k + 1, dtype=np.uint64) * _GAMMA
    return _mix64(per_context[:, None] + sample[None, :]).reshape(-1)


def _uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """The ``step``-th uniform in ``[0, 1)`` of each stream, float64 with 53 random bits."""
    # arrays, not numpy scalars: scalar uint64 overflow warns (and raises under errstate)
    bits = _mix64(keys + np.array([step + 1], dtype=np.uint64) * _GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def check_stream_ids(stream_ids: Sequence[int] | None, n: int) -> np.ndarray:
    """``stream_ids`` as a uint64 array of ``n`` entries (``None``: ``0 .. n-1``), or raise."""
    if stream_ids is None:
        return np.arange(n, dtype=np.uint64)
    if isinstance(stream_ids, np.ndarray) and stream_ids.ndim == 1:
        stream_ids = stream_ids.tolist()  # an integer array is as good as a list
    if isinstance(stream_ids, (str, bytes)) or not isinstance(stream_ids, Sequence):
        raise TypeError(
            f"stream_ids must be a sequence of integers (one per context) or None, got "
            f"{short(stream_ids)}"
        )
    if len(stream_ids) != n:
        raise ValueError(
            f"stream_ids must have one entry per context ({n}), got {len(stream_ids)}; pass one "
            "integer per context or None"
        )
    for i, v in enumerate(stream_ids):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"stream_ids[{i}] must be an integer, got {short(v)}")
        if not 0 <= int(v) < 2**64:
            raise ValueError(
                f"stream_ids[{i}] must be in [0, 2**64), got {int(v)}; reduce it modulo 2**64"
            )
    return np.array([int(v) for v in stream_ids], dtype=np.uint64)


def pick(
    logits: torch.Tensor, seen: torch.Tensor | None, keys: np.ndarray, step: int, settings: Any
) -> torch.Tensor:
    """The next token of each row from its (already masked) float32 ``logits``.

    ``settings`` is a :class:`backends.hf.GenerationSettings`; ``seen`` marks the ids already in
    each row (for the repetition penalty), ``None`` when there is no penalty.
    """
    if seen is not None:
        penalised = torch.where(
            logits > 0, logits / settings.repetition_penalty, logits * settings.repetition_penalty
        )
        logits = torch.where(seen, penalised, logits)
    if not settings.do_sample:
        return logits.argmax(-1)
    logits = logits / settings.temperature
    if settings.top_p < 1.0:
        probs_sorted, order = torch.softmax(logits, -1).sort(-1, descending=True)
        before = probs_sorted.cumsum(-1) - probs_sorted  # mass of strictly likelier tokens
        drop_sorted = before >= settings.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    # Inverse-CDF sampling with one uniform per row: the first token whose cumulative
    # probability exceeds u * total. A token of probability 0 never has a cdf step, so it is
    # never picked; v stays strictly below the total, so some token always is.
    wide = torch.float32 if logits.device.type == "mps" else torch.float64
    cdf = torch.softmax(logits, -1, dtype=wide).cumsum(-1)
    total = cdf[:, -1:]
    u = torch.from_numpy(_uniforms(keys, step)).to(device=logits.device, dtype=wide)
    v = torch.minimum(u[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, v, right=True).squeeze(-1)


Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], "tuple[torch.Tensor, Any]"]


@torch.no_grad()
def generate(
    step: Step,
    ids: torch.Tensor,
    mask: torch.Tensor,
    keys: np.ndarray,
    settings: Any,
    *,
    stop_ids: torch.Tensor,
    pad_id: int,
) -> tuple[list[list[int]], list[bool]]:
    """Decode one left-padded batch; row ``i`` draws its tokens from the stream ``keys[i]``.

    Args:
        step: ``(input_ids, attention_mask, position_ids, cache) -> (logits, cache)`` with
            ``logits`` the float32 next-token logits ``(batch, vocab)``, never-generated ids
            already at ``-inf``; ``cache`` ``None`` means the model keeps none (the whole
            sequence is fed again).
        ids, mask: the left-padded prompts and their attention mask.
        keys: one stream key per row (:func:`_row_keys`).
        settings: a :class:`backends.hf.GenerationSettings`.
        stop_ids: the ids that end a row (1-D, possibly empty).
        pad_id: what finished rows feed (masked out of nothing: only ever a finished row's input).

    Returns:
        Each row's output ids (the stop token left out) and whether it ended on a stop token
        (``False``: cut at ``max_new_tokens``).
    """
    batch = ids.shape[0]
    step_ids, step_pos = ids, (mask.cumsum(-1) - 1).clamp_min(0)
    seen: torch.Tensor | None = None
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    tokens: list[torch.Tensor] = []
    cache = None
    for n in range(settings.max_new_tokens):
        logits, cache = step(step_ids, mask, step_pos, cache)
        if settings.repetition_penalty != 1.0 and seen is None:
            counts = torch.zeros(logits.shape, dtype=torch.long, device=ids.device)
            seen = counts.scatter_add_(1, ids, mask).gt(0)
        nxt = pick(logits, seen, keys, n, settings)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        if seen is not None:
            seen[torch.arange(batch, device=nxt.device), nxt] = True
        finished |= torch.isin(nxt, stop_ids)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if cache is not None:
            step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
        else:  # a model that returns no cache: feed the whole sequence again
            step_ids = torch.cat([ids, torch.stack(tokens, 1)], dim=1)
            step_pos = (mask.cumsum(-1) - 1).clamp_min(0)
    stops = set(stop_ids.tolist())
    rows, ended = [], []
    for row in torch.stack(tokens, 1).tolist():
        end = next((j for j, t in enumerate(row) if t in stops), None)
        rows.append(row if end is None else row[:end])
        ended.append(end is not None)
    return rows, ended
