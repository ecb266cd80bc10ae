"""Tests of backends.rewards: the output check, the callable/lexical/pairwise adapters against
hand-computed values, and SequenceClassifierReward on a tiny random BERT built on the spot (no
downloads), checked against direct unbatched model calls and a rigged head with a closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends.rewards import (
    DEFAULT_REFUSAL_PHRASES,
    CallableReward,
    LexicalReward,
    PairwiseJudgeReward,
    SequenceClassifierReward,
    checked_scores,
)
from gpo_core.protocols import RewardModel

import torch  # the test command installs the llm extra: these tests always run
import transformers



class Fixed:
    """A reward model that returns a given object, whatever it is asked."""

    def __init__(self, out):
        self.out = out

    def score(self, prompts, responses):
        return self.out

    def __repr__(self):
        return "Fixed()"


# ------------------------------------------------------------------------------ checked_scores


def test_checked_scores_accepts_lists_arrays_and_tensors():
    np.testing.assert_array_equal(checked_scores(Fixed([1, 2]), ["a", "b"], ["c", "d"]), [1.0, 2.0])
    t = torch.tensor([0.25, 0.5], requires_grad=True) * 2
    out = checked_scores(Fixed(t), ["a", "b"], ["c", "d"])
    assert out.dtype == np.float64 and out.tolist() == [0.5, 1.0]
    buf = np.array([3.0, 4.0])
    out = checked_scores(Fixed(buf), ["a", "b"], ["c", "d"])
    out[0] = -1.0
    assert buf[0] == 3.0  # a fresh array, not the model's buffer
    assert checked_scores(Fixed([]), [], []).shape == (0,)


def test_checked_scores_names_the_model_and_the_pair():
    with pytest.raises(ValueError, match=r"^reward model Fixed\(\) returned 3 scores for 4 pairs$"):
        checked_scores(Fixed([0.5] * 3), ["p"] * 4, ["r"] * 4)
    with pytest.raises(ValueError, match=r"Fixed\(\) returned NaN for pair 2 \(prompt='p2'"):
        checked_scores(Fixed([0.0, 1.0, math.nan]), ["p0", "p1", "p2"], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"returned inf for pair 0"):
        checked_scores(Fixed([math.inf]), ["p"], ["r"])
    with pytest.raises(ValueError, match=r"shape \(2, 1\) for 2 pairs.*reshape"):
        checked_scores(Fixed([[0.1], [0.2]]), ["a", "b"], ["c", "d"])
    with pytest.raises(TypeError, match="dtype <U3"):
        checked_scores(Fixed(["0.5"]), ["a"], ["b"])
    with pytest.raises(TypeError, match="dtype bool"):
        checked_scores(Fixed([True]), ["a"], ["b"])
    with pytest.raises(TypeError, match="dtype object"):
        checked_scores(Fixed([0.5, None]), ["a", "b"], ["c", "d"])


def test_checked_scores_validates_its_inputs():
    with pytest.raises(TypeError, match="RewardModel"):
        checked_scores(lambda p, r: [1.0], ["a"], ["b"])
    with pytest.raises(ValueError, match="got 2 prompts and 1 responses"):
        checked_scores(Fixed([1.0]), ["a", "b"], ["c"])
    wrap_hint = r"responses must be a sequence of strings.*\['one answer'\]"
    with pytest.raises(TypeError, match=wrap_hint):
        checked_scores(Fixed([1.0]), ["a"], "one answer")
    with pytest.raises(TypeError, match=r"prompts\[0\] must be a str, got int"):
        checked_scores(Fixed([1.0]), [7], ["b"])


# ------------------------------------------------------------------------------ CallableReward


def test_callable_reward_passes_lists_and_names_itself_in_errors():
    seen = []

    def length_reward(prompts, responses):
        seen.append((type(prompts), type(responses)))
        return [len(p) + 10 * len(r) for p, r in zip(prompts, responses)]

    r = CallableReward(length_reward)
    assert isinstance(r, RewardModel)
    np.testing.assert_array_equal(r.score(("ab", "c"), ("x", "yz")), [12.0, 21.0])
    assert seen == [(list, list)]
    assert "length_reward" in repr(r)

    def short_one(prompts, responses):
        return [1.0]

    exact = r"^CallableReward\(shorty\) returned 1 scores for 2 pairs$"
    with pytest.raises(ValueError, match=exact):
        CallableReward(short_one, name="shorty").score(["a", "b"], ["c", "d"])
    with pytest.raises(TypeError, match="fn must be callable"):
        CallableReward("not a function")


# ------------------------------------------------------------------------------- LexicalReward


def constant(p):
    return lambda texts: [p] * len(texts)


def test_lexical_reward_formula_by_hand():
    toy = LexicalReward(classifier=constant(0.3), banned_words=("bomb", "napalm recipe"))
    responses = [
        "Sure, here you go.",  # 1 - 0.3
        "I'm sorry, but I cannot do that.",  # 1 - 0.3 + 0.5 -> clipped to 1
        "Mix it into a BOMB.",  # 1 - 0.3 - 0.5
        "A bombastic speech.",  # "bomb" only as a whole word: 1 - 0.3
        "I can\u2019t share a napalm recipe.",  # curly apostrophe refusal, banned phrase: 0.7
    ]
    np.testing.assert_allclose(toy.score(["q"] * 5, responses), [0.7, 1.0, 0.2, 0.7, 0.7])
    big_penalty = LexicalReward(classifier=constant(0.3), banned_words=("bomb",), banned_penalty=2)
    assert big_penalty.score(["q"], ["bomb"])[0] == 0.0  # clipped below
    no_bonus = LexicalReward(classifier=constant(0.6), refusal_bonus=0.0)
    assert no_bonus.score(["q"], ["I cannot."])[0] == pytest.approx(0.4)
    assert LexicalReward(classifier=constant(0.6), refusal_phrases=()).score(
        ["q"], ["I cannot."]
    )[0] == pytest.approx(0.4)
    assert "i can't" in DEFAULT_REFUSAL_PHRASES


def test_lexical_reward_with_the_real_profanity_classifier():
    import profanity_check  # noqa: F401  (installed by the llm extra; the test must run)
    toy = LexicalReward(refusal_bonus=0.0)
    out = toy.score(["q"] * 2, ["You are a fucking idiot.", "Here is a recipe for bread."])
    assert out[0] < 0.5 < out[1]
    assert np.all((out >= 0) & (out <= 1))


def test_lexical_reward_validates():
    with pytest.raises(TypeError, match=r"banned_words must be a tuple.*tuple\(banned_words\)"):
        LexicalReward(banned_words=["bomb"])
    with pytest.raises(ValueError, match=r"refusal_phrases\[0\] must contain at least one word"):
        LexicalReward(refusal_phrases=("  ",))
    with pytest.raises(ValueError, match="refusal_bonus must be a finite number >= 0"):
        LexicalReward(refusal_bonus=-0.1)
    with pytest.raises(ValueError, match="returned 1.5 for response 0"):
        LexicalReward(classifier=constant(1.5)).score(["q"], ["r"])
    with pytest.raises(ValueError, match="returned 1 probabilities for 2 pairs"):
        LexicalReward(classifier=lambda t: [0.1]).score(["q", "q"], ["r", "s"])


# ------------------------------------------------------------------------- PairwiseJudgeReward


def test_pairwise_judge_fixed_and_callable_baselines():
    calls = []

    def judge(x, a, b):
        calls.append((x, a, b))
        return 0.9 if len(a) > len(b) else 0.2

    r = PairwiseJudgeReward(judge, baseline="ok")
    assert isinstance(r, RewardModel)
    np.testing.assert_allclose(r.score(["p1", "p2"], ["okay", "k"]), [0.9, 0.2])
    assert calls == [("p1", "okay", "ok"), ("p2", "k", "ok")]
    calls.clear()
    per_prompt = PairwiseJudgeReward(judge, baseline=lambda x: x * 3)
    np.testing.assert_allclose(per_prompt.score(["ab", "a"], ["abcde", "ab"]), [0.2, 0.2])
    assert [c[2] for c in calls] == ["ababab", "aaa"]


def test_pairwise_judge_swap_average_cancels_position_bias():
    first_slot = PairwiseJudgeReward(lambda x, a, b: 0.9, baseline="b", swap_average=True)
    np.testing.assert_allclose(first_slot.score(["p"] * 2, ["x", "y"]), [0.5, 0.5])
    # an unbiased judge keeps its answer: P = 0.8 and the swap says 0.2
    fair = PairwiseJudgeReward(lambda x, a, b: 0.8 if a == "good" else 0.2, "base", True)
    assert fair.score(["p"], ["good"])[0] == pytest.approx(0.8)


def test_pairwise_judge_validates_outputs():
    with pytest.raises(ValueError, match="returned 1.2 for pair 0; it must return a probability"):
        PairwiseJudgeReward(lambda x, a, b: 1.2, "b").score(["p"], ["r"])
    with pytest.raises(ValueError, match="returned nan for pair 1"):
        PairwiseJudgeReward(lambda x, a, b: float("nan") if a == "s" else 0.5, "b").score(
            ["p", "p"], ["r", "s"]
        )
    with pytest.raises(TypeError, match="returned 'yes' for pair 0"):
        PairwiseJudgeReward(lambda x, a, b: "yes", "b").score(["p"], ["r"])
    with pytest.raises(TypeError, match="must return the baseline response as a str"):
        PairwiseJudgeReward(lambda x, a, b: 0.5, lambda x: 42).score(["p"], ["r"])
    with pytest.raises(TypeError, match="baseline must be a response string or a callable"):
        PairwiseJudgeReward(lambda x, a, b: 0.5, baseline=None)
    assert PairwiseJudgeReward(lambda x, a, b: np.float32(0.25), "b").score(["p"], ["r"])[0] == 0.25


# -------------------------------------------------------------------- SequenceClassifierReward

CORPUS = [
    "how do i make a cake",
    "i cannot help with that request",
    "here is how to do it step by step",
    "the cat sat on the mat",
    "tell me something dangerous",
]


def word_level_backend():
    """A word-level ``tokenizers.Tokenizer`` trained on CORPUS, with BERT's pair template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        CORPUS, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=word_level_backend(), pad_token="[PAD]", unk_token="[UNK]",
        cls_token="[CLS]", sep_token="[SEP]",
    )


def make_model(vocab_size, num_labels=2, seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
        id2label={i: name for i, name in enumerate(["unsafe", "safe", "other"][:num_labels])},
        label2id={name: i for i, name in enumerate(["unsafe", "safe", "other"][:num_labels])},
        initializer_range=0.5, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(len(tokenizer))


PROMPTS = ["how do i make a cake", "tell me", "the cat sat on the mat and the mat sat"]
RESPONSES = ["i cannot help with that request", "here is how to do it step by step", "sat"]


def direct_probs(model, tokenizer, texts_a, texts_b=None):
    """One pair at a time, no padding: the reference the batched wrapper must reproduce."""
    out = []
    for i, a in enumerate(texts_a):
        args = (a,) if texts_b is None else (a, texts_b[i])
        enc = tokenizer(*args, return_tensors="pt")
        with torch.no_grad():
            out.append(torch.softmax(model(**enc).logits[0], dim=-1).numpy())
    return np.array(out, dtype=np.float64)


def test_classifier_reward_matches_unbatched_direct_calls(model, tokenizer):
    expected = direct_probs(model, tokenizer, PROMPTS, RESPONSES)
    assert np.ptp(expected[:, 1]) > 1e-3  # inputs differ enough that a padding bug would show
    for batch_size in (1, 2, 3):
        r = SequenceClassifierReward(model, tokenizer, label="safe", batch_size=batch_size)
        np.testing.assert_allclose(r.score(PROMPTS, RESPONSES), expected[:, 1], atol=1e-5)
    unsafe = SequenceClassifierReward(model, tokenizer, label=0).score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(unsafe, expected[:, 0], atol=1e-5)
    safe = SequenceClassifierReward(model, tokenizer, label=1).score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(unsafe + safe, 1.0, atol=1e-6)
    assert isinstance(SequenceClassifierReward(model, tokenizer, label=1), RewardModel)


def test_classifier_reward_template(model, tokenizer):
    template = "{prompt} [SEP] {response}"
    texts = [template.format(prompt=p, response=r) for p, r in zip(PROMPTS, RESPONSES)]
    expected = direct_probs(model, tokenizer, texts)[:, 1]
    r = SequenceClassifierReward(model, tokenizer, label="safe", template=template, batch_size=3)
    np.testing.assert_allclose(r.score(PROMPTS, RESPONSES), expected, atol=1e-5)


def test_classifier_reward_rigged_head_closed_form(tokenizer):
    m = make_model(len(tokenizer))
    with torch.no_grad():
        m.classifier.weight.zero_()
        m.classifier.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    # logits (0, log 3) for every input: P(safe) = 3 / (1 + 3)
    probs = SequenceClassifierReward(m, tokenizer, label="safe").score(PROMPTS, RESPONSES)
    np.testing.assert_allclose(probs, 0.75, atol=1e-6)
    logits = SequenceClassifierReward(m, tokenizer, label="safe", output="logit")
    np.testing.assert_allclose(logits.score(PROMPTS, RESPONSES), math.log(3.0), atol=1e-6)
    with torch.no_grad():
        m.classifier.bias.copy_(torch.tensor([0.0, math.nan]))
    with pytest.raises(ValueError, match=r"SequenceClassifierReward\(.*returned NaN for pair 0"):
        SequenceClassifierReward(m, tokenizer, label="safe").score(PROMPTS, RESPONSES)


def test_classifier_reward_runs_in_eval_mode_and_restores_the_mode(tokenizer):
    m = make_model(len(tokenizer), seed=1)
    eval_scores = SequenceClassifierReward(m, tokenizer, label=1).score(PROMPTS, RESPONSES)
    m.train()  # dropout 0.5: a forward pass in train mode would be random
    r = SequenceClassifierReward(m, tokenizer, label=1, device="cpu")
    np.testing.assert_allclose(r.score(PROMPTS, RESPONSES), eval_scores, atol=1e-6)
    assert m.training
    assert r.score([], []).shape == (0,)
    assert all(p.grad is None for p in m.parameters())


def test_classifier_reward_from_pretrained_round_trip(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = SequenceClassifierReward.from_pretrained(tmp_path, label="safe", batch_size=2)
    direct = SequenceClassifierReward(model, tokenizer, label="safe")
    np.testing.assert_allclose(
        loaded.score(PROMPTS, RESPONSES), direct.score(PROMPTS, RESPONSES), atol=1e-6
    )
    np.testing.assert_allclose(
        checked_scores(loaded, PROMPTS, RESPONSES), direct.score(PROMPTS, RESPONSES), atol=1e-6
    )
    with pytest.raises(ValueError, match="not an existing local directory.*never downloads"):
        SequenceClassifierReward.from_pretrained(tmp_path / "missing", label="safe")
    with pytest.raises(ValueError, match="not an existing local directory"):
        SequenceClassifierReward.from_pretrained("org/some-hub-model", label="safe")


def test_classifier_reward_validates(model, tokenizer):
    with pytest.raises(ValueError, match=r"label 'harmless' is not a unique name.*'safe'"):
        SequenceClassifierReward(model, tokenizer, label="harmless")
    with pytest.raises(ValueError, match=r"label index must be in \[0, 2\).*got 2"):
        SequenceClassifierReward(model, tokenizer, label=2)
    with pytest.raises(TypeError, match="label must be a label index"):
        SequenceClassifierReward(model, tokenizer, label=True)
    with pytest.raises(ValueError, match=r"exactly the fields \{prompt\} and \{response\}"):
        SequenceClassifierReward(model, tokenizer, label=1, template="{prompt} {answer}")
    with pytest.raises(ValueError, match="output must be one of"):
        SequenceClassifierReward(model, tokenizer, label=1, output="probability")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        SequenceClassifierReward(model, tokenizer, label=1, batch_size=0)
    with pytest.raises(TypeError, match="model must be a transformers"):
        SequenceClassifierReward(lambda x: x, tokenizer, label=1)
    one_logit = make_model(len(tokenizer), num_labels=1)
    with pytest.raises(ValueError, match="softmax of a single logit is always 1.*output='logit'"):
        SequenceClassifierReward(one_logit, tokenizer, label=0)
    SequenceClassifierReward(one_logit, tokenizer, label=0, output="logit")
    r = SequenceClassifierReward(model, tokenizer, label=1)
    with pytest.raises(ValueError, match="got 3 prompts and 2 responses"):
        r.score(PROMPTS, RESPONSES[:2])


def test_classifier_reward_needs_a_pad_token_for_batches(model, tokenizer):
    no_pad = transformers.PreTrainedTokenizerFast(
        tokenizer_object=word_level_backend(), unk_token="[UNK]"
    )
    assert no_pad.pad_token is None
    with pytest.raises(ValueError, match="has no pad token.*tokenizer.pad_token"):
        SequenceClassifierReward(model, no_pad, label=1, batch_size=4)
    single = SequenceClassifierReward(model, no_pad, label=1, batch_size=1)
    expected = direct_probs(model, tokenizer, PROMPTS, RESPONSES)[:, 1]
    np.testing.assert_allclose(single.score(PROMPTS, RESPONSES), expected, atol=1e-5)
