"""Boundary checks for text inputs, shared by the diversity modules and the rewards, and the
prefix test of the incremental diversity indexes (:mod:`backends.diversity_index`).

Each check raises ``TypeError`` or ``ValueError`` whose message names the argument, shows the bad
value and says what to pass instead. A bare string is refused where a list of strings is
expected: iterating over it would silently score one prompt per character.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gpo_core._validate import check_positive_int, short

__all__ = ["_as_texts", "_as_ngrams", "_check_choice", "_check_pairs", "_history_list", "_Prefix"]


def _as_texts(value: Any, name: str, *, allow_empty: bool = True, start: int = 0) -> list[str]:
    """``value`` as a list of ``str`` or raise naming ``name`` (a bare string is refused).

    ``start`` offsets the index shown in messages (``history[start + i]``), for callers that
    check only the new tail of a longer sequence.

    Examples:
        >>> _as_texts(("a", "b"), "prompts")
        ['a', 'b']
        >>> _as_texts(["a", 3], "history", start=10)
        Traceback (most recent call last):
        TypeError: history[11] must be a str, got int 3; decode token ids to text before scoring
    """
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
                f"{name}[{start + i}] must be a str, got {type(text).__name__} {short(text)}; "
                "decode token ids to text before scoring"
            )
    if not allow_empty and not texts:
        raise ValueError(f"{name} must hold at least one string, got an empty sequence")
    return texts


def _as_ngrams(value: Any, name: str = "ngrams") -> tuple[int, ...]:
    """``value`` as a non-empty tuple of BLEU orders (integers >= 1) or raise naming ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a sequence of BLEU orders (integers >= 1), got {short(value)}; "
            "e.g. (2, 3, 4, 5) as in the released code"
        )
    if len(value) == 0:
        raise ValueError(f"{name} must name at least one BLEU order, got {short(value)}")
    return tuple(check_positive_int(n, f"{name}[{i}]") for i, n in enumerate(value))


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {short(value)}")
    return value


def _history_list(history: Any) -> list:
    """The history as a list (O(m) C copy); its items are checked when they are indexed."""
    if isinstance(history, (str, bytes)):
        raise TypeError(
            f"history must be a sequence of strings, got the single string {short(history)}; "
            f"wrap it in a list: [{short(history)}]"
        )
    if isinstance(history, np.ndarray):
        return history.tolist()
    if not isinstance(history, Sequence):
        raise TypeError(
            f"history must be a sequence (list or tuple) of strings, got "
            f"{type(history).__name__} {short(history)}"
        )
    return list(history)


class _Prefix:
    """The texts an index holds, and the test of whether a new history extends them."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def new_part(self, history: list) -> tuple[list[str], int]:
        """``(texts to index, start)``: the tail after the indexed prefix, or all (start 0)."""
        n = len(self.texts)
        if n and len(history) >= n and history[n - 1] == self.texts[-1] and history[:n] == self.texts:
            return _as_texts(history[n:], "history", start=n), n
        return _as_texts(history, "history"), 0

    def commit(self, new: list[str], start: int) -> None:
        if start == 0:
            self.texts = list(new)
        else:
            self.texts.extend(new)


def _check_pairs(prompts: Any, responses: Any) -> tuple[list[str], list[str]]:
    prompts = _as_texts(prompts, "prompts")
    responses = _as_texts(responses, "responses")
    if len(prompts) != len(responses):
        raise ValueError(
            f"prompts and responses must pair up one to one, got {len(prompts)} prompts and "
            f"{len(responses)} responses"
        )
    return prompts, responses
