"""HFPolicy's two batch sizes: ``generation_batch_size`` rows per sampling batch,
``micro_batch_size`` rows per scoring and training forward, with gradients accumulated across
micro-batches (exactly the gradient of one big batch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends.hf import GenerationSettings, HFPolicy  # noqa: E402
from backends.tiny import tiny_llama, word_tokenizer  # noqa: E402
from gpo_core.protocols import Experience, MirrorStep  # noqa: E402

WORDS = ["a", "b", "c", "d"]
CONTEXTS = ["a", "b c", "d d a"]


@pytest.fixture(scope="module")
def words():
    return word_tokenizer(WORDS)


def _model(tok):
    return tiny_llama(tok, 32, 1, seed=1, heads=2, init_std=0.3)


def _count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    return calls


def test_generation_and_scoring_batch_sizes_are_separate(words):
    gen = GenerationSettings(max_new_tokens=1)
    policy = HFPolicy(_model(words), words, generation=gen, generation_batch_size=4,
                      micro_batch_size=5)
    calls = _count_forwards(policy.model)
    s = policy.sample(CONTEXTS, 3, np.random.default_rng(0))  # 9 rows, one token each
    assert calls == [4, 4, 1]
    calls.clear()
    policy.log_prob(s.contexts, s.outputs)
    assert calls == [5, 4]
    # the samples do not depend on the generation batch (each row has its own stream)
    other = HFPolicy(_model(words), words, generation=gen, generation_batch_size=64)
    assert other.sample(CONTEXTS, 3, np.random.default_rng(0)).outputs == s.outputs
    # by default generation batches follow micro_batch_size
    default = HFPolicy(_model(words), words, generation=gen, micro_batch_size=2)
    calls = _count_forwards(default.model)
    default.sample(CONTEXTS, 1, np.random.default_rng(0))
    assert calls == [2, 1]


def test_gradients_accumulate_exactly_across_micro_batches(words):
    space = [""] + WORDS
    c = [x for x in CONTEXTS for _ in space]
    o = space * len(CONTEXTS)
    exp = Experience(tuple(c), tuple(o), np.random.default_rng(3).normal(size=len(c)),
                     np.ones(len(c)))
    norms, backward_calls = {}, {}
    for micro in (2, 7, 64):
        policy = HFPolicy(_model(words), words, generation=GenerationSettings(1),
                          optimizer="adam", max_fit_steps=1, micro_batch_size=micro,
                          generation_batch_size=1)
        calls = _count_forwards(policy.model)
        with pytest.warns(RuntimeWarning, match="max_fit_steps"):
            metrics = policy.update(exp, MirrorStep(eta=0.7, alpha=0.2))
        norms[micro] = metrics["grad_norm"]
        backward_calls[micro] = calls
    # one evaluation (its forward is pi_t's scores too), then the final scores; with several
    # micro-batches the evaluation scores every row without grad, then back-propagates
    # micro-batch by micro-batch
    assert backward_calls[7] == [7, 7, 1] * 3
    assert backward_calls[64] == [15] * 2
    assert norms[2] == pytest.approx(norms[64], rel=1e-5)
    assert norms[7] == pytest.approx(norms[64], rel=1e-5)
    assert norms[64] > 1e-3


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (2.5, TypeError), ("8", TypeError)])
def test_bad_generation_batch_size_is_named(words, bad, exc):
    with pytest.raises(exc, match="generation_batch_size"):
        HFPolicy(_model(words), words, generation_batch_size=bad)
