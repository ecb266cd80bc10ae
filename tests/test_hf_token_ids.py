"""HFPolicy scores what it sampled: token ids kept from sampling through scoring.

A model may write ``"</s>"`` or a chat marker one character at a time; decoded, the text is
``"</s><|im_end|>"``, and re-encoded it is two special ids the policy never generates. Scoring
the re-encoded text used to raise in the middle of ``run_game``. The model here is nudged to
write exactly that string (a fixed bonus on the next character of the script, keyed by the last
two tokens), so the adversarial case is the common one.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends.hf import GenerationSettings, HFPolicy  # noqa: E402
from backends.tiny import tiny_llama, train_tokenizer  # noqa: E402

SCRIPT = "</s><|im_end|>"


@pytest.fixture(scope="module")
def tok():
    t = train_tokenizer(vocab_size=400)
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return t


class Nudged(torch.nn.Module):
    """A causal LM plus ``strength`` on the logit of the script's next token (by the last two)."""

    def __init__(self, inner, table, strength=10.0):
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.generation_config = inner.generation_config
        self.register_buffer("table", table)
        self.strength = strength

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None,
                use_cache=False, logits_to_keep=0):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, cache=cache, use_cache=use_cache,
                         logits_to_keep=logits_to_keep)
        # the previous token of each position (the first one's is itself: no pair there)
        prev = torch.cat([input_ids[:, :1], input_ids[:, :-1]], 1)
        if cache is not None and input_ids.shape[1] == 1:
            prev = self._last  # one new token: its predecessor was the last one fed
        self._last = input_ids[:, -1:]
        keep = out.logits.shape[1]
        nxt = self.table[prev[:, -keep:], input_ids[:, -keep:]]
        bonus = torch.nn.functional.one_hot(nxt, out.logits.shape[-1]) * self.strength
        new = getattr(out, "cache", None)
        new = getattr(out, "past_key_values", None) if new is None else new
        return types.SimpleNamespace(logits=out.logits + bonus, cache=new)


def nudged_model(tok, seed):
    ids = [tok.convert_tokens_to_ids(ch) for ch in SCRIPT] + [tok.eos_token_id]
    v = len(tok)
    table = torch.full((v, v), ids[0], dtype=torch.long)  # anything else: start the script
    table[:, ids[0]] = ids[1]  # "<" after anything: "/"
    for a, b, c in zip(ids, ids[1:], ids[2:]):
        table[a, b] = c
    return Nudged(tiny_llama(tok, 32, 1, seed=seed, heads=2), table)


def test_the_script_needs_the_pairs_it_says(tok):
    ids = [tok.convert_tokens_to_ids(ch) for ch in SCRIPT]
    assert tok.decode(ids, skip_special_tokens=True) == SCRIPT
    pairs = list(zip(ids, ids[1:]))
    assert len(set(pairs)) == len(pairs)  # the trigram table is well defined
    special = set(tok.all_special_ids)
    assert set(tok(SCRIPT, add_special_tokens=False)["input_ids"]) <= special  # re-encodes special


def test_sampled_outputs_are_scored_from_their_ids_not_their_text(tok):
    policy = HFPolicy(nudged_model(tok, 1), tok, generation=GenerationSettings(16))
    s = policy.sample(["Hi", "Tea?"], 6, np.random.default_rng(0))
    spelled = [o for o in s.outputs if "</s>" in o]
    assert spelled and any("<|im_end|>" in o for o in s.outputs)
    lp = policy.log_prob(s.contexts, s.outputs)
    assert np.all(np.isfinite(lp)) and np.all(lp < 0)
    # each row's score is that of its sampled characters plus the stop term
    per_token = policy.token_log_probs(s.contexts, s.outputs)
    for row, total, out in zip(per_token, lp, s.outputs):
        if out == SCRIPT:
            assert len(row) == len(SCRIPT) + 1  # one token per character, as sampled, and eos
        np.testing.assert_allclose(row.sum(), total, atol=1e-5)
    # a row by hand: the forward over prompt + sampled ids
    i = s.outputs.index(SCRIPT)
    c, o = s.contexts[i], s.outputs[i]
    prompt = tok(c)["input_ids"]
    sampled = [tok.convert_tokens_to_ids(ch) for ch in o]
    seq = prompt + sampled + ([tok.eos_token_id] if len(sampled) < 16 else [])
    with torch.no_grad():
        logits = policy.model(torch.tensor([seq])).logits[0].double()
    excluded = sorted(set(tok.all_special_ids) - {tok.eos_token_id})
    logits[:, excluded] = -torch.inf
    logp = torch.log_softmax(logits, -1)
    want = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(seq[len(prompt):]))
    assert lp[i] == pytest.approx(want, abs=1e-4)
    # a policy that did not sample them reads the text, which holds special tokens: refused
    fresh = HFPolicy(nudged_model(tok, 1), tok, generation=GenerationSettings(16))
    with pytest.raises(ValueError, match="special token ids"):
        fresh.log_prob(s.contexts, s.outputs)


def test_the_kept_ids_are_bounded_least_recently_used_first_out(tok):
    policy = HFPolicy(nudged_model(tok, 1), tok, generation=GenerationSettings(16),
                      token_cache_size=2)
    first = policy.sample(["Hi"], 1, np.random.default_rng(0))
    assert "</s>" in first.outputs[0]
    policy.sample(["Tea?", "Yes"], 1, np.random.default_rng(1))  # two newer rows push it out
    with pytest.raises(ValueError, match="special token ids"):
        policy.log_prob(first.contexts, first.outputs)
    off = HFPolicy(nudged_model(tok, 1), tok, generation=GenerationSettings(16),
                   token_cache_size=0)
    s = off.sample(["Hi"], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="special token ids"):
        off.log_prob(s.contexts, s.outputs)
    with pytest.raises(ValueError, match="token_cache_size must be an integer >= 0, got -1"):
        HFPolicy(nudged_model(tok, 1), tok, token_cache_size=-1)
    with pytest.raises(TypeError, match="token_cache_size must be an integer"):
        HFPolicy(nudged_model(tok, 1), tok, token_cache_size=1.5)


def test_run_game_plays_through_adversarial_strings(tok):
    from backends.rewards import CallableReward
    from gpo_core.alignment import GameConfig, run_game

    gen = GenerationSettings(max_new_tokens=16)
    defender = HFPolicy(nudged_model(tok, 1), tok, generation=gen, name="defender",
                        max_fit_steps=5)
    adversary = HFPolicy(nudged_model(tok, 2), tok, generation=gen, name="adversary",
                         max_fit_steps=5)
    reward = CallableReward(lambda prompts, responses: [
        (len(p) % 5 + len(r) % 3) / 7 for p, r in zip(prompts, responses)])
    config = GameConfig(rounds=2, batch_size=2, prompts_per_context=2, responses_per_prompt=2,
                        defender_eta=1.0, adversary_eta=1.0, seed=0)
    before = [p.snapshot() for p in (defender, adversary)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a short fit budget may run out
        result = run_game(defender, adversary, reward, config, seed_prompts=["Hi", "Tea?"])
    history = list(result.history)
    assert any("</s>" in p for p in history) and any("<|im_end|>" in p for p in history)
    for policy, snap in zip((defender, adversary), before):
        moved = max(float((policy.snapshot()[k] - v).abs().max()) for k, v in snap.items()
                    if v.is_floating_point())
        assert moved > 0, policy.name  # both players updated on the adversarial rows
