"""Text to token ids for :class:`backends.hf.HFPolicy`: templates, prompt budgets, output rows.

One job: turn ``(context, output)`` rows into the token sequences that
:mod:`backends.hf_scoring` scores. A context becomes a prompt through the template (a string with
``{context}``, a callable, or the tokenizer's chat template) and must fit the prompt budget
(the model context minus ``max_new_tokens``, or ``max_prompt_tokens``; longer prompts raise or,
with ``truncate_prompts``, keep their last tokens). An output becomes its tokens, plus a stop
token when it ended by itself (fewer than ``max_new_tokens`` tokens).

The :class:`Rows` it returns carry, per row, the sequence ``prompt + output (+ stop)``, how many
of its last tokens are scored, and whether the last one is the stop term.

Outputs the policy sampled itself are scored from the ids it sampled, not from their text
(:class:`SampledIds`): decoding then re-encoding is not the identity (a model may spell
``"</s>"`` or a chat marker out of ordinary pieces, which re-encodes to a special id, and BPE
may re-encode a text to other merges), and the sampled ids are what the policy's probability is
of. A text never sampled (or forgotten) is encoded canonically.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from gpo_core._validate import short

__all__ = ["Rows", "Encoder", "SampledIds", "check_template"]


class Rows(NamedTuple):
    """Token rows to score: ``seqs[i]`` ends with ``scored[i]`` scored tokens, the last of them
    the stop term when ``ended[i]``."""

    seqs: list[list[int]]
    scored: list[int]
    ended: list[bool]

    def take(self, idx: Sequence[int]) -> "Rows":
        """The rows at ``idx``, in that order."""
        return Rows([self.seqs[i] for i in idx], [self.scored[i] for i in idx],
                    [self.ended[i] for i in idx])


class SampledIds:
    """The token ids behind the last ``size`` sampled ``(context, output text)`` pairs (LRU).

    Two samples of one context with the same text but different ids (different merges of the
    same characters) keep the later ids; either is a way the policy writes that text.

    Examples:
        >>> seen = SampledIds(2)
        >>> seen.add("c", "ab", [5, 6], True); seen.add("c", "x", [7], False)
        >>> seen.get("c", "ab"), seen.get("c", "zz")
        (([5, 6], True), None)
        >>> seen.add("d", "y", [8], True); seen.get("c", "x") is None  # the oldest went
        True
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._rows: collections.OrderedDict[tuple[str, str], tuple[np.ndarray, bool]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, context: str, text: str, ids: Sequence[int], ended: bool) -> None:
        if self.size == 0:
            return
        key = (context, text)
        self._rows[key] = (np.asarray(ids, dtype=np.int64), bool(ended))
        self._rows.move_to_end(key)
        while len(self._rows) > self.size:
            self._rows.popitem(last=False)

    def get(self, context: str, text: str) -> tuple[list[int], bool] | None:
        hit = self._rows.get((context, text))
        if hit is None:
            return None
        self._rows.move_to_end((context, text))
        return hit[0].tolist(), hit[1]


def check_template(template: Any, tokenizer: Any) -> str | Callable[[str], str] | None:
    """The template to use (``"chat"`` for the tokenizer's chat template), or raise."""
    if template is None:
        return "chat" if getattr(tokenizer, "chat_template", None) else None
    if isinstance(template, str):
        if "{context}" not in template:
            raise ValueError(
                f"template must contain the placeholder '{{context}}', got {short(template)}; "
                "e.g. 'Question: {context}\\nAnswer:'"
            )
        return template
    if callable(template):
        return template
    raise TypeError(
        f"template must be a string with '{{context}}', a callable context -> str, or None, "
        f"got {short(template)}"
    )


class Encoder:
    """Encodes contexts and outputs for one policy (see the module docstring).

    Args:
        tokenizer: the policy's tokenizer.
        template: what :func:`check_template` returned.
        max_new_tokens: the output budget (an output shorter than it ended by itself).
        budget: the most prompt tokens (``None``: unlimited).
        context_len: the model context (``None``: unknown, unchecked).
        truncate: keep the last ``budget`` tokens of longer prompts instead of raising.
        stop_id: the id appended to outputs that ended by themselves (``None``: none ends).
        forbidden: ids an output's text may not encode to (those the policy never generates).
        vocab: the tokenizer's length (ids at or past it are forbidden too).
        name: the policy's name, for messages.
    """

    def __init__(self, tokenizer: Any, template: Any, *, max_new_tokens: int, budget: int | None,
                 context_len: int | None, truncate: bool, stop_id: int | None,
                 forbidden: set[int], vocab: int, name: str) -> None:
        self.tokenizer, self.template, self.m = tokenizer, template, max_new_tokens
        self.budget, self.context_len, self.truncate = budget, context_len, truncate
        self.stop_id, self.forbidden, self.vocab, self.name = stop_id, forbidden, vocab, name

    def render(self, context: str) -> tuple[str, bool]:
        """The prompt text and whether the tokenizer should add its special tokens."""
        if self.template is None:
            return context, True
        if self.template == "chat":
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": context}], tokenize=False, add_generation_prompt=True
            )
            return text, False
        if isinstance(self.template, str):
            return self.template.replace("{context}", context), True
        text = self.template(context)
        if not isinstance(text, str):
            raise TypeError(
                f"HFPolicy {self.name!r}: template must return a str, got {short(text)} for "
                f"context {short(context)}"
            )
        return text, True

    def prompts(self, contexts: list[str]) -> list[list[int]]:
        """Each context's prompt ids (each distinct context encoded once)."""
        cache: dict[str, list[int]] = {}
        out = []
        for i, c in enumerate(contexts):
            if c not in cache:
                cache[c] = self._prompt(c, i)
            out.append(cache[c])
        return out

    def _prompt(self, context: str, index: int) -> list[int]:
        text, add_special = self.render(context)
        ids = list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])
        if not ids:
            # An empty context (an unconditional adversary, or an adversary that wrote an empty
            # prompt) starts from bos; a tokenizer without one starts from eos, GPT-2's
            # convention, so that a run never stops on an empty prompt.
            start = self.tokenizer.bos_token_id
            start = self.tokenizer.eos_token_id if start is None else start
            if start is None:
                raise ValueError(
                    f"HFPolicy {self.name!r}: context {index} ({short(context)}) encodes to no "
                    "tokens and the tokenizer has neither a bos nor an eos token to start from; "
                    "give non-empty contexts or a template"
                )
            ids = [start]
        if self.budget is not None and len(ids) > self.budget:
            if not self.truncate:
                raise ValueError(
                    f"HFPolicy {self.name!r}: context {index} ({short(context, 40)}) makes a "
                    f"prompt of {len(ids)} tokens but at most {self.budget} fit (model context "
                    f"{self.context_len} minus max_new_tokens {self.m}, or max_prompt_tokens); "
                    f"pass truncate_prompts=True to keep the last {self.budget} tokens, or "
                    "shorten the contexts"
                )
            ids = ids[-self.budget :]
        return ids

    def output(self, text: str, index: int) -> tuple[list[int], bool]:
        """An output text's ids (its canonical encoding) and whether it ended by itself."""
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        bad = [t for t in ids if t in self.forbidden or t >= self.vocab]
        if bad:
            raise ValueError(
                f"HFPolicy {self.name!r}: output {index} ({short(text, 40)}) encodes to special "
                f"token ids {bad[:5]}, which this policy never generates; remove special-token "
                "text from outputs (outputs this policy sampled itself are scored from their "
                "sampled ids instead)"
            )
        return ids, self.stop_id is not None and len(ids) < self.m

    def rows(
        self,
        contexts: list[str],
        outputs: list[str],
        known: Callable[[str, str], tuple[list[int], bool] | None] | None = None,
    ) -> Rows:
        """The rows ``prompt + output (+ stop)``; ``known(context, output)`` may give an output's
        sampled ``(ids, ended)`` (used instead of encoding its text)."""
        prompts = self.prompts(contexts)
        seqs, scored, ended = [], [], []
        for i, (c, p, o) in enumerate(zip(contexts, prompts, outputs)):
            hit = None if known is None else known(c, o)
            ids, stop = self.output(o, i) if hit is None else (list(hit[0]), hit[1])
            out = ids + [self.stop_id] if stop else ids
            total = len(p) + len(out)
            if self.context_len is not None and total > self.context_len:
                raise ValueError(
                    f"HFPolicy {self.name!r}: row {i} needs {total} positions (prompt {len(p)}, "
                    f"output {len(out)}) but the model context is {self.context_len}; shorten "
                    "the output or the prompt (max_prompt_tokens / truncate_prompts=True)"
                )
            seqs.append(p + out)
            scored.append(len(out))
            ended.append(stop)
        return Rows(seqs, scored, ended)
