"""Prompt sets: the ``Prompt`` and ``PromptSet`` types, the fixed train/held-out split, and
users' own prompt files and datasets.

The split is fixed and does not depend on the order of a file or on any RNG: a prompt is held
out iff the first 8 bytes of ``sha256(normalised text)``, read as a big-endian integer over
``2**64``, fall below :data:`HELD_OUT_FRACTION` (0.3); normalised = stripped, lower-cased, inner
whitespace collapsed (:func:`split_of`). A set splits by each prompt's *seed*, so an attack
prompt built from a behaviour lands on the behaviour's side. The named red-team sets that use
these types are in :mod:`backends.redteam`.

Examples:
    >>> split_of("How do I kill a Python process?"), split_of("  how do I KILL a python process? ")
    ('held_out', 'held_out')
    >>> s = PromptSet("mine", (Prompt("Say hi", kind="benign"), Prompt("Say bye", kind="benign")))
    >>> len(s), s.kind, s.head(1).texts == s.head(1).texts
    (2, 'benign', True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from typing import Any, Iterator

from gpo_core._validate import short

__all__ = ["HELD_OUT_FRACTION", "KINDS", "Prompt", "PromptSet", "split_of", "prompts_from"]

#: Share of every set held out for evaluation (by :func:`split_of`, a stable hash of the text).
HELD_OUT_FRACTION = 0.3
KINDS = ("harmful", "benign")
SPLITS = ("train", "held_out", "all")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt: its text, the behaviour behind it (``seed``), and labels for reporting."""

    text: str
    seed: str = ""          # the plain behaviour; defaults to ``text``
    kind: str = "harmful"   # "harmful" (a safe model refuses) or "benign" (a safe model answers)
    category: str = ""
    family: str = "direct"  # how the behaviour was asked: "direct", a template, a rephrasing
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"Prompt.text must be a non-empty string, got {short(self.text)}")
        if self.kind not in KINDS:
            raise ValueError(f"Prompt.kind must be one of {KINDS}, got {short(self.kind)}")
        if not self.seed:
            object.__setattr__(self, "seed", self.text)


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """A named, labelled set of prompts with its provenance; iterable over :class:`Prompt`."""

    name: str
    items: tuple[Prompt, ...]
    source: str = ""
    licence: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.items)

    texts = property(lambda self: [p.text for p in self.items], doc="The texts, in order.")
    categories = property(lambda self: Counter(p.category for p in self.items),
                          doc="How many prompts each category holds.")

    @property
    def kind(self) -> str:
        """``"harmful"``, ``"benign"`` or ``"mixed"``."""
        kinds = {p.kind for p in self.items}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def split(self, which: str) -> PromptSet:
        """The ``"train"`` or ``"held_out"`` part (by each prompt's *seed*), or ``"all"``."""
        if which not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {short(which)}")
        if which == "all":
            return self
        keep = tuple(p for p in self.items if split_of(p.seed) == which)
        return dataclasses.replace(self, items=keep)

    def head(self, n: int | None) -> PromptSet:
        """The first ``n`` prompts in a fixed order (by the split hash), or all for ``None``."""
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"limit must be a positive int or None, got {short(n)}")
        ordered = sorted(self.items, key=lambda p: (_hash01(p.text), p.text))
        return dataclasses.replace(self, items=tuple(ordered[:n]))


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _hash01(text: str) -> float:
    return int.from_bytes(hashlib.sha256(_norm(text).encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_of(text: str, held_out: float = HELD_OUT_FRACTION) -> str:
    """``"held_out"`` if the stable hash of the normalised text is below ``held_out``, else
    ``"train"``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {short(text)}")
    return "held_out" if _hash01(text) < held_out else "train"


def prompts_from(source: Any, *, kind: str = "harmful", name: str | None = None,
                 column: str | None = None) -> PromptSet:
    """A user's prompt set from a ``.txt``/``.jsonl`` path, a ``datasets.Dataset`` or a column dict.

    Args:
        source: a path (``.txt``: one prompt a line, blank lines skipped; ``.jsonl``: one JSON
            object a line with ``"prompt"`` and optional ``"category"``, ``"kind"``, ``"seed"``,
            ``"family"``), or an object with ``column_names`` and ``source[column]`` (a
            ``datasets.Dataset``), or a mapping of column name -> list.
        kind: the default kind of each prompt (``"harmful"`` or ``"benign"``).
        name: the set's name (default: the file name, or ``"user"``).
        column: the text column of a dataset (default: the first of ``prompt``, ``text``,
            ``goal``, ``behavior``, ``question`` it has).

    Raises:
        FileNotFoundError: no such file. ValueError: an empty file, a malformed JSONL line (its
            number named), an unknown extension or kind. TypeError: an unsupported source.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {short(kind)}")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        rows = _rows_from_file(path)
        name = name or os.path.splitext(os.path.basename(path))[0]
    elif hasattr(source, "column_names") or isinstance(source, dict):
        cols = list(source.column_names if hasattr(source, "column_names") else source)
        col = column or next((c for c in ("prompt", "text", "goal", "behavior", "question")
                              if c in cols), None)
        if col not in cols:
            raise ValueError(f"column must name the text column of the dataset, got {short(col)}; "
                             f"its columns are {cols}")
        extra = {k: list(source[k]) for k in ("category", "kind", "seed", "family") if k in cols}
        texts = list(source[col])
        rows = [{"prompt": t, **{k: v[i] for k, v in extra.items()}} for i, t in enumerate(texts)]
        name = name or "user"
    else:
        raise TypeError(f"source must be a .txt/.jsonl path, a datasets.Dataset or a dict of "
                        f"columns, got {short(source)}")
    if not rows:
        raise ValueError(f"source {short(source)} holds no prompts; give at least one")
    items = []
    for i, r in enumerate(rows, 1):
        text = r.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {i} of {short(source)} is not a non-empty string: "
                             f"{short(text)}; fix or remove it")
        items.append(Prompt(text.strip(), seed=str(r.get("seed") or ""),
                            kind=str(r.get("kind") or kind), category=str(r.get("category") or ""),
                            family=str(r.get("family") or "direct"), source=name))
    return PromptSet(name, tuple(items), source=f"user: {short(source)}")


def _rows_from_file(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prompt file {path!r} does not exist; pass a .txt (one prompt a "
                                "line) or .jsonl (a \"prompt\" field a line) file")
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"prompt file {path!r} is empty; put one prompt a line in it")
    if ext == ".txt":
        return [{"prompt": line} for line in lines]
    if ext != ".jsonl":
        raise ValueError(f"prompt file {path!r} must end in .txt or .jsonl, got {ext or 'none'!r}")
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {i} of {path!r} is not valid JSON ({exc.msg}); each line must "
                             'be an object such as {"prompt": "..."}') from None
        if not isinstance(row, dict) or "prompt" not in row:
            raise ValueError(f'line {i} of {path!r} has no "prompt" field: {short(row)}')
        rows.append(row)
    return rows
