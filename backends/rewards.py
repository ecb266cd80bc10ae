r"""Reward models ``r(x, y)``: one finite float per (prompt, response) pair, higher = safer/better.

GPO's payoff is a fixed reward model (GPO.md §2.1): the defender maximises ``E r(x, y)`` and the
adversary minimises it (plus its diversity bonus, :mod:`backends.diversity`). The paper's
safety instantiation is "the probability of being classified as safe by a toxicity classifier"
(ICLR version §3.2.1 [R]); the released code reads ``P("safe")`` off Llama Guard's next-token
distribution and gives the adversary ``P("unsafe")`` [C]. The adapters here cover that family:

* :class:`SequenceClassifierReward` -- any ``AutoModelForSequenceClassification``:
  ``r(x, y) = softmax(f(x, y))[label]``, the classifier's probability of one label for the pair
  (or the raw logit, for Bradley--Terry reward heads);
* :class:`CallableReward` -- a plain function ``fn(prompts, responses) -> floats``;
* :class:`LexicalReward` -- a *toy* lexical safety score for demos:
  ``r(x, y) = clip(1 - P_off(y) + b [refusal in y] - c [banned word in y], 0, 1)``
  with ``P_off`` from ``alt-profanity-check``;
* :class:`PairwiseJudgeReward` -- a pairwise judge ``J(x, a, b) = P(a better than b)`` turned into a
  pointwise reward ``r(x, y) = J(x, y, y_base(x))`` against a baseline response (optionally
  position-debiased: ``(J(x, y, y_base) + 1 - J(x, y_base, y)) / 2``).

:func:`checked_scores` is the check the game loop applies to *any*
:class:`~gpo_core.protocols.RewardModel`: the output must be one finite real number per pair; the
error names the model and the offending pair.

Nothing here downloads: models load from local paths only and never with remote code. ``torch``
and ``transformers`` are imported only by :class:`SequenceClassifierReward`, and
``alt-profanity-check`` only by :class:`LexicalReward` when it first scores.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import string
from typing import Any, Callable, Sequence

import numpy as np

from backends.diversity import _as_texts, tokenize
from gpo_core._validate import check_nonnegative, check_positive_int, short
from gpo_core.protocols import RewardModel
from gpo_core.rollout import check_scores as _check_scores
from gpo_core.rollout import checked_rewards

__all__ = [
    "checked_scores",
    "SequenceClassifierReward",
    "CallableReward",
    "LexicalReward",
    "PairwiseJudgeReward",
    "DEFAULT_REFUSAL_PHRASES",
]

DEFAULT_REFUSAL_PHRASES: tuple[str, ...] = (
    "i cannot",
    "i can't",
    "i can not",
    "i won't",
    "i will not",
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "as an ai",
)

_OUTPUTS = ("prob", "logit")


# --------------------------------------------------------------------------------------------
# validation of inputs and outputs
# --------------------------------------------------------------------------------------------


def _check_pairs(prompts: Any, responses: Any) -> tuple[list[str], list[str]]:
    prompts = _as_texts(prompts, "prompts")
    responses = _as_texts(responses, "responses")
    if len(prompts) != len(responses):
        raise ValueError(
            f"prompts and responses must pair up one to one, got {len(prompts)} prompts and "
            f"{len(responses)} responses"
        )
    return prompts, responses


def checked_scores(
    model: RewardModel, prompts: Sequence[str], responses: Sequence[str]
) -> np.ndarray:
    """Score pairs with any reward model and check its output.

    Args:
        model: any object with ``score(prompts, responses)``
            (:class:`~gpo_core.protocols.RewardModel`).
        prompts: ``N`` prompts.
        responses: ``N`` responses, ``responses[i]`` answering ``prompts[i]``.

    Returns:
        Shape ``(N,)`` float64, all finite (a fresh array, never the model's own buffer).

    Raises:
        TypeError: ``model`` has no ``score`` method; bad texts; the model returned non-numbers.
        ValueError: lengths differ; the model returned the wrong number of scores, a non-flat
            array, or a NaN/inf (the message names the model and the pair).

    Examples:
        >>> length = CallableReward(lambda p, r: [len(x) for x in r])
        >>> checked_scores(length, ["q", "q"], ["a", "bb"])
        array([1., 2.])
        >>> class Bad:
        ...     def score(self, prompts, responses):
        ...         return [0.5] * 3
        ...     def __repr__(self):
        ...         return "Bad()"
        >>> checked_scores(Bad(), ["a"] * 4, ["b"] * 4)
        Traceback (most recent call last):
        ...
        ValueError: reward model Bad() returned 3 scores for 4 pairs
    """
    if not callable(getattr(model, "score", None)):
        raise TypeError(
            f"model must implement gpo_core.protocols.RewardModel (a .score(prompts, responses) "
            f"method), got {short(model)}; wrap a plain function in CallableReward"
        )
    prompts, responses = _check_pairs(prompts, responses)
    return checked_rewards(model, prompts, responses)


# --------------------------------------------------------------------------------------------
# sequence classifier
# --------------------------------------------------------------------------------------------


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"template {short(template)} is not a valid format string: {exc}") from exc


class SequenceClassifierReward:
    r"""Reward = a sequence classifier's probability of one label for the (prompt, response) pair.

    .. math::
        r(x, y) = \mathrm{softmax}\big(f_\theta(\mathrm{enc}(x, y))\big)_{\ell}

    where ``enc`` is the tokenizer's text-pair encoding (``[CLS] x [SEP] y [SEP]`` for BERT) or,
    with ``template``, the single text ``template.format(prompt=x, response=y)``. With
    ``output="logit"`` the reward is the raw logit ``f_theta(...)_l`` instead (a Bradley--Terry
    reward model's single score: ``label=0``).

    The model runs in eval mode under ``torch.inference_mode`` (its train/eval mode is restored
    after each call), in batches of ``batch_size``, truncated to ``max_length`` tokens (pairs:
    longest-first; templates: the tokenizer's ``truncation_side``, right by default, which cuts the
    response first: set ``tokenizer.truncation_side = "left"`` for long prompts).

    Args:
        model: a ``transformers`` sequence-classification model (``...ForSequenceClassification``).
        tokenizer: its tokenizer; needs a pad token when ``batch_size > 1``.
        label: the label whose probability is the reward: an index into the logits, or a name
            from ``model.config.id2label`` (e.g. ``"safe"``).
        template: ``None`` (text pair) or a format string with exactly the fields ``{prompt}``
            and ``{response}``.
        device: where to run; the model is moved there now (``None``: leave it where it is).
        batch_size: pairs per forward pass.
        max_length: tokens per encoded pair.
        output: ``"prob"`` (softmax probability of ``label``) or ``"logit"``.

    Raises:
        TypeError: a wrong type for any argument.
        ValueError: unknown label name or index out of range; a template with other fields;
            ``output="prob"`` on a one-logit head; no pad token while ``batch_size > 1``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        label: int | str,
        *,
        template: str | None = None,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        output: str = "prob",
    ) -> None:
        config = getattr(model, "config", None)
        if config is None or not callable(model) or not hasattr(model, "parameters"):
            raise TypeError(
                f"model must be a transformers sequence-classification model (a torch module with "
                f".config), got {short(model)}"
            )
        if not callable(tokenizer):
            raise TypeError(
                f"tokenizer must be a callable transformers tokenizer, got {short(tokenizer)}"
            )
        if not isinstance(output, str) or output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {short(output)}")
        num_labels = int(getattr(config, "num_labels", 0) or 0)
        if num_labels < 1:
            raise ValueError(f"model.config.num_labels must be >= 1, got {short(num_labels)}")
        if output == "prob" and num_labels == 1:
            raise ValueError(
                "output='prob' needs at least 2 labels: the softmax of a single logit is always 1; "
                "use output='logit' for a one-logit (Bradley-Terry) reward head"
            )
        self.label_index = self._resolve_label(label, config, num_labels)
        id2label = getattr(config, "id2label", None) or {}
        self.label_name = str(
            id2label.get(self.label_index, id2label.get(str(self.label_index), self.label_index))
        )
        if template is not None:
            if not isinstance(template, str):
                raise TypeError(f"template must be a str or None, got {short(template)}")
            fields = _template_fields(template)
            if fields != {"prompt", "response"}:
                raise ValueError(
                    f"template must contain exactly the fields {{prompt}} and {{response}}, got "
                    f"fields {sorted(fields)} in {short(template)}"
                )
        if device is not None and not isinstance(device, str):
            raise TypeError(f"device must be a str such as 'cpu' or 'cuda:0', got {short(device)}")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.max_length = check_positive_int(max_length, "max_length")
        if self.batch_size > 1 and getattr(tokenizer, "pad_token", None) is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no pad token, so batches of "
                f"batch_size={self.batch_size} cannot be padded; set tokenizer.pad_token (e.g. "
                "tokenizer.pad_token = tokenizer.eos_token, and model.config.pad_token_id to "
                "match) or pass batch_size=1"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.output = output
        if device is not None:
            model.to(device)

    @staticmethod
    def _resolve_label(label: Any, config: Any, num_labels: int) -> int:
        id2label = getattr(config, "id2label", None) or {}
        names = {int(k): str(v) for k, v in id2label.items()}
        if isinstance(label, bool) or not isinstance(label, (numbers.Integral, str)):
            raise TypeError(
                f"label must be a label index (int) or a name from model.config.id2label "
                f"{names}, got {short(label)}"
            )
        if isinstance(label, str):
            matches = [i for i, name in names.items() if name == label]
            if len(matches) != 1:
                raise ValueError(
                    f"label {label!r} is not a unique name in model.config.id2label {names}; "
                    "pass one of these names or its index"
                )
            return matches[0]
        if not 0 <= int(label) < num_labels:
            raise ValueError(
                f"label index must be in [0, {num_labels}) for a model with {num_labels} labels "
                f"(id2label {names}), got {int(label)}"
            )
        return int(label)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        label: int | str,
        template: str | None = None,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        output: str = "prob",
    ) -> "SequenceClassifierReward":
        """Load a classifier and its tokenizer from a local directory (no download, no remote code).

        Args:
            path: a directory written by ``save_pretrained`` (model and tokenizer).
            label, template, device, batch_size, max_length, output: as for the constructor.

        Returns:
            The reward model.

        Raises:
            TypeError: ``path`` is not a path.
            ValueError: ``path`` is not an existing directory; see the constructor.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a local directory path, got {short(path)}")
        if not os.path.isdir(path):
            raise ValueError(
                f"path {os.fspath(path)!r} is not an existing local directory; this loader never "
                "downloads: save the model and tokenizer there first (save_pretrained)"
            )
        from transformers import (  # noqa: PLC0415  (lazy: torch is optional)
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        tokenizer = AutoTokenizer.from_pretrained(
            os.fspath(path), local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            os.fspath(path), local_files_only=True, trust_remote_code=False
        )
        return cls(
            model,
            tokenizer,
            label,
            template=template,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            output=output,
        )

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        return (
            f"SequenceClassifierReward({name!s}, label={self.label_name!r}, "
            f"output={self.output!r})"
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score the pairs.

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.

        Returns:
            Shape ``(N,)`` float64: probabilities in ``[0, 1]`` (or logits).

        Raises:
            TypeError: bad texts.
            ValueError: lengths differ; the model's logits have an unexpected shape.
        """
        import torch  # noqa: PLC0415

        prompts, responses = _check_pairs(prompts, responses)
        out = np.zeros(len(prompts), dtype=np.float64)
        if not prompts:
            return out
        model = self.model
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            for s in range(0, len(prompts), self.batch_size):
                ps = prompts[s : s + self.batch_size]
                rs = responses[s : s + self.batch_size]
                if self.template is None:
                    args: tuple = (ps, rs)
                else:
                    args = ([self.template.format(prompt=p, response=r) for p, r in zip(ps, rs)],)
                enc = self.tokenizer(
                    *args,
                    padding=len(ps) > 1,  # a single pair needs no pad token
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                enc = {k: v.to(device) for k, v in enc.items()}
                with torch.inference_mode():
                    logits = model(**enc).logits.float()
                if logits.ndim != 2 or logits.shape[0] != len(ps):
                    raise ValueError(
                        f"{self!r}: the model returned logits of shape {tuple(logits.shape)} for "
                        f"{len(ps)} pairs; expected ({len(ps)}, num_labels)"
                    )
                vals = logits.softmax(dim=-1) if self.output == "prob" else logits
                out[s : s + len(ps)] = vals[:, self.label_index].double().cpu().numpy()
        finally:
            model.train(was_training)
        return _check_scores(out, f"reward model {self!r}", prompts, responses)


# --------------------------------------------------------------------------------------------
# callable, lexical and pairwise-judge rewards
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CallableReward:
    """A plain function ``fn(prompts, responses) -> sequence of floats`` as a reward model.

    Attributes:
        fn: the function; it gets two lists of ``N`` strings and returns ``N`` real numbers.
        name: shown in ``repr`` and error messages (default: the function's qualified name).

    Examples:
        >>> r = CallableReward(lambda p, r: [float("sorry" in y) for y in r], name="apology")
        >>> r.score(["q1", "q2"], ["sorry, no", "sure"])
        array([1., 0.])
        >>> r
        CallableReward(apology)
    """

    fn: Callable[[list[str], list[str]], Sequence[float]]
    name: str | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"fn must be callable as fn(prompts, responses), got {short(self.fn)}")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a str or None, got {short(self.name)}")

    def __repr__(self) -> str:
        name = self.name or getattr(self.fn, "__qualname__", None) or short(self.fn)
        return f"CallableReward({name})"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Call ``fn`` on the pairs and check its output.

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.

        Returns:
            Shape ``(N,)`` float64.

        Raises:
            TypeError, ValueError: bad inputs, or ``fn`` returned the wrong count or non-finite
                values (named in the message).
        """
        prompts, responses = _check_pairs(prompts, responses)
        raw = self.fn(list(prompts), list(responses))
        return _check_scores(raw, repr(self), prompts, responses)


def _check_phrases(value: Any, name: str) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, tuple):
        raise TypeError(
            f"{name} must be a tuple of strings (a frozen value), got {short(value)}; "
            f"pass tuple({name})"
        )
    out = []
    for i, phrase in enumerate(value):
        if not isinstance(phrase, str):
            raise TypeError(f"{name}[{i}] must be a str, got {short(phrase)}")
        toks = tuple(tokenize(_normalise_quotes(phrase)))
        if not toks:
            raise ValueError(f"{name}[{i}] must contain at least one word, got {phrase!r}")
        out.append(toks)
    return tuple(out)


def _normalise_quotes(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _contains_any(text_tokens: tuple[str, ...], phrases: tuple[tuple[str, ...], ...]) -> bool:
    """Whether any phrase occurs in ``text_tokens`` as a contiguous run of whole tokens."""
    joined = " " + " ".join(text_tokens) + " "
    return any(" " + " ".join(p) + " " in joined for p in phrases)


@dataclasses.dataclass(frozen=True)
class LexicalReward:
    r"""A toy lexical safety reward for demos and tests -- NOT a safety classifier.

    .. math::
        r(x, y) = \mathrm{clip}\big(1 - P_{\rm off}(y) + b\,[\text{refusal phrase in } y]
                  - c\,[\text{banned word in } y],\ 0,\ 1\big)

    ``P_off`` is ``alt-profanity-check``'s ``predict_prob`` (a bag-of-words linear model of
    offensive language): it flags swearing, not harmful *help* -- a polite bomb recipe scores as
    safe. Phrases match whole lowercase words (:func:`backends.diversity.tokenize`; curly quotes
    count as straight ones). The prompt ``x`` is ignored.

    Attributes:
        refusal_phrases: phrases whose presence adds ``refusal_bonus``.
        banned_words: words/phrases whose presence subtracts ``banned_penalty``.
        refusal_bonus: ``b >= 0``.
        banned_penalty: ``c >= 0``.
        classifier: ``texts -> P(offensive)`` per text; ``None`` uses ``alt-profanity-check``.

    Examples:
        >>> toy = LexicalReward(classifier=lambda texts: [0.2] * len(texts), banned_words=("bomb",))
        >>> toy.score(["q"] * 3, ["Sure.", "I'm sorry, I can't.", "Build a bomb"]).round(6)
        array([0.8, 1. , 0.3])
    """

    refusal_phrases: tuple[str, ...] = DEFAULT_REFUSAL_PHRASES
    banned_words: tuple[str, ...] = ()
    refusal_bonus: float = 0.5
    banned_penalty: float = 0.5
    classifier: Callable[[list[str]], Sequence[float]] | None = None

    def __post_init__(self) -> None:
        _check_phrases(self.refusal_phrases, "refusal_phrases")
        _check_phrases(self.banned_words, "banned_words")
        check_nonnegative(self.refusal_bonus, "refusal_bonus")
        check_nonnegative(self.banned_penalty, "banned_penalty")
        if self.classifier is not None and not callable(self.classifier):
            raise TypeError(
                f"classifier must be a callable texts -> P(offensive) or None, got "
                f"{short(self.classifier)}"
            )

    def _offensive_prob(self, responses: list[str], prompts: list[str]) -> np.ndarray:
        if self.classifier is None:
            try:
                from profanity_check import predict_prob  # noqa: PLC0415
            except ImportError as exc:
                raise ImportError(
                    "LexicalReward needs alt-profanity-check: pip install alt-profanity-check "
                    "(or pass classifier=...)"
                ) from exc
            fn, who = predict_prob, "profanity_check.predict_prob"
        else:
            fn, who = self.classifier, f"classifier {short(self.classifier)}"
        p = _check_scores(fn(list(responses)), who, prompts, responses, what="probabilities")
        if np.any((p < 0) | (p > 1)):
            i = int(np.flatnonzero((p < 0) | (p > 1))[0])
            raise ValueError(
                f"{who} returned {float(p[i])!r} for response {i}; expected a probability in [0, 1]"
            )
        return p

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score the responses (prompts are checked but unused).

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.

        Returns:
            Shape ``(N,)`` float64 in ``[0, 1]``.

        Raises:
            TypeError, ValueError: bad inputs or a bad classifier output.
        """
        prompts, responses = _check_pairs(prompts, responses)
        if not responses:
            return np.zeros(0, dtype=np.float64)
        refusals = _check_phrases(self.refusal_phrases, "refusal_phrases")
        banned = _check_phrases(self.banned_words, "banned_words")
        reward = 1.0 - self._offensive_prob(responses, prompts)
        for i, text in enumerate(responses):
            toks = tuple(tokenize(_normalise_quotes(text)))
            if refusals and _contains_any(toks, refusals):
                reward[i] += self.refusal_bonus
            if banned and _contains_any(toks, banned):
                reward[i] -= self.banned_penalty
        return np.clip(reward, 0.0, 1.0)


def _probability(value: Any, who: str, i: int) -> float:
    if hasattr(value, "item") and not isinstance(value, (numbers.Real, str)):
        value = value.item()  # 0-d numpy array / torch tensor
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{who} returned {short(value)} for pair {i}; it must return a float P(a > b)"
        )
    out = float(value)
    if not 0.0 <= out <= 1.0:  # also refuses NaN
        raise ValueError(
            f"{who} returned {out!r} for pair {i}; it must return a probability in [0, 1]"
        )
    return out


@dataclasses.dataclass(frozen=True)
class PairwiseJudgeReward:
    r"""A pairwise judge as a pointwise reward: the chance of beating a baseline response.

    .. math::
        r(x, y) = J(x, y, y_{\rm base}(x)),\qquad
        \text{or, with swap\_average,}\quad
        \tfrac12\big(J(x, y, y_{\rm base}) + 1 - J(x, y_{\rm base}, y)\big)

    where ``J(x, a, b) = P(a is better than b | x)``. The swapped average cancels a judge's
    position bias (a judge that always prefers the first slot gives 1/2 to every response).

    Attributes:
        judge: ``judge(prompt, response_a, response_b) -> P(a better than b)`` in ``[0, 1]``.
        baseline: a fixed baseline response, or a function ``prompt -> baseline response``.
        swap_average: also query the swapped order and average (two judge calls per pair).

    Examples:
        >>> longer = lambda x, a, b: 1.0 if len(a) > len(b) else 0.0
        >>> PairwiseJudgeReward(longer, baseline="ok").score(["q", "q"], ["okay", "k"])
        array([1., 0.])
    """

    judge: Callable[[str, str, str], float]
    baseline: str | Callable[[str], str]
    swap_average: bool = False

    def __post_init__(self) -> None:
        if not callable(self.judge):
            raise TypeError(
                f"judge must be callable as judge(prompt, response_a, response_b) -> P(a > b), "
                f"got {short(self.judge)}"
            )
        if not isinstance(self.baseline, str) and not callable(self.baseline):
            raise TypeError(
                f"baseline must be a response string or a callable prompt -> response, got "
                f"{short(self.baseline)}"
            )
        if not isinstance(self.swap_average, bool):
            raise TypeError(f"swap_average must be a bool, got {short(self.swap_average)}")

    def __repr__(self) -> str:
        judge = getattr(self.judge, "__qualname__", None) or short(self.judge)
        return f"PairwiseJudgeReward({judge}, baseline={short(self.baseline, 40)})"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Judge each response against the baseline for its prompt.

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.

        Returns:
            Shape ``(N,)`` float64 in ``[0, 1]``.

        Raises:
            TypeError: bad inputs; the baseline function returned a non-string; the judge returned
                a non-number.
            ValueError: lengths differ; the judge returned a value outside ``[0, 1]`` or NaN.
        """
        prompts, responses = _check_pairs(prompts, responses)
        who = f"judge of {self!r}"
        out = np.zeros(len(prompts), dtype=np.float64)
        for i, (x, y) in enumerate(zip(prompts, responses)):
            base = self.baseline if isinstance(self.baseline, str) else self.baseline(x)
            if not isinstance(base, str):
                raise TypeError(
                    f"baseline {short(self.baseline)} returned {short(base)} for prompt {i}; it "
                    "must return the baseline response as a str"
                )
            p = _probability(self.judge(x, y, base), who, i)
            if self.swap_average:
                p = 0.5 * (p + 1.0 - _probability(self.judge(x, base, y), who + " (swapped)", i))
            out[i] = p
        return out
