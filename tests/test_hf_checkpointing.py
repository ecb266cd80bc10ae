"""HFPolicy's ``gradient_checkpointing=True``: activations are recomputed in the backward.

transformers checkpoints only in training mode, and HFPolicy otherwise runs in ``eval()`` mode,
so the option used to do nothing. Now the model is in training mode only for the forward and
backward of a gradient evaluation, with every dropout set to 0 (HFPolicy never uses dropout), so
scoring stays deterministic and the gradients are those of the plain model. The memory measure
is the bytes of tensors autograd saves for the backward (parameters left out), seen through
``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from backends.hf import GenerationSettings, HFPolicy  # noqa: E402
from backends.tiny import HARMLESS_SENTENCES, tiny_llama, train_tokenizer  # noqa: E402
from gpo_core.protocols import Experience, MirrorStep  # noqa: E402


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(vocab_size=300)


def _experience():
    contexts = [HARMLESS_SENTENCES[i] for i in (0, 1, 2, 3)]
    outputs = [HARMLESS_SENTENCES[i] for i in (4, 5, 6, 7)]
    c = tuple(x for x in contexts for _ in range(2))
    o = tuple(y for _ in contexts for y in outputs[:2])
    o = tuple(y if i % 2 else y[::-1] for i, y in enumerate(o))  # two outputs per context
    return Experience(c, o, np.linspace(-1.0, 1.0, len(c)), np.ones(len(c)))


def _policy(bpe, checkpointing, dropout=0.0):
    model = tiny_llama(bpe, 64, 4, seed=0, heads=2, init_std=0.1)
    for m in model.modules():  # as a model configured with attention_dropout would be
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = dropout
    return HFPolicy(model, bpe, generation=GenerationSettings(64), optimizer="adam", lr=1e-3,
                    max_fit_steps=1, micro_batch_size=64, gradient_checkpointing=checkpointing)


def _saved_bytes_and_step(policy):
    params = {p.data_ptr() for p in policy.model.parameters()}
    saved: dict[tuple[int, int], int] = {}

    def pack(t):
        if t.data_ptr() not in params:
            n = t.untyped_storage().nbytes()
            saved[(t.untyped_storage().data_ptr(), n)] = n
        return t

    before = [p.detach().clone() for p in policy.model.parameters()]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with pytest.warns(RuntimeWarning, match="max_fit_steps"):
            metrics = policy.update(_experience(), MirrorStep(eta=1.0))
    step = [p.detach() - b for p, b in zip(policy.model.parameters(), before)]
    return sum(saved.values()), step, metrics


def test_checkpointing_cuts_saved_activations_and_keeps_the_gradient(bpe):
    plain_bytes, plain_step, plain = _saved_bytes_and_step(_policy(bpe, False))
    policy = _policy(bpe, True)
    ckpt_bytes, ckpt_step, ckpt = _saved_bytes_and_step(policy)
    assert ckpt_bytes < 0.4 * plain_bytes, (ckpt_bytes, plain_bytes)
    assert ckpt["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-6)
    for a, b in zip(plain_step, ckpt_step):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert max(float(s.abs().max()) for s in plain_step) > 1e-4  # it did step
    assert not policy.model.training  # back in eval() for scoring and sampling


def test_train_mode_brings_no_dropout(bpe):
    """A model configured with dropout: in training mode it would drop, so the checkpointed
    gradient would differ from the plain one; HFPolicy zeroes it first."""
    policy = _policy(bpe, True, dropout=0.5)
    assert all(getattr(m, "attention_dropout", 0.0) == 0.0 for m in policy.model.modules())
    _, step, _ = _saved_bytes_and_step(policy)
    _, plain, _ = _saved_bytes_and_step(_policy(bpe, False, dropout=0.5))  # eval(): no dropout
    for a, b in zip(plain, step):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    a = policy.log_prob(["Hi", "Tea?"], ["yes", "no"])
    np.testing.assert_array_equal(a, policy.log_prob(["Hi", "Tea?"], ["yes", "no"]))


def test_checkpointing_with_peft_keeps_the_gradient(bpe):
    peft = pytest.importorskip("peft")
    steps = []
    for checkpointing in (False, True):
        config = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                 lora_dropout=0.1)
        model = tiny_llama(bpe, 64, 2, seed=0, heads=2, init_std=0.1)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            policy = HFPolicy(model, bpe, generation=GenerationSettings(64), optimizer="adam",
                              lr=1e-3, max_fit_steps=1, peft_config=config,
                              gradient_checkpointing=checkpointing)
        steps.append(_saved_bytes_and_step(policy))
    assert steps[1][0] < steps[0][0]
    for a, b in zip(steps[0][1], steps[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_bad_gradient_checkpointing_is_named(bpe):
    with pytest.raises(TypeError, match="gradient_checkpointing must be a bool"):
        HFPolicy(tiny_llama(bpe), bpe, gradient_checkpointing="yes")

    class Plain(torch.nn.Module):  # a causal LM without transformers' checkpointing support
        def __init__(self):
            super().__init__()
            self.inner = tiny_llama(bpe)
            self.config = self.inner.config

        def forward(self, input_ids, attention_mask=None):
            return types.SimpleNamespace(logits=self.inner(input_ids=input_ids).logits)

    with pytest.raises(ValueError, match="gradient_checkpointing=True but Plain"):
        HFPolicy(Plain(), bpe, gradient_checkpointing=True)
    HFPolicy(Plain(), bpe)  # fine without it


def test_describe_names_the_stops_the_precision_and_checkpointing(bpe):
    """describe() feeds a checkpoint's identity check: a run resumed with other stop ids,
    another precision or checkpointing switched is told so."""
    plain = _policy(bpe, False).describe()
    assert f"stop_token_ids=[{bpe.eos_token_id}]" in plain
    assert "dtype=float32" in plain and "gradient_checkpointing=False" in plain
    assert "gradient_checkpointing=True" in _policy(bpe, True).describe()
    half = HFPolicy(tiny_llama(bpe, 16, 1, heads=2), bpe, dtype="bfloat16", stop_token_ids=[5])
    text = half.describe()
    assert "dtype=bfloat16" in text
    assert f"stop_token_ids={sorted({5, bpe.eos_token_id})}" in text
