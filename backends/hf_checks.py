"""Boundary checks of :class:`backends.hf.HFPolicy`'s arguments, each raising ``TypeError`` or
``ValueError`` that names the argument, shows the bad value and says what to pass instead.

Kept apart so that the policy reads as what it does; every check runs before the model is
touched (wrapped, moved or copied), so a refused construction leaves the caller's model as it was.
Texts are checked by :func:`backends._texts._as_texts` (and choices, in the policy, by
:func:`backends._texts._check_choice`), the one text and choice checkers of ``backends``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from backends._texts import _as_texts
from gpo_core._validate import as_real_array, check_positive_int, short

__all__ = [
    "check_tokenizer", "check_dtype", "check_device", "is_peft", "model_context", "check_budget",
    "check_reference", "check_experience", "check_bool", "check_count", "check_weight_decay",
    "check_token_ids",
]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


def check_count(value: Any, name: str) -> int:
    """``value`` if it is an integer ``>= 0``, else a ``TypeError``/``ValueError`` naming ``name``.

    Examples:
        >>> check_count(0, "token_cache_size")
        0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= 0, got {short(value)}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {int(value)}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` if it is a bool, else a ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {short(value)}")
    return value


def check_weight_decay(value: Any, optimizer: str) -> float:
    """AdamW's decoupled weight decay: a finite number >= 0, and 0 unless ``optimizer='adam'``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {short(value)}")
    if value and optimizer != "adam":
        raise ValueError(
            f"weight_decay={value!r} is AdamW's; it needs optimizer='adam' (L-BFGS fits the "
            "step's target exactly, with no decay)"
        )
    return float(value)


def check_tokenizer(tokenizer: Any) -> None:
    """A transformers tokenizer with a pad or an eos token."""
    needed = ("decode", "all_special_ids", "eos_token_id", "pad_token_id", "bos_token_id")
    if not callable(tokenizer) or not all(hasattr(tokenizer, a) for a in needed):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer (AutoTokenizer.from_pretrained(...) or "
            f"backends.tiny.train_tokenizer()), got {short(tokenizer)}"
        )
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ValueError(
            "tokenizer has neither a pad token nor an eos token: outputs could not end and "
            "batches could not be padded; set one, e.g. "
            "tokenizer.add_special_tokens({'eos_token': '</s>'}) and resize the model's embeddings"
        )


def check_token_ids(value: Any, name: str, vocab: int) -> list[int]:
    """``value`` (an int, a sequence of ints, or ``None``) as a list of ids in ``[0, vocab)``.

    Examples:
        >>> check_token_ids([3, 4], "stop_token_ids", 10), check_token_ids(None, "x", 10)
        ([3, 4], [])
        >>> check_token_ids([12], "stop_token_ids", 10)
        Traceback (most recent call last):
        ValueError: stop_token_ids[0] must be a token id in [0, 10) (the tokenizer's length), got 12
    """
    if value is None:
        return []
    items = [value] if isinstance(value, (int, np.integer)) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple, np.ndarray)):
        raise TypeError(f"{name} must be a token id or a list of token ids, got {short(value)}")
    out = []
    for i, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}[{i}] must be an integer token id, got {short(v)}")
        if not 0 <= int(v) < vocab:
            raise ValueError(
                f"{name}[{i}] must be a token id in [0, {vocab}) (the tokenizer's length), got "
                f"{int(v)}"
            )
        out.append(int(v))
    return out


def check_dtype(dtype: Any) -> torch.dtype | None:
    """``None``, ``"float32"``/``"bfloat16"`` or those torch dtypes."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if dtype in _DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(
        f"dtype must be 'float32', 'bfloat16' or None, got {short(dtype)} (float16 is not "
        "offered: training it needs loss scaling; use bfloat16)"
    )


def check_device(device: Any, model: torch.nn.Module) -> torch.device:
    """The device asked for (``None``: the model's), which must exist."""
    if device is None:
        first = next(model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be like 'cpu' or 'cuda:0', got {short(device)}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(dev)!r} was asked for but torch.cuda.is_available() is False; use "
            "device='cpu' or install a CUDA build of torch"
        )
    return dev


def is_peft(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a ``peft.PeftModel``."""
    try:
        import peft  # noqa: PLC0415
    except ImportError:  # pragma: no cover - peft is part of the llm extra
        return False
    return isinstance(model, peft.PeftModel)


def model_context(config: Any) -> int | None:
    """The model's context length from its config (``None`` when it names none)."""
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_budget(max_prompt_tokens: Any, max_new_tokens: int, context: int | None,
                 name: str) -> int | None:
    """The prompt budget in tokens: ``max_prompt_tokens``, or the context minus the outputs'."""
    m = max_new_tokens
    if max_prompt_tokens is not None:
        budget = check_positive_int(max_prompt_tokens, "max_prompt_tokens")
        if context is not None and budget + m > context:
            raise ValueError(
                f"HFPolicy {name!r}: max_prompt_tokens={budget} plus max_new_tokens={m} exceeds "
                f"the model context of {context} tokens; lower max_prompt_tokens to at most "
                f"{context - m}"
            )
        return budget
    if context is None:
        return None
    if m >= context:
        raise ValueError(
            f"HFPolicy {name!r}: generation.max_new_tokens={m} leaves no room for a prompt in the "
            f"model context of {context} tokens; lower max_new_tokens"
        )
    return context - m


def check_reference(reference: Any, model: Any, vocab: int | None, name: str) -> None:
    """A separate causal LM with the model's vocabulary size, or ``None``."""
    if reference is None:
        return
    if not isinstance(reference, torch.nn.Module):
        raise TypeError(
            f"reference must be a torch.nn.Module causal LM (same tokenizer) or None, got "
            f"{short(reference)}"
        )
    if reference is model:
        raise ValueError(
            f"HFPolicy {name!r}: reference is the model being trained, so it would move with it; "
            "pass reference=None for a frozen copy, or a separate model"
        )
    ref_vocab = getattr(getattr(reference, "config", None), "vocab_size", None)
    if ref_vocab is not None and vocab is not None and ref_vocab != vocab:
        raise ValueError(
            f"HFPolicy {name!r}: reference has vocab_size {ref_vocab} but the model has {vocab}; "
            "the reference must share the model's tokenizer"
        )


def check_experience(experience: Any) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """An :class:`~gpo_core.protocols.Experience` as ``(contexts, outputs, utilities, weights)``:
    rows of equal lengths, finite utilities, weights ``>= 0`` with a positive sum per context."""
    fields = ("contexts", "outputs", "utilities", "weights")
    if not all(hasattr(experience, f) for f in fields):
        raise TypeError(
            f"experience must be a gpo_core.protocols.Experience (fields {fields}), got "
            f"{short(experience)}"
        )
    ctx = _as_texts(experience.contexts, "experience.contexts")
    out = _as_texts(experience.outputs, "experience.outputs")
    u = as_real_array(experience.utilities, "experience.utilities")
    w = as_real_array(experience.weights, "experience.weights")
    lengths = {"contexts": len(ctx), "outputs": len(out), "utilities": u.size, "weights": w.size}
    if u.ndim != 1 or w.ndim != 1 or len(set(lengths.values())) != 1:
        raise ValueError(
            f"experience rows must have equal lengths (one entry per row in 1-D fields), got "
            f"{lengths} with utilities shape {u.shape} and weights shape {w.shape}"
        )
    if not ctx:
        raise ValueError("experience must hold at least one row, got 0 rows")
    if np.any(w < 0):
        raise ValueError(f"experience.weights must be >= 0, got {short(w.tolist())}")
    totals: dict[str, float] = {}
    for c, wi in zip(ctx, w):
        totals[c] = totals.get(c, 0.0) + float(wi)
    zero = [c for c, t in totals.items() if t <= 0]
    if zero:
        raise ValueError(
            f"experience.weights must have a positive sum for every context, got 0 for context "
            f"{short(zero[0])}; drop its rows or give them positive weights"
        )
    return ctx, out, u, w
