"""The forwards of one ``HFPolicy.update``: pi_t's scores come from the first gradient
evaluation's forward (the update is bit for bit the one with a separate no-grad forward), and
with ``reference_metrics=False`` the reference is scored only when the step's ``alpha > 0``."""

from __future__ import annotations

import copy
import warnings

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


@pytest.fixture(scope="module")
def experience():
    space = ["", "a", "b", "c d", "d a b"]
    c = [x for x in CONTEXTS for _ in space]
    o = space * len(CONTEXTS)
    return Experience(tuple(c), tuple(o), np.random.default_rng(3).normal(size=len(c)),
                      np.ones(len(c)))


def _count(module):
    calls = []
    module.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    return calls


def _update(policy, experience, step):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a one-evaluation budget
        return policy.update(experience, step)


@pytest.mark.parametrize("micro,optimizer,checkpointing", [
    (64, "adam", False), (64, "lbfgs", False), (4, "lbfgs", False), (64, "adam", True),
])
def test_reusing_the_first_forward_changes_nothing(words, experience, micro, optimizer,
                                                   checkpointing):
    model = tiny_llama(words, 32, 1, seed=1, heads=2, init_std=0.3)
    kw = dict(generation=GenerationSettings(max_new_tokens=3), micro_batch_size=micro,
              optimizer=optimizer, max_fit_steps=1 if optimizer == "adam" else 8, lr=1e-2,
              gradient_checkpointing=checkpointing)
    step = MirrorStep(eta=0.7, alpha=0.2)
    fast = HFPolicy(copy.deepcopy(model), words, **kw)
    slow = HFPolicy(copy.deepcopy(model), words, **kw)
    slow._trainer.reuse_first_forward = False
    fast_calls, slow_calls = _count(fast.model), _count(slow.model)
    got, want = _update(fast, experience, step), _update(slow, experience, step)
    assert got == want
    for (name, a), b in zip(fast.model.named_parameters(), slow.model.parameters()):
        assert torch.equal(a, b), name
    assert not fast.model.training  # back in eval() after the fit
    # the shortcut saves exactly one forward over the rows
    assert sum(slow_calls) - sum(fast_calls) == len(experience.contexts)


def test_reference_metrics_off_skips_the_reference_at_alpha_zero(words, experience):
    model = tiny_llama(words, 32, 1, seed=1, heads=2, init_std=0.3)
    kw = dict(generation=GenerationSettings(max_new_tokens=3), optimizer="adam", lr=1e-2,
              max_fit_steps=1)
    full = HFPolicy(copy.deepcopy(model), words, **kw)
    lean = HFPolicy(copy.deepcopy(model), words, reference_metrics=False, **kw)
    ref_calls = _count(lean._reference)
    step = MirrorStep(eta=0.7, alpha=0.0)
    got, want = _update(lean, experience, step), _update(full, experience, step)
    assert ref_calls == []
    assert "kl/reference" not in got and "kl/reference_is" not in got
    assert got == {k: v for k, v in want.items() if k not in ("kl/reference", "kl/reference_is")}
    for a, b in zip(lean.model.parameters(), full.model.parameters()):
        assert torch.equal(a, b)
    # alpha > 0: the target needs the reference, so it is scored and its metrics reported
    metrics = _update(lean, experience, MirrorStep(eta=0.7, alpha=0.2))
    assert ref_calls and "kl/reference" in metrics and "kl/reference_is" in metrics


def test_reference_metrics_must_be_a_bool(words):
    with pytest.raises(TypeError, match="reference_metrics must be a bool"):
        HFPolicy(tiny_llama(words, 16, 1, heads=2), words, reference_metrics="no")
