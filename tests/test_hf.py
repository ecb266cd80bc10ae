"""backends.hf.HFPolicy on tiny offline models: the Policy contract, checked against closed forms.

The completion space is made enumerable with a closed-vocabulary tokenizer
(:func:`backends.tiny.word_tokenizer`) and ``max_new_tokens`` of 1 or 2, so the exact distribution
``pi(. | c)`` is ``exp(log_prob)`` over every output, and the oracle for an update is
``gpo_core.mirror_step`` on those exact probabilities.
"""

from __future__ import annotations

import copy
import itertools
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends.hf import GenerationSettings, HFPolicy, load_snapshot, save_snapshot  # noqa: E402
from backends.tiny import (  # noqa: E402
    HARMLESS_SENTENCES,
    tiny_llama,
    train_tokenizer,
    word_tokenizer,
)
from gpo_core import mirror_step, softmax  # noqa: E402
from gpo_core.protocols import Experience, MirrorStep, Policy  # noqa: E402

WORDS = ["a", "b", "c", "d"]
CONTEXTS = ["a", "b c", "d d a"]
ONE = GenerationSettings(max_new_tokens=1)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(vocab_size=400)


@pytest.fixture(scope="module")
def words():
    return word_tokenizer(WORDS)


def _word_model(tok, seed=1, **kw):
    return tiny_llama(tok, 32, 1, seed=seed, heads=2, init_std=0.3, **kw)


def _space(max_new_tokens: int, words=WORDS) -> list[str]:
    """Every output of at most max_new_tokens words (the empty output is eos first)."""
    return [
        " ".join(t)
        for n in range(max_new_tokens + 1)
        for t in itertools.product(words, repeat=n)
    ]


def _rows(contexts, outputs):
    return [c for c in contexts for _ in outputs], list(outputs) * len(contexts)


def _tv(p, q):
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(-1)


# ----------------------------------------------------------------------- distribution contract


def test_policy_satisfies_the_protocol(words):
    assert isinstance(HFPolicy(_word_model(words), words, generation=ONE), Policy)


@pytest.mark.parametrize("max_new_tokens", [1, 2])
@pytest.mark.parametrize("specials", ["eos only", "eos, pad and bos"])
def test_log_prob_is_a_normalised_distribution_over_all_outputs(max_new_tokens, specials):
    extra = {} if specials == "eos only" else {"pad_token": "<pad>", "bos_token": "<s>"}
    tok = word_tokenizer(WORDS, **extra)
    policy = HFPolicy(_word_model(tok), tok, generation=GenerationSettings(max_new_tokens))
    space = _space(max_new_tokens)
    c, o = _rows(CONTEXTS, space)
    probs = np.exp(policy.log_prob(c, o)).reshape(len(CONTEXTS), len(space))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert probs.min() > 1e-7  # every output is reachable (no -inf from the exclusions)


def _exact_sampling_distribution(policy, settings):
    """The distribution sample() should follow with max_new_tokens=1, from exact log-probs."""
    space = _space(1)
    c, o = _rows(CONTEXTS, space)
    p = np.exp(policy.log_prob(c, o)).reshape(len(CONTEXTS), len(space))
    if settings.temperature != 1.0:
        p = p ** (1.0 / settings.temperature)
        p /= p.sum(-1, keepdims=True)
    if settings.top_p < 1.0:
        for row in p:
            order = np.argsort(-row)
            before = np.cumsum(row[order]) - row[order]
            row[order[before >= settings.top_p]] = 0.0
        p /= p.sum(-1, keepdims=True)
    return space, p


@pytest.mark.parametrize(
    "settings",
    [ONE, GenerationSettings(1, temperature=0.5), GenerationSettings(1, top_p=0.6)],
    ids=["policy", "temperature", "top_p"],
)
def test_sample_frequencies_match_the_exact_distribution(words, settings):
    policy = HFPolicy(_word_model(words), words, generation=settings, micro_batch_size=2000)
    space, p = _exact_sampling_distribution(policy, settings)
    n = 4000
    samples = policy.sample(CONTEXTS, n, np.random.default_rng(0))
    assert samples.contexts == tuple(c for c in CONTEXTS for _ in range(n))
    np.testing.assert_allclose(samples.weights, 1.0 / n)
    outs = np.array(samples.outputs).reshape(len(CONTEXTS), n)
    freq = np.array([[np.mean(row == y) for y in space] for row in outs])
    bound = 5 * np.sqrt(p * (1 - p) / n) + 1e-9
    assert np.all(np.abs(freq - p) <= bound), (freq, p)
    if settings.top_p < 1:
        assert np.all(freq[p == 0] == 0) and np.any(p == 0)


def test_two_token_samples_follow_log_prob_including_the_cut_at_max_new_tokens(words):
    policy = HFPolicy(_word_model(words), words, generation=GenerationSettings(2),
                      micro_batch_size=3000)
    space = _space(2)
    p = np.exp(policy.log_prob(["b c"] * len(space), space))
    n = 6000
    outs = np.array(policy.sample(["b c"], n, np.random.default_rng(1)).outputs)
    freq = np.array([np.mean(outs == y) for y in space])
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9)


def test_greedy_and_repetition_penalty_match_the_raw_logits(words):
    model = _word_model(words)
    changed = 0
    for penalty in [1.0, 3.0, 30.0]:
        settings = GenerationSettings(1, do_sample=False, repetition_penalty=penalty)
        policy = HFPolicy(model, words, generation=settings)
        got = policy.sample(CONTEXTS, 1, np.random.default_rng(0)).outputs
        for ctx, out in zip(CONTEXTS, got):
            ids = words(ctx)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1].double()
            pen = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(torch.isin(torch.arange(logits.numel()), torch.tensor(ids)),
                                 pen, logits)
            best = int(logits.argmax())
            assert out == ("" if best == words.eos_token_id else words.convert_ids_to_tokens(best))
            with torch.no_grad():
                changed += int(best != int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert changed > 0  # the penalty changed some choice, so the check above was not vacuous


# ----------------------------------------------------------------- the update contract (oracle)

STEPS = [MirrorStep(eta=1.0), MirrorStep(eta=0.5, alpha=1.0), MirrorStep(eta=math.inf, alpha=0.5)]


@pytest.mark.parametrize("step", STEPS, ids=["hedge", "mmd", "eta=inf"])
@pytest.mark.parametrize("objective", ["regression", "pg"])
def test_update_on_the_full_support_lands_on_the_mirror_step_target(words, objective, step):
    """After one update the exact distribution is mirror_step(log pi_t, u, eta, alpha, log rho)."""
    space = _space(1)
    c, o = _rows(CONTEXTS, space)
    reference = _word_model(words, seed=2)  # rho differs from pi_t, so alpha's pull is visible
    log_rho = HFPolicy(copy.deepcopy(reference), words, generation=ONE).log_prob(c, o)
    # the regression surrogate is a least-squares fit and converges fast; the policy gradient's
    # curvature scales with pi(y), so it needs more evaluations for the same residual
    tol, budget = (1e-6, 50) if objective == "regression" else (1e-4, 300)
    policy = HFPolicy(_word_model(words), words, generation=ONE, objective=objective,
                      fit_tol=tol, max_fit_steps=budget, reference=reference)
    u = np.random.default_rng(0).uniform(-1.5, 1.5, size=len(c))
    log_t = policy.log_prob(c, o)
    shape = (len(CONTEXTS), len(space))
    target = softmax(mirror_step(log_t.reshape(shape), u.reshape(shape), step.eta, step.alpha,
                                 log_rho.reshape(shape)))
    assert _tv(np.exp(log_t).reshape(shape), target).min() > 0.1  # the step moves far
    # The exact enumeration, weighted by pi_t (HFPolicy.update reads rows as draws from pi_t).
    metrics = policy.update(Experience(tuple(c), tuple(o), u, np.exp(log_t)), step)
    new = np.exp(policy.log_prob(c, o)).reshape(shape)
    assert _tv(new, target).max() < 0.01
    assert set(metrics) == {"loss", "loss/initial", "objective", "kl/reference", "kl/previous_is",
                            "kl/reference_is", "grad_norm", "fit/residual_initial",
                            "fit/residual", "fit/relative", "fit/steps", "fit/converged"}
    assert metrics["fit/converged"] == 1.0 and metrics["fit/relative"] <= tol
    assert 0 < metrics["fit/steps"] <= budget
    # The reported KLs are exact here (rows = the full support weighted by pi_t).
    kl_prev = np.mean(np.sum(new * (np.log(new) - log_t.reshape(shape)), -1))
    kl_ref = np.mean(np.sum(new * (np.log(new) - log_rho.reshape(shape)), -1))
    assert metrics["kl/previous_is"] == pytest.approx(kl_prev, abs=1e-4)
    assert metrics["kl/reference_is"] == pytest.approx(kl_ref, abs=1e-4)
    # kl/reference: KL(pi_t || rho) of the iterate that produced the rows (the k3 estimator,
    # exact on an enumeration weighted by pi_t)
    p_t = np.exp(log_t).reshape(shape)
    kl_iterate = np.mean(np.sum(p_t * (log_t.reshape(shape) - log_rho.reshape(shape)), -1))
    assert metrics["kl/reference"] == pytest.approx(kl_iterate, abs=1e-6)  # float32 scores
    assert metrics["loss"] < metrics["loss/initial"]


def test_micro_batches_give_the_same_update_as_one_batch(words):
    space = _space(1)
    c, o = _rows(CONTEXTS, space)
    u = np.random.default_rng(3).normal(size=len(c))
    results = []
    for objective in ["regression", "pg"]:
        params = []
        for micro in [4, 64]:
            policy = HFPolicy(_word_model(words), words, generation=ONE, objective=objective,
                              optimizer="adam", lr=0.01, max_fit_steps=3,
                              micro_batch_size=micro)
            with pytest.warns(RuntimeWarning, match="whole budget of 3 gradient evaluations"):
                metrics = policy.update(Experience(tuple(c), tuple(o), u, np.ones(len(c))),
                                        MirrorStep(eta=0.7, alpha=0.2))
            params.append(torch.cat([p.detach().ravel() for p in policy.model.parameters()]))
            results.append(metrics["loss"])
        # AdamW divides by sqrt(v): float32 round-off in near-zero gradients shows up as ~1e-5;
        # a wrong gradient would move parameters by ~lr = 1e-2.
        torch.testing.assert_close(params[0], params[1], atol=1e-4, rtol=0)
        assert (params[0] - _flat(_word_model(words))).abs().max() > 1e-3  # it trained
    assert results[0] == pytest.approx(results[1], rel=1e-4)
    assert results[2] == pytest.approx(results[3], rel=1e-4)


def _flat(model):
    return torch.cat([p.detach().ravel() for p in model.parameters()])


@pytest.mark.parametrize("objective", ["pg", "regression"])
def test_merging_rows_that_repeat_an_output_keeps_the_surrogates_gradient(objective):
    """Why HFPolicy.update may merge repeated (context, output) rows: summing the weights and
    weight-averaging the utilities changes neither surrogate's gradient. Context 0 has outputs
    A (twice, with different utilities) and B; context 1 has C and D."""
    from backends import objectives as obj

    loss_fn = {"pg": obj.kl_regularized_pg_loss,
               "regression": obj.target_log_ratio_regression_loss}[objective]
    old = torch.tensor([-1.2, -0.4, -0.9, -0.6], dtype=torch.float64)  # A, B, C, D
    ref = torch.tensor([-1.0, -0.7, -0.8, -0.9], dtype=torch.float64)
    new = torch.tensor([-1.0, -0.5, -1.1, -0.4], dtype=torch.float64)  # a step away from old
    u, w = np.array([0.3, 1.1, -0.2, 0.5, 0.8]), np.array([0.2, 0.6, 0.2, 0.5, 0.4])
    rows = [0, 0, 1, 2, 3]
    full = new[rows].clone().requires_grad_(True)
    repeated = loss_fn(full, old[rows], ref[rows], u, w, 0.7, 0.2, [0, 0, 0, 1, 1])
    repeated.backward()
    merged_u = (w[0] * u[0] + w[1] * u[1]) / (w[0] + w[1])
    # HFPolicy.update's helper merges exactly so
    from backends.hf import _merge_repeated_rows

    ctx, out, mu, mw = _merge_repeated_rows(["c0", "c0", "c0", "c1", "c1"],
                                            ["A", "A", "B", "C", "D"], u, w)
    assert (ctx, out) == (["c0", "c0", "c1", "c1"], ["A", "B", "C", "D"])
    np.testing.assert_allclose(mu, np.r_[merged_u, u[2:]], rtol=1e-15)
    np.testing.assert_allclose(mw, np.r_[w[0] + w[1], w[2:]], rtol=1e-15)
    part = new.clone().requires_grad_(True)
    merged = loss_fn(part, old, ref, np.r_[merged_u, u[2:]], np.r_[w[0] + w[1], w[2:]], 0.7,
                     0.2, [0, 0, 1, 1])
    merged.backward()
    # rows 0 and 1 hold one output, so their log-prob is one variable: its gradient is the sum
    got = torch.cat([full.grad[:2].sum()[None], full.grad[2:]])
    assert got.abs().min() > 1e-3, "every output gets a gradient"
    torch.testing.assert_close(got, part.grad, rtol=1e-12, atol=1e-14)
    if objective == "pg":  # the regression loss differs by the repeats' spread, a constant
        assert repeated.item() == pytest.approx(merged.item(), rel=1e-12)


def test_a_context_with_one_repeated_output_does_not_move_the_policy(words):
    """k answers to one prompt give the adversary no signal under a per-context baseline: the
    update must leave the parameters alone, not let AdamW blow float32 rounding up to lr."""
    policy = HFPolicy(_word_model(words), words, generation=ONE, objective="pg")
    before = _flat(policy.model)
    exp = Experience(("a",) * 4 + ("b c",) * 4, ("b",) * 4 + ("d",) * 4,
                     np.array([0.0, 1.0, 0.5, 0.25, 1.0, -1.0, 0.0, 0.3]), np.full(8, 0.25))
    metrics = policy.update(exp, MirrorStep(eta=10.0))
    # the move asked for is 0, so the fit is done before any gradient evaluation
    assert metrics["fit/residual_initial"] == 0.0 and metrics["fit/steps"] == 0.0
    assert torch.equal(_flat(policy.model), before)


def test_fresh_optimizer_per_update_by_default(words):
    c, o = _rows(CONTEXTS, _space(1))
    exp = Experience(tuple(c), tuple(o), np.linspace(-1, 1, len(c)), np.ones(len(c)))
    policy = HFPolicy(_word_model(words), words, generation=ONE, optimizer="adam", lr=0.01,
                      max_fit_steps=2)
    with pytest.warns(RuntimeWarning, match="max_fit_steps"):
        policy.update(exp, MirrorStep(eta=1.0))
    policy.update(exp, MirrorStep(eta=1.0))  # warned once per policy, not again
    # each update fits a new target from scratch: 2 AdamW steps, not 4
    assert policy.optimizer_state_dict()["state"][0]["step"].item() == 2


def test_optimizer_state_persists_and_can_be_reset_or_restored(words):
    c, o = _rows(CONTEXTS, _space(1))
    exp = Experience(tuple(c), tuple(o), np.linspace(-1, 1, len(c)), np.ones(len(c)))
    policy = HFPolicy(_word_model(words), words, generation=ONE, optimizer="adam", lr=0.01,
                      max_fit_steps=2, fresh_optimizer=False)
    assert policy.optimizer_state_dict()["state"] == {}
    with pytest.warns(RuntimeWarning, match="max_fit_steps"):
        policy.update(exp, MirrorStep(eta=1.0))
    state = policy.optimizer_state_dict()
    assert state["state"][0]["step"].item() == 2
    policy.update(exp, MirrorStep(eta=1.0))
    assert policy.optimizer_state_dict()["state"][0]["step"].item() == 4  # persists
    policy.load_optimizer_state_dict(state)
    assert policy.optimizer_state_dict()["state"][0]["step"].item() == 2
    policy.reset_optimizer()
    assert policy.optimizer_state_dict()["state"] == {}
    with pytest.raises(ValueError, match="HFPolicy 'policy': load_optimizer_state_dict failed"):
        policy.load_optimizer_state_dict({"state": {}, "param_groups": []})


def test_non_finite_gradient_raises_and_leaves_parameters_unchanged(words):
    policy = HFPolicy(_word_model(words), words, generation=ONE, name="defender")
    before = _flat(policy.model)
    c, o = _rows(CONTEXTS, _space(1))
    exp = Experience(tuple(c), tuple(o), np.linspace(-1e200, 1e200, len(c)), np.ones(len(c)))
    with pytest.raises(FloatingPointError, match="'defender'.*not finite"):
        policy.update(exp, MirrorStep(eta=1.0))
    assert torch.equal(before, _flat(policy.model))


# ---------------------------------------------------------------- padding, batching, determinism


def test_log_prob_of_a_row_is_the_same_batched_or_alone(bpe):
    policy = HFPolicy(tiny_llama(bpe), bpe, generation=GenerationSettings(24),
                      micro_batch_size=3)
    contexts = [HARMLESS_SENTENCES[i] for i in (0, 3, 7, 12, 2)] + ["Hi"]
    outputs = ["", "Tea.", "A quiet river runs past the old stone mill.", "yes", "x" * 5, "ok"]
    batched = policy.log_prob(contexts, outputs)
    alone = np.array([policy.log_prob([c], [o])[0] for c, o in zip(contexts, outputs)])
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-6)
    assert batched.dtype == np.float64 and np.all(batched < 0)


def test_greedy_generation_is_the_same_batched_or_alone(bpe):
    policy = HFPolicy(tiny_llama(bpe), bpe, generation=GenerationSettings(10, do_sample=False))
    contexts = ["Hi", HARMLESS_SENTENCES[5], "Why?"]
    batched = policy.sample(contexts, 1, np.random.default_rng(0)).outputs
    alone = tuple(policy.sample([c], 1, np.random.default_rng(0)).outputs[0] for c in contexts)
    assert batched == alone
    assert len(set(batched)) > 1


def test_a_rows_samples_follow_its_stream_id_not_the_batch_around_it(bpe):
    """What data-parallel runs rely on: a row's draws depend on (rng, stream id, sample index)
    only, not on its neighbours, its position or the micro-batch size."""
    contexts = ["Hi", HARMLESS_SENTENCES[5], "Why?", HARMLESS_SENTENCES[2]]
    big = HFPolicy(tiny_llama(bpe), bpe, generation=GenerationSettings(10), micro_batch_size=64)
    small = HFPolicy(copy.deepcopy(big.model), bpe, generation=GenerationSettings(10),
                     micro_batch_size=3)
    ids = [7, 2**64 - 1, 0, 12345]
    whole = big.sample(contexts, 3, np.random.default_rng(5), stream_ids=ids).outputs
    assert small.sample(contexts, 3, np.random.default_rng(5), stream_ids=ids).outputs == whole
    for i, (context, sid) in enumerate(zip(contexts, ids)):
        alone = big.sample([context], 3, np.random.default_rng(5), stream_ids=[sid]).outputs
        assert alone == whole[3 * i : 3 * i + 3], i
    # the two halves, as two ranks would sample them, in reverse order
    halves = (small.sample(contexts[2:], 3, np.random.default_rng(5), stream_ids=ids[2:]).outputs
              + small.sample(contexts[:2], 3, np.random.default_rng(5), stream_ids=ids[:2]).outputs)
    assert halves[6:] + halves[:6] == whole
    # the default ids are the positions, and other ids draw other samples
    assert big.sample(contexts, 3, np.random.default_rng(5)).outputs == big.sample(
        contexts, 3, np.random.default_rng(5), stream_ids=range(4)).outputs
    again = big.sample(["Hi"] * 8, 1, np.random.default_rng(5), stream_ids=[7] * 8).outputs
    assert set(again) == {whole[0]}
    # an integer numpy array is as good as a list (uint64 holds the largest id)
    as_array = np.array(ids, dtype=np.uint64)
    assert big.sample(contexts, 3, np.random.default_rng(5), stream_ids=as_array).outputs == whole
    spread = big.sample(["Hi"] * 8, 1, np.random.default_rng(5)).outputs
    assert len(set(spread)) > 1


def test_bad_stream_ids_are_named(words):
    policy = HFPolicy(_word_model(words), words, generation=ONE)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"one entry per context \(2\), got 1"):
        policy.sample(["a", "b"], 1, rng, stream_ids=[3])
    with pytest.raises(ValueError, match=r"stream_ids\[1\] must be in \[0, 2\*\*64\), got -1"):
        policy.sample(["a", "b"], 1, rng, stream_ids=[3, -1])
    with pytest.raises(TypeError, match=r"stream_ids\[0\] must be an integer, got True"):
        policy.sample(["a"], 1, rng, stream_ids=[True])
    with pytest.raises(TypeError, match=r"stream_ids\[0\] must be an integer, got 1.5"):
        policy.sample(["a"], 1, rng, stream_ids=[1.5])
    with pytest.raises(TypeError, match="stream_ids must be a sequence of integers"):
        policy.sample(["a"], 1, rng, stream_ids=5)


def test_each_contexts_sample_weights_sum_to_one_even_when_listed_twice(words):
    policy = HFPolicy(_word_model(words), words, generation=ONE)
    s = policy.sample(["a", "b", "a"], 2, np.random.default_rng(0))
    assert s.contexts == ("a", "a", "b", "b", "a", "a")
    np.testing.assert_allclose(s.weights, [0.25, 0.25, 0.5, 0.5, 0.25, 0.25])
    assert policy.sample([], 3, np.random.default_rng(0)).outputs == ()
    assert policy.log_prob([], []).shape == (0,)


def test_sample_is_deterministic_given_rng_and_leaves_torch_rng_alone(bpe):
    policy = HFPolicy(tiny_llama(bpe), bpe, generation=GenerationSettings(12))
    state = torch.get_rng_state()
    a = policy.sample(["Hello", "Tea?"], 3, np.random.default_rng(7))
    b = policy.sample(["Hello", "Tea?"], 3, np.random.default_rng(7))
    c = policy.sample(["Hello", "Tea?"], 3, np.random.default_rng(8))
    assert torch.equal(state, torch.get_rng_state())
    assert a.outputs == b.outputs
    assert a.outputs != c.outputs
    assert a.contexts == ("Hello",) * 3 + ("Tea?",) * 3


# ------------------------------------------------------------------------ tokenizers and prompts


def test_eos_pads_when_there_is_no_pad_token_and_the_tokenizer_is_untouched(words):
    assert words.pad_token is None
    policy = HFPolicy(_word_model(words), words, generation=ONE)
    assert policy.pad_token_id == words.eos_token_id
    assert words.pad_token is None
    lp = policy.log_prob(["a", "d d a"], ["b", "c"])  # rows of unequal length, padded with eos
    alone = [policy.log_prob(["a"], ["b"])[0], policy.log_prob(["d d a"], ["c"])[0]]
    np.testing.assert_allclose(lp, alone, atol=1e-6)


def test_a_tokenizer_with_neither_pad_nor_eos_is_refused(words):
    tok = copy.deepcopy(words)
    tok.eos_token = None
    with pytest.raises(ValueError, match="neither a pad token nor an eos token"):
        HFPolicy(_word_model(words), tok)


def test_prompts_longer_than_the_budget_raise_or_are_truncated(words):
    model = _word_model(words, max_positions=8)
    settings = GenerationSettings(max_new_tokens=4)
    policy = HFPolicy(model, words, generation=settings)
    long = "a b c d a b"  # 6 tokens > 8 - 4
    with pytest.raises(ValueError, match=r"6 tokens but at most 4 fit.*model context 8.*"
                                         r"truncate_prompts=True"):
        policy.log_prob([long], ["a"])
    with pytest.raises(ValueError, match="truncate_prompts"):
        policy.sample([long], 1, np.random.default_rng(0))
    cut = HFPolicy(model, words, generation=settings, truncate_prompts=True)
    np.testing.assert_allclose(cut.log_prob([long], ["a b"]), cut.log_prob(["c d a b"], ["a b"]))
    assert len(cut.sample([long], 2, np.random.default_rng(0)).outputs) == 2
    with pytest.raises(ValueError, match="max_prompt_tokens=6 plus max_new_tokens=4 exceeds"):
        HFPolicy(model, words, generation=settings, max_prompt_tokens=6)
    small = HFPolicy(model, words, generation=settings, max_prompt_tokens=2, truncate_prompts=True)
    np.testing.assert_allclose(small.log_prob([long], [""]), small.log_prob(["a b"], [""]))


def test_templates_string_callable_and_chat(bpe):
    model = tiny_llama(bpe)
    text = "User: {context}\nAssistant:"
    as_str = HFPolicy(model, bpe, template=text).log_prob(["Hi"], [" Hello"])
    as_fn = HFPolicy(model, bpe, template=lambda c: text.replace("{context}", c)).log_prob(
        ["Hi"], [" Hello"])
    raw = HFPolicy(model, bpe).log_prob(["User: Hi\nAssistant:"], [" Hello"])
    chat_tok = train_tokenizer(vocab_size=400)
    chat_tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '\n' }}Assistant:{% endif %}"
    )
    chat = HFPolicy(model, chat_tok).log_prob(["Hi"], [" Hello"])
    np.testing.assert_allclose(as_str, raw)
    np.testing.assert_allclose(as_fn, raw)
    np.testing.assert_allclose(chat, raw, atol=1e-6)
    assert abs(HFPolicy(model, bpe).log_prob(["Hi"], [" Hello"])[0] - raw[0]) > 1e-3


# --------------------------------------------------------------------------- snapshots and peft


def test_snapshot_restore_and_safetensors_round_trip(words, tmp_path):
    policy = HFPolicy(_word_model(words), words, generation=ONE, lr=0.05, name="adversary")
    c, o = _rows(CONTEXTS, _space(1))
    before = policy.log_prob(c, o)
    snap = policy.snapshot()
    assert set(snap) == set(policy.model.state_dict())
    assert all(t.device.type == "cpu" for t in snap.values())
    policy.update(Experience(tuple(c), tuple(o), np.linspace(-2, 2, len(c)), np.ones(len(c))),
                  MirrorStep(eta=1.0))
    moved = policy.log_prob(c, o)
    assert np.abs(moved - before).max() > 1e-2
    path = tmp_path / "snap.safetensors"
    path.write_bytes(b"old contents")  # replaced atomically
    assert save_snapshot(snap, path) == path
    assert os.listdir(tmp_path) == ["snap.safetensors"]  # no temporary file left behind
    loaded = load_snapshot(path)
    assert set(loaded) == set(snap) and all(torch.equal(loaded[k], snap[k]) for k in snap)
    policy.restore(loaded)
    np.testing.assert_array_equal(policy.log_prob(c, o), before)
    method_path = tmp_path / "sub"
    method_path.mkdir()
    policy.save_snapshot(snap, method_path / "m.safetensors")  # the alignment loop's Persistent
    policy.restore(policy.load_snapshot(method_path / "m.safetensors"))
    np.testing.assert_array_equal(policy.log_prob(c, o), before)
    policy.restore(policy.snapshot())  # a snapshot is independent of later changes
    snap["lm_head.weight"].add_(1.0)
    np.testing.assert_array_equal(policy.log_prob(c, o), before)


def test_restore_and_load_failures_name_the_policy_and_the_fix(words, tmp_path):
    policy = HFPolicy(_word_model(words), words, generation=ONE, name="adversary")
    snap = policy.snapshot()
    before = _flat(policy.model)
    bad = dict(snap)
    bad.pop("lm_head.weight")
    bad["lm_head.weight2"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"HFPolicy 'adversary': restore failed.*missing "
                                         r"\['lm_head.weight'\].*unexpected"):
        policy.restore(bad)
    wrong_shape = dict(snap, **{"lm_head.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="'adversary'.*wrong shape"):
        policy.restore(wrong_shape)
    with pytest.raises(TypeError, match="'adversary'.*mapping"):
        policy.restore([1, 2])
    assert torch.equal(before, _flat(policy.model))
    with pytest.raises(ValueError, match="'adversary': save_snapshot failed"):
        policy.save_snapshot(bad, tmp_path / "bad.safetensors")
    save_snapshot(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"'adversary': load_snapshot failed.*missing "
                                         r"\['lm_head.weight'\]"):
        policy.load_snapshot(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="no snapshot file"):
        load_snapshot(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="could not read a safetensors snapshot"):
        load_snapshot(tmp_path / "junk.safetensors")
    with pytest.raises(TypeError, match="mapping of str to torch.Tensor"):
        save_snapshot({"a": np.zeros(2)}, tmp_path / "x.safetensors")


def test_peft_lora_reference_is_the_base_and_snapshot_holds_only_adapters(words):
    peft = pytest.importorskip("peft")
    space = _space(1)
    c, o = _rows(CONTEXTS, space)
    base = _word_model(words)
    log_base = HFPolicy(copy.deepcopy(base), words, generation=ONE).log_prob(c, o)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0)
    # peft draws the LoRA matrices from torch's global generator: fix it, or the outcome would
    # depend on which tests ran before (it once missed the 0.01 bound below, at 0.012)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        policy = HFPolicy(base, words, generation=ONE, peft_config=config, lr=0.01,
                          inner_steps=300, max_grad_norm=None)
    snap = policy.snapshot()
    assert snap and all("lora_" in k for k in snap)
    assert len(snap) == sum(p.requires_grad for p in policy.model.parameters())
    log_t = policy.log_prob(c, o)
    np.testing.assert_allclose(log_t, log_base, atol=1e-5)  # LoRA starts as the identity
    shape = (len(CONTEXTS), len(space))
    u = np.random.default_rng(4).uniform(-1.5, 1.5, size=len(c))
    step = MirrorStep(eta=0.5, alpha=1.0)
    policy.update(Experience(tuple(c), tuple(o), u, np.exp(log_t)), step)  # pi_1 != rho now
    log_1 = policy.log_prob(c, o)
    u2 = np.random.default_rng(5).uniform(-1.5, 1.5, size=len(c))
    target = softmax(mirror_step(log_1.reshape(shape), u2.reshape(shape), step.eta, step.alpha,
                                 log_base.reshape(shape)))
    assert _tv(np.exp(log_1).reshape(shape), target).min() > 0.05
    metrics = policy.update(Experience(tuple(c), tuple(o), u2, np.exp(log_1)), step)
    new = np.exp(policy.log_prob(c, o)).reshape(shape)
    assert _tv(new, target).max() < 0.01  # rho = adapters disabled, i.e. the untouched base
    kl_ref = np.mean(np.sum(new * (np.log(new) - log_base.reshape(shape)), -1))
    assert metrics["kl/reference_is"] == pytest.approx(kl_ref, abs=1e-4)
    policy.restore(snap)
    np.testing.assert_allclose(policy.log_prob(c, o), log_t, atol=1e-6)
    with pytest.raises(ValueError, match="already a peft.PeftModel"):
        HFPolicy(policy.model, words, peft_config=config)


def test_bfloat16_on_cpu_smoke(bpe):
    policy = HFPolicy(tiny_llama(bpe), bpe, generation=GenerationSettings(8), dtype="bfloat16")
    # float32 master weights, bfloat16 forwards (tests/test_hf_precision.py)
    assert next(policy.model.parameters()).dtype == torch.float32
    with torch.no_grad():
        ids = torch.tensor([bpe("Hello")["input_ids"]])
        assert policy._scorer.forward(policy.model, ids, torch.ones_like(ids),
                                      torch.arange(ids.shape[1])[None], keep=1
                                      ).logits.dtype == torch.bfloat16
    s = policy.sample(["Hello", "Tea?"], 2, np.random.default_rng(0))
    lp = policy.log_prob(s.contexts, s.outputs)
    assert lp.dtype == np.float64 and np.all(np.isfinite(lp))
    metrics = policy.update(Experience(s.contexts, s.outputs, np.arange(4.0), np.ones(4)),
                            MirrorStep(eta=1.0, alpha=0.1))
    assert all(math.isfinite(v) for v in metrics.values())


def test_bfloat16_weights_still_land_on_the_target(words):
    """bf16 forwards over float32 master weights, float32 log-probabilities: the contract holds
    to bf16 precision. The weights no longer round the fit's steps away (bf16 weights stalled
    near 3e-3 of the move); the forward's rounding (log-prob jitter of 0.01-0.05 here) floors the
    residual near 1e-3, so the tolerance is 1e-3 (was 5e-3), not the float32 tests' 1e-6."""
    space = _space(1)
    c, o = _rows(CONTEXTS, space)
    policy = HFPolicy(_word_model(words), words, generation=ONE, dtype="bfloat16", fit_tol=1e-3)
    shape = (len(CONTEXTS), len(space))
    log_t = policy.log_prob(c, o)
    np.testing.assert_allclose(np.exp(log_t).reshape(shape).sum(-1), 1.0, atol=1e-5)
    u = np.random.default_rng(0).uniform(-1.5, 1.5, size=len(c))
    target = softmax(mirror_step(log_t.reshape(shape), u.reshape(shape), 1.0, 0.0))
    metrics = policy.update(Experience(tuple(c), tuple(o), u, np.exp(log_t)), MirrorStep(eta=1.0))
    assert metrics["fit/converged"] == 1.0
    new = np.exp(policy.log_prob(c, o)).reshape(shape)
    assert _tv(new, target).max() < 0.015  # rms log-ratio error <= sqrt(1e-3) = 3% of the move


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_contract_and_determinism(words, dtype):
    space = _space(1)
    c, o = _rows(CONTEXTS, space)
    policy = HFPolicy(_word_model(words), words, generation=ONE, device="cuda", dtype=dtype,
                      lr=0.01, inner_steps=300, max_grad_norm=None)
    assert policy.device.type == "cuda"
    a = policy.sample(CONTEXTS, 4, np.random.default_rng(0))
    assert a.outputs == policy.sample(CONTEXTS, 4, np.random.default_rng(0)).outputs
    state = torch.cuda.get_rng_state()
    policy.sample(CONTEXTS, 4, np.random.default_rng(1))
    assert torch.equal(state, torch.cuda.get_rng_state())
    shape = (len(CONTEXTS), len(space))
    log_t = policy.log_prob(c, o)
    u = np.random.default_rng(0).uniform(-1.5, 1.5, size=len(c))
    target = softmax(mirror_step(log_t.reshape(shape), u.reshape(shape), 1.0, 0.0))
    policy.update(Experience(tuple(c), tuple(o), u, np.exp(log_t)), MirrorStep(eta=1.0))
    new = np.exp(policy.log_prob(c, o)).reshape(shape)
    assert _tv(new, target).max() < (0.01 if dtype == "float32" else 0.02)


# ---------------------------------------------------------------------------------- bad inputs


def _ok_policy(tok):
    return HFPolicy(_word_model(tok), tok, generation=ONE, name="defender")


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(template="no placeholder"), ValueError, r"template must contain the placeholder"),
        (dict(template=3), TypeError, "template must be a string"),
        (dict(objective="ppo"), ValueError, r"objective must be one of \['pg', 'regression'\]"),
        (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
        (dict(inner_steps=0), ValueError, "inner_steps must be an integer >= 1"),
        (dict(micro_batch_size=1.5), TypeError, "micro_batch_size"),
        (dict(dtype="float16"), ValueError, "dtype must be 'float32', 'bfloat16'"),
        (dict(generation={"max_new_tokens": 3}), TypeError, "generation must be a "
                                                            "GenerationSettings"),
        (dict(reference="model"), TypeError, "reference must be a torch.nn.Module"),
        (dict(max_prompt_tokens=0), ValueError, "max_prompt_tokens"),
        (dict(weight_decay=-1.0), ValueError, "weight_decay"),
        (dict(truncate_prompts="yes"), TypeError, "truncate_prompts must be a bool"),
    ],
)
def test_bad_constructor_arguments_are_named(words, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HFPolicy(_word_model(words), words, **kwargs)


def test_bad_model_tokenizer_device_and_settings(words):
    with pytest.raises(TypeError, match="model must be a transformers causal LM"):
        HFPolicy("gpt2", words)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        HFPolicy(_word_model(words), "gpt2")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available\\(\\) is False"):
            HFPolicy(_word_model(words), words, device="cuda")
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        GenerationSettings(top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=0.0)
    with pytest.raises(TypeError, match="do_sample must be a bool"):
        GenerationSettings(do_sample=1)
    with pytest.raises(ValueError, match="reference has vocab_size 7 but the model has 5"):
        other = _word_model(word_tokenizer(WORDS + ["e", "f"]))
        HFPolicy(_word_model(words), words, reference=other)
    assert not GenerationSettings(temperature=0.7).on_policy
    model = _word_model(words)
    with pytest.raises(ValueError, match="reference is the model being trained"):
        HFPolicy(model, words, reference=model)


def test_bad_call_arguments_are_named(words):
    policy = _ok_policy(words)
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="contexts must be a sequence of strings, got the single"):
        policy.sample("a", 2, rng)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        policy.sample(["a"], 0, rng)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        policy.sample(["a"], 1, 0)
    with pytest.raises(TypeError, match=r"outputs\[1\] must be a str, got int 3"):
        policy.log_prob(["a", "b"], ["a", 3])
    with pytest.raises(ValueError, match="got 2 contexts and 1 outputs"):
        policy.log_prob(["a", "b"], ["a"])
    # an empty context (an adversary's empty prompt) starts from eos when there is no bos
    empty = float(policy.log_prob([""], ["a"])[0])
    with torch.no_grad():
        start = torch.tensor([[policy._eos_id]])
        logits = policy.model(input_ids=start).logits[0, -1].double()
    a_id = words.convert_tokens_to_ids("a")
    # one new token at most (ONE), so log_prob is the first token's log-probability after eos
    assert empty == pytest.approx(torch.log_softmax(logits, -1)[a_id].item(), rel=1e-6)
    with pytest.raises(ValueError, match="output 0 .* special token ids"):
        policy.log_prob(["a"], ["</s>"])


def test_bad_experience_and_step_are_named(words):
    policy = _ok_policy(words)
    good = Experience(("a", "a"), ("b", "c"), np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"rows must have equal lengths.*'utilities': 3"):
        policy.update(good._replace(utilities=np.zeros(3)), MirrorStep(eta=1.0))
    with pytest.raises(ValueError, match="experience rows must have equal lengths.*'outputs': 1"):
        policy.update(good._replace(outputs=("b",)), MirrorStep(eta=1.0))
    with pytest.raises(ValueError, match="experience.utilities must be finite"):
        policy.update(good._replace(utilities=np.array([np.nan, 0.0])), MirrorStep(eta=1.0))
    with pytest.raises(ValueError, match="positive sum for every context, got 0 for context 'a'"):
        policy.update(good._replace(weights=np.zeros(2)), MirrorStep(eta=1.0))
    with pytest.raises(ValueError, match="experience.weights must be >= 0"):
        policy.update(good._replace(weights=np.array([-1.0, 2.0])), MirrorStep(eta=1.0))
    with pytest.raises(TypeError, match="step must be a gpo_core.protocols.MirrorStep"):
        policy.update(good, 0.5)
    with pytest.raises(TypeError, match="experience must be a gpo_core.protocols.Experience"):
        policy.update((("a",), ("b",)), MirrorStep(eta=1.0))
    with pytest.raises(ValueError, match="at least one row"):
        policy.update(Experience((), (), np.zeros(0), np.zeros(0)), MirrorStep(eta=1.0))


# ------------------------------------------------------------------------------- tiny helpers


def test_train_tokenizer_round_trips_and_is_deterministic():
    tok = train_tokenizer(vocab_size=300)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert train_tokenizer(vocab_size=300).get_vocab() == tok.get_vocab()
    for text in ["", " leading space", "tabs\tand\nnewlines  ", "Unseen: \u00df\u6f22\U0001f375!"]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(train_tokenizer(["abc abd"] * 5, vocab_size=300)) < 300  # small corpus, few merges
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        train_tokenizer(vocab_size=100)
    with pytest.raises(TypeError, match="texts must be a sequence of strings, got the single"):
        train_tokenizer("one text")


def test_word_tokenizer_and_tiny_llama_checks():
    tok = word_tokenizer(["x", "y"], pad_token="<pad>", bos_token="<s>")
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok.decode(tok("y x y")["input_ids"]) == "y x y"
    with pytest.raises(ValueError, match="no whitespace"):
        word_tokenizer(["a b"])
    with pytest.raises(ValueError, match="distinct"):
        word_tokenizer(["a", "a"])
    with pytest.raises(ValueError, match="at least one word"):
        word_tokenizer([])
    state = torch.get_rng_state()
    a, b = tiny_llama(tok, seed=3), tiny_llama(tok, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(_flat(a), _flat(b))
    assert not torch.equal(_flat(a), _flat(tiny_llama(tok, seed=4)))
    assert a.config.pad_token_id == 1 and a.config.vocab_size == 5
    with pytest.raises(ValueError, match="hidden_size must be a multiple of heads"):
        tiny_llama(tok, hidden_size=30, heads=4)
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        tiny_llama("tok")


def test_token_log_probs_sum_to_the_sequence_log_prob(words):
    policy = HFPolicy(_word_model(words), words, generation=GenerationSettings(max_new_tokens=3))
    rng = np.random.default_rng(0)
    s = policy.sample(CONTEXTS, 3, rng)
    per_token = policy.token_log_probs(s.contexts, s.outputs)
    totals = policy.log_prob(s.contexts, s.outputs)
    assert len(per_token) == len(s.outputs)
    for row, total, out in zip(per_token, totals, s.outputs):
        assert np.all(row <= 0)
        assert 1 <= len(row) <= 3
        np.testing.assert_allclose(row.sum(), total, atol=1e-5)


@pytest.mark.parametrize("objective", ["regression", "pg"])
def test_conditional_adversary_needs_two_rewrites_per_seed_to_learn(words, objective):
    """One sampled prompt per seed: each context's rows are centred on their own mean, so the
    adversary's update is exactly zero and the loop warns; two rewrites per seed move it."""
    import warnings

    from backends.rewards import CallableReward
    from gpo_core.alignment import GameConfig, run_game

    def players():
        gen = GenerationSettings(max_new_tokens=3)
        return [HFPolicy(tiny_llama(words, seed=s).to(torch.float64), words,
                         generation=gen, objective=objective, lr=5e-2, name=name)
                for s, name in ((1, "defender"), (2, "adversary"))]

    # the prompt counts too, so two different rewrites of a seed almost surely score differently
    reward = CallableReward(lambda prompts, responses: [
        (p.split().count("a") + 2 * r.split().count("a")) / 9 for p, r in zip(prompts, responses)])
    seeds = ["a b", "b c", "c d", "d a"]
    moved = {}
    for k in (1, 2):
        defender, adversary = players()
        before = _flat(adversary.model)
        config = GameConfig(rounds=1, batch_size=4, prompts_per_context=k, defender_eta=5.0,
                            adversary_eta=5.0, seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_game(defender, adversary, reward, config, seed_prompts=seeds)
        said = [str(w.message) for w in caught if "prompts_per_context" in str(w.message)]
        assert bool(said) == (k == 1)
        moved[k] = float((_flat(adversary.model) - before).abs().max())
    assert moved[1] == 0.0
    assert moved[2] > 1e-4


def test_every_logged_kl_is_non_negative_where_the_plain_estimate_dips_below_zero(words):
    """kl/reference once printed -0.0225: the plain E_{pi_t}[log pi_t - log rho] over a few
    samples can be negative; the logged estimator E[q - 1 - log q] (q = rho/pi_t) never is."""
    reference = _word_model(words)  # the policy's own start: KL(pi_t || rho) stays small
    rho = HFPolicy(copy.deepcopy(reference), words, generation=GenerationSettings(3))
    policy = HFPolicy(_word_model(words), words, generation=GenerationSettings(3),
                      reference=reference)
    plain_negative = 0
    for seed in range(8):
        s = policy.sample(CONTEXTS, 2, np.random.default_rng(seed))
        u = np.random.default_rng(seed).uniform(-1, 1, len(s.outputs))
        old = policy.log_prob(s.contexts, s.outputs)
        ref = rho.log_prob(s.contexts, s.outputs)
        plain_negative += float(np.mean(old - ref)) < 0
        metrics = policy.update(Experience(s.contexts, s.outputs, u, s.weights),
                                MirrorStep(eta=0.5))
        for key in ("kl/reference", "kl/previous_is", "kl/reference_is"):
            assert metrics[key] >= 0, (key, metrics[key])
    assert plain_negative > 0  # the case the old estimator got wrong does occur here


def test_restore_refuses_non_finite_weights_and_changes_nothing(words):
    policy = HFPolicy(_word_model(words), words, generation=ONE, name="defender")
    before = _flat(policy.model)
    snap = policy.snapshot()
    key = next(k for k, v in snap.items() if v.is_floating_point())
    snap[key] = torch.full_like(snap[key], float("nan"))
    with pytest.raises(ValueError, match="'defender': restore failed.*NaN or infinite.*" + key):
        policy.restore(snap)
    assert torch.equal(_flat(policy.model), before)
