"""HFPolicy's stop tokens: a chat model's end-of-turn token ends a row as eos does.

The tokenizer here has an end-of-turn special token ``<|eot|>`` that differs from its eos, as
Llama 3's ``<|eot_id|>`` or Qwen's ``<|im_end|>`` do. Configured as a stop id (through
``model.generation_config.eos_token_id``, an int or a list, or ``stop_token_ids``), it ends a
row, and the policy over texts gives the "ended here" event the probability of *any* stop id;
unconfigured, it is a special token like the others and is never generated.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends.hf import GenerationSettings, HFPolicy  # noqa: E402
from backends.tiny import tiny_llama, word_tokenizer  # noqa: E402

WORDS = ["a", "b", "c"]
CONTEXTS = ["a", "b c"]


@pytest.fixture(scope="module")
def tok():
    t = word_tokenizer(WORDS)
    t.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    return t


def _model(tok, seed=1):
    model = tiny_llama(tok, 32, 1, seed=seed, heads=2, init_std=0.3)
    assert model.config.vocab_size == len(tok) == 5
    with torch.no_grad():  # give the end-of-turn token as much mass as eos has
        out = model.get_output_embeddings().weight
        out[_eot(tok)] = out[tok.eos_token_id]
    return model


def _space(m):
    return [" ".join(t) for n in range(m + 1) for t in itertools.product(WORDS, repeat=n)]


def _eot(tok):
    return tok.convert_tokens_to_ids("<|eot|>")


def _with_eot_in_generation_config(tok, as_list=True):
    model = _model(tok)
    eot = _eot(tok)
    model.generation_config.eos_token_id = [tok.eos_token_id, eot] if as_list else eot
    return model


@pytest.mark.parametrize("m", [1, 2])
def test_any_stop_id_ends_a_row_and_the_texts_still_sum_to_one(tok, m):
    policy = HFPolicy(_with_eot_in_generation_config(tok), tok, generation=GenerationSettings(m))
    space = _space(m)
    for ctx in CONTEXTS:
        p = np.exp(policy.log_prob([ctx] * len(space), space))
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
    # the "ends at once" term is p(eos) + p(eot) from the raw logits
    ids = tok("b c")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(policy.model(torch.tensor([ids])).logits[0, -1].double(), -1)
    want = float(probs[tok.eos_token_id] + probs[_eot(tok)])
    assert float(probs[_eot(tok)]) > 0.05  # the end-of-turn token carries real mass here
    got = float(np.exp(policy.log_prob(["b c"], [""])[0]))
    assert got == pytest.approx(want, rel=1e-5)


def test_without_stop_configuration_the_end_of_turn_token_is_never_generated(tok):
    model = _model(tok)
    policy = HFPolicy(model, tok, generation=GenerationSettings(1))
    ids = tok("b c")["input_ids"]
    with torch.no_grad():
        logits = policy.model(torch.tensor([ids])).logits[0, -1].double()
    logits[_eot(tok)] = -torch.inf  # excluded like any special token other than the stops
    want = float(torch.softmax(logits, -1)[tok.eos_token_id])
    assert float(np.exp(policy.log_prob(["b c"], [""])[0])) == pytest.approx(want, rel=1e-5)
    outs = policy.sample(["b c"], 300, np.random.default_rng(0)).outputs
    assert "<|eot|>" not in "".join(outs)


def test_sampling_ends_on_either_stop_with_the_scored_probability(tok):
    policy = HFPolicy(_with_eot_in_generation_config(tok), tok, generation=GenerationSettings(2),
                      micro_batch_size=4000)
    n = 4000
    outs = np.array(policy.sample(["b c"], n, np.random.default_rng(3)).outputs)
    space = _space(2)
    p = np.exp(policy.log_prob(["b c"] * len(space), space))
    freq = np.array([np.mean(outs == y) for y in space])
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9), (freq, p)
    # the same rows, scored per token: the last entry of an ended row is the stop term
    rows = policy.token_log_probs(["b c"] * 2, ["", "a"])
    assert len(rows[0]) == 1 and len(rows[1]) == 2


@pytest.mark.parametrize("how", ["int in generation_config", "stop_token_ids"])
def test_the_other_ways_of_naming_the_stop_ids_give_the_same_policy(tok, how):
    space = _space(2)
    c = [ctx for ctx in CONTEXTS for _ in space]
    o = space * len(CONTEXTS)
    gen = GenerationSettings(2)
    listed = HFPolicy(_with_eot_in_generation_config(tok), tok, generation=gen)
    if how == "stop_token_ids":
        other = HFPolicy(_model(tok), tok, generation=gen, stop_token_ids=[_eot(tok)])
    else:
        other = HFPolicy(_with_eot_in_generation_config(tok, as_list=False), tok, generation=gen)
    np.testing.assert_allclose(other.log_prob(c, o), listed.log_prob(c, o), rtol=1e-6)
    plain = HFPolicy(_model(tok), tok, generation=gen)
    assert np.abs(plain.log_prob(c, o) - listed.log_prob(c, o)).max() > 1e-3  # not vacuous


def test_stop_token_ids_are_checked(tok):
    with pytest.raises(ValueError, match=r"stop_token_ids\[0\] must be a token id in \[0, 5\)"):
        HFPolicy(_model(tok), tok, stop_token_ids=[9])
    with pytest.raises(TypeError, match="stop_token_ids must be a token id or a list"):
        HFPolicy(_model(tok), tok, stop_token_ids="<|eot|>")
    with pytest.raises(TypeError, match=r"stop_token_ids\[0\] must be an integer"):
        HFPolicy(_model(tok), tok, stop_token_ids=[True])
    model = _model(tok)
    model.generation_config.eos_token_id = [tok.eos_token_id, 17]
    with pytest.raises(ValueError, match=r"generation_config.eos_token_id\[1\] must be a token id"):
        HFPolicy(model, tok)


def test_a_stop_token_spelled_in_an_output_text_is_refused(tok):
    policy = HFPolicy(_with_eot_in_generation_config(tok), tok, generation=GenerationSettings(2))
    with pytest.raises(ValueError, match="output 0 .* special token ids"):
        policy.log_prob(["a"], ["a <|eot|>"])
