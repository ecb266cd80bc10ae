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
from typing import Any, Callable, Sequence

import numpy as np

from backends._texts import _check_pairs
from backends.diversity import tokenize
from gpo_core._validate import check_nonnegative, short
from gpo_core.protocols import RewardModel
from gpo_core.rollout import check_scores as _check_scores
from gpo_core.rollout import checked_rewards

# The classifier reward lives in its own module (torch and transformers on use); re-exported.
from backends.classifier_reward import SequenceClassifierReward  # noqa: E402

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


# --------------------------------------------------------------------------------------------
# validation of inputs and outputs
# --------------------------------------------------------------------------------------------


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
